//! The operator's own metrics, read as `/metrics` serves them.

use e2e::*;
use ics_operator::controller::metrics::KindLabel;

fn depth(operator: &Operator, kind: &'static str) -> i64 {
    operator.metrics.queue_depth.get_or_create(&KindLabel { kind }).get()
}

fn reconciles(operator: &Operator, kind: &'static str) -> u64 {
    operator.metrics.reconciles.get_or_create(&KindLabel { kind }).get()
}

/// Deleting a tenant wakes it once per deleted child, after it is gone from
/// the cache; those requests never become reconciles and must not stay
/// counted as queued.
#[tokio::test]
async fn the_queue_drains_to_zero_after_a_tenant_and_its_connector_are_deleted() {
    let client = client().await;
    let name = unique("metrics");
    let ns = namespace_of(&name);
    let operator = Operator::start();
    apply_tenant(&client, &tenant(&name, "    mode: StatefulSet\n    deletionPolicy: Delete")).await.unwrap();
    accept_routes(&client, &ns).await;
    wait_ready(&client, &name).await;
    let endpoint = format!("mllp://{}", tcp_listener().await);
    apply_connector(&client, &connector("gp", &ns, "hl7v2-mllp", &endpoint)).await.unwrap();
    eventually("the connector reconciled", || async { (reconciles(&operator, "connector") > 0).then_some(()) }).await;
    assert!(reconciles(&operator, "tenant") > 0);

    remove_tenant(&client, &name).await;
    eventually("every queue empty", || async {
        (depth(&operator, "tenant") == 0 && depth(&operator, "connector") == 0 && depth(&operator, "agreement") == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_operator_is_ready_once_its_caches_are_synced() {
    let operator = Operator::start();
    eventually("ready", || async { operator.health.is_ready().then_some(()) }).await;
}
