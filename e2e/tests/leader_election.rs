//! Two replicas are safe: only the Lease holder reconciles, and the standby
//! takes over when the leader stops.

use e2e::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

async fn holder(api: &Api<Lease>, name: &str) -> Option<String> {
    api.get_opt(name).await.ok()??.spec?.holder_identity
}

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_stops() {
    let client = client().await;
    let ns = unique("ics-le");
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
        .await
        .unwrap();
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);

    let first = Operator::start_elected(&ns, "ics-operator-leader", "replica-a");
    eventually("replica-a leads", || async {
        (holder(&leases, "ics-operator-leader").await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let _second = Operator::start_elected(&ns, "ics-operator-leader", "replica-b");

    let before = unique("le-before");
    apply_tenant(&client, &tenant(&before, "    mode: StatefulSet\n    storageSize: 1Gi\n    deletionPolicy: Delete"))
        .await
        .unwrap();
    accept_routes(&client, &namespace_of(&before)).await;
    wait_ready(&client, &before).await;
    assert_eq!(
        holder(&leases, "ics-operator-leader").await.as_deref(),
        Some("replica-a"),
        "the standby did not take the lease"
    );

    first.stop();
    eventually("replica-b leads", || async {
        (holder(&leases, "ics-operator-leader").await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let after = unique("le-after");
    apply_tenant(&client, &tenant(&after, "    mode: StatefulSet\n    storageSize: 1Gi\n    deletionPolicy: Delete"))
        .await
        .unwrap();
    accept_routes(&client, &namespace_of(&after)).await;
    wait_ready(&client, &after).await;

    remove_tenant(&client, &before).await;
    remove_tenant(&client, &after).await;
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
}
