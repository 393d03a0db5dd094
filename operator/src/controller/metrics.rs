//! Prometheus metrics. Labels come from small fixed sets (kind, error
//! category, phase, probe result), never from object names or error text,
//! so cardinality stays bounded however many tenants there are.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// A read of children that reached the API server: `get` (a child that
/// may have changed, compared whole) or `list` (kinds the child store does
/// not watch, and the finalizer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    pub kind: &'static str,
    pub verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabel {
    pub result: &'static str,
}

pub struct Metrics {
    pub reconciles: Family<KindLabel, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Family<KindLabel, Histogram>,
    pub in_flight: Family<KindLabel, Gauge>,
    pub queue_depth: Family<KindLabel, Gauge>,
    pub child_writes: Family<WriteLabels, Counter>,
    pub child_reads: Family<ReadLabels, Counter>,
    pub probes: Family<ProbeLabel, Counter>,
    pub tenants: Family<PhaseLabel, Gauge>,
    pub leader: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them under `ics_operator_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            in_flight: Family::default(),
            queue_depth: Family::default(),
            child_writes: Family::default(),
            child_reads: Family::default(),
            probes: Family::default(),
            tenants: Family::default(),
            leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("ics_operator");
        r.register("reconciles", "Reconciles started, by kind", m.reconciles.clone());
        r.register("reconcile_errors", "Reconciles that failed, by kind and error category", m.failures.clone());
        r.register("reconcile_duration_seconds", "Reconcile duration, by kind", m.duration.clone());
        r.register("reconciles_in_flight", "Reconciles running now, by kind", m.in_flight.clone());
        r.register(
            "queue_depth",
            "Objects a watch asked to reconcile that no reconcile has picked up yet, by kind",
            m.queue_depth.clone(),
        );
        r.register("child_writes", "Writes of child objects, by kind and outcome", m.child_writes.clone());
        r.register(
            "child_reads",
            "Reads of child objects from the API server (not the watch cache), by kind and verb",
            m.child_reads.clone(),
        );
        r.register("endpoint_probes", "Endpoint probes, by result", m.probes.clone());
        r.register("tenants", "Tenants by phase", m.tenants.clone());
        r.register("leader", "1 while this replica holds the leader Lease", m.leader.clone());
        m
    }

    /// Counts a read of `controller`'s children that reached the API server.
    pub fn child_read(&self, controller: &'static str, verb: &'static str) {
        self.child_reads.get_or_create(&ReadLabels { kind: controller, verb }).inc();
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&KindLabel { kind }).inc();
        self.in_flight.get_or_create(&KindLabel { kind }).inc();
        ReconcileTimer { metrics: self, kind, start: Instant::now() }
    }
}

/// Records a reconcile's duration when dropped, however the reconcile ends.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let label = KindLabel { kind: self.kind };
        self.metrics.duration.get_or_create(&label).observe(self.start.elapsed().as_secs_f64());
        self.metrics.in_flight.get_or_create(&label).dec();
    }
}

/// Liveness and readiness as the HTTP endpoints report them.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_timer_counts_and_times() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        drop(m.reconcile("tenant"));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("ics_operator_reconciles_total{kind=\"tenant\"} 1"), "{text}");
        assert!(text.contains("ics_operator_reconcile_duration_seconds_count{kind=\"tenant\"} 1"), "{text}");
        assert!(text.contains("ics_operator_reconciles_in_flight{kind=\"tenant\"} 0"), "{text}");
    }
}
