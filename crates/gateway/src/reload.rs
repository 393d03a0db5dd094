//! The sharing policy, reloaded when its file changes. Polling the mtime
//! once a second works on every volume type, including the symlink swaps
//! Kubernetes uses to update a mounted ConfigMap, where inotify watches
//! often miss the change.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::metrics::{Metrics, ResultLabels};
use crate::policy::{Policy, PolicyError};

/// The policy in force, shared by every request.
#[derive(Clone, Default)]
pub struct PolicyHandle(Arc<RwLock<Arc<Policy>>>);

impl PolicyHandle {
    pub fn new(policy: Policy) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(policy))))
    }

    /// The policy now: a request decides on one snapshot from start to end.
    pub fn current(&self) -> Arc<Policy> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, policy: Policy) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }
}

/// Reads and compiles a policy file.
pub fn load(path: &std::path::Path) -> Result<Policy, PolicyError> {
    Policy::from_yaml(&std::fs::read_to_string(path)?)
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    // metadata() follows symlinks: a ConfigMap update swaps the link target.
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Polls `path` every `interval`; a changed file that compiles replaces the
/// policy, one that does not is logged and the last good policy stays.
pub async fn watch(path: PathBuf, handle: PolicyHandle, interval: Duration, metrics: Metrics) {
    let mut seen = modified(&path);
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&path) {
            Ok(policy) => {
                tracing::info!(path = %path.display(), agreements = policy.agreements.len(), "sharing policy reloaded");
                handle.replace(policy);
                metrics.policy_reloads.get_or_create(&ResultLabels { result: "ok" }).inc();
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "sharing policy not reloaded; keeping the last good one");
                metrics.policy_reloads.get_or_create(&ResultLabels { result: "error" }).inc();
            }
        }
    }
}
