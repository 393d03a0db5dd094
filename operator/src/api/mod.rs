//! The `carerecord.dev/v1alpha1` API: custom resource types and the pieces
//! they share. Nothing here touches the network.

pub mod agreement;
pub mod condition;
pub mod connector;
pub mod fhir;
pub mod tenant;

pub use agreement::{SharingAgreement, SharingAgreementSpec, SharingAgreementStatus};
pub use condition::{ConditionStatus, ConditionsExt};
pub use connector::{ProviderConnector, ProviderConnectorSpec, ProviderConnectorStatus};
pub use tenant::{CareRecordTenant, CareRecordTenantSpec, CareRecordTenantStatus};

use kube::CustomResourceExt;

/// API group of every kind this operator serves.
pub const GROUP: &str = "carerecord.dev";

/// Every CustomResourceDefinition this operator serves, in install order.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    vec![CareRecordTenant::crd(), ProviderConnector::crd(), SharingAgreement::crd()]
}

/// The pattern of an NHS ODS organisation code; CEL rules use the same text.
pub const ODS_CODE_PATTERN: &str = "^[A-Z0-9]{1,9}$";

#[cfg(test)]
mod tests {
    /// Short names kubectl already gives built-in kinds (`kubectl
    /// api-resources`): one of ours among them would make `kubectl get sa`
    /// warn, or worse, on every cluster running the operator.
    const BUILT_IN_SHORT_NAMES: &[&str] = &[
        "cs", "cm", "ep", "ev", "limits", "ns", "no", "pvc", "pv", "po", "rc", "quota", "sa", "svc", "crd", "crds",
        "ds", "deploy", "rs", "sts", "hpa", "cj", "csr", "ing", "netpol", "pdb", "pc", "sc", "ingclass", "eps",
    ];

    #[test]
    fn no_short_name_shadows_a_built_in_kind() {
        for crd in super::crds() {
            for short in crd.spec.names.short_names.unwrap_or_default() {
                assert!(!BUILT_IN_SHORT_NAMES.contains(&short.as_str()), "{}: {short}", crd.spec.names.kind);
            }
        }
    }
}
