//! `CareRecordTenant`: one Integrated Care System on the platform.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::condition::conditions_schema;

/// One Integrated Care System (ICS) onboarded onto the shared care record
/// platform: its namespace, quota, network policies, database, FHIR R4 record
/// store, gateway route and admin access.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "carerecord.dev",
    version = "v1alpha1",
    kind = "CareRecordTenant",
    plural = "carerecordtenants",
    shortname = "crt",
    category = "carerecord",
    status = "CareRecordTenantStatus",
    doc = "One Integrated Care System (ICS) on the shared care record platform. Cluster-scoped; owns a namespace holding its FHIR R4 record store, database, network policies, quota and admin access.",
    cel,
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "ODS Code", type_ = "string", json_path = ".spec.odsCode"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Connectors", type_ = "integer", json_path = ".status.connectors.total", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 59").message("the tenant name must be at most 59 characters, so that the default namespace scr-<name> is a valid name"),
)]
#[x_kube(
    validation = Rule::new("(has(self.__namespace__) ? self.__namespace__ : '') == (has(oldSelf.__namespace__) ? oldSelf.__namespace__ : '')")
        .message("namespace cannot be set, changed or removed after the tenant is created: the tenant's data lives there"),
)]
#[serde(rename_all = "camelCase")]
pub struct CareRecordTenantSpec {
    /// Human-readable name of the ICS, e.g. "Cheshire and Merseyside ICS".
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 128").message("displayName must be 1 to 128 characters"))]
    pub display_name: String,

    /// ODS code of the Integrated Care Board (1 to 9 upper-case letters or
    /// digits, e.g. "QYG"). Published as the FHIR identifier
    /// https://fhir.nhs.uk/Id/ods-organization-code.
    #[x_kube(validation = Rule::new("self.matches('^[A-Z0-9]{1,9}$')").message("odsCode must be 1 to 9 upper-case letters or digits, e.g. QYG"))]
    pub ods_code: String,

    /// NHS England region the ICS belongs to, e.g. "North West". Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 64").message("region must be at most 64 characters"))]
    pub region: Option<String>,

    /// Namespace that holds the tenant's workloads and data. Defaults to
    /// "scr-<tenant name>". Cannot be changed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 63 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("namespace must be a DNS label: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit"), validation = Rule::new("self != 'default' && !self.startsWith('kube-')").message("namespace may not be default or a kube-* namespace: they belong to Kubernetes"))]
    pub namespace: Option<String>,

    /// The FHIR R4 record store (HAPI FHIR JPA server by default).
    #[serde(default)]
    pub record_store: RecordStoreSpec,

    /// The Postgres database behind the record store.
    #[serde(default)]
    pub database: DatabaseSpec,

    /// How the record store is published through the platform Gateway.
    pub gateway: GatewaySpec,

    /// Resource limits for everything in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,

    /// People and groups who administer this tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admins: Option<AdminsSpec>,

    /// When true, the record store is scaled to zero and its route removed;
    /// the namespace, database and data stay. Set back to false to resume.
    #[serde(default)]
    pub suspend: bool,
}

/// The FHIR server that holds the ICS's shared care record.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordStoreSpec {
    /// Container image of the FHIR server. Defaults to the platform's
    /// HAPI FHIR JPA server image (hapiproject/hapi:v8.8.0-1 unless the
    /// operator is configured otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 512 && !self.contains(' ')").message("image must be a container image reference without spaces"))]
    pub image: Option<String>,

    /// Number of FHIR server replicas (1 to 10). Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10").message("recordStore.replicas must be between 1 and 10"))]
    pub replicas: Option<i32>,

    /// CPU and memory for each FHIR server container. Defaults to requests
    /// of 500m CPU / 1Gi memory and a 2Gi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// FHIR version served. Only R4 (4.0.1) is supported.
    #[serde(default)]
    pub fhir_version: FhirVersion,
}

/// FHIR release served by the record store.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FhirVersion {
    #[default]
    R4,
}

/// Where the tenant's Postgres database comes from and what happens to it
/// when the tenant is deleted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.mode) || self.mode != 'External' || has(self.external)").message("database.external is required when database.mode is External"),
    validation = Rule::new("!has(self.external) || (has(self.mode) && self.mode == 'External')").message("database.external may only be set when database.mode is External"),
    validation = Rule::new("!has(self.instances) || !has(self.mode) || self.mode == 'CloudNativePG'").message("database.instances only applies when database.mode is CloudNativePG (or left unset)"),
    validation = Rule::new("!has(self.mode) || self.mode != 'External' || (!has(self.storageSize) && !has(self.storageClassName))").message("database.storageSize and database.storageClassName do not apply to an External database"),
    validation = Rule::new("!has(oldSelf.mode) || (has(self.mode) && self.mode == oldSelf.mode)").message("database.mode cannot be changed once set: moving patient data between database modes is a migration, not an edit"),
)]
pub struct DatabaseSpec {
    /// How the database is provided: CloudNativePG (a CloudNativePG Cluster;
    /// requires the CloudNativePG operator), StatefulSet (a single Postgres
    /// pod with a generated password) or External (an existing database named
    /// by a Secret). When unset, the operator picks CloudNativePG if its CRD
    /// is installed, otherwise StatefulSet, and keeps that choice (see
    /// status.database.mode). Cannot be changed once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DatabaseMode>,

    /// Number of Postgres instances for CloudNativePG (1 to 9). Defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 9").message("database.instances must be between 1 and 9"))]
    pub instances: Option<i32>,

    /// Size of each database volume. Defaults to 10Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<Quantity>,

    /// StorageClass for database volumes. Defaults to the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// The existing database to use when mode is External.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,

    /// What happens to the namespace, database, volumes and secrets when the
    /// tenant is deleted. Retain (the default) keeps them, labelled as
    /// retained; Delete removes them. Data flow stops either way.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

// How the tenant's database is provided (documented on the fields using it).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatabaseMode {
    /// A CloudNativePG `Cluster` (highly available; needs the CloudNativePG operator).
    CloudNativePG,
    /// A Postgres StatefulSet run by this operator, with a generated password.
    StatefulSet,
    /// An existing database outside the tenant, named by a Secret.
    External,
}

impl std::fmt::Display for DatabaseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DatabaseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CloudNativePG => "CloudNativePG",
            Self::StatefulSet => "StatefulSet",
            Self::External => "External",
        }
    }
}

/// An existing Postgres database, described by a Secret in the tenant namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatabase {
    /// Name of a Secret in the tenant namespace holding the connection details.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$') && size(self) <= 253").message("external.secretName must be a valid Secret name"))]
    pub secret_name: String,

    /// Key in the Secret holding the JDBC URL. Defaults to "jdbc-uri".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jdbc_url_key: Option<String>,

    /// Key in the Secret holding the user name. Defaults to "username".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_key: Option<String>,

    /// Key in the Secret holding the password. Defaults to "password".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
}

/// What deleting the tenant does to its data.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the namespace, database, volumes and secrets (the default).
    #[default]
    Retain,
    /// Delete the namespace and everything in it, including patient data.
    Delete,
}

/// How the record store is published on the platform Gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Public DNS name of the tenant's FHIR endpoint, e.g.
    /// "cheshire-merseyside.scr.example.nhs.uk". The record store is served at
    /// https://<hostname>/fhir.
    #[x_kube(validation = Rule::new("size(self) <= 253 && self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\\\.)+[a-z]([-a-z0-9]*[a-z0-9])?$')").message("gateway.hostname must be a fully qualified lower-case DNS name such as scr.example.nhs.uk"))]
    pub hostname: String,

    /// Name of a TLS Secret for the hostname. Used only by the Ingress
    /// fallback; with Gateway API, TLS terminates at the platform Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,

    /// The Gateway to attach to, overriding the platform default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_ref: Option<GatewayParentRef>,
}

/// A Gateway API Gateway (and optionally one of its listeners).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// Name of the Gateway.
    pub name: String,
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Listener on the Gateway, e.g. "https". Unset attaches to all listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Limits for the tenant namespace, enforced by a ResourceQuota.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    /// Total CPU requests, e.g. "16". Defaults to 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Total memory requests, e.g. "64Gi". Defaults to 64Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Total storage requested by volume claims, e.g. "500Gi". Defaults to 500Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
    /// Maximum number of ProviderConnectors (0 to 1000). Defaults to 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message("quota.maxConnectors must be between 0 and 1000"))]
    pub max_connectors: Option<i32>,
}

/// Who administers the tenant: bound to the platform's tenant-admin ClusterRole
/// in the tenant namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdminsSpec {
    /// Groups (as named by the cluster's authenticator), e.g. "scr:cm-ics-admins".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Individual users, e.g. "jane.doe@nhs.net".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

/// Observed state of the tenant. Written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CareRecordTenantStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Summary for people: Onboarding, Ready, Degraded, Suspended or Terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TenantPhase>,

    /// Conditions: NamespaceReady, DatabaseReady, RecordStoreReady,
    /// GatewayReady and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The namespace holding the tenant's workloads and data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Public FHIR base URL, e.g. https://scr.example.nhs.uk/fhir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The database the operator chose and how to reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,

    /// Provider connectors in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectors: Option<ConnectorCounts>,

    /// Sharing agreements in the tenant namespace that are Active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_agreements: Option<i32>,

    /// When the tenant first became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onboarded_at: Option<Time>,
}

/// How many of the tenant's connectors are Ready.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorCounts {
    /// Connectors whose Ready condition is True.
    pub ready: i32,
    /// All connectors in the tenant namespace.
    pub total: i32,
}

/// The database as provisioned.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// The mode in use. When spec.database.mode is unset this records the
    /// operator's choice, which it keeps from then on.
    pub mode: DatabaseMode,
    /// Secret holding the credentials the record store uses (never the values).
    pub secret_name: String,
}

// Lifecycle summary of a tenant (documented on the field using it).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantPhase {
    /// Children are being created or are not ready yet, and the tenant has never been Ready.
    Onboarding,
    /// Everything is ready and serving.
    Ready,
    /// The tenant was Ready before and something is now not ready.
    Degraded,
    /// spec.suspend is true.
    Suspended,
    /// The tenant is being deleted.
    Terminating,
}

impl TenantPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Onboarding => "Onboarding",
            Self::Ready => "Ready",
            Self::Degraded => "Degraded",
            Self::Suspended => "Suspended",
            Self::Terminating => "Terminating",
        }
    }
}

impl CareRecordTenant {
    /// The namespace this tenant owns: spec.namespace or "scr-<name>".
    pub fn target_namespace(&self) -> String {
        match &self.spec.namespace {
            Some(ns) => ns.clone(),
            None => format!("scr-{}", kube::ResourceExt::name_any(self)),
        }
    }

    /// The public FHIR base URL.
    pub fn endpoint(&self) -> String {
        format!("https://{}/fhir", self.spec.gateway.hostname)
    }
}
