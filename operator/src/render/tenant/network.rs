//! Network policies: deny by default, then admit exactly the flows a tenant
//! needs.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Ctx;
use super::database::{DATABASE, POSTGRES_PORT};
use super::record_gateway::{RECORD_GATEWAY, RECORD_GATEWAY_PORT};
use super::record_store::{RECORD_STORE, RECORD_STORE_PORT};
use crate::api::tenant::DatabaseMode;
use crate::render::labels::POD_COMPONENT;

/// Pod component label of provider connectors.
pub const CONNECTOR: &str = "connector";
/// Port of CloudNativePG's instance manager, polled by its operator.
const CNPG_STATUS_PORT: i32 = 8000;

fn component(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(POD_COMPONENT.to_string(), name.to_string())])),
        ..LabelSelector::default()
    }
}

/// Pods of one component of the same namespace.
pub(crate) fn pods(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(component(name)), ..NetworkPolicyPeer::default() }
}

/// Every pod of the namespace `name`.
pub(crate) fn namespace(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

pub(crate) fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(IntOrString::Int(port)), protocol: Some("TCP".into()), end_port: None }
}

fn udp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(IntOrString::Int(port)), protocol: Some("UDP".into()), end_port: None }
}

fn policy(ctx: &Ctx, name: &str, selector: LabelSelector, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ctx.meta(name, "network"),
        spec: Some(NetworkPolicySpec { pod_selector: Some(selector), ..spec }),
    }
}

fn ingress(from: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicySpec {
    NetworkPolicySpec {
        policy_types: Some(vec!["Ingress".into()]),
        ingress: Some(vec![NetworkPolicyIngressRule { from: Some(from), ports: Some(ports) }]),
        ..NetworkPolicySpec::default()
    }
}

fn egress(rules: Vec<NetworkPolicyEgressRule>) -> NetworkPolicySpec {
    NetworkPolicySpec { policy_types: Some(vec!["Egress".into()]), egress: Some(rules), ..NetworkPolicySpec::default() }
}

fn to(peers: Option<Vec<NetworkPolicyPeer>>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule { to: peers, ports: Some(ports) }
}

/// All policies for the tenant namespace.
pub(super) fn policies(ctx: &Ctx) -> Vec<NetworkPolicy> {
    let s = ctx.settings;
    let front_door = if ctx.facts.gateway_api { &s.gateway.namespace } else { &s.ingress.controller_namespace };
    let mut out = vec![
        policy(
            ctx,
            "default-deny",
            LabelSelector::default(),
            NetworkPolicySpec {
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ..NetworkPolicySpec::default()
            },
        ),
        policy(
            ctx,
            "allow-dns",
            LabelSelector::default(),
            egress(vec![to(Some(vec![namespace(&s.dns_namespace)]), vec![udp(53), tcp(53)])]),
        ),
        // Only the record gateway and the tenant's own connectors reach the
        // record store: every outside request passes the gateway's checks.
        policy(
            ctx,
            "record-store-ingress",
            component(RECORD_STORE),
            ingress(vec![pods(RECORD_GATEWAY), pods(CONNECTOR)], vec![tcp(RECORD_STORE_PORT)]),
        ),
        policy(
            ctx,
            "record-gateway-ingress",
            component(RECORD_GATEWAY),
            ingress(vec![namespace(front_door)], vec![tcp(RECORD_GATEWAY_PORT)]),
        ),
        // The gateway forwards to the record store and to push connectors,
        // and fetches the trusted issuers' keys (OIDC discovery and JWKS over HTTPS).
        policy(ctx, "record-gateway-egress", component(RECORD_GATEWAY), egress(gateway_egress(ctx))),
    ];
    let database = match ctx.facts.database_mode {
        // An external database lives at an address the operator cannot know.
        DatabaseMode::External => to(None, vec![tcp(POSTGRES_PORT)]),
        DatabaseMode::StatefulSet | DatabaseMode::CloudNativePG => {
            to(Some(vec![pods(DATABASE)]), vec![tcp(POSTGRES_PORT)])
        }
    };
    out.push(policy(ctx, "record-store-to-database", component(RECORD_STORE), egress(vec![database])));
    match ctx.facts.database_mode {
        DatabaseMode::External => {}
        DatabaseMode::StatefulSet => out.push(policy(
            ctx,
            "database-ingress",
            component(DATABASE),
            ingress(vec![pods(RECORD_STORE)], vec![tcp(POSTGRES_PORT)]),
        )),
        DatabaseMode::CloudNativePG => {
            // CloudNativePG instances replicate to each other, are polled by
            // the CloudNativePG operator and talk to the Kubernetes API.
            out.push(policy(
                ctx,
                "database-ingress",
                component(DATABASE),
                NetworkPolicySpec {
                    policy_types: Some(vec!["Ingress".into()]),
                    ingress: Some(vec![
                        NetworkPolicyIngressRule {
                            from: Some(vec![pods(RECORD_STORE), pods(DATABASE)]),
                            ports: Some(vec![tcp(POSTGRES_PORT)]),
                        },
                        NetworkPolicyIngressRule {
                            from: Some(vec![namespace(&s.cloud_native_pg_namespace)]),
                            ports: Some(vec![tcp(POSTGRES_PORT), tcp(CNPG_STATUS_PORT)]),
                        },
                    ]),
                    ..NetworkPolicySpec::default()
                },
            ));
            out.push(policy(
                ctx,
                "database-egress",
                component(DATABASE),
                egress(vec![
                    to(Some(vec![pods(DATABASE)]), vec![tcp(POSTGRES_PORT)]),
                    to(None, vec![tcp(443), tcp(6443)]),
                ]),
            ));
        }
    }
    out
}

/// Where the record gateway may connect: the record store, the push
/// connectors' ports, and HTTPS (the issuers' keys).
fn gateway_egress(ctx: &Ctx) -> Vec<NetworkPolicyEgressRule> {
    let mut rules = vec![to(Some(vec![pods(RECORD_STORE)]), vec![tcp(RECORD_STORE_PORT)])];
    let mut ports: Vec<i32> = ctx
        .facts
        .inbound_connectors
        .iter()
        .filter_map(|c| c.upstream_url.rsplit_once(':').and_then(|(_, port)| port.parse().ok()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    if !ports.is_empty() {
        rules.push(to(Some(vec![pods(super::CONNECTOR_COMPONENT)]), ports.into_iter().map(tcp).collect()));
    }
    rules.push(to(None, vec![tcp(443)]));
    rules
}

#[cfg(test)]
mod tests {
    use super::super::{fixtures, render};
    use crate::api::tenant::DatabaseMode;
    use crate::settings::PlatformSettings;

    fn names(mode: DatabaseMode) -> Vec<String> {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        render(&t, &PlatformSettings::default(), &fixtures::facts(mode))
            .network_policies
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    }

    #[test]
    fn every_mode_starts_from_default_deny_with_dns() {
        for mode in [DatabaseMode::StatefulSet, DatabaseMode::CloudNativePG, DatabaseMode::External] {
            let n = names(mode);
            assert_eq!(&n[..2], ["default-deny", "allow-dns"], "{mode:?}");
        }
    }

    #[test]
    fn external_database_has_no_database_pod_policies() {
        assert!(!names(DatabaseMode::External).contains(&"database-ingress".to_string()));
    }

    #[test]
    fn cloudnativepg_database_may_reach_the_api_server() {
        assert!(names(DatabaseMode::CloudNativePG).contains(&"database-egress".to_string()));
    }
}
