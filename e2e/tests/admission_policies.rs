//! The chart's ValidatingAdmissionPolicies on the real API server
//! (charts/ics-operator/templates/admission-policies.yaml, docs/admission.md):
//! the operator's identity writes only in tenant namespaces and its own;
//! what the operator owns is changed only by the operator (tenant admins
//! included); connectors run only allowed images and never with the
//! database's credentials. Each request is made as the identity in question
//! (impersonated by the test's admin), under the chart's RBAC, so every
//! refusal here is one RBAC alone would have allowed.

use e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const OPERATOR_SCOPE: &str = "ics-operator-operator-scope";
const OWNED_OBJECTS: &str = "ics-operator-owned-objects";
const CONNECTORS: &str = "ics-operator-connectors";

/// A client acting as `user` in `groups` (the test's admin impersonates it).
async fn client_as(user: &str, groups: &[&str]) -> Client {
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info.impersonate = Some(user.into());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).expect("impersonating client")
}

/// A member of the tenant's admins group (bound to the tenant-admin role in
/// its namespace by the operator).
async fn tenant_admin(tenant: &str) -> Client {
    client_as(&format!("alice@{tenant}.example.nhs.uk"), &[&format!("scr:{tenant}-admins"), "system:authenticated"])
        .await
}

/// The refusal of `result`, which must come from the named admission policy.
fn refused_by<T: std::fmt::Debug>(policy: &str, result: Result<T, kube::Error>) -> String {
    match result {
        Ok(value) => panic!("the API server allowed what policy {policy} must refuse: {value:?}"),
        Err(kube::Error::Api(e)) => {
            assert!(
                e.message.contains(&format!("ValidatingAdmissionPolicy '{policy}'")),
                "refused, but not by policy {policy}: {e:?}"
            );
            e.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("manifest")
}

/// A namespace created by the admin with the given labels; deleted by `drop_namespace`.
async fn namespace_with(admin: &Client, prefix: &str, labels: Value) -> String {
    let name = unique(prefix);
    let ns: Namespace = object(json!({"metadata": {"name": name, "labels": labels}}));
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &ns).await.expect("namespace created");
    name
}

async fn drop_namespace(admin: &Client, name: &str) {
    let _ = Api::<Namespace>::all(admin.clone()).delete(name, &DeleteParams::background()).await;
}

fn config_map(name: &str) -> ConfigMap {
    object(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
}

// The operator's identity writes only where it should.

#[tokio::test]
async fn operator_identity_cannot_create_a_deployment_in_kube_system() {
    let operator = operator_client().await;
    let deployment: Deployment = object(json!({
        "metadata": {"name": unique("e2e-intruder")},
        "spec": {
            "selector": {"matchLabels": {"app": "intruder"}},
            "template": {"metadata": {"labels": {"app": "intruder"}},
                         "spec": {"containers": [{"name": "c", "image": "ghcr.io/carerecord/connector-fhir:0.1.0"}]}}
        }
    }));
    let result =
        Api::<Deployment>::namespaced(operator, "kube-system").create(&PostParams::default(), &deployment).await;
    let message = refused_by(OPERATOR_SCOPE, result);
    assert!(message.contains("only in tenant namespaces"), "{message}");
    assert!(message.contains("namespace kube-system is not one"), "{message}");
}

#[tokio::test]
async fn operator_identity_cannot_create_a_role_binding_in_default() {
    let operator = operator_client().await;
    let binding: RoleBinding = object(json!({
        "metadata": {"name": unique("e2e-intruder")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "carerecord-tenant-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "scr:intruders"}]
    }));
    let result = Api::<RoleBinding>::namespaced(operator, "default").create(&PostParams::default(), &binding).await;
    let message = refused_by(OPERATOR_SCOPE, result);
    assert!(message.contains("namespace default is not one"), "{message}");
}

#[tokio::test]
async fn operator_identity_cannot_delete_a_namespace_without_the_tenant_label() {
    let (admin, operator) = (client().await, operator_client().await);
    let name = namespace_with(&admin, "e2e-platform", json!({})).await;
    let result = Api::<Namespace>::all(operator).delete(&name, &DeleteParams::default()).await;
    let message = refused_by(OPERATOR_SCOPE, result);
    assert!(message.contains("may change or delete only tenant namespaces"), "{message}");
    let still = Api::<Namespace>::all(admin.clone()).get(&name).await.expect("namespace kept");
    assert!(still.metadata.deletion_timestamp.is_none(), "namespace {name} is being deleted");
    drop_namespace(&admin, &name).await;
}

#[tokio::test]
async fn operator_identity_cannot_create_a_namespace_without_the_tenant_label() {
    let operator = operator_client().await;
    let ns: Namespace = object(json!({"metadata": {"name": unique("e2e-unlabelled")}}));
    let result = Api::<Namespace>::all(operator).create(&PostParams::default(), &ns).await;
    let message = refused_by(OPERATOR_SCOPE, result);
    assert!(message.contains("may create a namespace only labelled carerecord.dev/tenant"), "{message}");
}

#[tokio::test]
async fn operator_identity_cannot_claim_a_namespace_by_labelling_it() {
    let (admin, operator) = (client().await, operator_client().await);
    let name = namespace_with(&admin, "e2e-platform", json!({})).await;
    let patch = json!({"metadata": {"labels": {"carerecord.dev/tenant": "intruder"}}});
    let result = Api::<Namespace>::all(operator).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
    refused_by(OPERATOR_SCOPE, result);
    drop_namespace(&admin, &name).await;
}

#[tokio::test]
async fn operator_identity_cannot_move_a_tenant_namespace_to_another_tenant() {
    let (admin, operator) = (client().await, operator_client().await);
    let name = namespace_with(&admin, "e2e-tenant", json!({"carerecord.dev/tenant": "alpha"})).await;
    let patch = json!({"metadata": {"labels": {"carerecord.dev/tenant": "beta"}}});
    let result = Api::<Namespace>::all(operator).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
    let message = refused_by(OPERATOR_SCOPE, result);
    assert!(message.contains("it belongs to tenant alpha"), "{message}");
    drop_namespace(&admin, &name).await;
}

#[tokio::test]
async fn operator_identity_can_create_a_config_map_in_a_tenant_labelled_namespace() {
    let (admin, operator) = (client().await, operator_client().await);
    let name = namespace_with(&admin, "e2e-tenant", json!({"carerecord.dev/tenant": "alpha"})).await;
    Api::<ConfigMap>::namespaced(operator, &name)
        .create(&PostParams::default(), &config_map("connector-config"))
        .await
        .expect("the operator writes in a tenant namespace");
    drop_namespace(&admin, &name).await;
}

// What the operator owns is changed only by the operator.

#[tokio::test]
async fn tenant_admin_cannot_edit_the_sharing_policy_config_map() {
    shared_operator();
    let client = client().await;
    let (name, ns) = ready_tenant(&client, "adm-policy", json!({})).await;
    let admin = tenant_admin(&name).await;
    let patch = json!({"data": {"policy.json": "{\"agreements\": [\"anything\"]}"}});
    let result = Api::<ConfigMap>::namespaced(admin, &ns)
        .patch("sharing-policy", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    let message = refused_by(OWNED_OBJECTS, result);
    assert!(message.contains(&format!("configmaps {ns}/sharing-policy is managed by ics-operator")), "{message}");
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn tenant_admin_cannot_remove_the_operators_label_to_take_an_object_over() {
    shared_operator();
    let client = client().await;
    let (name, ns) = ready_tenant(&client, "adm-label", json!({})).await;
    let admin = tenant_admin(&name).await;
    let patch = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
    let result = Api::<ConfigMap>::namespaced(admin, &ns)
        .patch("sharing-policy", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    let message = refused_by(OWNED_OBJECTS, result);
    assert!(message.contains("app.kubernetes.io/managed-by=ics-operator may not be removed"), "{message}");
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn tenant_admin_cannot_delete_the_database_credentials_secret() {
    shared_operator();
    let client = client().await;
    let (name, ns) = ready_tenant(&client, "adm-secret", json!({})).await;
    let admin = tenant_admin(&name).await;
    let result = Api::<Secret>::namespaced(admin, &ns).delete("records-db-credentials", &DeleteParams::default()).await;
    let message = refused_by(OWNED_OBJECTS, result);
    assert!(message.contains("only the operator may delete it"), "{message}");
    let secret = Api::<Secret>::namespaced(client.clone(), &ns).get("records-db-credentials").await.expect("kept");
    assert!(secret.metadata.deletion_timestamp.is_none());
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn tenant_admin_cannot_read_the_database_credentials_secret() {
    shared_operator();
    let client = client().await;
    let (name, ns) = ready_tenant(&client, "adm-read", json!({})).await;
    let admin = tenant_admin(&name).await;
    match Api::<Secret>::namespaced(admin, &ns).get("records-db-credentials").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("a tenant admin read the database credentials: {other:?}"),
    }
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn tenant_admin_can_create_and_replace_a_secret_for_a_connector() {
    shared_operator();
    let client = client().await;
    let (name, ns) = ready_tenant(&client, "adm-own", json!({})).await;
    let secrets = Api::<Secret>::namespaced(tenant_admin(&name).await, &ns);
    let secret: Secret = object(json!({"metadata": {"name": "emis-credentials"}, "stringData": {"token": "t0"}}));
    secrets.create(&PostParams::default(), &secret).await.expect("a tenant admin creates a connector Secret");
    let rotated = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "emis-credentials"}, "stringData": {"token": "t1"}});
    secrets
        .patch("emis-credentials", &PatchParams::apply("alice").force(), &Patch::Apply(&rotated))
        .await
        .expect("a tenant admin rotates it with server-side apply");
    secrets.delete("emis-credentials", &DeleteParams::default()).await.expect("and deletes it");
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn tenant_admin_cannot_create_an_object_under_the_operators_label() {
    shared_operator();
    let client = client().await;
    let (name, ns) = ready_tenant(&client, "adm-forge", json!({})).await;
    let forged: ConfigMap = object(json!({
        "metadata": {"name": "forged", "labels": {"app.kubernetes.io/managed-by": "ics-operator", "carerecord.dev/tenant": name}},
        "data": {"k": "v"}
    }));
    let result =
        Api::<ConfigMap>::namespaced(tenant_admin(&name).await, &ns).create(&PostParams::default(), &forged).await;
    let message = refused_by(OWNED_OBJECTS, result);
    assert!(message.contains("only the operator may create objects with that label"), "{message}");
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn cluster_admin_can_still_change_what_the_operator_owns() {
    let admin = client().await;
    let ns = namespace_with(&admin, "e2e-owned", json!({})).await;
    let owned: ConfigMap = object(json!({
        "metadata": {"name": "owned", "labels": {"app.kubernetes.io/managed-by": "ics-operator"}}, "data": {"k": "v"}
    }));
    let api = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    api.create(&PostParams::default(), &owned).await.expect("system:masters creates it");
    let patch = json!({"data": {"k": "changed"}});
    api.patch("owned", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("system:masters changes it");
    api.delete("owned", &DeleteParams::default()).await.expect("system:masters deletes it");
    drop_namespace(&admin, &ns).await;
}

// Connectors: allowed images only, never the database's credentials.

fn connector_with(namespace: &str, spec: Value) -> Value {
    let mut manifest = connector(&unique("conn"), namespace, "generic-fhir-r4", "https://fhir.example.nhs.uk/R4");
    if let (Some(s), Value::Object(extra)) = (manifest["spec"].as_object_mut(), spec) {
        s.extend(extra);
    }
    manifest
}

/// Creates the connector as the admin, as a dry run (admission runs in full,
/// nothing is stored).
async fn dry_run_create(manifest: &Value) -> Result<ics_operator::api::ProviderConnector, kube::Error> {
    let client = client().await;
    let ns = manifest["metadata"]["namespace"].as_str().expect("namespaced");
    let connector: ics_operator::api::ProviderConnector = object(manifest.clone());
    connectors(&client, ns).create(&PostParams { dry_run: true, ..PostParams::default() }, &connector).await
}

#[tokio::test]
async fn connector_with_an_image_from_another_registry_is_refused() {
    let client = client().await;
    let manifest = connector_with("default", json!({"image": "evil.example/miner:1"}));
    let message = refused_by(CONNECTORS, apply_connector(&client, &manifest).await);
    assert!(message.contains("spec.image evil.example/miner:1 is not from an allowed registry"), "{message}");
    assert!(message.contains("connector images must start with one of: ghcr.io/carerecord/"), "{message}");
}

#[tokio::test]
async fn connector_with_an_image_from_an_allowed_registry_is_accepted() {
    let manifest = connector_with("default", json!({"image": "ghcr.io/carerecord/connector-fhir:0.2.0"}));
    let accepted = dry_run_create(&manifest).await.expect("an allowed image passes admission");
    assert_eq!(
        accepted.spec.image.as_deref(),
        Some("ghcr.io/carerecord/connector-fhir:0.2.0"),
        "{}",
        accepted.name_any()
    );
}

#[tokio::test]
async fn connector_using_the_database_credentials_is_refused() {
    let manifest = connector_with(
        "default",
        json!({"endpoint": {"url": "https://fhir.example.nhs.uk/R4", "credentialsSecretRef": {"name": "records-db-credentials"}}}),
    );
    let message = refused_by(CONNECTORS, dry_run_create(&manifest).await);
    assert!(message.contains("holds the tenant's database credentials"), "{message}");
}
