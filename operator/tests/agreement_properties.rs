//! Sharing agreements over random histories: create, update and delete of
//! either side, tenants turning Ready or not, and the clock moving. The
//! invariant that makes the platform trustworthy: routes exist if and only if
//! the agreement is Active, and Active means exactly what an independent
//! reading of the rules says. Both sides always agree on whether it is Active.

use std::collections::BTreeSet;

use ics_operator::api::agreement::*;
use ics_operator::api::tenant::CareRecordTenant;
use ics_operator::render::agreement::{AgreementReason, Counterpart, Decision, Inputs, Side, children, decide};
use ics_operator::settings::PlatformSettings;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

const PROVIDER_TENANT: &str = "cheshire-merseyside";
const CONSUMER_TENANT: &str = "greater-manchester";
const POOL: [&str; 4] = ["AllergyIntolerance", "CarePlan", "MedicationStatement", "Patient"];

fn at(minute: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + minute * 60).unwrap())
}

#[derive(Clone, Debug)]
struct SideGen {
    role: Role,
    id: &'static str,
    counterpart: &'static str,
    resources: Vec<&'static str>,
    legal: u8,
    from: i64,
    until: i64,
}

impl SideGen {
    fn spec(&self) -> SharingAgreementSpec {
        SharingAgreementSpec {
            role: self.role,
            agreement_id: self.id.into(),
            counterpart_tenant: self.counterpart.into(),
            purpose: Purpose::DirectCare,
            legal_basis: LegalBasis {
                article6: if self.legal == 0 { Article6::PublicTask } else { Article6::Consent },
                article9: Article9::HealthOrSocialCare,
            },
            resources: self.resources.iter().map(|s| s.to_string()).collect(),
            excluded_categories: vec![SensitiveCategory::SexualHealth],
            valid_from: at(self.from),
            expires: at(self.until),
            access: Access::ReadOnly,
        }
    }
}

fn side_gen(role: Role, home: &'static str, other: &'static str) -> impl Strategy<Value = SideGen> {
    (
        prop_oneof![4 => Just(role), 1 => Just(if role == Role::Provider { Role::Consumer } else { Role::Provider })],
        prop_oneof![5 => Just("DSA-1"), 1 => Just("DSA-2")],
        prop_oneof![6 => Just(other), 1 => Just(home), 1 => Just("lancashire")],
        proptest::sample::subsequence(POOL.to_vec(), 1..=4),
        prop_oneof![5 => Just(0u8), 1 => Just(1u8)],
        0i64..60,
        1i64..120,
    )
        .prop_map(|(role, id, counterpart, resources, legal, from, len)| SideGen {
            role,
            id,
            counterpart,
            resources,
            legal,
            from,
            until: from + len,
        })
}

#[derive(Clone, Debug)]
enum Event {
    PutProvider(SideGen),
    PutConsumer(SideGen),
    DeleteProvider,
    DeleteConsumer,
    ProviderReady(bool),
    ConsumerReady(bool),
    Tick(i64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => side_gen(Role::Provider, PROVIDER_TENANT, CONSUMER_TENANT).prop_map(Event::PutProvider),
        3 => side_gen(Role::Consumer, CONSUMER_TENANT, PROVIDER_TENANT).prop_map(Event::PutConsumer),
        1 => Just(Event::DeleteProvider),
        1 => Just(Event::DeleteConsumer),
        1 => any::<bool>().prop_map(Event::ProviderReady),
        1 => any::<bool>().prop_map(Event::ConsumerReady),
        3 => (1i64..40).prop_map(Event::Tick),
    ]
}

#[derive(Clone, Debug, Default)]
struct World {
    provider: Option<SideGen>,
    consumer: Option<SideGen>,
    provider_ready: bool,
    consumer_ready: bool,
    minute: i64,
}

/// The rules, read independently of `decide`: should records flow? The two
/// slots are "the side in the first tenant" and "the side in the second";
/// either may be the Provider.
fn oracle(w: &World) -> bool {
    let (Some(a), Some(b)) = (&w.provider, &w.consumer) else { return false };
    if a.role == b.role {
        return false;
    }
    let (offer, ask) = if a.role == Role::Provider { (a, b) } else { (b, a) };
    let offered: BTreeSet<_> = offer.resources.iter().collect();
    a.id == b.id
        && a.counterpart == CONSUMER_TENANT
        && b.counterpart == PROVIDER_TENANT
        && a.legal == b.legal
        && ask.resources.iter().all(|r| offered.contains(r))
        && w.minute >= a.from.max(b.from)
        && w.minute < a.until.min(b.until)
        && w.provider_ready
        && w.consumer_ready
}

fn side(plan: &SideGen, tenant: &str) -> Side {
    Side { tenant: Some(tenant.into()), spec: plan.spec() }
}

/// The decision for one side, finding the other the way the controller does:
/// by agreement id in the counterpart tenant.
fn decision(
    me: &Side,
    other: Option<&Side>,
    other_tenant_ready: bool,
    my_ready: bool,
    previous: Option<AgreementPhase>,
    minute: i64,
) -> Decision {
    let known = [PROVIDER_TENANT, CONSUMER_TENANT];
    let counterpart = if !known.contains(&me.spec.counterpart_tenant.as_str()) {
        Counterpart::NoTenant
    } else {
        match other {
            Some(o)
                if o.tenant.as_deref() == Some(me.spec.counterpart_tenant.as_str())
                    && o.spec.agreement_id == me.spec.agreement_id =>
            {
                Counterpart::Found(o)
            }
            _ => Counterpart::Missing,
        }
    };
    let their_ready = match counterpart {
        Counterpart::Found(_) => other_tenant_ready,
        _ => false,
    };
    decide(&Inputs {
        me,
        counterpart,
        my_tenant_ready: my_ready,
        their_tenant_ready: their_ready,
        previous,
        now: at(minute).0,
    })
}

fn tenant_named(name: &str) -> CareRecordTenant {
    let mut t: CareRecordTenant = serde_yaml::from_str(&format!(
        "apiVersion: carerecord.dev/v1alpha1\nkind: CareRecordTenant\nmetadata: {{name: {name}}}\nspec:\n  displayName: P\n  odsCode: QYG\n  gateway: {{hostname: {name}.scr.example.nhs.uk}}\n"
    ))
    .unwrap();
    t.metadata.uid = Some(format!("uid-{name}"));
    t
}

fn agreement(plan: &SideGen, tenant: &str) -> SharingAgreement {
    let mut a = SharingAgreement::new("dsa", plan.spec());
    a.metadata.namespace = Some(format!("scr-{tenant}"));
    a.metadata.uid = Some(format!("uid-dsa-{tenant}"));
    a
}

/// Routes one side exposes, after checking each is GET-only and carries a
/// type both sides allow.
fn exposed_routes(plan: &SideGen, tenant: &str, d: &Decision, w: &World) -> Result<usize, TestCaseError> {
    let exposed = children(&agreement(plan, tenant), d, &tenant_named(tenant), &PlatformSettings::default());
    for r in &exposed.routes {
        let m = &r.spec.rules.as_ref().unwrap()[0].matches.as_ref().unwrap()[0];
        prop_assert!(matches!(m.method, Some(gateway_api::httproutes::HttpRouteRulesMatchesMethod::Get)));
        let path = m.path.as_ref().unwrap().value.clone().unwrap();
        let t = path.rsplit('/').next().unwrap();
        let both = [&w.provider, &w.consumer];
        prop_assert!(both.iter().all(|s| s.as_ref().is_some_and(|s| s.resources.contains(&t))), "{} exposed", t);
        prop_assert_eq!(plan.role, Role::Provider, "only a provider side exposes routes");
    }
    Ok(exposed.routes.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn routes_exist_if_and_only_if_the_agreement_is_active(events in prop::collection::vec(event(), 1..25)) {
        let mut w = World::default();
        let (mut p_prev, mut c_prev) = (None, None);
        for e in events {
            match e {
                Event::PutProvider(g) => w.provider = Some(g),
                Event::PutConsumer(g) => w.consumer = Some(g),
                Event::DeleteProvider => { w.provider = None; p_prev = None; }
                Event::DeleteConsumer => { w.consumer = None; c_prev = None; }
                Event::ProviderReady(r) => w.provider_ready = r,
                Event::ConsumerReady(r) => w.consumer_ready = r,
                Event::Tick(m) => w.minute += m,
            }
            let should_share = oracle(&w);
            let a_side = w.provider.as_ref().map(|g| side(g, PROVIDER_TENANT));
            let b_side = w.consumer.as_ref().map(|g| side(g, CONSUMER_TENANT));
            let mut routes = 0usize;
            if let (Some(plan), Some(me)) = (&w.provider, &a_side) {
                let d = decision(me, b_side.as_ref(), w.consumer_ready, w.provider_ready, p_prev, w.minute);
                prop_assert_eq!(d.phase == AgreementPhase::Active, should_share, "first side {:?} in {:?}", d, w);
                if d.phase == AgreementPhase::Active {
                    prop_assert!(d.recheck_at.is_some(), "an Active agreement is rechecked at its expiry");
                }
                routes += exposed_routes(plan, PROVIDER_TENANT, &d, &w)?;
                p_prev = Some(d.phase);
            }
            if let (Some(plan), Some(me)) = (&w.consumer, &b_side) {
                let d = decision(me, a_side.as_ref(), w.provider_ready, w.consumer_ready, c_prev, w.minute);
                prop_assert_eq!(d.phase == AgreementPhase::Active, should_share, "second side {:?} in {:?}", d, w);
                routes += exposed_routes(plan, CONSUMER_TENANT, &d, &w)?;
                c_prev = Some(d.phase);
            }
            prop_assert_eq!(routes > 0, should_share, "routes {} in {:?}", routes, w);
        }
    }

    #[test]
    fn an_active_agreement_is_revoked_when_the_other_side_goes(g in side_gen(Role::Provider, PROVIDER_TENANT, CONSUMER_TENANT)) {
        let me = side(&SideGen { role: Role::Provider, counterpart: CONSUMER_TENANT, ..g.clone() }, PROVIDER_TENANT);
        let d = decide(&Inputs { me: &me, counterpart: Counterpart::Missing, my_tenant_ready: true, their_tenant_ready: true, previous: Some(AgreementPhase::Active), now: at(g.from).0 });
        prop_assert_eq!(d.phase, AgreementPhase::Revoked);
        prop_assert!(d.shared_resources.is_empty());
    }
}

fn pair() -> (Side, Side) {
    let p = SideGen {
        role: Role::Provider,
        id: "DSA-1",
        counterpart: CONSUMER_TENANT,
        resources: POOL.to_vec(),
        legal: 0,
        from: 0,
        until: 100,
    };
    let c = SideGen {
        role: Role::Consumer,
        counterpart: PROVIDER_TENANT,
        resources: vec!["MedicationStatement"],
        ..p.clone()
    };
    (side(&p, PROVIDER_TENANT), side(&c, CONSUMER_TENANT))
}

fn decide_at(me: &Side, other: &Side, minute: i64) -> Decision {
    decide(&Inputs {
        me,
        counterpart: Counterpart::Found(other),
        my_tenant_ready: true,
        their_tenant_ready: true,
        previous: None,
        now: at(minute).0,
    })
}

#[test]
fn matching_sides_within_dates_are_active_and_recheck_at_expiry() {
    let (p, c) = pair();
    let d = decide_at(&p, &c, 10);
    assert_eq!(d.phase, AgreementPhase::Active);
    assert_eq!(d.shared_resources, ["MedicationStatement"]);
    assert_eq!(d.recheck_at, Some(at(100).0));
}

#[test]
fn a_consumer_cannot_widen_the_resource_types() {
    let (mut p, c) = pair();
    p.spec.resources = vec!["Patient".into()];
    let d = decide_at(&c, &p, 10);
    assert_eq!((d.phase, d.reason), (AgreementPhase::Invalid, AgreementReason::ResourcesNotOffered));
    assert!(d.message.contains("MedicationStatement"), "{}", d.message);
}

#[test]
fn the_earlier_expiry_ends_the_agreement() {
    let (p, mut c) = pair();
    c.spec.expires = at(50);
    assert_eq!(decide_at(&p, &c, 49).phase, AgreementPhase::Active);
    assert_eq!(decide_at(&p, &c, 50).phase, AgreementPhase::Expired);
}

#[test]
fn before_the_later_start_it_is_pending_until_then() {
    let (p, mut c) = pair();
    c.spec.valid_from = at(30);
    let d = decide_at(&p, &c, 10);
    assert_eq!((d.phase, d.reason), (AgreementPhase::Pending, AgreementReason::NotYetValid));
    assert_eq!(d.recheck_at, Some(at(30).0));
}

#[test]
fn sides_naming_other_tenants_are_invalid_and_say_so() {
    let (p, mut c) = pair();
    c.spec.counterpart_tenant = "lancashire".into();
    let d = decide_at(&p, &c, 10);
    assert_eq!((d.phase, d.reason), (AgreementPhase::Invalid, AgreementReason::CounterpartMismatch));
    assert!(d.message.contains("lancashire"), "{}", d.message);
}

#[test]
fn a_tenant_that_is_not_ready_holds_the_agreement_pending() {
    let (p, c) = pair();
    let d = decide(&Inputs {
        me: &p,
        counterpart: Counterpart::Found(&c),
        my_tenant_ready: true,
        their_tenant_ready: false,
        previous: None,
        now: at(10).0,
    });
    assert_eq!((d.phase, d.reason), (AgreementPhase::Pending, AgreementReason::TenantNotReady));
    assert!(d.message.contains(CONSUMER_TENANT));
}

#[test]
fn a_tenant_cannot_share_with_itself() {
    let (mut p, c) = pair();
    p.spec.counterpart_tenant = PROVIDER_TENANT.into();
    assert_eq!(decide_at(&p, &c, 10).reason, AgreementReason::SelfSharing);
}

#[test]
fn waiting_and_expiry_at_the_agreed_date_do_not_warn_but_disagreement_and_revocation_do() {
    for quiet in [
        AgreementReason::CounterpartMissing,
        AgreementReason::CounterpartTenantMissing,
        AgreementReason::TenantNotReady,
        AgreementReason::NotYetValid,
        AgreementReason::Expired,
        AgreementReason::Active,
    ] {
        assert!(!quiet.warns(), "{quiet}");
    }
    for loud in [AgreementReason::ResourcesNotOffered, AgreementReason::Revoked, AgreementReason::SelfSharing] {
        assert!(loud.warns(), "{loud}");
    }
}
