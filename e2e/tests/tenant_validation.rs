//! The API server rejects bad tenants with the CRD's CEL messages, so a
//! person running `kubectl apply` learns what to fix.

use e2e::*;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

async fn rejection(manifest: Value) -> String {
    let client = client().await;
    match create_tenant(&client, &manifest).await {
        Ok(_) => panic!("the API server accepted an invalid tenant: {manifest}"),
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            e.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// The manifest with the field at `pointer` (whose parent exists) set to `value`.
fn with(mut manifest: Value, pointer: &str, value: Value) -> Value {
    let (parent, field) = pointer.rsplit_once('/').expect("a JSON pointer");
    manifest.pointer_mut(parent).and_then(Value::as_object_mut).expect("parent exists").insert(field.into(), value);
    manifest
}

fn valid(name: &str) -> Value {
    tenant(name, "    mode: StatefulSet")
}

#[tokio::test]
async fn lower_case_ods_code_is_rejected() {
    let message = rejection(with(valid(&unique("cel")), "/spec/odsCode", json!("qyg"))).await;
    assert!(message.contains("odsCode must be 1 to 9 upper-case letters or digits"), "{message}");
}

#[tokio::test]
async fn hostname_that_is_a_url_is_rejected() {
    let message =
        rejection(with(valid(&unique("cel")), "/spec/gateway/hostname", json!("https://scr.example.nhs.uk"))).await;
    assert!(message.contains("gateway.hostname must be a fully qualified lower-case DNS name"), "{message}");
}

#[tokio::test]
async fn external_mode_without_its_secret_reference_is_rejected() {
    let message = rejection(with(valid(&unique("cel")), "/spec/database", json!({"mode": "External"}))).await;
    assert!(message.contains("database.external is required when database.mode is External"), "{message}");
}

#[tokio::test]
async fn instances_outside_cloudnativepg_mode_are_rejected() {
    let message =
        rejection(with(valid(&unique("cel")), "/spec/database", json!({"mode": "StatefulSet", "instances": 3}))).await;
    assert!(message.contains("database.instances only applies when database.mode is CloudNativePG"), "{message}");
}

#[tokio::test]
async fn storage_settings_with_an_external_database_are_rejected() {
    let database = json!({"mode": "External", "external": {"secretName": "pg"}, "storageSize": "10Gi"});
    let message = rejection(with(valid(&unique("cel")), "/spec/database", database)).await;
    assert!(message.contains("do not apply to an External database"), "{message}");
}

#[tokio::test]
async fn too_many_record_store_replicas_are_rejected() {
    let message = rejection(with(valid(&unique("cel")), "/spec/recordStore", json!({"replicas": 50}))).await;
    assert!(message.contains("recordStore.replicas must be between 1 and 10"), "{message}");
}

#[tokio::test]
async fn namespace_that_is_not_a_dns_label_is_rejected() {
    let message = rejection(with(valid(&unique("cel")), "/spec/namespace", json!("Cheshire_ICS"))).await;
    assert!(message.contains("namespace must be a DNS label"), "{message}");
}

#[tokio::test]
async fn database_mode_cannot_be_changed_after_creation() {
    let client = client().await;
    let name = unique("cel");
    create_tenant(&client, &valid(&name)).await.unwrap();
    let change = json!({"spec": {"database": {"mode": "External", "external": {"secretName": "pg"}}}});
    let err = tenants(&client).patch(&name, &PatchParams::default(), &Patch::Merge(&change)).await.unwrap_err();
    let _ = tenants(&client).delete(&name, &Default::default()).await;
    assert!(err.to_string().contains("database.mode cannot be changed once set"), "{err}");
}

#[tokio::test]
async fn namespace_cannot_be_changed_after_creation() {
    let client = client().await;
    let name = unique("cel");
    create_tenant(&client, &valid(&name)).await.unwrap();
    let change = json!({"spec": {"namespace": "somewhere-else"}});
    let err = tenants(&client).patch(&name, &PatchParams::default(), &Patch::Merge(&change)).await.unwrap_err();
    let _ = tenants(&client).delete(&name, &Default::default()).await;
    assert!(
        err.to_string().contains("namespace cannot be set, changed or removed after the tenant is created"),
        "{err}"
    );
}

#[tokio::test]
async fn tenant_name_too_long_for_its_namespace_is_rejected() {
    let name = format!("a{}", "b".repeat(59));
    let message = rejection(valid(&name)).await;
    assert!(message.contains("the tenant name must be at most 59 characters"), "{message}");
}
