//! Two replicas are safe: only the Lease holder reconciles, and the standby
//! takes over when the leader stops.

use e2e::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};

async fn holder(api: &Api<Lease>, name: &str) -> Option<String> {
    api.get_opt(name).await.ok()??.spec?.holder_identity
}

async fn onboard(client: &kube::Client, prefix: &str) -> String {
    let name = unique(prefix);
    apply_tenant(client, &tenant(&name, "    mode: StatefulSet\n    storageSize: 1Gi\n    deletionPolicy: Delete"))
        .await
        .unwrap();
    accept_routes(client, &namespace_of(&name)).await;
    wait_ready(client, &name).await;
    name
}

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_stops() {
    let client = client().await;
    // The chart grants Leases only in the operator's own namespace.
    let lease = unique("leader");
    let leases = Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE);

    let first = Operator::start_elected(OPERATOR_NAMESPACE, &lease, "replica-a");
    eventually("replica-a leads", || async {
        (holder(&leases, &lease).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let _second = Operator::start_elected(OPERATOR_NAMESPACE, &lease, "replica-b");
    let before = onboard(&client, "le-before").await;
    assert_eq!(holder(&leases, &lease).await.as_deref(), Some("replica-a"), "the standby took the lease");

    first.stop();
    eventually("replica-b leads", || async {
        (holder(&leases, &lease).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let after = onboard(&client, "le-after").await;

    remove_tenant(&client, &before).await;
    remove_tenant(&client, &after).await;
    let _ = leases.delete(&lease, &DeleteParams::default()).await;
}
