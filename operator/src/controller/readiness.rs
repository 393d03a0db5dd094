//! Reads readiness from observed children. Pure: JSON in, verdict out.

use serde_json::Value;

/// Whether a child is ready, and if not, why (for condition messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self { ready: true, reason, message: message.into() }
    }
    fn waiting(reason: &'static str, message: impl Into<String>) -> Self {
        Self { ready: false, reason, message: message.into() }
    }

    /// Whether the child is refused rather than catching up: a person must
    /// act (the platform Gateway turned the route down).
    pub fn warns(&self) -> bool {
        !self.ready && self.reason == NOT_ACCEPTED
    }
}

/// The reason of an HTTPRoute the platform Gateway refused.
const NOT_ACCEPTED: &str = "NotAccepted";

fn int(v: &Value, path: &[&str]) -> i64 {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_i64).unwrap_or(0)
}

/// A Deployment is ready when its current generation has every replica
/// available. While it is not, the message counts the replicas of the
/// latest spec known available, the same words whether or not the
/// Deployment controller has seen that spec yet: a message that changed
/// between the two would be one more status write of every connector and
/// tenant as it starts, telling nobody anything.
pub fn deployment(d: Option<&Value>) -> Verdict {
    let Some(d) = d else { return Verdict::waiting("NotCreated", "the Deployment does not exist yet") };
    let want = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let observed = int(d, &["status", "observedGeneration"]) >= int(d, &["metadata", "generation"]);
    let available = int(d, &["status", "availableReplicas"]);
    let updated = int(d, &["status", "updatedReplicas"]);
    if observed && want == 0 {
        return Verdict::ready("ScaledToZero", "scaled to zero");
    }
    if observed && available >= want && updated >= want {
        return Verdict::ready("Available", format!("{available}/{want} replicas available"));
    }
    // Counts from a status of an older spec are not the latest spec's.
    let latest = if observed { available.min(updated) } else { 0 };
    Verdict::waiting("Progressing", format!("{latest}/{want} replicas of the latest spec available"))
}

/// The resources a ResourceQuota caps whose usage the quota controller has
/// not counted yet. Until it has, the API server refuses to create any of
/// them ("status unknown for quota"): a tenant is not Ready before that.
pub fn uncounted_quota(q: Option<&Value>) -> Vec<String> {
    let Some(q) = q else { return vec!["(the quota does not exist yet)".into()] };
    let used = q.pointer("/status/used").and_then(Value::as_object);
    let mut missing: Vec<String> = q
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .map(|hard| hard.keys().filter(|k| used.is_none_or(|u| !u.contains_key(*k))).cloned().collect())
        .unwrap_or_default();
    missing.sort();
    missing
}

/// A StatefulSet database is ready when all its replicas are ready.
pub fn statefulset(s: Option<&Value>) -> Verdict {
    let Some(s) = s else { return Verdict::waiting("NotCreated", "the database StatefulSet does not exist yet") };
    let want = s.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let ready = int(s, &["status", "readyReplicas"]);
    if ready >= want && int(s, &["status", "observedGeneration"]) >= int(s, &["metadata", "generation"]) {
        Verdict::ready("Ready", format!("{ready}/{want} database instances ready"))
    } else {
        Verdict::waiting("Starting", format!("{ready}/{want} database instances ready"))
    }
}

/// A CloudNativePG Cluster is ready when its `Ready` condition is True.
pub fn cnpg_cluster(c: Option<&Value>) -> Verdict {
    let Some(c) = c else { return Verdict::waiting("NotCreated", "the CloudNativePG Cluster does not exist yet") };
    let ready_condition = c
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let instances = int(c, &["spec", "instances"]);
    let ready = int(c, &["status", "readyInstances"]);
    match ready_condition {
        Some(cond) if cond["status"] == "True" => {
            Verdict::ready("Ready", format!("{ready}/{instances} CloudNativePG instances ready"))
        }
        Some(cond) => Verdict::waiting(
            "Starting",
            format!(
                "CloudNativePG reports {}: {}",
                cond["reason"].as_str().unwrap_or("not ready"),
                cond["message"].as_str().unwrap_or_default()
            ),
        ),
        None => Verdict::waiting(
            "Starting",
            format!("{ready}/{instances} CloudNativePG instances ready; waiting for the CloudNativePG operator"),
        ),
    }
}

/// An HTTPRoute is ready when a parent Gateway has Accepted it and resolved
/// its references.
pub fn http_route(r: Option<&Value>) -> Verdict {
    let Some(r) = r else { return Verdict::waiting("NotCreated", "the HTTPRoute does not exist yet") };
    let parents = r.pointer("/status/parents").and_then(Value::as_array).cloned().unwrap_or_default();
    if parents.is_empty() {
        return Verdict::waiting("Pending", "no Gateway has reported on the HTTPRoute yet");
    }
    for parent in &parents {
        let conds = parent["conditions"].as_array().cloned().unwrap_or_default();
        let find = |t: &str| conds.iter().find(|c| c["type"] == t).cloned();
        let accepted = find("Accepted");
        let resolved = find("ResolvedRefs");
        let is_true = |c: &Option<Value>| c.as_ref().is_some_and(|c| c["status"] == "True");
        if is_true(&accepted) && (resolved.is_none() || is_true(&resolved)) {
            return Verdict::ready("Accepted", "the platform Gateway accepted the route");
        }
        for c in [accepted, resolved].into_iter().flatten() {
            if c["status"] != "True" {
                return Verdict::waiting(
                    NOT_ACCEPTED,
                    format!(
                        "Gateway reports {}={} ({}): {}",
                        c["type"].as_str().unwrap_or_default(),
                        c["status"].as_str().unwrap_or_default(),
                        c["reason"].as_str().unwrap_or_default(),
                        c["message"].as_str().unwrap_or_default()
                    ),
                );
            }
        }
    }
    Verdict::waiting("Pending", "the Gateway has not accepted the route yet")
}

/// An Ingress is ready once its controller has published an address.
pub fn ingress(i: Option<&Value>) -> Verdict {
    let Some(i) = i else { return Verdict::waiting("NotCreated", "the Ingress does not exist yet") };
    let published = i.pointer("/status/loadBalancer/ingress").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if published {
        Verdict::ready("AddressAssigned", "the ingress controller published an address")
    } else {
        Verdict::waiting("Pending", "waiting for the ingress controller to publish an address")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_is_counted_only_when_every_capped_resource_has_usage() {
        let q = serde_json::json!({
            "spec": {"hard": {"requests.cpu": "16", "count/providerconnectors.carerecord.dev": "50"}},
            "status": {"used": {"requests.cpu": "0"}},
        });
        assert_eq!(uncounted_quota(Some(&q)), vec!["count/providerconnectors.carerecord.dev".to_string()]);
        let counted = serde_json::json!({
            "spec": {"hard": {"requests.cpu": "16"}},
            "status": {"used": {"requests.cpu": "0"}},
        });
        assert!(uncounted_quota(Some(&counted)).is_empty());
        assert_eq!(uncounted_quota(None).len(), 1);
    }
    use serde_json::json;

    #[test]
    fn deployment_with_all_replicas_available_is_ready() {
        let d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": {"observedGeneration": 2, "availableReplicas": 2, "updatedReplicas": 2}});
        assert!(deployment(Some(&d)).ready);
    }

    #[test]
    fn deployment_not_yet_observed_is_not_ready() {
        let d = json!({"metadata": {"generation": 3}, "spec": {"replicas": 1}, "status": {"observedGeneration": 2, "availableReplicas": 1, "updatedReplicas": 1}});
        assert!(!deployment(Some(&d)).ready);
    }

    #[test]
    fn a_deployment_reads_the_same_before_and_after_its_controller_sees_it() {
        let created = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1}});
        let observed = json!({"metadata": {"generation": 1}, "spec": {"replicas": 1},
                              "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}});
        let (before, after) = (deployment(Some(&created)), deployment(Some(&observed)));
        assert_eq!((before.reason, before.message), (after.reason, after.message));
    }

    #[test]
    fn a_rollout_not_yet_observed_counts_none_of_the_old_replicas() {
        let d = json!({"metadata": {"generation": 3}, "spec": {"replicas": 2},
                       "status": {"observedGeneration": 2, "availableReplicas": 2, "updatedReplicas": 2}});
        assert_eq!(deployment(Some(&d)).message, "0/2 replicas of the latest spec available");
    }

    #[test]
    fn missing_deployment_is_not_ready() {
        assert_eq!(deployment(None).reason, "NotCreated");
    }

    #[test]
    fn cnpg_cluster_follows_its_ready_condition() {
        let c = json!({"spec": {"instances": 3}, "status": {"readyInstances": 3, "conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(cnpg_cluster(Some(&c)).ready);
        let c = json!({"spec": {"instances": 3}, "status": {"readyInstances": 1}});
        assert!(!cnpg_cluster(Some(&c)).ready);
    }

    #[test]
    fn accepted_route_is_ready() {
        let r = json!({"status": {"parents": [{"conditions": [{"type": "Accepted", "status": "True"}, {"type": "ResolvedRefs", "status": "True"}]}]}});
        assert!(http_route(Some(&r)).ready);
    }

    #[test]
    fn rejected_route_says_why() {
        let r = json!({"status": {"parents": [{"conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners", "message": "hostname not allowed"}]}]}});
        let v = http_route(Some(&r));
        assert!(!v.ready);
        assert!(v.message.contains("NotAllowedByListeners"), "{}", v.message);
    }

    #[test]
    fn route_without_status_is_pending() {
        assert_eq!(http_route(Some(&json!({}))).reason, "Pending");
    }
}
