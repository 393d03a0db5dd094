//! Who is calling: what a verified token says.

use carerecord_fhir::ScopeSet;

/// The facts of a verified bearer token that decisions and audit use.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    /// `iss`: the trusted issuer that signed the token.
    pub issuer: String,
    /// `sub`: the user or system.
    pub subject: String,
    /// `client_id` (or `azp`): the application.
    pub client_id: Option<String>,
    /// The organisation claim (an ODS code), if the token carries one.
    pub organisation: Option<String>,
    /// The SMART resource scopes granted.
    pub scopes: ScopeSet,
}

impl Caller {
    /// What a page id is bound to: the same person or system, through the same
    /// issuer, for the same organisation.
    pub fn binding(&self) -> String {
        format!("{}\u{1f}{}\u{1f}{}", self.issuer, self.subject, self.organisation.as_deref().unwrap_or(""))
    }
}
