//! Onboarding with Helm, as an ICS onboarding team does: `helm install` of
//! charts/ics-tenant brings the tenant and its connector to Ready (the
//! operator itself runs from charts/ics-operator's RBAC, see the harness).

use std::process::Command;

use e2e::*;

fn helm() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash").arg(root.join("e2e/tools")).arg("helm").output().expect("e2e/tools helm");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn installing_the_tenant_chart_onboards_the_ics() {
    shared_operator();
    let client = client().await;
    let name = unique("helm");
    let ns = namespace_of(&name);
    let endpoint = tcp_listener().await;
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ics-tenant");
    let connector = serde_json::json!([{
        "name": "a-and-e-adt",
        "provider": {"odsCode": "REM", "name": "Liverpool University Hospitals", "kind": "AcuteTrust"},
        "system": "hl7v2-mllp",
        "endpoint": {"url": format!("mllp://{endpoint}")},
    }]);
    let status = Command::new(helm())
        .args(["install", &name])
        .arg(&chart)
        .args(["--set", &format!("tenant.name={name}")])
        .args(["--set", &format!("tenant.gateway.hostname={name}.scr.example.nhs.uk")])
        .args(["--set", "tenant.database.mode=StatefulSet", "--set", "tenant.database.storageSize=1Gi"])
        .args(["--set", "tenant.database.deletionPolicy=Delete"])
        .args(["--set-json", &format!("connectors={connector}")])
        .status()
        .expect("helm runs");
    assert!(status.success(), "helm install failed");
    accept_routes(&client, &ns).await;
    wait_ready(&client, &name).await;
    wait_connector_condition(&client, &ns, "a-and-e-adt", "Ready", "True").await;

    let status = Command::new(helm()).args(["uninstall", &name, "--wait"]).status().expect("helm runs");
    assert!(status.success(), "helm uninstall failed");
    let api = tenants(&client);
    eventually("tenant removed by helm uninstall", || async { api.get_opt(&name).await.ok()?.is_none().then_some(()) })
        .await;
}
