//! The files a running gateway rereads when they change: the sharing policy,
//! and the configuration's reloadable part (who acts for the tenant, its
//! push connectors). Polling the mtime once a second works on every volume
//! type, including the symlink swaps Kubernetes uses to update a mounted
//! ConfigMap, where inotify watches often miss the change.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::ResultLabels;
use crate::policy::{Policy, PolicyError};
use crate::settings::Settings;

/// A document in force, shared by every request: each request decides on
/// one snapshot from start to end.
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Default> Default for Live<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The document now.
    pub fn current(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

/// The sharing policy in force.
pub type PolicyHandle = Live<Policy>;
/// The compiled configuration in force.
pub type SettingsHandle = Live<Settings>;

/// Reads and compiles a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    Policy::from_yaml(&std::fs::read_to_string(path)?)
}

fn modified(path: &Path) -> Option<SystemTime> {
    // metadata() follows symlinks: a ConfigMap update swaps the link target.
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Polls `path` every `interval`; a changed file that `load` accepts
/// replaces the document in `handle`, one it refuses is logged and the last
/// good document stays. `what` names the document in logs.
pub async fn watch<T, E: Display>(
    path: PathBuf,
    handle: Live<T>,
    interval: Duration,
    load: impl Fn(&Path) -> Result<T, E>,
    what: &'static str,
    reloads: Family<ResultLabels, Counter>,
) {
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
            Ok(document) => {
                tracing::info!(path = %path.display(), "{what} reloaded");
                handle.replace(document);
                reloads.get_or_create(&ResultLabels { result: "ok" }).inc();
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "{what} not reloaded; keeping the last good one");
                reloads.get_or_create(&ResultLabels { result: "error" }).inc();
            }
        }
    }
}
