//! Prometheus metrics, with fixed label sets only (route, decision, reason):
//! never a caller, a patient, a path or anything a request chooses.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::decision::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// tenant, federation, inbound or other.
    pub route: &'static str,
    /// allow or deny.
    pub decision: &'static str,
    /// A [`Reason`] label, or `none` when allowed.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok or error.
    pub result: &'static str,
}

/// Every metric the gateway exports.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RequestLabels, Histogram>,
    pub audit_written: Counter,
    pub audit_failures: Counter,
    pub audit_queue: Gauge,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            audit_written: Counter::default(),
            audit_failures: Counter::default(),
            audit_queue: Gauge::default(),
            policy_reloads: Family::default(),
            config_reloads: Family::default(),
        };
        registry.register("gateway_requests", "Requests by route, decision and reason", metrics.requests.clone());
        registry.register(
            "gateway_request_duration_seconds",
            "Time to answer a request, by route, decision and reason",
            metrics.duration.clone(),
        );
        registry.register(
            "gateway_audit_events_written",
            "Audit events the store accepted",
            metrics.audit_written.clone(),
        );
        registry.register(
            "gateway_audit_write_failures",
            "Failed attempts to write a batch of audit events",
            metrics.audit_failures.clone(),
        );
        registry.register(
            "gateway_audit_queue_depth",
            "Audit events waiting to be written",
            metrics.audit_queue.clone(),
        );
        registry.register("gateway_policy_reloads", "Sharing policy reloads by result", metrics.policy_reloads.clone());
        registry.register(
            "gateway_config_reloads",
            "Reloads of the configuration's reloadable part (organisations, push connectors) by result",
            metrics.config_reloads.clone(),
        );
        // Every reason starts at zero, so that rate() sees the first refusal.
        for reason in Reason::ALL {
            for route in ["tenant", "federation", "inbound", "other"] {
                let _ =
                    metrics.requests.get_or_create(&RequestLabels { route, decision: "deny", reason: reason.as_str() });
            }
        }
        metrics
    }
}
