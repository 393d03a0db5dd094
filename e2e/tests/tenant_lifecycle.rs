//! CareRecordTenant on a real API server: onboarding in each database mode,
//! updates, self-healing, zero writes at rest, and deletion policies.

use std::time::Duration;

use e2e::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

const STATEFULSET: &str = "    mode: StatefulSet\n    storageSize: 5Gi";
const STATEFULSET_DELETE: &str = "    mode: StatefulSet\n    storageSize: 5Gi\n    deletionPolicy: Delete";

async fn onboarded(database: &str, prefix: &str) -> (kube::Client, String) {
    shared_operator();
    let client = client().await;
    let name = unique(prefix);
    apply_tenant(&client, &tenant(&name, database)).await.expect("tenant accepted");
    accept_routes(&client, &namespace_of(&name)).await;
    wait_ready(&client, &name).await;
    (client, name)
}

#[tokio::test]
async fn statefulset_tenant_becomes_ready_with_every_child() {
    let (client, name) = onboarded(STATEFULSET, "sts").await;
    let ns = namespace_of(&name);
    let t = tenants(&client).get(&name).await.unwrap();
    let status = t.status.unwrap();
    assert_eq!(status.phase.map(|p| p.as_str()), Some("Ready"));
    assert_eq!(status.endpoint.as_deref(), Some(format!("https://{name}.scr.example.nhs.uk/fhir").as_str()));
    assert_eq!(status.database.as_ref().map(|d| d.mode.as_str()), Some("StatefulSet"));
    assert!(status.onboarded_at.is_some());
    assert!(status.conditions.iter().all(|c| c.observed_generation == t.metadata.generation));

    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    assert_eq!(namespace.labels()["pod-security.kubernetes.io/enforce"], "restricted");
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap();
    let mut names: Vec<_> = policies.items.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "allow-dns",
            "database-ingress",
            "default-deny",
            "record-gateway-egress",
            "record-gateway-ingress",
            "record-store-ingress",
            "record-store-to-database"
        ]
    );
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns).get("record-store").await.unwrap();
    assert_eq!(deployment.status.unwrap().available_replicas, Some(1), "pods admitted under Pod Security restricted");
    let secret = Api::<Secret>::namespaced(client.clone(), &ns).get("records-db-credentials").await.unwrap();
    let data = secret.data.unwrap();
    assert_eq!(data["password"].0.len(), 32);
    assert!(
        !serde_json::to_string(&status.conditions).unwrap().contains(std::str::from_utf8(&data["password"].0).unwrap())
    );
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get("data-records-db-0").await.unwrap();
    assert_eq!(claim.status.unwrap().phase.as_deref(), Some("Bound"));
    let binding = Api::<RoleBinding>::namespaced(client.clone(), &ns).get("tenant-admins").await.unwrap();
    assert_eq!(binding.subjects.unwrap()[0].name, format!("scr:{name}-admins"));
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn database_mode_defaults_to_cloudnativepg_when_its_crd_is_served() {
    shared_operator();
    let client = client().await;
    let name = unique("cnpg");
    apply_tenant(&client, &tenant(&name, "    instances: 2")).await.unwrap();
    let ns = namespace_of(&name);
    accept_routes(&client, &ns).await;
    let waiting = wait_condition(&client, &name, "DatabaseReady", "False").await;
    assert!(waiting.message.contains("CloudNativePG"), "{}", waiting.message);
    // No CloudNativePG operator runs here: the test reports the Cluster ready as it would.
    report_cnpg_ready(&client, &ns).await;
    let t = wait_ready(&client, &name).await;
    let database = t.status.unwrap().database.unwrap();
    assert_eq!((database.mode.as_str(), database.secret_name.as_str()), ("CloudNativePG", "records-db-app"));
    let cluster: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &cnpg_clusters());
    assert_eq!(cluster.get("records-db").await.unwrap().data["spec"]["instances"], 2);
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn external_database_tenant_waits_for_its_secret_then_becomes_ready() {
    shared_operator();
    let client = client().await;
    let name = unique("ext");
    let ns = namespace_of(&name);
    apply_tenant(&client, &tenant(&name, "    mode: External\n    external:\n      secretName: shared-pg"))
        .await
        .unwrap();
    let missing = wait_condition(&client, &name, "DatabaseReady", "False").await;
    assert_eq!(missing.reason, "ExternalSecretMissing");
    assert!(missing.message.contains("shared-pg"), "{}", missing.message);
    let warned = eventually("an ExternalSecretMissing Warning Event", || async {
        let events = tenant_events(&client, &name).await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("ExternalSecretMissing") && e.type_.as_deref() == Some("Warning"))
            .then_some(())
    });
    warned.await;
    // Nothing half-applied: no record store until its credentials exist, but
    // the namespace and admin access are there so the ICS can create them.
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("record-store").await.unwrap().is_none());
    assert!(Api::<RoleBinding>::namespaced(client.clone(), &ns).get_opt("tenant-admins").await.unwrap().is_some());

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "shared-pg", "namespace": ns},
        "stringData": {"jdbc-uri": "jdbc:postgresql://pg.example.nhs.uk:5432/fhir", "username": "fhir", "password": "e2e-only"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();
    accept_routes(&client, &ns).await;
    let t = wait_ready(&client, &name).await;
    assert_eq!(t.status.unwrap().database.unwrap().mode.as_str(), "External");
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn spec_change_updates_children_and_prunes_the_ones_no_longer_wanted() {
    let (client, name) = onboarded(STATEFULSET, "edit").await;
    let ns = namespace_of(&name);
    let patch = json!({"spec": {"recordStore": {"replicas": 3}, "admins": null}});
    tenants(&client).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    eventually("record store scaled to 3", || async {
        let d = deployments.get("record-store").await.ok()?;
        (d.spec?.replicas == Some(3)).then_some(())
    })
    .await;
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &ns);
    eventually("admins RoleBinding pruned", || async {
        bindings.get_opt("tenant-admins").await.ok()?.is_none().then_some(())
    })
    .await;
    wait_ready(&client, &name).await;
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn suspending_scales_the_record_store_to_zero_and_removes_the_route_but_keeps_data() {
    let (client, name) = onboarded(STATEFULSET, "susp").await;
    let ns = namespace_of(&name);
    tenants(&client)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"suspend": true}})))
        .await
        .unwrap();
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &http_routes());
    eventually("route removed", || async { routes.get_opt("record-store").await.ok()?.is_none().then_some(()) }).await;
    let t = eventually("phase Suspended", || async {
        let t = tenants(&client).get(&name).await.ok()?;
        (t.status.as_ref()?.phase?.as_str() == "Suspended").then_some(t)
    })
    .await;
    assert!(t.status.is_some());
    let d = Api::<Deployment>::namespaced(client.clone(), &ns).get("record-store").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(0));
    assert!(Api::<StatefulSet>::namespaced(client.clone(), &ns).get_opt("records-db").await.unwrap().is_some());
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn a_deleted_child_comes_back() {
    let (client, name) = onboarded(STATEFULSET, "heal").await;
    let ns = namespace_of(&name);
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let old_uid = deployments.get("record-store").await.unwrap().uid();
    deployments.delete("record-store", &DeleteParams::default()).await.unwrap();
    policies.delete("default-deny", &DeleteParams::default()).await.unwrap();
    eventually("record store recreated", || async {
        let d = deployments.get_opt("record-store").await.ok()??;
        (d.uid() != old_uid).then_some(())
    })
    .await;
    eventually("default-deny recreated", || async { policies.get_opt("default-deny").await.ok()?.map(|_| ()) }).await;
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn an_edited_child_is_put_back() {
    let (client, name) = onboarded(STATEFULSET, "drift").await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace_of(&name));
    let drift = json!({"spec": {"replicas": 5}});
    deployments.patch("record-store", &PatchParams::default(), &Patch::Merge(&drift)).await.unwrap();
    eventually("replicas restored to 1", || async {
        let d = deployments.get("record-store").await.ok()?;
        (d.spec?.replicas == Some(1)).then_some(())
    })
    .await;
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn a_resync_of_an_unchanged_tenant_writes_nothing() {
    let (client, name) = onboarded(STATEFULSET, "quiet").await;
    // Let the watches settle, then nudge a reconcile with an annotation, which
    // changes no spec.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = children_versions(&client, &name).await;
    let poke = json!({"metadata": {"annotations": {"e2e.carerecord.dev/poke": "1"}}});
    let poked = tenants(&client).patch(&name, &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = children_versions(&client, &name).await;
    assert!(before.len() >= 12, "{before:?}");
    assert_eq!(before, after, "children were rewritten");
    let now = tenants(&client).get(&name).await.unwrap();
    assert_eq!(now.resource_version(), poked.resource_version(), "status was rewritten");
    remove_tenant(&client, &name).await;
}

#[tokio::test]
async fn deleting_a_retain_tenant_keeps_namespace_database_volumes_and_secret() {
    let (client, name) = onboarded(STATEFULSET, "keep").await;
    let ns = namespace_of(&name);
    tenants(&client).delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("tenant gone", || async { tenants(&client).get_opt(&name).await.ok()?.is_none().then_some(()) }).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    eventually("record store removed", || async {
        deployments.get_opt("record-store").await.ok()?.is_none().then_some(())
    })
    .await;
    // Give the garbage collector time to act on anything still owned.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    assert!(namespace.metadata.deletion_timestamp.is_none());
    assert_eq!(namespace.labels().get("carerecord.dev/retained").map(String::as_str), Some("true"));
    assert!(Api::<StatefulSet>::namespaced(client.clone(), &ns).get_opt("records-db").await.unwrap().is_some());
    assert!(Api::<Secret>::namespaced(client.clone(), &ns).get_opt("records-db-credentials").await.unwrap().is_some());
    assert!(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .get_opt("data-records-db-0")
            .await
            .unwrap()
            .is_some()
    );
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &http_routes());
    assert!(routes.get_opt("record-store").await.unwrap().is_none(), "data flow stops");
    let _ = Api::<Namespace>::all(client.clone()).delete(&ns, &DeleteParams::background()).await;
}

#[tokio::test]
async fn deleting_a_delete_tenant_removes_its_namespace_and_data() {
    let (client, name) = onboarded(STATEFULSET_DELETE, "gone").await;
    let ns = namespace_of(&name);
    tenants(&client).delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("tenant gone", || async { tenants(&client).get_opt(&name).await.ok()?.is_none().then_some(()) }).await;
    let namespaces = Api::<Namespace>::all(client.clone());
    eventually("namespace deleted", || async {
        match namespaces.get_opt(&ns).await.ok()? {
            None => Some(()),
            Some(n) => n.metadata.deletion_timestamp.map(|_| ()),
        }
    })
    .await;
}
