//! Children of a `CareRecordTenant`.

mod access;
pub mod claim;
mod database;
mod namespace;
pub(crate) mod network;
mod policy;
pub mod record_gateway;
mod record_store;
mod route;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::api::tenant::{CareRecordTenant, DatabaseMode};
use crate::render::child::{Child, ChildError, ChildKind, controller_reference};
use crate::render::labels;
use crate::settings::PlatformSettings;

pub use database::{
    CNPG_CLUSTER, CREDENTIALS_SECRET, DATABASE, DatabaseConnection, STATEFULSET_DB as DATABASE_STATEFULSET,
    SUPERUSER_SECRET, TLS_SECRET, server_dns_names,
};
pub use namespace::QUOTA;
pub use network::CONNECTOR as CONNECTOR_COMPONENT;
pub use record_gateway::{PAGE_KEY_SECRET, RECORD_GATEWAY};
pub use record_store::{RECORD_STORE, RECORD_STORE_PORT};
pub use route::needs_tls;

/// What the controller observed about the cluster, which decides the shape of
/// the children. Offline `render` takes these from flags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Facts {
    /// The database mode in effect (see `resolve_database_mode`).
    pub database_mode: DatabaseMode,
    /// True when the Gateway API (HTTPRoute) is served.
    pub gateway_api: bool,
    /// Agreements under which this tenant currently shares its records.
    pub active_agreements: Vec<ActiveAgreement>,
    /// The tenant holding this tenant's hostname instead of it (see
    /// `claim::hostname_holder`): then no route is rendered.
    pub hostname_held_by: Option<String>,
    /// ODS codes of the tenant's providers (its connectors'), who act for
    /// the tenant on its own `/fhir` besides its ICB.
    pub organisations: Vec<String>,
    /// Push connectors the record gateway forwards `/inbound/<connector>` to.
    pub inbound_connectors: Vec<carerecord_config::InboundConnector>,
}

/// An Active agreement in which this tenant is the provider, as the record
/// store must enforce it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveAgreement {
    pub agreement_id: String,
    pub consumer_tenant: String,
    /// ODS codes acting for the consumer tenant (its ICB's).
    pub consumer_organisations: Vec<String>,
    pub purpose: String,
    pub resources: Vec<String>,
    pub excluded_categories: Vec<String>,
    pub access: String,
    pub valid_from: String,
    pub until: String,
}

impl ActiveAgreement {
    /// The provider side `agreement`, Active with `resources` and `excluded`
    /// until `until`; the consumer's ODS code is read from `tenants`.
    pub fn new(
        agreement: &crate::api::SharingAgreement,
        resources: Vec<String>,
        excluded: impl IntoIterator<Item = crate::api::agreement::SensitiveCategory>,
        until: Option<jiff::Timestamp>,
        tenants: &[impl std::borrow::Borrow<CareRecordTenant>],
    ) -> Self {
        let consumer = &agreement.spec.counterpart_tenant;
        let excluded: std::collections::BTreeSet<_> = excluded.into_iter().collect();
        Self {
            agreement_id: agreement.spec.agreement_id.clone(),
            consumer_tenant: consumer.clone(),
            consumer_organisations: tenants
                .iter()
                .map(std::borrow::Borrow::borrow)
                .filter(|t: &&CareRecordTenant| t.name_any() == *consumer)
                .map(|t| t.spec.ods_code.clone())
                .collect(),
            purpose: "DirectCare".into(),
            resources,
            excluded_categories: excluded.iter().map(|c| format!("{c:?}")).collect(),
            access: "ReadOnly".into(),
            valid_from: agreement.spec.valid_from.0.to_string(),
            until: until.map(|t| t.to_string()).unwrap_or_default(),
        }
    }
}

/// Why the database mode cannot be decided.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseModeError {
    #[error(
        "database.mode is CloudNativePG but the CloudNativePG Cluster CRD (postgresql.cnpg.io/v1) is not installed; install the CloudNativePG operator or choose StatefulSet or External"
    )]
    CloudNativePgNotInstalled,
    #[error(
        "the namespace holds retained patient data in a {retained} database, but database.mode is {requested}; set database.mode: {retained} (or leave it unset) to re-attach to it. The operator never starts an empty database beside retained data"
    )]
    RetainedDataInOtherMode { retained: DatabaseMode, requested: DatabaseMode },
}

/// The database mode: the spec's, else the one recorded in status (a choice
/// once made is kept, so installing CloudNativePG later never moves a
/// tenant's data), else the one recorded on the namespace's retained data (a
/// tenant re-created over retained data re-attaches to it), else
/// CloudNativePG when served, else StatefulSet. A spec naming another mode
/// than the retained data's is refused: it would silently start an empty
/// database.
pub fn resolve_database_mode(
    spec: Option<DatabaseMode>,
    recorded: Option<DatabaseMode>,
    retained: Option<DatabaseMode>,
    cnpg_served: bool,
) -> Result<DatabaseMode, DatabaseModeError> {
    if let (Some(retained), Some(requested)) = (retained, spec.or(recorded))
        && retained != requested
    {
        return Err(DatabaseModeError::RetainedDataInOtherMode { retained, requested });
    }
    match spec.or(recorded).or(retained) {
        Some(DatabaseMode::CloudNativePG) if !cnpg_served => Err(DatabaseModeError::CloudNativePgNotInstalled),
        Some(mode) => Ok(mode),
        None if cnpg_served => Ok(DatabaseMode::CloudNativePG),
        None => Ok(DatabaseMode::StatefulSet),
    }
}

/// The database's children for the chosen mode.
#[derive(Clone, Debug)]
pub enum DatabaseChildren {
    CloudNativePG { cluster: serde_json::Value },
    StatefulSet(Box<StatefulSetDatabase>),
    External,
}

/// A Postgres StatefulSet with its Service, configuration, generated
/// credentials and TLS.
#[derive(Clone, Debug)]
pub struct StatefulSetDatabase {
    pub credentials: Secret,
    pub superuser: Secret,
    pub tls: Secret,
    pub config: k8s_openapi::api::core::v1::ConfigMap,
    pub service: Service,
    pub statefulset: StatefulSet,
}

/// How the record store is published.
#[derive(Clone, Debug)]
pub enum PublicRoute {
    Gateway(Box<gateway_api::httproutes::HttpRoute>),
    Ingress(Box<Ingress>),
}

/// Everything a tenant owns. The applier destructures this without `..`, so a
/// new child cannot be added without being applied.
#[derive(Clone, Debug)]
pub struct TenantChildren {
    pub namespace: Namespace,
    pub quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policies: Vec<NetworkPolicy>,
    pub database: DatabaseChildren,
    pub record_store: Deployment,
    pub record_store_service: Service,
    pub record_store_budget: k8s_openapi::api::policy::v1::PodDisruptionBudget,
    pub route: Option<PublicRoute>,
    pub admins: Option<RoleBinding>,
    pub sharing_policy: k8s_openapi::api::core::v1::ConfigMap,
    pub record_gateway: RecordGateway,
}

/// The record gateway and what it reads.
#[derive(Clone, Debug)]
pub struct RecordGateway {
    pub config: k8s_openapi::api::core::v1::ConfigMap,
    pub page_key: Secret,
    pub deployment: Deployment,
    pub service: Service,
    pub disruption_budget: k8s_openapi::api::policy::v1::PodDisruptionBudget,
}

/// Shared inputs of the builders.
pub(crate) struct Ctx<'a> {
    pub tenant: &'a CareRecordTenant,
    pub settings: &'a PlatformSettings,
    pub facts: &'a Facts,
    pub name: String,
    pub namespace: String,
}

impl Ctx<'_> {
    /// Metadata of a namespaced child: name, tenant labels, owner reference.
    pub fn meta(&self, name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels::tenant_labels(&self.name, component)),
            owner_references: owner_reference(self.tenant).map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    }
}

/// Owner reference to the tenant (see [`controller_reference`]).
pub fn owner_reference(tenant: &CareRecordTenant) -> Option<OwnerReference> {
    controller_reference(tenant)
}

/// Renders every child of a tenant.
pub fn render(tenant: &CareRecordTenant, settings: &PlatformSettings, facts: &Facts) -> TenantChildren {
    let ctx = Ctx { tenant, settings, facts, name: tenant.name_any(), namespace: tenant.target_namespace() };
    let connection = database::connection(&ctx);
    TenantChildren {
        namespace: namespace::namespace(&ctx),
        quota: namespace::quota(&ctx),
        limit_range: namespace::limit_range(&ctx),
        network_policies: network::policies(&ctx),
        database: database::children(&ctx),
        record_store: record_store::deployment(&ctx, &connection),
        record_store_service: record_store::service(&ctx),
        record_store_budget: crate::render::pod::one_at_a_time(
            ctx.meta(RECORD_STORE, RECORD_STORE),
            labels::pod_labels(&ctx.name, RECORD_STORE),
        ),
        route: if tenant.spec.suspend || facts.hostname_held_by.is_some() { None } else { route::route(&ctx) },
        admins: access::role_binding(&ctx),
        sharing_policy: policy::sharing_policy(&ctx),
        record_gateway: {
            RecordGateway {
                deployment: record_gateway::deployment(&ctx),
                config: record_gateway::config_map(&ctx),
                page_key: record_gateway::page_key(&ctx),
                service: record_gateway::service(&ctx),
                disruption_budget: record_gateway::disruption_budget(&ctx),
            }
        },
    }
}

impl TenantChildren {
    /// The children in the order they are applied: the namespace and its
    /// guard rails first, data before the workloads that use it, the public
    /// route last.
    pub fn into_children(self) -> Result<Vec<Child>, ChildError> {
        let TenantChildren {
            namespace,
            quota,
            limit_range,
            network_policies,
            database,
            record_store,
            record_store_service,
            record_store_budget,
            route,
            admins,
            sharing_policy,
            record_gateway,
        } = self;
        let RecordGateway { config, page_key, deployment, service, disruption_budget } = record_gateway;
        let mut out = vec![
            Child::new(ChildKind::Namespace, &namespace, true)?,
            Child::new(ChildKind::ResourceQuota, &quota, true)?,
            Child::new(ChildKind::LimitRange, &limit_range, true)?,
        ];
        for policy in &network_policies {
            out.push(Child::new(ChildKind::NetworkPolicy, policy, true)?);
        }
        match database {
            DatabaseChildren::CloudNativePG { cluster } => {
                out.push(Child::from_value(ChildKind::PostgresCluster, cluster, true)?);
            }
            DatabaseChildren::StatefulSet(db) => {
                let StatefulSetDatabase { credentials, superuser, tls, config, service, statefulset } = *db;
                out.push(Child::new(ChildKind::Secret, &superuser, true)?.create_once());
                out.push(Child::new(ChildKind::Secret, &credentials, true)?.create_once());
                out.push(Child::new(ChildKind::Secret, &tls, true)?.create_once());
                out.push(Child::new(ChildKind::ConfigMap, &config, true)?);
                out.push(Child::new(ChildKind::Service, &service, true)?);
                out.push(Child::new(ChildKind::StatefulSet, &statefulset, true)?);
            }
            DatabaseChildren::External => {}
        }
        out.push(Child::new(ChildKind::ConfigMap, &sharing_policy, false)?);
        out.push(Child::new(ChildKind::Deployment, &record_store, false)?);
        out.push(Child::new(ChildKind::Service, &record_store_service, false)?);
        out.push(Child::new(ChildKind::PodDisruptionBudget, &record_store_budget, false)?);
        out.push(Child::new(ChildKind::ConfigMap, &config, false)?);
        out.push(Child::new(ChildKind::Secret, &page_key, false)?.create_once());
        out.push(Child::new(ChildKind::Deployment, &deployment, false)?);
        out.push(Child::new(ChildKind::Service, &service, false)?);
        out.push(Child::new(ChildKind::PodDisruptionBudget, &disruption_budget, false)?);
        match route {
            Some(PublicRoute::Gateway(route)) => out.push(Child::new(ChildKind::HttpRoute, &*route, false)?),
            Some(PublicRoute::Ingress(ingress)) => out.push(Child::new(ChildKind::Ingress, &*ingress, false)?),
            None => {}
        }
        if let Some(binding) = admins {
            out.push(Child::new(ChildKind::RoleBinding, &binding, false)?);
        }
        Ok(out)
    }
}

/// Test fixtures shared by the builders' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn tenant(yaml: &str) -> CareRecordTenant {
        let mut t: CareRecordTenant = serde_yaml::from_str(yaml).expect("fixture parses");
        t.metadata.uid = Some("0b5e7f4c-1111-4d8e-9c55-2a3b4c5d6e7f".into());
        t
    }

    pub const CHESHIRE: &str = r#"
apiVersion: carerecord.dev/v1alpha1
kind: CareRecordTenant
metadata:
  name: cheshire-merseyside
spec:
  displayName: Cheshire and Merseyside ICS
  odsCode: QYG
  region: North West
  gateway:
    hostname: cheshire-merseyside.scr.example.nhs.uk
  database:
    mode: StatefulSet
    storageSize: 20Gi
  admins:
    groups: ["scr:cheshire-merseyside-admins"]
    users: ["jane.doe@nhs.net"]
"#;

    pub fn facts(mode: DatabaseMode) -> Facts {
        Facts {
            database_mode: mode,
            gateway_api: true,
            active_agreements: Vec::new(),
            hostname_held_by: None,
            organisations: Vec::new(),
            inbound_connectors: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_mode_from_spec_wins() {
        assert_eq!(
            resolve_database_mode(Some(DatabaseMode::External), Some(DatabaseMode::StatefulSet), None, true),
            Ok(DatabaseMode::External)
        );
    }

    #[test]
    fn database_mode_recorded_in_status_is_kept_when_cnpg_appears_later() {
        assert_eq!(
            resolve_database_mode(None, Some(DatabaseMode::StatefulSet), None, true),
            Ok(DatabaseMode::StatefulSet)
        );
    }

    #[test]
    fn database_mode_defaults_to_cnpg_when_served() {
        assert_eq!(resolve_database_mode(None, None, None, true), Ok(DatabaseMode::CloudNativePG));
    }

    #[test]
    fn database_mode_defaults_to_statefulset_without_cnpg() {
        assert_eq!(resolve_database_mode(None, None, None, false), Ok(DatabaseMode::StatefulSet));
    }

    #[test]
    fn explicit_cnpg_without_its_crd_is_an_error() {
        assert_eq!(
            resolve_database_mode(Some(DatabaseMode::CloudNativePG), None, None, false),
            Err(DatabaseModeError::CloudNativePgNotInstalled)
        );
    }

    #[test]
    fn a_tenant_recreated_over_retained_data_reattaches_to_its_mode() {
        assert_eq!(
            resolve_database_mode(None, None, Some(DatabaseMode::StatefulSet), true),
            Ok(DatabaseMode::StatefulSet)
        );
    }

    #[test]
    fn a_mode_other_than_the_retained_datas_is_refused() {
        assert_eq!(
            resolve_database_mode(Some(DatabaseMode::CloudNativePG), None, Some(DatabaseMode::StatefulSet), true),
            Err(DatabaseModeError::RetainedDataInOtherMode {
                retained: DatabaseMode::StatefulSet,
                requested: DatabaseMode::CloudNativePG
            })
        );
    }

    #[test]
    fn a_tenant_without_its_hostname_gets_no_route() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let facts = Facts { hostname_held_by: Some("alpha".into()), ..fixtures::facts(DatabaseMode::StatefulSet) };
        assert!(render(&t, &PlatformSettings::default(), &facts).route.is_none());
    }

    #[test]
    fn data_children_carry_no_owner_reference_so_no_cascade_can_delete_them() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let children = render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet))
            .into_children()
            .unwrap();
        for c in children.iter().filter(|c| c.retain()) {
            let meta = &c.object.metadata;
            assert_eq!(meta.owner_references, None, "{:?} {}", c.kind, c.name());
            let owner = meta.annotations.as_ref().and_then(|a| a.get(labels::OWNER_UID));
            assert_eq!(owner.map(String::as_str), Some("0b5e7f4c-1111-4d8e-9c55-2a3b4c5d6e7f"), "{:?}", c.kind);
        }
    }

    #[test]
    fn every_namespaced_child_is_owned_and_labelled() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let children = render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet))
            .into_children()
            .unwrap();
        for c in &children {
            let meta = &c.object.metadata;
            let by_reference = meta.owner_references.as_ref().map(Vec::len) == Some(1);
            let by_annotation = meta.annotations.as_ref().is_some_and(|a| a.contains_key(labels::OWNER_UID));
            assert!(by_reference != by_annotation, "{:?} {}", c.kind, c.name());
            let l = meta.labels.as_ref().unwrap();
            assert_eq!(l.get(labels::TENANT).map(String::as_str), Some("cheshire-merseyside"));
            assert_eq!(l.get(labels::MANAGED_BY).map(String::as_str), Some("ics-operator"));
            if c.kind.namespaced() {
                assert_eq!(c.namespace(), Some("scr-cheshire-merseyside"), "{:?}", c.kind);
            }
        }
    }

    #[test]
    fn owned_children_hold_a_foreground_deletion_of_their_tenant_until_collected() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let children = render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet))
            .into_children()
            .unwrap();
        for c in children.iter().filter(|c| !c.retain()) {
            let owner = &c.object.metadata.owner_references.as_ref().expect("owned")[0];
            assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)), "{:?}", c.kind);
        }
    }

    #[test]
    fn data_children_are_marked_retain_and_workloads_are_not() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let children = render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet))
            .into_children()
            .unwrap();
        let retained: Vec<_> = children.iter().filter(|c| c.retain()).map(|c| (c.kind, c.name().to_string())).collect();
        assert!(retained.contains(&(ChildKind::Namespace, "scr-cheshire-merseyside".into())));
        assert!(retained.contains(&(ChildKind::StatefulSet, "records-db".into())));
        assert!(retained.contains(&(ChildKind::Secret, "records-db-credentials".into())));
        assert!(!retained.iter().any(|(k, _)| *k == ChildKind::Deployment || *k == ChildKind::HttpRoute));
    }

    #[test]
    fn suspended_tenant_has_no_route_and_no_record_store_pods() {
        let mut t = fixtures::tenant(fixtures::CHESHIRE);
        t.spec.suspend = true;
        let children = render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet));
        assert!(children.route.is_none());
        assert_eq!(children.record_store.spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn without_a_tls_secret_the_ingress_fallback_publishes_nothing() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let facts = Facts { gateway_api: false, ..fixtures::facts(DatabaseMode::StatefulSet) };
        assert!(render(&t, &PlatformSettings::default(), &facts).route.is_none());
        assert!(needs_tls(&t, false, true));
    }

    #[test]
    fn without_gateway_api_the_route_is_an_ingress() {
        let mut t = fixtures::tenant(fixtures::CHESHIRE);
        t.spec.gateway.tls_secret_name = Some("cheshire-tls".into());
        let facts = Facts { gateway_api: false, ..fixtures::facts(DatabaseMode::StatefulSet) };
        let children = render(&t, &PlatformSettings::default(), &facts);
        assert!(matches!(children.route, Some(PublicRoute::Ingress(_))));
    }

    #[test]
    fn without_gateway_api_or_ingress_fallback_there_is_no_route() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let mut settings = PlatformSettings::default();
        settings.ingress.enabled = false;
        let facts = Facts { gateway_api: false, ..fixtures::facts(DatabaseMode::StatefulSet) };
        assert!(render(&t, &settings, &facts).route.is_none());
    }
}

impl DatabaseConnection {
    /// Where the record store of `tenant` finds its database credentials.
    pub fn for_tenant(tenant: &CareRecordTenant, settings: &PlatformSettings, facts: &Facts) -> Self {
        let ctx = Ctx { tenant, settings, facts, name: tenant.name_any(), namespace: tenant.target_namespace() };
        database::connection(&ctx)
    }
}
