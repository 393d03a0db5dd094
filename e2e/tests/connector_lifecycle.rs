//! ProviderConnector on a real API server: deployment from the catalogue,
//! probing, state changes, bad input and quota.

use e2e::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn mllp_connector_becomes_ready_and_the_tenant_counts_it() {
    shared_operator();
    let client = client().await;
    let (tenant_name, ns) = ready_tenant(&client, "pc-ready", json!({})).await;
    let endpoint = tcp_listener().await;
    apply_connector(&client, &connector("a-and-e-adt", &ns, "hl7v2-mllp", &format!("mllp://{endpoint}")))
        .await
        .unwrap();
    wait_connector_condition(&client, &ns, "a-and-e-adt", "Ready", "True").await;
    let c = connectors(&client, &ns).get("a-and-e-adt").await.unwrap();
    let status = c.status.unwrap();
    assert!(status.endpoint.as_ref().unwrap().reachable);
    assert_eq!(status.tenant.as_deref(), Some(tenant_name.as_str()));
    let d = Api::<Deployment>::namespaced(client.clone(), &ns).get("a-and-e-adt").await.unwrap();
    assert_eq!(d.status.unwrap().available_replicas, Some(1), "connector pods admitted under Pod Security restricted");
    assert!(Api::<ConfigMap>::namespaced(client.clone(), &ns).get_opt("a-and-e-adt-config").await.unwrap().is_some());
    eventually("tenant counts 1/1 connectors", || async {
        let t = tenants(&client).get(&tenant_name).await.ok()?;
        let counts = t.status?.connectors?;
        (counts.ready == 1 && counts.total == 1).then_some(())
    })
    .await;
    remove_tenant(&client, &tenant_name).await;
}

#[tokio::test]
async fn pausing_scales_to_zero_and_stopping_also_removes_the_inbound_route() {
    shared_operator();
    let client = client().await;
    let (tenant_name, ns) = ready_tenant(&client, "pc-state", json!({})).await;
    // Liquidlogic pushes records to /inbound/<connector> on the tenant host.
    apply_connector(
        &client,
        &connector("adult-social-care", &ns, "liquidlogic-las", "https://las.example.invalid/fhir"),
    )
    .await
    .unwrap();
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &http_routes());
    let route = eventually("inbound route", || async { routes.get_opt("adult-social-care-inbound").await.ok()? }).await;
    assert_eq!(route.data["spec"]["rules"][0]["matches"][0]["path"]["value"], "/inbound/adult-social-care");

    let api = connectors(&client, &ns);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    api.patch("adult-social-care", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"state": "Paused"}})))
        .await
        .unwrap();
    eventually("scaled to zero", || async {
        (deployments.get("adult-social-care").await.ok()?.spec?.replicas == Some(0)).then_some(())
    })
    .await;
    assert!(routes.get_opt("adult-social-care-inbound").await.unwrap().is_some(), "Paused keeps the route");

    api.patch("adult-social-care", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"state": "Stopped"}})))
        .await
        .unwrap();
    eventually("inbound route removed", || async {
        routes.get_opt("adult-social-care-inbound").await.ok()?.is_none().then_some(())
    })
    .await;
    let probe = wait_connector_condition(&client, &ns, "adult-social-care", "EndpointReachable", "Unknown").await;
    assert_eq!(probe.reason, "Stopped");
    remove_tenant(&client, &tenant_name).await;
}

#[tokio::test]
async fn changing_the_profile_rolls_the_deployment() {
    shared_operator();
    let client = client().await;
    let (tenant_name, ns) = ready_tenant(&client, "pc-roll", json!({})).await;
    apply_connector(&client, &connector("practice", &ns, "emis-web", "https://emis.example.invalid/fhir"))
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let hash = |d: &Deployment| {
        d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get("carerecord.dev/config-hash").cloned()
    };
    let before = eventually("deployment", || async { hash(&deployments.get_opt("practice").await.ok()??) }).await;
    apply_connector(&client, &connector("practice", &ns, "systmone", "https://emis.example.invalid/fhir"))
        .await
        .unwrap();
    let after = eventually("config hash changed", || async {
        let h = hash(&deployments.get("practice").await.ok()?)?;
        (h != before).then_some(h)
    })
    .await;
    assert_ne!(before, after);
    remove_tenant(&client, &tenant_name).await;
}

#[tokio::test]
async fn unknown_profile_gets_a_condition_and_no_children() {
    shared_operator();
    let client = client().await;
    let (tenant_name, ns) = ready_tenant(&client, "pc-unknown", json!({})).await;
    apply_connector(&client, &connector("mystery", &ns, "cerner-classic", "https://x.example.invalid")).await.unwrap();
    let c = wait_connector_condition(&client, &ns, "mystery", "Configured", "False").await;
    assert_eq!(c.reason, "UnknownSystem");
    assert!(c.message.contains("emis-web"), "lists the known profiles: {}", c.message);
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("mystery").await.unwrap().is_none());
    remove_tenant(&client, &tenant_name).await;
}

#[tokio::test]
async fn connector_outside_a_tenant_namespace_gets_a_condition_and_no_children() {
    shared_operator();
    let client = client().await;
    let ns = unique("not-a-tenant");
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
        .await
        .unwrap();
    apply_connector(&client, &connector("stray", &ns, "emis-web", "https://x.example.invalid")).await.unwrap();
    let c = wait_connector_condition(&client, &ns, "stray", "Configured", "False").await;
    assert_eq!(c.reason, "NotInTenantNamespace");
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("stray").await.unwrap().is_none());
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
}

#[tokio::test]
async fn an_internal_endpoint_is_refused_by_the_probe() {
    shared_operator();
    let client = client().await;
    let (tenant_name, ns) = ready_tenant(&client, "pc-ssrf", json!({})).await;
    apply_connector(&client, &connector("metadata-grab", &ns, "generic-fhir-r4", "https://169.254.169.254/latest"))
        .await
        .unwrap();
    let c = wait_connector_condition(&client, &ns, "metadata-grab", "EndpointReachable", "False").await;
    assert_eq!(c.reason, "AddressNotAllowed");
    remove_tenant(&client, &tenant_name).await;
}

#[tokio::test]
async fn the_quota_caps_connectors_at_the_api_server_and_in_status() {
    shared_operator();
    let client = client().await;
    let (tenant_name, ns) = ready_tenant(&client, "pc-quota", json!({"quota": {"maxConnectors": 1}})).await;
    apply_connector(&client, &connector("first", &ns, "emis-web", "https://x.example.invalid")).await.unwrap();
    wait_connector_condition(&client, &ns, "first", "Configured", "True").await;
    let err =
        apply_connector(&client, &connector("second", &ns, "emis-web", "https://y.example.invalid")).await.unwrap_err();
    assert!(err.to_string().contains("exceeded quota"), "{err}");

    // Lowering the quota below what exists takes the newest connectors out of service.
    let lower = json!({"spec": {"quota": {"maxConnectors": 0}}});
    tenants(&client).patch(&tenant_name, &PatchParams::default(), &Patch::Merge(&lower)).await.unwrap();
    let c = wait_connector_condition(&client, &ns, "first", "Configured", "False").await;
    assert_eq!(c.reason, "QuotaExceeded");
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    eventually("children removed", || async { deployments.get_opt("first").await.ok()?.is_none().then_some(()) }).await;
    remove_tenant(&client, &tenant_name).await;
}

#[tokio::test]
async fn deleting_the_tenant_takes_its_connectors_out_of_service() {
    shared_operator();
    let client = client().await;
    let name = unique("pc-keep");
    apply_tenant(&client, &tenant(&name, "    mode: StatefulSet\n    storageSize: 1Gi")).await.unwrap();
    let ns = namespace_of(&name);
    accept_routes(&client, &ns).await;
    wait_ready(&client, &name).await;
    apply_connector(&client, &connector("gp", &ns, "emis-web", "https://x.example.invalid")).await.unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    eventually("connector deployed", || async { deployments.get_opt("gp").await.ok()?.map(|_| ()) }).await;
    tenants(&client).delete(&name, &DeleteParams::default()).await.unwrap();
    let c = wait_connector_condition(&client, &ns, "gp", "Configured", "False").await;
    assert_eq!(c.reason, "NotInTenantNamespace");
    eventually("connector stopped", || async { deployments.get_opt("gp").await.ok()?.is_none().then_some(()) }).await;
    assert!(
        connectors(&client, &ns).get_opt("gp").await.unwrap().is_some(),
        "Retain keeps the connector's configuration"
    );
    let _ = Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::background()).await;
}

mod rejected {
    use super::*;

    async fn rejection(manifest: serde_json::Value) -> String {
        let client = client().await;
        let (_, ns) = ("", "default");
        let mut manifest = manifest;
        manifest["metadata"]["namespace"] = json!(ns);
        match apply_connector(&client, &manifest).await {
            Ok(c) => panic!("accepted an invalid connector: {}", c.name_any()),
            Err(kube::Error::Api(e)) => e.message,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn plain_http_endpoint() {
        let m = rejection(connector("c1", "default", "emis-web", "http://emis.example.nhs.uk")).await;
        assert!(m.contains("endpoint.url must start with https://"), "{m}");
    }

    #[tokio::test]
    async fn unknown_fhir_resource_type() {
        let mut c = connector("c2", "default", "emis-web", "https://emis.example.nhs.uk");
        c["spec"]["resources"] = json!(["Patient", "Medications"]);
        let m = rejection(c).await;
        assert!(m.contains("resources must be FHIR R4 resource types"), "{m}");
    }

    #[tokio::test]
    async fn interval_with_a_push_schedule() {
        let mut c = connector("c3", "default", "emis-web", "https://emis.example.nhs.uk");
        c["spec"]["schedule"] = json!({"mode": "Push", "intervalSeconds": 300});
        let m = rejection(c).await;
        assert!(m.contains("schedule.intervalSeconds only applies when schedule.mode is Poll"), "{m}");
    }

    #[tokio::test]
    async fn bad_provider_ods_code() {
        let mut c = connector("c4", "default", "emis-web", "https://emis.example.nhs.uk");
        c["spec"]["provider"]["odsCode"] = json!("n82054");
        let m = rejection(c).await;
        assert!(m.contains("provider.odsCode must be 1 to 9 upper-case letters or digits"), "{m}");
    }
}
