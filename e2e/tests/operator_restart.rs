//! An operator restarted in the middle of onboarding picks up where it left
//! off and never regenerates a tenant's database credentials.

use e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

#[tokio::test]
async fn restart_mid_onboarding_converges_without_regenerating_the_secret() {
    let client = client().await;
    let name = unique("restart");
    let ns = namespace_of(&name);
    let operator = Operator::start();
    apply_tenant(&client, &tenant(&name, "    mode: StatefulSet")).await.unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let before =
        eventually("generated credentials", || async { secrets.get_opt("records-db-credentials").await.ok()? }).await;
    operator.stop();

    // While the operator is down, onboarding is incomplete (no Gateway has
    // accepted the route) and a child goes missing.
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let _ = deployments.delete("record-store", &DeleteParams::default()).await;

    let _operator = Operator::start();
    accept_routes(&client, &ns).await;
    wait_ready(&client, &name).await;
    assert!(deployments.get_opt("record-store").await.unwrap().is_some());
    let after = secrets.get("records-db-credentials").await.unwrap();
    assert_eq!(after.uid(), before.uid(), "the Secret was recreated");
    assert_eq!(after.resource_version(), before.resource_version(), "the Secret was rewritten");
    assert_eq!(after.data, before.data);
    remove_tenant(&client, &name).await;
}
