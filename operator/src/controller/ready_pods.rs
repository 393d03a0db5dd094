//! The ready pods of every connector, by connector: whom the status reader
//! asks.
//!
//! Fed by a watch of connector pods, of which nothing is kept but each
//! pod's connector and, while it is ready, its address. Asking for one
//! connector's pod is a map lookup, not a walk over every pod of the
//! platform (which, sorted per ask, was a connector reconcile's largest
//! cost at thousands of connectors).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::sync::ConnectorKey;
use crate::render::labels;

/// A pod, by namespace and name.
type PodKey = (String, String);

/// What the index keeps of one pod: whose it is, and its address while ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pod: PodKey,
    connector: ConnectorKey,
    ready_at: Option<IpAddr>,
}

/// What a pod says about itself, if it is a connector's: its connector
/// label, and its address if it is Ready and not being deleted. Pure.
pub fn observe(pod: &Pod) -> Option<Observed> {
    let namespace = pod.namespace()?;
    let connector = pod.labels().get(labels::CONNECTOR)?.clone();
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let address = status.and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse::<IpAddr>().ok());
    let ready_at = address.filter(|_| ready && pod.metadata.deletion_timestamp.is_none());
    Some(Observed { pod: (namespace.clone(), pod.name_any()), connector: (namespace, connector), ready_at })
}

/// Every connector's ready pods (pod name -> address), and which connector
/// each known pod belongs to (so a relabelled or deleted pod leaves no trace).
#[derive(Debug, Default)]
pub struct ReadyPods {
    by_connector: HashMap<ConnectorKey, BTreeMap<String, IpAddr>>,
    owner: HashMap<PodKey, ConnectorKey>,
}

impl ReadyPods {
    /// Records a pod's latest state.
    pub fn apply(&mut self, observed: Observed) {
        self.forget(&observed.pod);
        let Some(address) = observed.ready_at else { return };
        self.by_connector.entry(observed.connector.clone()).or_default().insert(observed.pod.1.clone(), address);
        self.owner.insert(observed.pod, observed.connector);
    }

    /// Forgets a deleted pod.
    pub fn delete(&mut self, observed: &Observed) {
        self.forget(&observed.pod);
    }

    fn forget(&mut self, pod: &PodKey) {
        let Some(connector) = self.owner.remove(pod) else { return };
        if let Some(pods) = self.by_connector.get_mut(&connector) {
            pods.remove(&pod.1);
            if pods.is_empty() {
                self.by_connector.remove(&connector);
            }
        }
    }

    /// The address of one ready pod of the connector: the first by pod
    /// name, so the choice is stable.
    pub fn of(&self, connector: &ConnectorKey) -> Option<IpAddr> {
        self.by_connector.get(connector)?.values().next().copied()
    }

    /// One ready pod address per connector that has one.
    pub fn all(&self) -> Vec<(ConnectorKey, IpAddr)> {
        self.by_connector.iter().filter_map(|(k, pods)| Some((k.clone(), *pods.values().next()?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, connector: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": namespace, "name": name, "labels": {labels::CONNECTOR: connector}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn index(pods: &[Pod]) -> ReadyPods {
        let mut index = ReadyPods::default();
        for p in pods {
            index.apply(observe(p).expect("a connector pod"));
        }
        index
    }

    fn key(namespace: &str, connector: &str) -> ConnectorKey {
        (namespace.to_string(), connector.to_string())
    }

    #[test]
    fn only_ready_pods_are_asked_one_per_connector_the_first_by_name() {
        let ready = index(&[
            pod("scr-a", "gp-2", "gp", "10.0.0.2", true),
            pod("scr-a", "gp-1", "gp", "10.0.0.1", true),
            pod("scr-a", "adt-1", "adt", "10.0.0.3", false),
            pod("scr-b", "gp-1", "gp", "10.0.1.1", true),
        ]);
        assert_eq!(ready.all().len(), 2);
        assert_eq!(ready.of(&key("scr-a", "gp")), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ready.of(&key("scr-b", "gp")), Some("10.0.1.1".parse().unwrap()));
        assert_eq!(ready.of(&key("scr-a", "adt")), None);
    }

    #[test]
    fn a_pod_that_stops_being_ready_or_is_deleted_is_no_longer_asked() {
        let mut ready =
            index(&[pod("scr-a", "gp-1", "gp", "10.0.0.1", true), pod("scr-a", "gp-2", "gp", "10.0.0.2", true)]);
        ready.apply(observe(&pod("scr-a", "gp-1", "gp", "10.0.0.1", false)).unwrap());
        assert_eq!(ready.of(&key("scr-a", "gp")), Some("10.0.0.2".parse().unwrap()));
        ready.delete(&observe(&pod("scr-a", "gp-2", "gp", "10.0.0.2", true)).unwrap());
        assert_eq!(ready.of(&key("scr-a", "gp")), None);
        assert!(ready.all().is_empty());
    }

    #[test]
    fn a_relabelled_pod_answers_only_for_its_new_connector() {
        let mut ready = index(&[pod("scr-a", "gp-1", "gp", "10.0.0.1", true)]);
        ready.apply(observe(&pod("scr-a", "gp-1", "adt", "10.0.0.1", true)).unwrap());
        assert_eq!(ready.of(&key("scr-a", "gp")), None);
        assert_eq!(ready.of(&key("scr-a", "adt")), Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_pod_being_deleted_is_not_ready() {
        let mut terminating = pod("scr-a", "gp-1", "gp", "10.0.0.1", true);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-07T00:00:00Z".parse().unwrap()));
        assert_eq!(observe(&terminating).unwrap().ready_at, None);
    }
}
