//! The tenant's Postgres database, in each of the three modes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::json;

use super::{Ctx, DatabaseChildren, StatefulSetDatabase};
use crate::api::tenant::DatabaseMode;
use crate::render::labels;
use crate::render::pod::{restricted_container, restricted_pod};

/// Pod component label and object name stem of the database.
pub const DATABASE: &str = "database";
/// Name of the StatefulSet database, its Service and PVC stem.
const STATEFULSET_DB: &str = "records-db";
/// Name of the CloudNativePG Cluster; CloudNativePG publishes `<name>-app`.
pub const CNPG_CLUSTER: &str = "records-db";
/// Generated credentials of the StatefulSet database.
pub const CREDENTIALS_SECRET: &str = "records-db-credentials";
pub const POSTGRES_PORT: i32 = 5432;
const DB_NAME: &str = "fhir";
const DB_USER: &str = "fhir";
/// UID of the `postgres` user in the official image.
const POSTGRES_UID: i64 = 999;
const DEFAULT_STORAGE: &str = "10Gi";
const DEFAULT_INSTANCES: i32 = 3;

/// Where the record store finds its database credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseConnection {
    pub secret_name: String,
    pub jdbc_url_key: String,
    pub username_key: String,
    pub password_key: String,
}

pub(super) fn connection(ctx: &Ctx) -> DatabaseConnection {
    let standard = |secret: &str| DatabaseConnection {
        secret_name: secret.into(),
        jdbc_url_key: "jdbc-uri".into(),
        username_key: "username".into(),
        password_key: "password".into(),
    };
    match ctx.facts.database_mode {
        DatabaseMode::StatefulSet => standard(CREDENTIALS_SECRET),
        DatabaseMode::CloudNativePG => standard(&format!("{CNPG_CLUSTER}-app")),
        DatabaseMode::External => {
            let ext = ctx.tenant.spec.database.external.clone();
            let ext = ext.as_ref();
            let key = |k: Option<&String>, d: &str| k.cloned().unwrap_or_else(|| d.into());
            DatabaseConnection {
                secret_name: ext.map(|e| e.secret_name.clone()).unwrap_or_default(),
                jdbc_url_key: key(ext.and_then(|e| e.jdbc_url_key.as_ref()), "jdbc-uri"),
                username_key: key(ext.and_then(|e| e.username_key.as_ref()), "username"),
                password_key: key(ext.and_then(|e| e.password_key.as_ref()), "password"),
            }
        }
    }
}

pub(super) fn children(ctx: &Ctx) -> DatabaseChildren {
    match ctx.facts.database_mode {
        DatabaseMode::CloudNativePG => DatabaseChildren::CloudNativePG { cluster: cnpg_cluster(ctx) },
        DatabaseMode::StatefulSet => DatabaseChildren::StatefulSet(Box::new(StatefulSetDatabase {
            credentials: credentials_secret(ctx),
            service: service(ctx),
            statefulset: statefulset(ctx),
        })),
        DatabaseMode::External => DatabaseChildren::External,
    }
}

fn storage_size(ctx: &Ctx) -> Quantity {
    ctx.tenant.spec.database.storage_size.clone().unwrap_or_else(|| Quantity(DEFAULT_STORAGE.into()))
}

/// A CloudNativePG Cluster with its own `app` database for HAPI FHIR.
fn cnpg_cluster(ctx: &Ctx) -> serde_json::Value {
    let db = &ctx.tenant.spec.database;
    let mut storage = json!({ "size": storage_size(ctx).0 });
    if let Some(class) = &db.storage_class_name {
        storage["storageClass"] = json!(class);
    }
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": ctx.meta(CNPG_CLUSTER, DATABASE),
        "spec": {
            "instances": db.instances.unwrap_or(DEFAULT_INSTANCES),
            "imageName": ctx.settings.images.cloud_native_pg,
            "inheritedMetadata": { "labels": labels::pod_labels(&ctx.name, DATABASE) },
            "bootstrap": { "initdb": { "database": "app", "owner": "app" } },
            "storage": storage,
            "resources": {
                "requests": { "cpu": "500m", "memory": "1Gi" },
                "limits": { "memory": "2Gi" },
            },
        },
    })
}

/// Credentials of the StatefulSet database. The password is added by the
/// controller when it first creates the Secret and is never rendered,
/// logged, or rewritten.
fn credentials_secret(ctx: &Ctx) -> Secret {
    let host = format!("{STATEFULSET_DB}.{}.svc", ctx.namespace);
    Secret {
        metadata: ctx.meta(CREDENTIALS_SECRET, DATABASE),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            ("username".to_string(), DB_USER.to_string()),
            ("dbname".to_string(), DB_NAME.to_string()),
            ("host".to_string(), host.clone()),
            ("port".to_string(), POSTGRES_PORT.to_string()),
            ("jdbc-uri".to_string(), format!("jdbc:postgresql://{host}:{POSTGRES_PORT}/{DB_NAME}")),
        ])),
        ..Secret::default()
    }
}

fn service(ctx: &Ctx) -> Service {
    Service {
        metadata: ctx.meta(STATEFULSET_DB, DATABASE),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(labels::pod_labels(&ctx.name, DATABASE)),
            ports: Some(vec![ServicePort {
                name: Some("postgres".into()),
                port: POSTGRES_PORT,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn secret_env(name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: CREDENTIALS_SECRET.into(),
                key: key.into(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume { name: name.into(), empty_dir: Some(Default::default()), ..Volume::default() }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), ..VolumeMount::default() }
}

fn statefulset(ctx: &Ctx) -> StatefulSet {
    let pod_labels = labels::pod_labels(&ctx.name, DATABASE);
    let q = |s: &str| Quantity(s.into());
    let ready = Probe {
        exec: Some(ExecAction {
            command: Some(vec!["pg_isready".into(), "-h".into(), "127.0.0.1".into(), "-U".into(), DB_USER.into()]),
        }),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let container = Container {
        name: "postgres".into(),
        image: Some(ctx.settings.images.postgres.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: POSTGRES_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            secret_env("POSTGRES_USER", "username"),
            secret_env("POSTGRES_PASSWORD", "password"),
            secret_env("POSTGRES_DB", "dbname"),
            EnvVar {
                name: "PGDATA".into(),
                value: Some("/var/lib/postgresql/data/pgdata".into()),
                ..EnvVar::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".to_string(), q("250m")), ("memory".to_string(), q("512Mi"))])),
            limits: Some(BTreeMap::from([("memory".to_string(), q("1Gi"))])),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(ready.clone()),
        liveness_probe: Some(Probe { initial_delay_seconds: Some(30), ..ready }),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![
            mount("data", "/var/lib/postgresql/data"),
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
        ]),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels::tenant_labels(&ctx.name, DATABASE)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: ctx.tenant.spec.database.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), storage_size(ctx))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: ctx.meta(STATEFULSET_DB, DATABASE),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(STATEFULSET_DB.into()),
            selector: LabelSelector { match_labels: Some(pod_labels.clone()), ..LabelSelector::default() },
            // Volumes hold patient data: they outlive the StatefulSet.
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".into()),
                when_scaled: Some("Retain".into()),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod(POSTGRES_UID)),
                    containers: vec![container],
                    volumes: Some(vec![empty_dir("run"), empty_dir("tmp")]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DatabaseChildren, fixtures, render};
    use crate::api::tenant::DatabaseMode;
    use crate::settings::PlatformSettings;

    #[test]
    fn rendered_credentials_never_contain_a_password() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let DatabaseChildren::StatefulSet(db) =
            render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet)).database
        else {
            panic!("StatefulSet mode renders a StatefulSet database");
        };
        assert!(!db.credentials.string_data.unwrap().contains_key("password"));
        assert!(db.credentials.data.is_none());
    }

    #[test]
    fn statefulset_volumes_outlive_the_statefulset() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let DatabaseChildren::StatefulSet(db) =
            render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet)).database
        else {
            panic!("StatefulSet mode renders a StatefulSet database");
        };
        let policy = db.statefulset.spec.unwrap().persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(policy.when_deleted.as_deref(), Some("Retain"));
    }

    #[test]
    fn cnpg_cluster_uses_requested_instances_and_size() {
        let mut t = fixtures::tenant(fixtures::CHESHIRE);
        t.spec.database.mode = None;
        t.spec.database.instances = Some(2);
        let DatabaseChildren::CloudNativePG { cluster } =
            render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::CloudNativePG)).database
        else {
            panic!("CloudNativePG mode renders a Cluster");
        };
        assert_eq!(cluster["spec"]["instances"], 2);
        assert_eq!(cluster["spec"]["storage"]["size"], "20Gi");
    }
}
