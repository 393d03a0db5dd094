//! SharingAgreement on a real API server: two tenants agree, records are
//! exposed GET-only; withdrawal, expiry and mismatch take exposure away.

use std::time::{Duration, Instant};

use e2e::*;
use ics_operator::api::SharingAgreement;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

fn side(name: &str, ns: &str, role: &str, id: &str, counterpart: &str, resources: &[&str], expires: &str) -> Value {
    json!({
        "apiVersion": "carerecord.dev/v1alpha1",
        "kind": "SharingAgreement",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "role": role,
            "agreementId": id,
            "counterpartTenant": counterpart,
            "purpose": "DirectCare",
            "legalBasis": {"article6": "PublicTask", "article9": "HealthOrSocialCare"},
            "resources": resources,
            "excludedCategories": ["SexualHealth"],
            "validFrom": "2026-01-01T00:00:00Z",
            "expires": expires,
            "access": "ReadOnly",
        }
    })
}

const NEXT_YEAR: &str = "2027-11-23T00:00:00Z";

fn agreements(client: &Client, ns: &str) -> Api<SharingAgreement> {
    Api::namespaced(client.clone(), ns)
}

async fn put(client: &Client, manifest: &Value) -> Result<SharingAgreement, kube::Error> {
    let ns = manifest["metadata"]["namespace"].as_str().unwrap();
    let name = manifest["metadata"]["name"].as_str().unwrap();
    agreements(client, ns).patch(name, &PatchParams::apply("e2e-test").force(), &Patch::Apply(manifest)).await
}

async fn wait_phase(client: &Client, ns: &str, name: &str, phase: &str) -> SharingAgreement {
    let api = agreements(client, ns);
    eventually(&format!("agreement {ns}/{name} {phase}"), || async {
        let a = api.get_opt(name).await.ok()??;
        (a.status.as_ref()?.phase?.as_str() == phase).then_some(a)
    })
    .await
}

async fn share_routes(client: &Client, ns: &str) -> Vec<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &http_routes());
    api.list(&ListParams::default().labels("carerecord.dev/agreement")).await.unwrap().items
}

async fn two_tenants(prefix: &str) -> (Client, (String, String), (String, String)) {
    shared_operator();
    let client = client().await;
    let (p_prefix, c_prefix) = (format!("{prefix}-p"), format!("{prefix}-c"));
    let (p, c) = tokio::join!(ready_tenant(&client, &p_prefix, json!({})), ready_tenant(&client, &c_prefix, json!({})));
    (client, p, c)
}

async fn active_pair(prefix: &str, expires: &str) -> (Client, (String, String), (String, String)) {
    let (client, p, c) = two_tenants(prefix).await;
    agree(client, p, c, expires).await
}

/// Both sides of an agreement between two Ready tenants, waited until Active.
async fn agree(
    client: Client,
    (p, p_ns): (String, String),
    (c, c_ns): (String, String),
    expires: &str,
) -> (Client, (String, String), (String, String)) {
    let types = ["MedicationStatement", "AllergyIntolerance", "CarePlan"];
    put(&client, &side("share", &p_ns, "Provider", "DSA-E2E-1", &c, &types, expires)).await.unwrap();
    put(&client, &side("receive", &c_ns, "Consumer", "DSA-E2E-1", &p, &types, expires)).await.unwrap();
    wait_phase(&client, &p_ns, "share", "Active").await;
    wait_phase(&client, &c_ns, "receive", "Active").await;
    (client, (p, p_ns), (c, c_ns))
}

#[tokio::test]
async fn matching_sides_become_active_with_get_only_routes_to_the_record_gateway_and_a_policy() {
    let (client, (p, p_ns), (c, c_ns)) = active_pair("sa-on", NEXT_YEAR).await;
    let routes = eventually("three routes", || async {
        let r = share_routes(&client, &p_ns).await;
        (r.len() == 3).then_some(r)
    })
    .await;
    for route in &routes {
        let m = &route.data["spec"]["rules"][0]["matches"][0];
        assert_eq!(m["method"], "GET");
        assert!(m["path"]["value"].as_str().unwrap().starts_with(&format!("/federation/{c}/fhir/")), "{m}");
        assert_eq!(route.data["spec"]["hostnames"][0], format!("{p}.scr.example.nhs.uk"));
    }
    for route in &routes {
        let backend = &route.data["spec"]["rules"][0]["backendRefs"][0];
        assert_eq!(backend["name"], "record-gateway", "federation goes through the provider's record gateway");
    }
    // No network path opens from the consumer's namespace to the provider.
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &p_ns).list(&Default::default()).await.unwrap();
    assert!(
        !policies.items.iter().any(|p| serde_json::to_string(&p.spec).unwrap().contains(&c_ns)),
        "a NetworkPolicy admits the consumer namespace"
    );
    let consumer = agreements(&client, &c_ns).get("receive").await.unwrap();
    assert_eq!(
        consumer.status.unwrap().federation_endpoint.as_deref(),
        Some(format!("https://{p}.scr.example.nhs.uk/federation/{c}/fhir").as_str())
    );
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &p_ns);
    eventually("sharing policy lists the agreement", || async {
        let cm = cms.get("sharing-policy").await.ok()?;
        cm.data?.get("policy.yaml")?.contains("DSA-E2E-1").then_some(())
    })
    .await;
    eventually("provider tenant counts 1 active agreement", || async {
        (tenants(&client).get(&p).await.ok()?.status?.active_agreements == Some(1)).then_some(())
    })
    .await;
    remove_tenant(&client, &p).await;
    remove_tenant(&client, &c).await;
}

#[tokio::test]
async fn deleting_the_consumer_side_revokes_and_removes_the_routes() {
    let (client, (p, p_ns), (c, c_ns)) = active_pair("sa-rev", NEXT_YEAR).await;
    eventually("routes", || async { (share_routes(&client, &p_ns).await.len() == 3).then_some(()) }).await;
    let start = Instant::now();
    agreements(&client, &c_ns).delete("receive", &DeleteParams::default()).await.unwrap();
    let revoked = wait_phase(&client, &p_ns, "share", "Revoked").await;
    eventually("routes removed", || async { share_routes(&client, &p_ns).await.is_empty().then_some(()) }).await;
    eprintln!("measured: consumer side deleted -> provider routes gone in {} ms", start.elapsed().as_millis());
    let active = revoked.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Active").unwrap();
    assert!(active.message.contains("withdrawn"), "{}", active.message);
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &p_ns);
    eventually("sharing policy emptied", || async {
        let cm = cms.get("sharing-policy").await.ok()?;
        (!cm.data?.get("policy.yaml")?.contains("DSA-E2E-1")).then_some(())
    })
    .await;
    remove_tenant(&client, &p).await;
    remove_tenant(&client, &c).await;
}

#[tokio::test]
async fn an_agreement_expires_at_its_instant_and_its_routes_go() {
    let (client, provider, consumer) = two_tenants("sa-exp").await;
    // The instant is set once both tenants are Ready, so however long that
    // took, the agreement has time to be seen Active before it expires.
    let expires_at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30);
    let (client, (p, p_ns), (c, _)) = agree(client, provider, consumer, &expires_at.to_string()).await;
    eventually("routes", || async { (share_routes(&client, &p_ns).await.len() == 3).then_some(()) }).await;
    wait_phase(&client, &p_ns, "share", "Expired").await;
    eventually("routes removed", || async { share_routes(&client, &p_ns).await.is_empty().then_some(()) }).await;
    let late = jiff::Timestamp::now().duration_since(expires_at);
    eprintln!("measured: expiry instant -> routes gone in {} ms", late.as_millis());
    remove_tenant(&client, &p).await;
    remove_tenant(&client, &c).await;
}

#[tokio::test]
async fn sides_naming_different_tenants_stay_invalid_and_say_why() {
    let (client, (p, p_ns), (c, c_ns)) = two_tenants("sa-mis").await;
    put(&client, &side("share", &p_ns, "Provider", "DSA-E2E-2", &c, &["Patient"], NEXT_YEAR)).await.unwrap();
    put(&client, &side("receive", &c_ns, "Consumer", "DSA-E2E-2", "somewhere-else", &["Patient"], NEXT_YEAR))
        .await
        .unwrap();
    let a = wait_phase(&client, &p_ns, "share", "Invalid").await;
    let matched = a.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Matched").unwrap();
    assert_eq!(matched.reason, "CounterpartMismatch");
    assert!(matched.message.contains("somewhere-else"), "{}", matched.message);
    assert!(share_routes(&client, &p_ns).await.is_empty());
    remove_tenant(&client, &p).await;
    remove_tenant(&client, &c).await;
}

#[tokio::test]
async fn a_consumer_cannot_widen_the_resource_types() {
    let (client, (p, p_ns), (c, c_ns)) = two_tenants("sa-wide").await;
    put(&client, &side("share", &p_ns, "Provider", "DSA-E2E-3", &c, &["MedicationStatement"], NEXT_YEAR))
        .await
        .unwrap();
    put(
        &client,
        &side("receive", &c_ns, "Consumer", "DSA-E2E-3", &p, &["MedicationStatement", "Observation"], NEXT_YEAR),
    )
    .await
    .unwrap();
    for (ns, name) in [(&p_ns, "share"), (&c_ns, "receive")] {
        let a = wait_phase(&client, ns, name, "Invalid").await;
        let matched = a.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Matched").unwrap();
        assert_eq!(matched.reason, "ResourcesNotOffered", "{ns}/{name}");
        assert!(matched.message.contains("Observation"), "{}", matched.message);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(share_routes(&client, &p_ns).await.is_empty());
    remove_tenant(&client, &p).await;
    remove_tenant(&client, &c).await;
}

#[tokio::test]
async fn dates_in_the_wrong_order_are_rejected_by_the_api_server() {
    let client = client().await;
    let mut bad = side("backwards", "default", "Provider", "DSA-E2E-4", "x", &["Patient"], "2025-01-01T00:00:00Z");
    bad["spec"]["validFrom"] = json!("2026-01-01T00:00:00Z");
    let err = put(&client, &bad).await.unwrap_err();
    assert!(err.to_string().contains("validFrom must be before expires"), "{err}");
}

#[tokio::test]
async fn an_unknown_purpose_is_rejected_by_the_api_server() {
    let client = client().await;
    let mut bad = side("marketing", "default", "Provider", "DSA-E2E-5", "x", &["Patient"], NEXT_YEAR);
    bad["spec"]["purpose"] = json!("Marketing");
    let err = put(&client, &bad).await.unwrap_err();
    assert!(err.to_string().contains("DirectCare"), "{err}");
}
