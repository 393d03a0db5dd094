//! Patient data outlives every way of deleting a `Retain` tenant: a
//! foreground or background cascade, with the operator running or stopped,
//! and a finalizer removed by hand. Only the operator, acting on
//! `deletionPolicy: Delete`, deletes it. A tenant re-created over retained
//! data re-attaches to it, never to a new empty database.
//!
//! These tests stop and start operators, so they run one at a time, each
//! with an operator of its own.

use std::time::Duration;

use e2e::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use serde_json::json;

/// No database mode: the operator picks one (CloudNativePG is served here,
/// so a fresh tenant would get a Cluster; StatefulSet is asked for below so
/// there are real PVCs to keep).
const RETAIN: &str = "    mode: StatefulSet\n    storageSize: 1Gi";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Identities of what holds the tenant's data: namespace, database, volume
/// and every generated Secret.
async fn data(client: &kube::Client, ns: &str) -> Vec<String> {
    let namespace = Api::<Namespace>::all(client.clone()).get(ns).await.expect("namespace kept");
    assert!(namespace.metadata.deletion_timestamp.is_none(), "namespace {ns} is being deleted");
    let mut uids = vec![namespace.uid().unwrap()];
    uids.push(
        Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get("records-db")
            .await
            .expect("database kept")
            .uid()
            .unwrap(),
    );
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns).get("data-records-db-0").await;
    uids.push(claim.expect("volume claim kept").uid().unwrap());
    for secret in ["records-db-credentials", "records-db-superuser", "records-db-tls"] {
        uids.push(Api::<Secret>::namespaced(client.clone(), ns).get(secret).await.expect(secret).uid().unwrap());
    }
    uids
}

async fn onboard(client: &kube::Client, prefix: &str) -> (String, String, Vec<String>) {
    let name = unique(prefix);
    apply_tenant(client, &tenant(&name, RETAIN)).await.expect("tenant accepted");
    let ns = namespace_of(&name);
    accept_routes(client, &ns).await;
    wait_ready(client, &name).await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    eventually("the database's volume claim", || async { claims.get_opt("data-records-db-0").await.ok()? }).await;
    let before = data(client, &ns).await;
    (name, ns, before)
}

/// Waits until garbage collection has acted on the tenant's dependents
/// (the record store Deployment has an ownerReference to the tenant).
async fn collected(client: &kube::Client, ns: &str) {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    eventually("garbage collection of the record store", || async {
        deployments.get_opt("record-store").await.ok()?.is_none().then_some(())
    })
    .await;
}

async fn gone(client: &kube::Client, name: &str) {
    eventually("tenant gone", || async { tenants(client).get_opt(name).await.ok()?.is_none().then_some(()) }).await;
}

/// Deletes the tenant the way a user does, and waits until it is gone,
/// leaving what `Retain` keeps.
async fn delete_tenant(client: &kube::Client, name: &str) {
    tenants(client).delete(name, &DeleteParams::default()).await.unwrap();
    gone(client, name).await;
}

async fn erase(client: &kube::Client, ns: &str) {
    let _ = Api::<Namespace>::all(client.clone()).delete(ns, &DeleteParams::default()).await;
}

fn cascade(policy: PropagationPolicy) -> DeleteParams {
    DeleteParams { propagation_policy: Some(policy), ..DeleteParams::default() }
}

#[tokio::test]
async fn foreground_cascade_with_the_operator_stopped_keeps_the_data() {
    let _one = ONE_AT_A_TIME.lock().await;
    let client = client().await;
    let operator = Operator::start();
    let (name, ns, before) = onboard(&client, "fg-stopped").await;
    operator.stop();

    tenants(&client).delete(&name, &cascade(PropagationPolicy::Foreground)).await.unwrap();
    collected(&client, &ns).await;
    assert_eq!(data(&client, &ns).await, before);

    // The operator, back, finishes the deletion under Retain: still kept.
    let _operator = Operator::start();
    gone(&client, &name).await;
    assert_eq!(data(&client, &ns).await, before);
    erase(&client, &ns).await;
}

#[tokio::test]
async fn foreground_cascade_with_the_operator_running_keeps_the_data() {
    let _one = ONE_AT_A_TIME.lock().await;
    let client = client().await;
    let _operator = Operator::start();
    let (name, ns, before) = onboard(&client, "fg-running").await;
    tenants(&client).delete(&name, &cascade(PropagationPolicy::Foreground)).await.unwrap();
    gone(&client, &name).await;
    // Let the garbage collector finish whatever it would do.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(data(&client, &ns).await, before);
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    assert_eq!(namespace.labels().get("carerecord.dev/retained").map(String::as_str), Some("true"));
    erase(&client, &ns).await;
}

#[tokio::test]
async fn background_cascade_with_the_operator_running_keeps_the_data() {
    let _one = ONE_AT_A_TIME.lock().await;
    let client = client().await;
    let _operator = Operator::start();
    let (name, ns, before) = onboard(&client, "bg-running").await;
    tenants(&client).delete(&name, &cascade(PropagationPolicy::Background)).await.unwrap();
    gone(&client, &name).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(data(&client, &ns).await, before);
    erase(&client, &ns).await;
}

#[tokio::test]
async fn a_finalizer_removed_by_hand_with_the_operator_stopped_keeps_the_data() {
    let _one = ONE_AT_A_TIME.lock().await;
    let client = client().await;
    let operator = Operator::start();
    let (name, ns, before) = onboard(&client, "finalizer").await;
    operator.stop();

    tenants(&client).delete(&name, &cascade(PropagationPolicy::Background)).await.unwrap();
    let unfinalize = json!({"metadata": {"finalizers": null}});
    tenants(&client).patch(&name, &PatchParams::default(), &Patch::Merge(&unfinalize)).await.unwrap();
    gone(&client, &name).await;
    collected(&client, &ns).await;
    assert_eq!(data(&client, &ns).await, before);
    erase(&client, &ns).await;
}

#[tokio::test]
async fn a_tenant_recreated_over_retained_data_reattaches_to_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let client = client().await;
    let _operator = Operator::start();
    let (name, ns, before) = onboard(&client, "reattach").await;
    delete_tenant(&client, &name).await;
    assert_eq!(data(&client, &ns).await, before);

    // The same ICS again, this time leaving the mode to the operator: with
    // CloudNativePG served it would pick a new, empty Cluster.
    apply_tenant(&client, &tenant(&name, "    storageSize: 1Gi")).await.unwrap();
    accept_routes(&client, &ns).await;
    let t = wait_ready(&client, &name).await;
    assert_eq!(t.status.unwrap().database.unwrap().mode.as_str(), "StatefulSet");
    assert_eq!(data(&client, &ns).await, before, "the re-created tenant did not re-attach to its data");
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &cnpg_clusters());
    assert!(clusters.list(&Default::default()).await.unwrap().items.is_empty(), "an empty database was started");
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    assert!(!namespace.labels().contains_key("carerecord.dev/retained"));
    remove_tenant(&client, &name).await;
    erase(&client, &ns).await;
}

#[tokio::test]
async fn a_tenant_recreated_over_retained_data_in_another_mode_is_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let client = client().await;
    let _operator = Operator::start();
    let (name, ns, before) = onboard(&client, "othermode").await;
    delete_tenant(&client, &name).await;

    apply_tenant(&client, &tenant(&name, "    mode: CloudNativePG")).await.unwrap();
    let refused = wait_condition(&client, &name, "DatabaseReady", "False").await;
    assert_eq!(refused.reason, "RetainedDataConflict");
    assert!(refused.message.contains("retained patient data in a StatefulSet database"), "{}", refused.message);
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &cnpg_clusters());
    assert!(clusters.list(&Default::default()).await.unwrap().items.is_empty(), "an empty database was started");
    assert_eq!(data(&client, &ns).await, before);
    remove_tenant(&client, &name).await;
    erase(&client, &ns).await;
}
