//! Gateway API pieces shared by every route the operator renders.

use gateway_api::httproutes::{
    HttpRouteParentRefs, HttpRouteRulesBackendRefs, HttpRouteRulesFilters, HttpRouteRulesFiltersType,
    HttpRouteRulesFiltersUrlRewrite, HttpRouteRulesFiltersUrlRewritePath, HttpRouteRulesFiltersUrlRewritePathType,
};

use crate::api::tenant::CareRecordTenant;
use crate::settings::PlatformSettings;

/// The Gateway a tenant's routes attach to: the tenant's override, else the platform's.
pub fn parent_ref(tenant: &CareRecordTenant, settings: &PlatformSettings) -> HttpRouteParentRefs {
    let (name, namespace, section_name) = match &tenant.spec.gateway.parent_ref {
        Some(p) => (p.name.clone(), p.namespace.clone(), p.section_name.clone()),
        None => {
            let g = &settings.gateway;
            (g.name.clone(), g.namespace.clone(), g.section_name.clone())
        }
    };
    HttpRouteParentRefs {
        group: Some("gateway.networking.k8s.io".into()),
        kind: Some("Gateway".into()),
        name,
        namespace: Some(namespace),
        section_name,
        port: None,
    }
}

/// A backend that is a Service in the route's namespace.
pub fn service_backend(name: &str, port: i32) -> HttpRouteRulesBackendRefs {
    HttpRouteRulesBackendRefs {
        group: Some(String::new()),
        kind: Some("Service".into()),
        name: name.into(),
        port: Some(port),
        weight: Some(1),
        ..HttpRouteRulesBackendRefs::default()
    }
}

/// A filter replacing the matched path prefix with `prefix` before the backend sees it.
pub fn replace_prefix(prefix: &str) -> HttpRouteRulesFilters {
    HttpRouteRulesFilters {
        r#type: HttpRouteRulesFiltersType::UrlRewrite,
        url_rewrite: Some(HttpRouteRulesFiltersUrlRewrite {
            path: Some(HttpRouteRulesFiltersUrlRewritePath {
                r#type: HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch,
                replace_prefix_match: Some(prefix.into()),
                replace_full_path: None,
            }),
            hostname: None,
        }),
        ..HttpRouteRulesFilters::default()
    }
}
