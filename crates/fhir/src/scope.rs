//! SMART on FHIR scopes: v2 (`system/Observation.rs`) and v1
//! (`system/Observation.read`), and whether a set of them allows an
//! interaction on a resource type.

use std::fmt;

/// A RESTful interaction, as SMART v2 letters name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `c`: create.
    Create,
    /// `r`: read and vread (and instance history).
    Read,
    /// `u`: update and patch.
    Update,
    /// `d`: delete.
    Delete,
    /// `s`: search (and type history).
    Search,
}

impl Interaction {
    /// Every interaction.
    pub const ALL: [Self; 5] = [Self::Create, Self::Read, Self::Update, Self::Delete, Self::Search];

    fn bit(self) -> u8 {
        match self {
            Self::Create => 1,
            Self::Read => 2,
            Self::Update => 4,
            Self::Delete => 8,
            Self::Search => 16,
        }
    }

    /// The SMART v2 letter.
    pub fn letter(self) -> char {
        match self {
            Self::Create => 'c',
            Self::Read => 'r',
            Self::Update => 'u',
            Self::Delete => 'd',
            Self::Search => 's',
        }
    }
}

/// Whose data a scope reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeContext {
    /// A backend system acting for itself.
    System,
    /// Whatever the signed-in user may see.
    User,
    /// Only the patient in the launch context.
    Patient,
}

/// One resource scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// Whose data.
    pub context: ScopeContext,
    /// The resource type, or `None` for `*` (every type).
    pub resource_type: Option<String>,
    interactions: u8,
    /// The scope carried a `?param=value` restriction (SMART v2 granular scopes).
    pub restricted: bool,
}

impl Scope {
    /// Whether the scope itself grants `interaction` on `resource_type`.
    pub fn grants(&self, interaction: Interaction, resource_type: &str) -> bool {
        let type_matches = self.resource_type.as_deref().is_none_or(|t| t == resource_type);
        type_matches && self.interactions & interaction.bit() != 0
    }

    /// Whether the scope grants `interaction` on every resource type (`*`).
    pub fn grants_all_types(&self, interaction: Interaction) -> bool {
        self.resource_type.is_none() && self.interactions & interaction.bit() != 0
    }
}

/// Why a string is not a resource scope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("not a resource scope (no context/Type.permissions shape)")]
    NotResourceScope,
    #[error("unknown context {0:?}: expected system, user or patient")]
    UnknownContext(String),
    #[error("unknown resource type {0:?}")]
    UnknownType(String),
    #[error("bad permissions {0:?}: expected read, write, *, or c/r/u/d/s letters in that order")]
    BadPermissions(String),
}

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (context, rest) = text.split_once('/').ok_or(ScopeError::NotResourceScope)?;
        let context = match context {
            "system" => ScopeContext::System,
            "user" => ScopeContext::User,
            "patient" => ScopeContext::Patient,
            other => return Err(ScopeError::UnknownContext(other.to_string())),
        };
        let (rest, restricted) = match rest.split_once('?') {
            Some((scope, _query)) => (scope, true),
            None => (rest, false),
        };
        let (resource, permissions) = rest.split_once('.').ok_or(ScopeError::NotResourceScope)?;
        let resource_type = match resource {
            "*" => None,
            t if crate::is_resource_type(t) => Some(t.to_string()),
            other => return Err(ScopeError::UnknownType(other.to_string())),
        };
        let interactions = parse_permissions(permissions)?;
        Ok(Self { context, resource_type, interactions, restricted })
    }
}

fn parse_permissions(text: &str) -> Result<u8, ScopeError> {
    let all = Interaction::ALL.iter().fold(0, |acc, i| acc | i.bit());
    match text {
        // v1: read covers read and search; write covers create, update and delete.
        "read" => return Ok(Interaction::Read.bit() | Interaction::Search.bit()),
        "write" => return Ok(Interaction::Create.bit() | Interaction::Update.bit() | Interaction::Delete.bit()),
        "*" => return Ok(all),
        _ => {}
    }
    // v2: a non-empty subsequence of "cruds", in that order.
    let mut bits = 0;
    let mut next = 0;
    for letter in text.chars() {
        let position = Interaction::ALL[next..]
            .iter()
            .position(|i| i.letter() == letter)
            .ok_or_else(|| ScopeError::BadPermissions(text.to_string()))?;
        bits |= Interaction::ALL[next + position].bit();
        next += position + 1;
    }
    if bits == 0 {
        return Err(ScopeError::BadPermissions(text.to_string()));
    }
    Ok(bits)
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context = match self.context {
            ScopeContext::System => "system",
            ScopeContext::User => "user",
            ScopeContext::Patient => "patient",
        };
        let letters: String =
            Interaction::ALL.iter().filter(|i| self.interactions & i.bit() != 0).map(|i| i.letter()).collect();
        write!(f, "{context}/{}.{letters}", self.resource_type.as_deref().unwrap_or("*"))
    }
}

/// The resource scopes of a token's `scope` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet {
    scopes: Vec<Scope>,
}

impl ScopeSet {
    /// Parses a space-separated `scope` claim, keeping resource scopes and
    /// ignoring the rest (`openid`, `launch`, `fhirUser`, malformed ones): a
    /// scope that cannot be read grants nothing.
    pub fn parse(claim: &str) -> Self {
        Self { scopes: claim.split_ascii_whitespace().filter_map(|s| s.parse().ok()).collect() }
    }

    /// The resource scopes read.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// Whether the set allows `interaction` on `resource_type`.
    ///
    /// Only `system/` and `user/` scopes count: a `patient/` scope limits access
    /// to one patient's compartment, which this check cannot see, so it grants
    /// nothing here. A scope with a `?` restriction grants nothing either, for
    /// the same reason: the restriction cannot be enforced by a type check.
    pub fn allows(&self, interaction: Interaction, resource_type: &str) -> bool {
        self.enforceable().any(|s| s.grants(interaction, resource_type))
    }

    /// Whether the set allows `interaction` on every resource type (a `*` scope).
    pub fn allows_all_types(&self, interaction: Interaction) -> bool {
        self.enforceable().any(|s| s.grants_all_types(interaction))
    }

    fn enforceable(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.iter().filter(|s| !s.restricted && s.context != ScopeContext::Patient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_letters_grant_exactly_those_interactions() {
        let set = ScopeSet::parse("system/Observation.rs");
        assert!(set.allows(Interaction::Read, "Observation"));
        assert!(set.allows(Interaction::Search, "Observation"));
        assert!(!set.allows(Interaction::Create, "Observation"));
        assert!(!set.allows(Interaction::Read, "Patient"));
    }

    #[test]
    fn wildcard_type_grants_every_type() {
        let set = ScopeSet::parse("system/*.rs");
        assert!(set.allows(Interaction::Search, "Condition"));
        assert!(set.allows_all_types(Interaction::Read));
        assert!(!set.allows(Interaction::Delete, "Condition"));
    }

    #[test]
    fn v1_read_grants_read_and_search() {
        let set = ScopeSet::parse("user/Patient.read");
        assert!(set.allows(Interaction::Read, "Patient"));
        assert!(set.allows(Interaction::Search, "Patient"));
        assert!(!set.allows(Interaction::Update, "Patient"));
    }

    #[test]
    fn v1_write_grants_create_update_delete() {
        let set = ScopeSet::parse("system/Patient.write");
        assert!(set.allows(Interaction::Create, "Patient"));
        assert!(set.allows(Interaction::Delete, "Patient"));
        assert!(!set.allows(Interaction::Read, "Patient"));
    }

    #[test]
    fn v1_star_grants_everything() {
        assert!(ScopeSet::parse("system/*.*").allows(Interaction::Delete, "Condition"));
    }

    #[test]
    fn letters_out_of_order_are_rejected() {
        assert_eq!("system/Patient.sr".parse::<Scope>(), Err(ScopeError::BadPermissions("sr".into())));
        assert!("system/Patient.rr".parse::<Scope>().is_err());
        assert!("system/Patient.".parse::<Scope>().is_err());
    }

    #[test]
    fn unknown_types_are_rejected() {
        assert!(matches!("system/Patients.rs".parse::<Scope>(), Err(ScopeError::UnknownType(_))));
    }

    #[test]
    fn patient_context_grants_nothing_here() {
        assert!(!ScopeSet::parse("patient/*.rs").allows(Interaction::Read, "Observation"));
    }

    #[test]
    fn restricted_scopes_grant_nothing_here() {
        let set = ScopeSet::parse("system/Observation.rs?category=laboratory");
        assert!(!set.allows(Interaction::Read, "Observation"));
    }

    #[test]
    fn non_resource_scopes_are_ignored() {
        let set = ScopeSet::parse("openid profile launch/patient system/Condition.s");
        assert_eq!(set.scopes().len(), 1);
    }

    #[test]
    fn display_is_v2() {
        assert_eq!("system/Patient.read".parse::<Scope>().unwrap().to_string(), "system/Patient.rs");
    }
}
