//! Admin access to the tenant namespace.

use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};

use super::Ctx;

/// Binds the tenant's admins to the platform's tenant-admin ClusterRole in
/// the tenant namespace only. No admins, no binding.
pub(super) fn role_binding(ctx: &Ctx) -> Option<RoleBinding> {
    let admins = ctx.tenant.spec.admins.as_ref()?;
    let subject = |kind: &str, name: &String| Subject {
        kind: kind.into(),
        name: name.clone(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    };
    let subjects: Vec<Subject> = admins
        .groups
        .iter()
        .map(|g| subject("Group", g))
        .chain(admins.users.iter().map(|u| subject("User", u)))
        .collect();
    if subjects.is_empty() {
        return None;
    }
    Some(RoleBinding {
        metadata: ctx.meta("tenant-admins", "access"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: ctx.settings.tenant_admin_cluster_role.clone(),
        },
        subjects: Some(subjects),
    })
}
