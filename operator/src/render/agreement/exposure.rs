//! What the provider side exposes while an agreement is Active: per resource
//! type a GET-only HTTPRoute on the provider tenant host, rewritten to the
//! record store, and a NetworkPolicy admitting the consumer namespace.

use std::collections::BTreeMap;

use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesMatches, HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPath,
    HttpRouteRulesMatchesPathType, HttpRouteSpec,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::Decision;
use crate::api::agreement::{AgreementPhase, Role, SharingAgreement};
use crate::api::tenant::CareRecordTenant;
use crate::render::child::{Child, ChildError, ChildKind};
use crate::render::labels;
use crate::render::tenant::{RECORD_STORE, RECORD_STORE_PORT};
use crate::settings::PlatformSettings;

/// Everything the provider side owns while Active.
#[derive(Clone, Debug, Default)]
pub struct AgreementChildren {
    pub routes: Vec<HttpRoute>,
    pub network_policy: Option<NetworkPolicy>,
}

impl AgreementChildren {
    pub fn into_children(self) -> Result<Vec<Child>, ChildError> {
        let AgreementChildren { routes, network_policy } = self;
        let mut out = Vec::new();
        if let Some(policy) = network_policy {
            out.push(Child::new(ChildKind::NetworkPolicy, &policy, false)?);
        }
        for route in &routes {
            out.push(Child::new(ChildKind::HttpRoute, route, false)?);
        }
        Ok(out)
    }
}

/// Path under which `consumer` reads the provider's `resource_type`.
pub fn federation_path(consumer: &str, resource_type: &str) -> String {
    format!("/federation/{consumer}/fhir/{resource_type}")
}

/// The provider side's children: nothing unless this is the provider side
/// and the decision is Active.
pub fn children(
    agreement: &SharingAgreement,
    decision: &Decision,
    provider: &CareRecordTenant,
    consumer_namespace: &str,
    settings: &PlatformSettings,
) -> AgreementChildren {
    if agreement.spec.role != Role::Provider || decision.phase != AgreementPhase::Active {
        return AgreementChildren::default();
    }
    let name = agreement.name_any();
    let namespace = agreement.namespace().unwrap_or_else(|| provider.target_namespace());
    let consumer = &agreement.spec.counterpart_tenant;
    let meta = |object: String, component: &str| {
        let mut l = labels::tenant_labels(&provider.name_any(), component);
        l.insert(labels::AGREEMENT.into(), name.clone());
        ObjectMeta {
            name: Some(object),
            namespace: Some(namespace.clone()),
            labels: Some(l),
            owner_references: agreement.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        }
    };
    let parent = crate::render::gateway::parent_ref(provider, settings);
    let routes = decision
        .shared_resources
        .iter()
        .map(|resource_type| HttpRoute {
            metadata: meta(format!("share-{name}-{}", resource_type.to_lowercase()), "federation"),
            spec: HttpRouteSpec {
                hostnames: Some(vec![provider.spec.gateway.hostname.clone()]),
                parent_refs: Some(vec![parent.clone()]),
                rules: Some(vec![HttpRouteRules {
                    matches: Some(vec![HttpRouteRulesMatches {
                        method: Some(HttpRouteRulesMatchesMethod::Get),
                        path: Some(HttpRouteRulesMatchesPath {
                            r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                            value: Some(federation_path(consumer, resource_type)),
                        }),
                        ..HttpRouteRulesMatches::default()
                    }]),
                    filters: Some(vec![crate::render::gateway::replace_prefix(&format!("/fhir/{resource_type}"))]),
                    backend_refs: Some(vec![crate::render::gateway::service_backend(RECORD_STORE, RECORD_STORE_PORT)]),
                    ..HttpRouteRules::default()
                }]),
            },
            status: None,
        })
        .collect();
    let network_policy = NetworkPolicy {
        metadata: meta(format!("share-{name}"), "network"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(labels::POD_COMPONENT.to_string(), RECORD_STORE.to_string())])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            "kubernetes.io/metadata.name".to_string(),
                            consumer_namespace.to_string(),
                        )])),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(RECORD_STORE_PORT)),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    };
    AgreementChildren { routes, network_policy: Some(network_policy) }
}
