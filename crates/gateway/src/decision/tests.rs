//! One behaviour per test; properties at the end.

use carerecord_fhir::ScopeSet;
use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::paging::PageKey;

const POLICY: &str = r#"
apiVersion: carerecord.dev/sharing-policy/v1
agreements:
  - agreementId: DSA-1
    consumerTenant: greater-manchester
    consumerOrganisations: [QOP]
    resources: [Condition, Patient, AllergyIntolerance]
    excludedCategories: [HIV]
    validFrom: "2026-01-01T00:00:00Z"
    expires: "2027-01-01T00:00:00Z"
    purpose: DirectCare
"#;

const CONFIG: &str = r#"
apiVersion: carerecord.dev/gateway/v1
tenant: {name: cheshire, organisations: [QYG, R0A]}
publicBaseUrl: https://cheshire.example
upstreamUrl: http://store:8080/fhir
listen: 127.0.0.1:8080
adminListen: 127.0.0.1:9090
issuers: [{issuer: "https://idp", audience: gateway}]
inboundConnectors:
  - {name: emis, providerOdsCode: G123, upstreamUrl: "http://connector-emis:8080"}
"#;

pub(crate) fn settings() -> Settings {
    let config: carerecord_config::GatewayConfig = serde_yaml::from_str(CONFIG).unwrap();
    Settings::compile(&config, PageKey::from_secret(&[1; 32])).unwrap()
}

pub(crate) fn policy() -> Policy {
    Policy::from_yaml(POLICY).unwrap()
}

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

fn caller(org: &str, scopes: &str) -> Caller {
    Caller {
        issuer: "https://idp".into(),
        subject: "s1".into(),
        client_id: Some("c1".into()),
        organisation: Some(org.into()),
        scopes: ScopeSet::parse(scopes),
    }
}

fn consumer() -> Caller {
    caller("QOP", "system/*.rs")
}

fn get(path: &str, query: Option<&str>) -> HttpRequest<'static> {
    let path: &'static str = Box::leak(path.to_string().into_boxed_str());
    let query: Option<&'static str> = query.map(|q| &*Box::leak(q.to_string().into_boxed_str()));
    HttpRequest { method: Method::Get, path, query, accept: None }
}

fn decide_as(c: &Caller, r: &HttpRequest<'_>) -> Decision {
    decide(r, c, &settings(), &policy(), now())
}

fn reason(d: &Decision) -> Option<Reason> {
    match d {
        Decision::Deny { reason, .. } => Some(*reason),
        _ => None,
    }
}

fn fed(path: &str, query: Option<&str>) -> Option<Reason> {
    reason(&decide_as(&consumer(), &get(&format!("/federation/greater-manchester/fhir{path}"), query)))
}

#[test]
fn a_consumer_reads_a_shared_type() {
    let d = decide_as(&consumer(), &get("/federation/greater-manchester/fhir/Condition/c1", None));
    let Decision::AllowFederated { agreement, forward, filter } = d else { panic!("{d:?}") };
    assert_eq!(agreement, "DSA-1");
    assert_eq!(forward.path, vec!["Condition", "c1"]);
    assert!(filter.strip_total && filter.honour_objections);
    assert_eq!(filter.caller_base, "https://cheshire.example/federation/greater-manchester/fhir");
}

#[test]
fn a_consumer_searches_a_shared_type_with_known_parameters() {
    assert_eq!(fed("/Condition", Some("patient=Patient/p1&_count=10&_sort=-date")), None);
}

#[test]
fn a_type_outside_the_agreement_is_refused() {
    assert_eq!(fed("/Observation", None), Some(Reason::TypeNotShared));
}

#[test]
fn type_names_in_another_case_are_judged_as_fhir_spells_them() {
    let d = decide_as(&consumer(), &get("/federation/greater-manchester/fhir/condition", None));
    let Decision::AllowFederated { forward, .. } = d else { panic!("{d:?}") };
    assert_eq!(forward.path, vec!["Condition"]);
    assert_eq!(fed("/observation", None), Some(Reason::TypeNotShared));
}

#[test]
fn an_agreement_not_yet_valid_is_not_active() {
    let d = decide(
        &get("/federation/greater-manchester/fhir/Condition", None),
        &consumer(),
        &settings(),
        &policy(),
        "2025-12-31T23:59:59Z".parse().unwrap(),
    );
    assert_eq!(reason(&d), Some(Reason::AgreementNotActive));
}

#[test]
fn an_agreement_is_over_at_its_expiry_instant() {
    let d = decide(
        &get("/federation/greater-manchester/fhir/Condition", None),
        &consumer(),
        &settings(),
        &policy(),
        "2027-01-01T00:00:00Z".parse().unwrap(),
    );
    assert_eq!(reason(&d), Some(Reason::AgreementNotActive));
}

#[test]
fn an_outsider_organisation_has_no_agreement() {
    let d = decide_as(&caller("RXX", "system/*.rs"), &get("/federation/greater-manchester/fhir/Condition", None));
    assert_eq!(reason(&d), Some(Reason::NoAgreement));
}

#[test]
fn a_consumer_path_without_the_callers_organisation_has_no_agreement() {
    let d = decide_as(&consumer(), &get("/federation/somewhere-else/fhir/Condition", None));
    assert_eq!(reason(&d), Some(Reason::NoAgreement));
}

#[test]
fn a_token_without_an_organisation_has_no_agreement() {
    let mut c = consumer();
    c.organisation = None;
    assert_eq!(
        reason(&decide_as(&c, &get("/federation/greater-manchester/fhir/Condition", None))),
        Some(Reason::NoAgreement)
    );
}

#[test]
fn a_narrow_scope_cannot_read_other_shared_types() {
    let c = caller("QOP", "system/Patient.rs");
    assert_eq!(
        reason(&decide_as(&c, &get("/federation/greater-manchester/fhir/Condition", None))),
        Some(Reason::ScopeInsufficient)
    );
    assert_eq!(reason(&decide_as(&c, &get("/federation/greater-manchester/fhir/Patient", None))), None);
}

#[test]
fn federation_refuses_writes() {
    let r = HttpRequest {
        method: Method::Post,
        path: "/federation/greater-manchester/fhir/Condition",
        query: None,
        accept: None,
    };
    assert_eq!(reason(&decide_as(&consumer(), &r)), Some(Reason::ReadOnly));
    let r = HttpRequest {
        method: Method::Delete,
        path: "/federation/greater-manchester/fhir/Condition/1",
        query: None,
        accept: None,
    };
    assert_eq!(reason(&decide_as(&consumer(), &r)), Some(Reason::ReadOnly));
}

#[test]
fn federation_refuses_has() {
    assert_eq!(fed("/Patient", Some("_has:Condition:patient:code=1234")), Some(Reason::ParameterNotAllowed));
}

#[test]
fn federation_refuses_chained_parameters() {
    assert_eq!(fed("/Condition", Some("subject.name=Smith")), Some(Reason::ParameterNotAllowed));
    assert_eq!(fed("/Condition", Some("subject:Patient.name=Smith")), Some(Reason::ParameterNotAllowed));
}

#[test]
fn federation_refuses_history() {
    assert_eq!(fed("/_history", None), Some(Reason::InteractionNotAllowed));
    assert_eq!(fed("/Condition/_history", None), Some(Reason::InteractionNotAllowed));
    assert_eq!(fed("/Condition/c1/_history", None), Some(Reason::InteractionNotAllowed));
}

#[test]
fn federation_refuses_operations() {
    assert_eq!(fed("/Patient/p1/$everything", None), Some(Reason::InteractionNotAllowed));
    assert_eq!(fed("/$graphql", Some("query={Patient{id}}")), Some(Reason::InteractionNotAllowed));
    assert_eq!(fed("/Patient/$match", None), Some(Reason::InteractionNotAllowed));
}

#[test]
fn federation_refuses_compartment_searches() {
    assert_eq!(fed("/Patient/p1/Condition", None), Some(Reason::InteractionNotAllowed));
    assert_eq!(fed("/Patient/p1/*", None), Some(Reason::InteractionNotAllowed));
}

#[test]
fn federation_refuses_system_search() {
    assert_eq!(fed("", Some("_type=Condition")), Some(Reason::InteractionNotAllowed));
}

#[test]
fn federation_refuses_wildcard_includes() {
    assert_eq!(fed("/Condition", Some("_include=*")), Some(Reason::IncludeNotAllowed));
    assert_eq!(fed("/Patient", Some("_revinclude=*")), Some(Reason::IncludeNotAllowed));
}

#[test]
fn federation_refuses_includes_of_unshared_types() {
    assert_eq!(fed("/Condition", Some("_include=Condition:encounter:Encounter")), Some(Reason::IncludeNotAllowed));
    assert_eq!(fed("/Patient", Some("_revinclude=Observation:subject")), Some(Reason::IncludeNotAllowed));
    assert_eq!(fed("/Condition", Some("_include:iterate=Condition:subject")), Some(Reason::IncludeNotAllowed));
}

#[test]
fn federation_allows_includes_of_shared_types() {
    assert_eq!(fed("/Condition", Some("_include=Condition:subject:Patient")), None);
    assert_eq!(fed("/Patient", Some("_revinclude=AllergyIntolerance:patient")), None);
}

#[test]
fn federation_refuses_contained_searches() {
    assert_eq!(fed("/Condition", Some("_contained=true")), Some(Reason::ParameterNotAllowed));
}

#[test]
fn federation_refuses_unknown_parameters() {
    for q in ["_elements=id", "_summary=count", "_total=accurate", "_filter=x", "encounter=Encounter/1", "_query=x"] {
        assert_eq!(fed("/Condition", Some(q)), Some(Reason::ParameterNotAllowed), "{q}");
    }
}

#[test]
fn federation_refuses_patient_references_to_other_types_or_hosts() {
    assert_eq!(fed("/Condition", Some("subject=Group/g1")), Some(Reason::ParameterNotAllowed));
    assert_eq!(fed("/Condition", Some("subject=https://elsewhere/fhir/Patient/1")), Some(Reason::ParameterNotAllowed));
}

#[test]
fn federation_refuses_xml() {
    assert_eq!(fed("/Condition", Some("_format=xml")), Some(Reason::FormatNotAcceptable));
    let r = HttpRequest {
        method: Method::Get,
        path: "/federation/greater-manchester/fhir/Condition",
        query: None,
        accept: Some("application/fhir+xml"),
    };
    assert_eq!(reason(&decide_as(&consumer(), &r)), Some(Reason::FormatNotAcceptable));
}

#[test]
fn json_format_is_accepted_and_not_forwarded() {
    let d = decide_as(&consumer(), &get("/federation/greater-manchester/fhir/Condition", Some("_format=json")));
    let Decision::AllowFederated { forward, .. } = d else { panic!("{d:?}") };
    assert!(forward.query.is_empty());
}

#[test]
fn dot_segments_are_refused_before_routing() {
    let d =
        decide_as(&consumer(), &get("/federation/greater-manchester/fhir/%2e%2e/%2e%2e/%2e%2e/fhir/Condition", None));
    assert_eq!(reason(&d), Some(Reason::BadPath));
}

#[test]
fn double_slashes_do_not_change_the_decision() {
    assert_eq!(
        reason(&decide_as(&consumer(), &get("//federation//greater-manchester/fhir//Observation", None))),
        Some(Reason::TypeNotShared)
    );
}

#[test]
fn a_page_bound_to_the_caller_is_forwarded_with_the_store_id() {
    let s = settings();
    let token = s.page_key.bind("store-page", &consumer().binding(), "agreement:DSA-1");
    let q = format!("_getpages={token}&_getpagesoffset=20&_count=20");
    let d = decide_as(&consumer(), &get("/federation/greater-manchester/fhir", Some(&q)));
    let Decision::AllowFederated { forward, .. } = d else { panic!("{d:?}") };
    assert!(forward.query.contains(&("_getpages".to_string(), "store-page".to_string())));
}

#[test]
fn a_page_of_another_caller_is_refused() {
    let s = settings();
    let other = caller("QOP", "system/*.rs");
    let other = Caller { subject: "someone-else".into(), ..other };
    let token = s.page_key.bind("store-page", &other.binding(), "agreement:DSA-1");
    let q = format!("_getpages={token}");
    assert_eq!(
        reason(&decide_as(&consumer(), &get("/federation/greater-manchester/fhir", Some(&q)))),
        Some(Reason::PageNotBound)
    );
}

#[test]
fn a_raw_store_page_id_is_refused() {
    assert_eq!(fed("", Some("_getpages=store-page")), Some(Reason::PageNotBound));
}

#[test]
fn the_tenant_path_refuses_other_organisations() {
    let d = decide_as(&consumer(), &get("/fhir/Patient", None));
    assert_eq!(reason(&d), Some(Reason::OrganisationNotInTenant));
}

#[test]
fn the_tenant_path_checks_scopes_per_interaction() {
    let c = caller("R0A", "system/Patient.rs");
    assert_eq!(reason(&decide_as(&c, &get("/fhir/Patient/1", None))), None);
    let r = HttpRequest { method: Method::Put, path: "/fhir/Patient/1", query: None, accept: None };
    assert_eq!(reason(&decide_as(&c, &r)), Some(Reason::ScopeInsufficient));
    let r = HttpRequest { method: Method::Post, path: "/fhir/Patient", query: None, accept: None };
    assert_eq!(reason(&decide_as(&caller("R0A", "system/Patient.c"), &r)), None);
}

#[test]
fn the_tenant_path_needs_every_type_for_a_transaction() {
    let r = HttpRequest { method: Method::Post, path: "/fhir", query: None, accept: None };
    assert_eq!(reason(&decide_as(&caller("R0A", "system/Patient.cruds"), &r)), Some(Reason::ScopeInsufficient));
    assert_eq!(reason(&decide_as(&caller("R0A", "system/*.cruds"), &r)), None);
}

#[test]
fn the_tenant_path_refuses_has_to_a_narrow_scope() {
    let c = caller("R0A", "system/Patient.rs");
    assert_eq!(
        reason(&decide_as(&c, &get("/fhir/Patient", Some("_has:Condition:patient:code=x")))),
        Some(Reason::ScopeInsufficient)
    );
}

#[test]
fn the_tenant_path_filters_types_outside_a_narrow_scope() {
    let d =
        decide_as(&caller("R0A", "system/Patient.rs"), &get("/fhir/Patient", Some("_revinclude=Condition:subject")));
    let Decision::Allow { filter, .. } = d else { panic!("{d:?}") };
    assert!(filter.types.admits("Patient") && !filter.types.admits("Condition"));
}

#[test]
fn an_inbound_push_needs_the_connectors_organisation() {
    let r = HttpRequest { method: Method::Post, path: "/inbound/emis", query: None, accept: None };
    assert!(matches!(decide_as(&caller("G123", "system/*.cu"), &r), Decision::Allow { .. }));
    assert_eq!(reason(&decide_as(&caller("R0A", "system/*.cu"), &r)), Some(Reason::ConnectorNotAllowed));
    let unknown = HttpRequest { method: Method::Post, path: "/inbound/nope", query: None, accept: None };
    assert_eq!(reason(&decide_as(&caller("G123", "system/*.cu"), &unknown)), Some(Reason::ConnectorNotAllowed));
}

#[test]
fn unknown_routes_are_not_found() {
    assert_eq!(reason(&decide_as(&consumer(), &get("/admin", None))), Some(Reason::UnknownRoute));
}

fn arb_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("fhir".to_string()),
        Just("federation".to_string()),
        Just("greater-manchester".to_string()),
        Just("Condition".to_string()),
        Just("Observation".to_string()),
        Just("Patient".to_string()),
        Just("_history".to_string()),
        Just("$everything".to_string()),
        Just("%2e%2e".to_string()),
        Just("..".to_string()),
        Just("".to_string()),
        "[a-zA-Z0-9]{1,8}",
    ];
    prop::collection::vec(segment, 0..7).prop_map(|s| format!("/{}", s.join("/")))
}

fn arb_query() -> impl Strategy<Value = Option<String>> {
    let param = prop_oneof![
        Just("_include=*".to_string()),
        Just("_has:Condition:patient:code=1".to_string()),
        Just("patient=p1".to_string()),
        Just("_count=5".to_string()),
        Just("subject.name=x".to_string()),
        Just("_format=xml".to_string()),
        "[a-z_]{1,6}=[a-z0-9]{0,4}",
    ];
    prop::option::of(prop::collection::vec(param, 0..4).prop_map(|p| p.join("&")))
}

fn arb_method() -> impl Strategy<Value = Method> {
    prop_oneof![Just(Method::Get), Just(Method::Post), Just(Method::Put), Just(Method::Delete), Just(Method::Head)]
}

proptest! {
    /// Outside an agreement's dates, no federation request is ever allowed.
    #[test]
    fn nothing_is_allowed_outside_the_agreements_dates(
        path in arb_path(),
        query in arb_query(),
        method in arb_method(),
        offset_days in prop_oneof![-4000i64..0, 0i64..4000],
        org in prop_oneof![Just("QOP"), Just("R0A"), Just("RXX")],
    ) {
        let policy = policy();
        let a = &policy.agreements[0];
        let now = if offset_days < 0 {
            a.valid_from.checked_sub(jiff::SignedDuration::from_hours(-offset_days * 24)).unwrap()
        } else {
            a.expires.checked_add(jiff::SignedDuration::from_hours(offset_days * 24)).unwrap()
        };
        let full = format!("/federation/greater-manchester/fhir{path}");
        let r = HttpRequest { method, path: &full, query: query.as_deref(), accept: None };
        let d = decide(&r, &caller(org, "system/*.cruds"), &settings(), &policy, now);
        prop_assert!(!matches!(d, Decision::AllowFederated { .. }), "{d:?}");
    }

    /// Federation only ever forwards GET reads and searches of agreed types.
    #[test]
    fn federation_forwards_only_reads_and_searches_of_shared_types(
        path in arb_path(),
        query in arb_query(),
        method in arb_method(),
    ) {
        let full = format!("/federation/greater-manchester/fhir{path}");
        let r = HttpRequest { method, path: &full, query: query.as_deref(), accept: None };
        if let Decision::AllowFederated { forward, filter, .. } = decide(&r, &caller("QOP", "system/*.cruds"), &settings(), &policy(), now()) {
            prop_assert_eq!(forward.method, Method::Get);
            let shared = match &forward.action {
                Some(FhirAction::Read { resource_type, .. }) | Some(FhirAction::Search { resource_type }) => policy().agreements[0].shares(resource_type),
                Some(FhirAction::Page) => true,
                _ => false,
            };
            prop_assert!(shared, "{forward:?}");
            prop_assert!(!forward.query.iter().any(|(k, _)| k.starts_with("_has") || k.contains('.') || k == "_format"));
            prop_assert_eq!(filter.types, TypeRule::Only(policy().agreements[0].resources.clone()));
        }
    }
}
