//! Why a request was refused. A closed set: metrics label by it, audit
//! records it, and the caller sees a fixed message for it, never a detail
//! that would tell what exists.

/// Every reason the gateway refuses a request or fails it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No bearer token.
    NoToken,
    /// A token that did not verify (signature, issuer, audience, dates, algorithm).
    InvalidToken,
    /// A path with dot segments or encoded separators.
    BadPath,
    /// No such entry point.
    UnknownRoute,
    /// No such FHIR resource type.
    UnknownResourceType,
    /// A malformed logical id.
    BadId,
    /// Not a FHIR interaction (or a method FHIR does not use).
    NotAnInteraction,
    /// The caller's organisation does not act for this tenant.
    OrganisationNotInTenant,
    /// No agreement between this tenant and the caller's.
    NoAgreement,
    /// An agreement exists but is not in force now.
    AgreementNotActive,
    /// The agreement does not share this resource type.
    TypeNotShared,
    /// The token's scopes do not allow this interaction on this type.
    ScopeInsufficient,
    /// Federation is read-only (GET).
    ReadOnly,
    /// An interaction federation never allows (history, operations,
    /// compartments, batch/transaction, system-level search).
    InteractionNotAllowed,
    /// A search parameter federation does not understand or allow.
    ParameterNotAllowed,
    /// An `_include`/`_revinclude` that is a wildcard or names an unshared type.
    IncludeNotAllowed,
    /// The caller does not accept JSON, or asked for another `_format`.
    FormatNotAcceptable,
    /// A page id not issued to this caller on this route.
    PageNotBound,
    /// No push connector of that name for this caller.
    ConnectorNotAllowed,
    /// A read whose resource the agreement or an objection withholds.
    Withheld,
    /// Patients' objections could not be read, so nothing is disclosed.
    ObjectionsUnavailable,
    /// The audit event could not be written in time, so nothing is disclosed.
    AuditUnavailable,
    /// The record store did not answer.
    UpstreamUnavailable,
}

impl Reason {
    /// Every reason, for metrics that start at zero.
    pub const ALL: [Self; 23] = [
        Self::NoToken,
        Self::InvalidToken,
        Self::BadPath,
        Self::UnknownRoute,
        Self::UnknownResourceType,
        Self::BadId,
        Self::NotAnInteraction,
        Self::OrganisationNotInTenant,
        Self::NoAgreement,
        Self::AgreementNotActive,
        Self::TypeNotShared,
        Self::ScopeInsufficient,
        Self::ReadOnly,
        Self::InteractionNotAllowed,
        Self::ParameterNotAllowed,
        Self::IncludeNotAllowed,
        Self::FormatNotAcceptable,
        Self::PageNotBound,
        Self::ConnectorNotAllowed,
        Self::Withheld,
        Self::ObjectionsUnavailable,
        Self::AuditUnavailable,
        Self::UpstreamUnavailable,
    ];

    /// The metric label and log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::InvalidToken => "invalid_token",
            Self::BadPath => "bad_path",
            Self::UnknownRoute => "unknown_route",
            Self::UnknownResourceType => "unknown_resource_type",
            Self::BadId => "bad_id",
            Self::NotAnInteraction => "not_an_interaction",
            Self::OrganisationNotInTenant => "organisation_not_in_tenant",
            Self::NoAgreement => "no_agreement",
            Self::AgreementNotActive => "agreement_not_active",
            Self::TypeNotShared => "type_not_shared",
            Self::ScopeInsufficient => "scope_insufficient",
            Self::ReadOnly => "read_only",
            Self::InteractionNotAllowed => "interaction_not_allowed",
            Self::ParameterNotAllowed => "parameter_not_allowed",
            Self::IncludeNotAllowed => "include_not_allowed",
            Self::FormatNotAcceptable => "format_not_acceptable",
            Self::PageNotBound => "page_not_bound",
            Self::ConnectorNotAllowed => "connector_not_allowed",
            Self::Withheld => "withheld",
            Self::ObjectionsUnavailable => "objections_unavailable",
            Self::AuditUnavailable => "audit_unavailable",
            Self::UpstreamUnavailable => "upstream_unavailable",
        }
    }

    /// The HTTP status the caller gets.
    pub fn status(self) -> u16 {
        match self {
            Self::NoToken | Self::InvalidToken => 401,
            Self::BadPath
            | Self::BadId
            | Self::NotAnInteraction
            | Self::ParameterNotAllowed
            | Self::IncludeNotAllowed => 400,
            Self::UnknownRoute | Self::UnknownResourceType | Self::Withheld => 404,
            Self::ReadOnly => 405,
            Self::FormatNotAcceptable => 406,
            Self::OrganisationNotInTenant
            | Self::NoAgreement
            | Self::AgreementNotActive
            | Self::TypeNotShared
            | Self::ScopeInsufficient
            | Self::InteractionNotAllowed
            | Self::PageNotBound
            | Self::ConnectorNotAllowed => 403,
            Self::UpstreamUnavailable => 502,
            Self::ObjectionsUnavailable | Self::AuditUnavailable => 503,
        }
    }

    /// The FHIR `OperationOutcome.issue.code`.
    pub fn issue_code(self) -> &'static str {
        match self.status() {
            401 => "login",
            403 | 405 => "forbidden",
            404 => "not-found",
            406 | 400 => "invalid",
            _ => "transient",
        }
    }

    /// What the caller is told. Fixed per reason: nothing about what exists.
    pub fn message(self) -> &'static str {
        match self {
            Self::NoToken => "A bearer token is required.",
            Self::InvalidToken => "The bearer token is not valid here.",
            Self::BadPath => "The request path is not a plain FHIR path.",
            Self::UnknownRoute | Self::UnknownResourceType | Self::Withheld => "Not found.",
            Self::BadId => "The resource id is not a FHIR id.",
            Self::NotAnInteraction => "The request is not a supported FHIR interaction.",
            Self::OrganisationNotInTenant => "Your organisation does not act for this tenant.",
            Self::NoAgreement | Self::AgreementNotActive => "No data-sharing agreement in force allows this request.",
            Self::TypeNotShared => "This resource type is not shared with your organisation.",
            Self::ScopeInsufficient => "The token's scopes do not allow this interaction.",
            Self::ReadOnly => "Only GET is allowed here.",
            Self::InteractionNotAllowed => "This interaction is not allowed on this path.",
            Self::ParameterNotAllowed => "A search parameter is not supported on this path.",
            Self::IncludeNotAllowed => "_include and _revinclude must name shared types explicitly.",
            Self::FormatNotAcceptable => "Only FHIR JSON is served.",
            Self::PageNotBound => "This page was not issued to you.",
            Self::ConnectorNotAllowed => "Not allowed.",
            Self::ObjectionsUnavailable | Self::AuditUnavailable | Self::UpstreamUnavailable => {
                "The service is unavailable; try again later."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len());
    }

    #[test]
    fn an_unshared_type_and_a_missing_agreement_tell_nothing_more_than_forbidden() {
        assert_eq!(Reason::NoAgreement.message(), Reason::AgreementNotActive.message());
        assert_eq!(Reason::Withheld.message(), Reason::UnknownRoute.message());
    }
}
