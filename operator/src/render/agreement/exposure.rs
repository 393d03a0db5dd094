//! What the provider side exposes while an agreement is Active: per resource
//! type a GET-only HTTPRoute on the provider tenant host, to the provider's
//! record gateway. No network path opens between the tenants: the consumer
//! reaches the provider only through the platform Gateway and the record
//! gateway, which authenticates it and enforces the agreement.

use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesMatches, HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPath,
    HttpRouteRulesMatchesPathType, HttpRouteSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::Decision;
use crate::api::agreement::{AgreementPhase, Role, SharingAgreement};
use crate::api::tenant::CareRecordTenant;
use crate::render::child::{Child, ChildError, ChildKind, controller_reference};
use crate::render::labels;
use crate::render::tenant::record_gateway::{RECORD_GATEWAY, RECORD_GATEWAY_PORT};
use crate::settings::PlatformSettings;

/// Everything the provider side owns while Active.
#[derive(Clone, Debug, Default)]
pub struct AgreementChildren {
    pub routes: Vec<HttpRoute>,
}

impl AgreementChildren {
    pub fn into_children(self) -> Result<Vec<Child>, ChildError> {
        let AgreementChildren { routes } = self;
        let mut out = Vec::new();
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
            owner_references: controller_reference(agreement).map(|o| vec![o]),
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
                    // To the provider's record gateway, path unchanged: the
                    // gateway knows the caller came for federation by the path,
                    // and checks the agreement, the caller and every resource.
                    backend_refs: Some(vec![crate::render::gateway::service_backend(
                        RECORD_GATEWAY,
                        RECORD_GATEWAY_PORT,
                    )]),
                    ..HttpRouteRules::default()
                }]),
            },
            status: None,
        })
        .collect();
    AgreementChildren { routes }
}
