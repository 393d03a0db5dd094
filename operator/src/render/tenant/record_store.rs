//! The FHIR R4 record store: a HAPI FHIR JPA server wired to the database.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecretKeySelector, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::database::DB_CA_DIR;
use super::{Ctx, DatabaseConnection};
use crate::render::labels;
use crate::render::pod::{restricted_container, restricted_pod};

/// Pod component label and object name of the record store.
pub const RECORD_STORE: &str = "record-store";
/// HAPI FHIR's HTTP port; the FHIR base is `/fhir`.
pub const RECORD_STORE_PORT: i32 = 8080;
/// Spring actuator port (liveness and readiness).
const MANAGEMENT_PORT: i32 = 8081;
/// HAPI's distroless image runs as the `nonroot` user.
const HAPI_UID: i64 = 65532;

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
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

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(MANAGEMENT_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.into());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q("500m")),
            ("memory".to_string(), q("1Gi")),
            ("ephemeral-storage".to_string(), q("256Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), q("2Gi")), ("ephemeral-storage".to_string(), q("1Gi"))])),
        ..ResourceRequirements::default()
    }
}

pub(super) fn deployment(ctx: &Ctx, db: &DatabaseConnection) -> Deployment {
    let spec = &ctx.tenant.spec.record_store;
    let pod_labels = labels::pod_labels(&ctx.name, RECORD_STORE);
    let replicas = if ctx.tenant.spec.suspend { 0 } else { spec.replicas.unwrap_or(1) };
    let container = Container {
        name: "hapi-fhir".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| ctx.settings.images.record_store.clone())),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: RECORD_STORE_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("management".into()),
                container_port: MANAGEMENT_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(vec![
            match &db.jdbc_url {
                Some(url) => env("SPRING_DATASOURCE_URL", url),
                None => secret_env("SPRING_DATASOURCE_URL", &db.secret_name, &db.jdbc_url_key),
            },
            secret_env("SPRING_DATASOURCE_USERNAME", &db.secret_name, &db.username_key),
            secret_env("SPRING_DATASOURCE_PASSWORD", &db.secret_name, &db.password_key),
            env("SPRING_DATASOURCE_DRIVERCLASSNAME", "org.postgresql.Driver"),
            env("SPRING_JPA_PROPERTIES_HIBERNATE_DIALECT", "ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect"),
            env("HAPI_FHIR_FHIR_VERSION", "R4"),
            env("HAPI_FHIR_SERVER_ADDRESS", &format!("{}/", ctx.tenant.endpoint())),
            env("MANAGEMENT_SERVER_PORT", &MANAGEMENT_PORT.to_string()),
            env("MANAGEMENT_ENDPOINT_HEALTH_PROBES_ENABLED", "true"),
            // Only the record gateway calls the store: no browser-facing
            // extras. CORS off (and, should it be on, no credentials and no
            // origin but the tenant's own), no OpenAPI/Swagger UI, no MCP.
            env("HAPI_FHIR_CORS_ENABLED", "false"),
            env("HAPI_FHIR_CORS_ALLOW_CREDENTIALS", "false"),
            env("HAPI_FHIR_CORS_ALLOWED_ORIGIN", &format!("https://{}", ctx.tenant.spec.gateway.hostname)),
            env("HAPI_FHIR_OPENAPI_ENABLED", "false"),
            env("SPRING_AI_MCP_SERVER_ENABLED", "false"),
        ]),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        // HAPI takes a minute or two to start on a fresh database.
        startup_probe: Some(http_probe("/actuator/health/liveness", 10, 30)),
        liveness_probe: Some(http_probe("/actuator/health/liveness", 20, 3)),
        readiness_probe: Some(http_probe("/actuator/health/readiness", 10, 3)),
        security_context: Some(restricted_container()),
        volume_mounts: Some(
            std::iter::once(VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..VolumeMount::default() })
                .chain(db.server_ca.as_ref().map(|_| VolumeMount {
                    name: "db-ca".into(),
                    mount_path: DB_CA_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                }))
                .collect(),
        ),
        ..Container::default()
    };
    Deployment {
        metadata: ctx.meta(RECORD_STORE, RECORD_STORE),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(pod_labels.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod(HAPI_UID)),
                    containers: vec![container],
                    volumes: Some(
                        std::iter::once(Volume {
                            name: "tmp".into(),
                            empty_dir: Some(Default::default()),
                            ..Volume::default()
                        })
                        .chain(db.server_ca.as_ref().map(|(secret, key)| Volume {
                            name: "db-ca".into(),
                            // Only the CA certificate: never a key.
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(secret.clone()),
                                items: Some(vec![KeyToPath { key: key.clone(), path: "ca.crt".into(), mode: None }]),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        }))
                        .collect(),
                    ),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub(super) fn service(ctx: &Ctx) -> Service {
    Service {
        metadata: ctx.meta(RECORD_STORE, RECORD_STORE),
        spec: Some(ServiceSpec {
            selector: Some(labels::pod_labels(&ctx.name, RECORD_STORE)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: RECORD_STORE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{fixtures, render};
    use crate::api::tenant::DatabaseMode;
    use crate::settings::PlatformSettings;

    fn env_of(mode: DatabaseMode, yaml: &str) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
        let t = fixtures::tenant(yaml);
        let d = render(&t, &PlatformSettings::default(), &fixtures::facts(mode)).record_store;
        d.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap()
    }

    fn secret_of(env: &[k8s_openapi::api::core::v1::EnvVar], name: &str) -> (String, String) {
        let r = env.iter().find(|e| e.name == name).unwrap().value_from.clone().unwrap().secret_key_ref.unwrap();
        (r.name, r.key)
    }

    #[test]
    fn cnpg_record_store_reads_the_cluster_app_secret_and_verifies_the_server() {
        let env = env_of(DatabaseMode::CloudNativePG, fixtures::CHESHIRE);
        assert_eq!(secret_of(&env, "SPRING_DATASOURCE_PASSWORD"), ("records-db-app".into(), "password".into()));
        let url = env.iter().find(|e| e.name == "SPRING_DATASOURCE_URL").unwrap().value.clone().unwrap();
        assert_eq!(
            url,
            "jdbc:postgresql://records-db-rw.scr-cheshire-merseyside.svc:5432/app?sslmode=verify-full&sslrootcert=/etc/carerecord/db-ca/ca.crt"
        );
    }

    #[test]
    fn statefulset_record_store_connects_as_the_application_user_over_verified_tls() {
        let env = env_of(DatabaseMode::StatefulSet, fixtures::CHESHIRE);
        assert_eq!(secret_of(&env, "SPRING_DATASOURCE_USERNAME"), ("records-db-credentials".into(), "username".into()));
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let pod = render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet))
            .record_store
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let ca = pod.volumes.unwrap().into_iter().find(|v| v.name == "db-ca").unwrap().secret.unwrap();
        assert_eq!(ca.secret_name.as_deref(), Some("records-db-tls"));
        assert_eq!(ca.items.unwrap().iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["ca.crt"]);
    }

    #[test]
    fn external_record_store_reads_the_named_secret_and_keys() {
        let yaml = fixtures::CHESHIRE.replace(
            "    mode: StatefulSet\n    storageSize: 20Gi\n",
            "    mode: External\n    external:\n      secretName: shared-pg\n      passwordKey: pass\n",
        );
        let env = env_of(DatabaseMode::External, &yaml);
        assert_eq!(secret_of(&env, "SPRING_DATASOURCE_PASSWORD"), ("shared-pg".into(), "pass".into()));
        assert_eq!(secret_of(&env, "SPRING_DATASOURCE_URL"), ("shared-pg".into(), "jdbc-uri".into()));
    }

    #[test]
    fn record_store_pods_meet_restricted_pod_security() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let d = render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet)).record_store;
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    }
}
