//! The tenant's public FHIR route: an HTTPRoute on the platform Gateway, or
//! an Ingress where the Gateway API is not served.

use gateway_api::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesMatches, HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType,
    HttpRouteSpec,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};

use super::record_gateway::{RECORD_GATEWAY, RECORD_GATEWAY_PORT};
use super::record_store::RECORD_STORE;
use super::{Ctx, PublicRoute};

/// Path prefix of the FHIR base on the tenant host.
pub const FHIR_PATH: &str = "/fhir";

pub(super) fn route(ctx: &Ctx) -> Option<PublicRoute> {
    if ctx.facts.gateway_api {
        Some(PublicRoute::Gateway(Box::new(http_route(ctx))))
    } else if ctx.settings.ingress.enabled && ctx.tenant.spec.gateway.tls_secret_name.is_some() {
        // Records are never served over plain HTTP: without a TLS Secret
        // the Ingress fallback publishes nothing (see `needs_tls`).
        Some(PublicRoute::Ingress(Box::new(ingress(ctx))))
    } else {
        None
    }
}

/// Whether the tenant cannot be published because the Ingress fallback
/// would serve it without TLS.
pub fn needs_tls(tenant: &crate::api::CareRecordTenant, gateway_api: bool, ingress_enabled: bool) -> bool {
    !gateway_api && ingress_enabled && tenant.spec.gateway.tls_secret_name.is_none()
}

fn http_route(ctx: &Ctx) -> HttpRoute {
    HttpRoute {
        metadata: ctx.meta(RECORD_STORE, "gateway"),
        spec: HttpRouteSpec {
            hostnames: Some(vec![ctx.tenant.spec.gateway.hostname.clone()]),
            parent_refs: Some(vec![crate::render::gateway::parent_ref(ctx.tenant, ctx.settings)]),
            rules: Some(vec![HttpRouteRules {
                matches: Some(vec![HttpRouteRulesMatches {
                    path: Some(HttpRouteRulesMatchesPath {
                        r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
                        value: Some(FHIR_PATH.into()),
                    }),
                    ..HttpRouteRulesMatches::default()
                }]),
                backend_refs: Some(vec![crate::render::gateway::service_backend(RECORD_GATEWAY, RECORD_GATEWAY_PORT)]),
                ..HttpRouteRules::default()
            }]),
        },
        status: None,
    }
}

fn ingress(ctx: &Ctx) -> Ingress {
    let host = ctx.tenant.spec.gateway.hostname.clone();
    Ingress {
        metadata: ctx.meta(RECORD_STORE, "gateway"),
        spec: Some(IngressSpec {
            ingress_class_name: ctx.settings.ingress.class_name.clone(),
            tls: ctx
                .tenant
                .spec
                .gateway
                .tls_secret_name
                .clone()
                .map(|secret| vec![IngressTLS { hosts: Some(vec![host.clone()]), secret_name: Some(secret) }]),
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(FHIR_PATH.into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: RECORD_GATEWAY.into(),
                                port: Some(ServiceBackendPort { number: Some(RECORD_GATEWAY_PORT), name: None }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PublicRoute, fixtures, render};
    use crate::api::tenant::{DatabaseMode, GatewayParentRef};
    use crate::settings::PlatformSettings;

    #[test]
    fn route_attaches_to_the_platform_gateway_by_default() {
        let t = fixtures::tenant(fixtures::CHESHIRE);
        let Some(PublicRoute::Gateway(r)) =
            render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet)).route
        else {
            panic!("Gateway API is served");
        };
        let parent = &r.spec.parent_refs.as_ref().unwrap()[0];
        assert_eq!((parent.name.as_str(), parent.namespace.as_deref()), ("platform", Some("gateway-system")));
        assert_eq!(r.spec.hostnames, Some(vec!["cheshire-merseyside.scr.example.nhs.uk".to_string()]));
    }

    #[test]
    fn parent_ref_override_wins() {
        let mut t = fixtures::tenant(fixtures::CHESHIRE);
        t.spec.gateway.parent_ref =
            Some(GatewayParentRef { name: "nw".into(), namespace: "nw-gw".into(), section_name: None });
        let Some(PublicRoute::Gateway(r)) =
            render(&t, &PlatformSettings::default(), &fixtures::facts(DatabaseMode::StatefulSet)).route
        else {
            panic!("Gateway API is served");
        };
        assert_eq!(r.spec.parent_refs.as_ref().unwrap()[0].name, "nw");
    }
}
