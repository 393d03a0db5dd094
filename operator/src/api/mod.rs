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
