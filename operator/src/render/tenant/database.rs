//! The tenant's Postgres database, in each of the three modes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret,
    SecretKeySelector, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
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
pub const STATEFULSET_DB: &str = "records-db";
/// Name of the CloudNativePG Cluster; CloudNativePG publishes `<name>-app`.
pub const CNPG_CLUSTER: &str = "records-db";
/// Generated credentials of the record store's application user of the
/// StatefulSet database (not a superuser).
pub const CREDENTIALS_SECRET: &str = "records-db-credentials";
/// Generated credentials of the StatefulSet database's superuser, used only
/// by Postgres itself: no workload of the tenant reads them.
pub const SUPERUSER_SECRET: &str = "records-db-superuser";
/// The StatefulSet database's TLS: a per-tenant CA (its key discarded once
/// the server certificate is signed) and the server's certificate and key,
/// generated once by the operator and never regenerated.
pub const TLS_SECRET: &str = "records-db-tls";
/// Postgres configuration (client authentication) and the script that
/// creates the application user on first start.
pub const INIT_CONFIG: &str = "records-db-config";
/// Where the record store finds the CA that signs its database's server
/// certificate; its JDBC URL verifies the server against it.
pub const DB_CA_DIR: &str = "/etc/carerecord/db-ca";
pub const POSTGRES_PORT: i32 = 5432;
const DB_NAME: &str = "fhir";
/// The record store's application user: owns the `fhir` database's schema,
/// and nothing else.
const DB_USER: &str = "fhir";
const DB_SUPERUSER: &str = "postgres";
/// Postgres runs as an unprivileged high UID (the official image supports
/// an arbitrary user); not the image's 999, which may be a host user.
const POSTGRES_UID: i64 = 10999;
const TLS_DIR: &str = "/etc/postgresql/tls";
const CONFIG_DIR: &str = "/etc/postgresql/config";
const DEFAULT_STORAGE: &str = "10Gi";
const DEFAULT_INSTANCES: i32 = 3;

/// Where the record store finds its database credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseConnection {
    pub secret_name: String,
    pub jdbc_url_key: String,
    pub username_key: String,
    pub password_key: String,
    /// A JDBC URL the operator builds, used in place of the Secret's: for
    /// CloudNativePG, whose published `jdbc-uri` does not verify the server.
    pub jdbc_url: Option<String>,
    /// The Secret and key holding the CA of the database's server
    /// certificate, mounted at `DB_CA_DIR/ca.crt`.
    pub server_ca: Option<(String, String)>,
}

/// The JDBC parameters that make the driver require TLS and verify the
/// server's certificate and hostname against the tenant's database CA.
fn verify_full() -> String {
    format!("sslmode=verify-full&sslrootcert={DB_CA_DIR}/ca.crt")
}

/// DNS names the StatefulSet database's server certificate is valid for.
pub fn server_dns_names(namespace: &str) -> Vec<String> {
    vec![
        STATEFULSET_DB.to_string(),
        format!("{STATEFULSET_DB}.{namespace}"),
        format!("{STATEFULSET_DB}.{namespace}.svc"),
        format!("{STATEFULSET_DB}.{namespace}.svc.cluster.local"),
        format!("{STATEFULSET_DB}-0.{STATEFULSET_DB}.{namespace}.svc"),
    ]
}

/// Metadata of an object holding the database's data or keys: it records
/// the mode, so retained data says what it is.
fn data_meta(ctx: &Ctx, name: &str) -> ObjectMeta {
    let mut meta = ctx.meta(name, DATABASE);
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(labels::DATABASE_MODE.into(), ctx.facts.database_mode.as_str().into());
    meta
}

pub(super) fn connection(ctx: &Ctx) -> DatabaseConnection {
    let standard = |secret: &str| DatabaseConnection {
        secret_name: secret.into(),
        jdbc_url_key: "jdbc-uri".into(),
        username_key: "username".into(),
        password_key: "password".into(),
        jdbc_url: None,
        server_ca: None,
    };
    match ctx.facts.database_mode {
        DatabaseMode::StatefulSet => {
            DatabaseConnection { server_ca: Some((TLS_SECRET.into(), "ca.crt".into())), ..standard(CREDENTIALS_SECRET) }
        }
        // CloudNativePG publishes its CA as `<cluster>-ca` and serves a
        // certificate for `<cluster>-rw.<namespace>.svc`.
        DatabaseMode::CloudNativePG => DatabaseConnection {
            jdbc_url: Some(format!(
                "jdbc:postgresql://{CNPG_CLUSTER}-rw.{}.svc:{POSTGRES_PORT}/app?{}",
                ctx.namespace,
                verify_full()
            )),
            server_ca: Some((format!("{CNPG_CLUSTER}-ca"), "ca.crt".into())),
            ..standard(&format!("{CNPG_CLUSTER}-app"))
        },
        DatabaseMode::External => {
            let ext = ctx.tenant.spec.database.external.clone();
            let ext = ext.as_ref();
            let key = |k: Option<&String>, d: &str| k.cloned().unwrap_or_else(|| d.into());
            DatabaseConnection {
                secret_name: ext.map(|e| e.secret_name.clone()).unwrap_or_default(),
                jdbc_url_key: key(ext.and_then(|e| e.jdbc_url_key.as_ref()), "jdbc-uri"),
                username_key: key(ext.and_then(|e| e.username_key.as_ref()), "username"),
                password_key: key(ext.and_then(|e| e.password_key.as_ref()), "password"),
                jdbc_url: None,
                server_ca: None,
            }
        }
    }
}

pub(super) fn children(ctx: &Ctx) -> DatabaseChildren {
    match ctx.facts.database_mode {
        DatabaseMode::CloudNativePG => DatabaseChildren::CloudNativePG { cluster: cnpg_cluster(ctx) },
        DatabaseMode::StatefulSet => DatabaseChildren::StatefulSet(Box::new(StatefulSetDatabase {
            credentials: credentials_secret(ctx),
            superuser: superuser_secret(ctx),
            tls: tls_secret(ctx),
            config: config(ctx),
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
        "metadata": data_meta(ctx, CNPG_CLUSTER),
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
        metadata: data_meta(ctx, CREDENTIALS_SECRET),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            ("username".to_string(), DB_USER.to_string()),
            ("dbname".to_string(), DB_NAME.to_string()),
            ("host".to_string(), host.clone()),
            ("port".to_string(), POSTGRES_PORT.to_string()),
            ("jdbc-uri".to_string(), format!("jdbc:postgresql://{host}:{POSTGRES_PORT}/{DB_NAME}?{}", verify_full())),
        ])),
        ..Secret::default()
    }
}

/// The superuser's credentials; the password is added on creation, as for
/// the application user's.
fn superuser_secret(ctx: &Ctx) -> Secret {
    Secret {
        metadata: data_meta(ctx, SUPERUSER_SECRET),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([("username".to_string(), DB_SUPERUSER.to_string())])),
        ..Secret::default()
    }
}

/// The TLS Secret's shape; the controller adds the CA, certificate and key
/// (for `server_dns_names`) when it first creates it.
fn tls_secret(ctx: &Ctx) -> Secret {
    // Opaque, not kubernetes.io/tls: the rendered shape carries no keys until
    // the controller generates them, and `render | kubectl apply` must work.
    Secret { metadata: data_meta(ctx, TLS_SECRET), type_: Some("Opaque".into()), ..Secret::default() }
}

/// Client authentication: TLS and a password for every network client;
/// the Unix socket (inside the pod only) for the image's own start-up.
const PG_HBA: &str = "\
# Managed by ics-operator.
local   all  all                trust
hostssl all  all  0.0.0.0/0     scram-sha-256
hostssl all  all  ::/0          scram-sha-256
host    all  all  0.0.0.0/0     reject
host    all  all  ::/0          reject
";

/// Creates the record store's application user on the database's first
/// start (the image runs /docker-entrypoint-initdb.d once, on an empty
/// volume): it owns the `fhir` database and its schema, and is no superuser.
const CREATE_APP_USER: &str = r#"#!/bin/sh
# Managed by ics-operator.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=app_user="$APP_USER" --set=app_password="$APP_PASSWORD" --set=db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER DATABASE :"db" OWNER TO :"app_user";
ALTER SCHEMA public OWNER TO :"app_user";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
"#;

fn config(ctx: &Ctx) -> ConfigMap {
    ConfigMap {
        metadata: ctx.meta(INIT_CONFIG, DATABASE),
        data: Some(BTreeMap::from([
            ("pg_hba.conf".to_string(), PG_HBA.to_string()),
            ("create-app-user.sh".to_string(), CREATE_APP_USER.to_string()),
        ])),
        ..ConfigMap::default()
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

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional: None }),
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
            command: Some(vec![
                "pg_isready".into(),
                "-h".into(),
                "/var/run/postgresql".into(),
                "-U".into(),
                DB_SUPERUSER.into(),
            ]),
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
        args: Some(
            [
                "-c",
                "ssl=on",
                "-c",
                &format!("ssl_cert_file={TLS_DIR}/tls.crt"),
                "-c",
                &format!("ssl_key_file={TLS_DIR}/tls.key"),
                "-c",
                "ssl_min_protocol_version=TLSv1.2",
                "-c",
                &format!("hba_file={CONFIG_DIR}/pg_hba.conf"),
                "-c",
                "password_encryption=scram-sha-256",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(vec![
            secret_env("POSTGRES_USER", SUPERUSER_SECRET, "username"),
            secret_env("POSTGRES_PASSWORD", SUPERUSER_SECRET, "password"),
            secret_env("POSTGRES_DB", CREDENTIALS_SECRET, "dbname"),
            secret_env("APP_USER", CREDENTIALS_SECRET, "username"),
            secret_env("APP_PASSWORD", CREDENTIALS_SECRET, "password"),
            EnvVar {
                name: "PGDATA".into(),
                value: Some("/var/lib/postgresql/data/pgdata".into()),
                ..EnvVar::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q("250m")),
                ("memory".to_string(), q("512Mi")),
                ("ephemeral-storage".to_string(), q("64Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("memory".to_string(), q("1Gi")),
                ("ephemeral-storage".to_string(), q("256Mi")),
            ])),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(ready.clone()),
        // Alive while the server answers at all (a connection refused
        // restarts it); ready only when it accepts connections.
        liveness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(
                    ["pg_isready", "-h", "/var/run/postgresql", "-U", DB_SUPERUSER, "-t", "10"]
                        .map(String::from)
                        .to_vec(),
                ),
            }),
            initial_delay_seconds: Some(30),
            failure_threshold: Some(6),
            ..ready
        }),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![
            mount("data", "/var/lib/postgresql/data"),
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
            VolumeMount { read_only: Some(true), ..mount("tls", TLS_DIR) },
            VolumeMount { read_only: Some(true), ..mount("config", CONFIG_DIR) },
            VolumeMount {
                read_only: Some(true),
                sub_path: Some("create-app-user.sh".into()),
                ..mount("config", "/docker-entrypoint-initdb.d/10-create-app-user.sh")
            },
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
        metadata: data_meta(ctx, STATEFULSET_DB),
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
                    volumes: Some(vec![
                        empty_dir("run"),
                        empty_dir("tmp"),
                        // Postgres accepts a key owned by root only when no
                        // one but root and its group can read it (0640).
                        Volume {
                            name: "tls".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(TLS_SECRET.into()),
                                default_mode: Some(0o640),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: INIT_CONFIG.into(),
                                default_mode: Some(0o444),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                    ]),
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
