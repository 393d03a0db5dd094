//! No tenant takes another tenant's namespace or hostname, or a platform
//! namespace; generated credentials of an existing database are never
//! silently regenerated. On a real API server, with the operator running as
//! the chart's ServiceAccount.

use e2e::*;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::json;

const STATEFULSET: &str = "    mode: StatefulSet\n    storageSize: 1Gi\n    deletionPolicy: Delete";

fn with_spec(mut manifest: serde_json::Value, field: &str, value: serde_json::Value) -> serde_json::Value {
    manifest["spec"][field] = value;
    manifest
}

/// Everything about a namespace a tenant could have changed.
async fn fingerprint(client: &kube::Client, namespace: &str) -> (Option<String>, Vec<String>, Vec<String>) {
    let ns = Api::<Namespace>::all(client.clone()).get(namespace).await.unwrap();
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), namespace).list(&Default::default()).await.unwrap();
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), namespace).list(&Default::default()).await.unwrap();
    (
        ns.metadata.resource_version,
        policies.items.iter().map(|p| p.metadata.resource_version.clone().unwrap_or_default()).collect(),
        bindings.items.iter().map(|b| b.metadata.resource_version.clone().unwrap_or_default()).collect(),
    )
}

#[tokio::test]
async fn a_tenant_naming_another_tenants_namespace_gets_a_conflict_and_changes_nothing() {
    shared_operator();
    let client = client().await;
    let (owner, ns) = ready_tenant(&client, "owner", json!({})).await;
    let before = fingerprint(&client, &ns).await;

    let intruder = unique("intruder");
    apply_tenant(&client, &with_spec(tenant(&intruder, STATEFULSET), "namespace", json!(ns))).await.unwrap();
    let conflict = wait_condition(&client, &intruder, "NamespaceReady", "False").await;
    assert_eq!(conflict.reason, "NamespaceConflict");
    assert!(conflict.message.contains(&format!("belongs to tenant {owner}")), "{}", conflict.message);
    eventually("a Warning Event naming the conflict", || async {
        let events = tenant_events(&client, &intruder).await;
        events
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("NamespaceConflict"))
            .then_some(())
    })
    .await;
    assert_eq!(fingerprint(&client, &ns).await, before, "the intruder changed the owner's namespace");

    // Deleting the intruder leaves the owner's namespace and data alone.
    remove_tenant(&client, &intruder).await;
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    assert!(namespace.metadata.deletion_timestamp.is_none());
    assert_eq!(namespace.labels().get("carerecord.dev/tenant"), Some(&owner));
    wait_ready(&client, &owner).await;
    remove_tenant(&client, &owner).await;
}

#[tokio::test]
async fn a_tenant_naming_a_platform_namespace_is_refused_at_apply_and_changes_nothing() {
    let client = client().await;
    let namespaces = Api::<Namespace>::all(client.clone());
    let platform = "gateway-system";
    if namespaces.get_opt(platform).await.unwrap().is_none() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": platform}})).unwrap();
        let _ = namespaces.create(&PostParams::default(), &ns).await;
    }
    let before = fingerprint(&client, platform).await;
    let name = unique("takeover");
    let err = apply_tenant(&client, &with_spec(tenant(&name, STATEFULSET), "namespace", json!(platform)))
        .await
        .expect_err("the chart's admission policy let a tenant name the Gateway's namespace");
    assert!(err.to_string().contains("is reserved by the platform"), "{err}");
    assert_eq!(fingerprint(&client, platform).await, before, "{platform} changed");
}

#[tokio::test]
async fn a_tenant_naming_an_existing_namespace_of_no_tenant_gets_a_conflict_and_writes_nothing_there() {
    shared_operator();
    let client = client().await;
    let namespaces = Api::<Namespace>::all(client.clone());
    let existing = unique("someone-elses");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": existing}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let before = fingerprint(&client, &existing).await;
    let name = unique("squatter");
    apply_tenant(&client, &with_spec(tenant(&name, STATEFULSET), "namespace", json!(existing))).await.unwrap();
    let conflict = wait_condition(&client, &name, "NamespaceReady", "False").await;
    assert_eq!(conflict.reason, "NamespaceConflict");
    assert!(conflict.message.contains("does not belong to a tenant"), "{}", conflict.message);
    assert_eq!(fingerprint(&client, &existing).await, before, "the tenant changed {existing}");
    let ns = namespaces.get(&existing).await.unwrap();
    assert!(!ns.labels().contains_key("pod-security.kubernetes.io/enforce"));
    remove_tenant(&client, &name).await;
    assert!(namespaces.get(&existing).await.unwrap().metadata.deletion_timestamp.is_none(), "deleted with the tenant");
    let _ = namespaces.delete(&existing, &DeleteParams::default()).await;
}

#[tokio::test]
async fn a_kubernetes_system_namespace_is_refused_at_apply() {
    let client = client().await;
    let name = unique("kube");
    let err = apply_tenant(&client, &with_spec(tenant(&name, STATEFULSET), "namespace", json!("kube-system")))
        .await
        .expect_err("kube-system accepted");
    assert!(err.to_string().contains("namespace may not be default or a kube-* namespace"), "{err}");
}

#[tokio::test]
async fn a_second_tenant_with_the_same_hostname_gets_a_condition_and_no_route() {
    shared_operator();
    let client = client().await;
    let (first, _) = ready_tenant(&client, "host1", json!({})).await;
    let second = unique("host2");
    let hostname = format!("{first}.scr.example.nhs.uk");
    let manifest = with_spec(tenant(&second, STATEFULSET), "gateway", json!({"hostname": hostname}));
    apply_tenant(&client, &manifest).await.unwrap();
    let conflict = wait_condition(&client, &second, "GatewayReady", "False").await;
    assert_eq!(conflict.reason, "HostnameConflict");
    assert!(conflict.message.contains(&format!("held by tenant {first}")), "{}", conflict.message);
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace_of(&second), &http_routes());
    assert!(routes.list(&Default::default()).await.unwrap().items.is_empty(), "the second tenant got a route");
    wait_ready(&client, &first).await;
    remove_tenant(&client, &second).await;
    remove_tenant(&client, &first).await;
}

#[tokio::test]
async fn lost_credentials_of_an_existing_database_are_reported_not_regenerated() {
    shared_operator();
    let client = client().await;
    let (name, ns) = ready_tenant(&client, "lost", json!({})).await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    secrets.delete("records-db-credentials", &DeleteParams::default()).await.unwrap();
    let condition = wait_condition(&client, &name, "DatabaseReady", "False").await;
    assert_eq!(condition.reason, "CredentialsMissing");
    assert!(condition.message.contains("records-db-credentials"), "{}", condition.message);
    // Give the operator every chance to (wrongly) create it again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(secrets.get_opt("records-db-credentials").await.unwrap().is_none(), "credentials were regenerated");
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn the_database_serves_tls_from_a_generated_ca_and_the_store_verifies_it() {
    shared_operator();
    let client = client().await;
    let (name, ns) = ready_tenant(&client, "tls", json!({})).await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let tls = secrets.get("records-db-tls").await.unwrap().data.unwrap();
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(!tls[key].0.is_empty(), "{key} missing");
    }
    let credentials = secrets.get("records-db-credentials").await.unwrap().data.unwrap();
    let jdbc = String::from_utf8(credentials["jdbc-uri"].0.clone()).unwrap();
    assert!(jdbc.ends_with("?sslmode=verify-full&sslrootcert=/etc/carerecord/db-ca/ca.crt"), "{jdbc}");
    assert_ne!(credentials["username"].0, b"postgres", "the record store connects as the superuser");
    remove_tenant(&client, &name).await;
}
