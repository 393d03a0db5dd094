//! Reads what each running connector says about itself (`GET /status` on
//! its pod's admin port, the `carerecord.dev/connector-status/v1` document)
//! into the ProviderConnector's `status.sync` and `Synced` condition, as
//! CloudNativePG's operator polls its instance managers.
//!
//! Two paths, one memory:
//! - a reconcile that finds a running connector with no report reads it at
//!   once, so the first status it writes already says how the feed is doing;
//! - a background round every `connectorStatus.intervalSeconds` reads every
//!   ready connector pod again and wakes a connector's reconcile only when
//!   what it would write changed. A steady feed wakes nothing and writes
//!   nothing; a reconcile never waits on a connector that already has a
//!   report.
//!
//! Pods are watched and kept only as an index of each connector's ready
//! pod addresses (`ready_pods`), so thousands of connectors cost little
//! memory and asking for one connector's pod is a lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use carerecord_config::ConnectorStatus;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

use super::lists;
use super::ready_pods::{self, ReadyPods};
use crate::api::condition::{ConditionStatus, Observed};
use crate::api::connector::{ConnectorState, ProviderConnector, SyncStatus};
use crate::render::connector::CONNECTOR_ADMIN_PORT;
use crate::render::labels;
use crate::settings::ConnectorStatusSettings;

/// `lastSuccessfulSync` alone moving forward is written at most this often:
/// a poll connector commits a sync every interval even when nothing changed.
pub const SYNC_REFRESH: Duration = Duration::from_secs(300);

/// A `/status` answer larger than this is not a status document.
const MAX_STATUS_BYTES: usize = 64 * 1024;

/// The condition type this module decides.
pub const SYNCED: &str = "Synced";

/// What the operator last learnt from a connector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The connector answered with its status document.
    Read(ConnectorStatus),
    /// Its pod could not be asked, or the answer could not be read.
    Unreadable(String),
}

/// Why `Synced` is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncReason {
    /// The last attempt committed.
    Synced,
    /// The connector runs and has committed nothing yet (a push or MLLP
    /// source waiting for its first message, a poll still in its first sync).
    AwaitingFirstSync,
    /// The last attempt failed.
    SyncFailing,
    /// The source cannot run on this platform (the connector says why).
    SourceUnavailable,
    /// No ready connector pod has been asked yet.
    AwaitingStatus,
    /// The connector's pod did not answer, or its answer was not a status.
    StatusUnreadable,
    /// `spec.state` is Paused.
    Paused,
    /// `spec.state` is Stopped.
    Stopped,
}

impl SyncReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "Synced",
            Self::AwaitingFirstSync => "AwaitingFirstSync",
            Self::SyncFailing => "SyncFailing",
            Self::SourceUnavailable => "SourceUnavailable",
            Self::AwaitingStatus => "AwaitingStatus",
            Self::StatusUnreadable => "StatusUnreadable",
            Self::Paused => "Paused",
            Self::Stopped => "Stopped",
        }
    }

    fn status(self) -> ConditionStatus {
        match self {
            Self::Synced => ConditionStatus::True,
            Self::SyncFailing | Self::SourceUnavailable => ConditionStatus::False,
            Self::AwaitingFirstSync | Self::AwaitingStatus | Self::StatusUnreadable | Self::Paused | Self::Stopped => {
                ConditionStatus::Unknown
            }
        }
    }

    fn observed(self, message: impl Into<String>) -> Observed {
        Observed::new(SYNCED, self.status(), self.as_str(), message)
    }
}

/// `status.sync` and the `Synced` condition, from the last report. Pure.
/// `previous` is kept when nothing is known that is newer, and when the
/// only news is a later `lastSuccessfulSync` within `SYNC_REFRESH`.
pub fn conclude(
    previous: Option<&SyncStatus>,
    report: Option<&Report>,
    state: ConnectorState,
) -> (Option<SyncStatus>, Observed) {
    let kept = previous.cloned();
    match (state, report) {
        (ConnectorState::Paused, _) => (kept, SyncReason::Paused.observed("spec.state is Paused")),
        (ConnectorState::Stopped, _) => (kept, SyncReason::Stopped.observed("spec.state is Stopped")),
        (ConnectorState::Running, None) => {
            (kept, SyncReason::AwaitingStatus.observed("the connector's status has not been read yet"))
        }
        (ConnectorState::Running, Some(Report::Unreadable(why))) => {
            (kept, SyncReason::StatusUnreadable.observed(format!("cannot read the connector's status: {why}")))
        }
        (ConnectorState::Running, Some(Report::Read(status))) => match sync_status(status) {
            Err(why) => {
                (kept, SyncReason::StatusUnreadable.observed(format!("cannot read the connector's status: {why}")))
            }
            Ok(fresh) => {
                let sync = match previous {
                    Some(p) if only_the_last_sync_advanced_lately(p, &fresh) => p.clone(),
                    _ => fresh,
                };
                let condition = synced(status, &sync);
                (Some(sync), condition)
            }
        },
    }
}

fn synced(status: &ConnectorStatus, sync: &SyncStatus) -> Observed {
    if let Some(reason) = &status.unavailable {
        return SyncReason::SourceUnavailable.observed(reason.clone());
    }
    if let Some(error) = &status.last_error {
        return SyncReason::SyncFailing.observed(error.clone());
    }
    if sync.last_successful_sync.is_none() {
        return SyncReason::AwaitingFirstSync.observed("the connector runs and has committed nothing yet");
    }
    let refused = match sync.dead_letters {
        0 => String::new(),
        n => format!("; {n} record(s) the store refused are kept as dead letters"),
    };
    SyncReason::Synced.observed(format!("the last sync committed to the record store{refused}"))
}

/// The status document as `status.sync`; timestamps must be RFC 3339.
fn sync_status(status: &ConnectorStatus) -> Result<SyncStatus, String> {
    let time = |text: &str| {
        text.parse::<Timestamp>().map(Time).map_err(|e| format!("timestamp {text:?} is not RFC 3339: {e}"))
    };
    Ok(SyncStatus {
        last_successful_sync: status.last_successful_sync.as_deref().map(time).transpose()?,
        cursor: status.cursor.iter().map(|(t, at)| Ok((t.clone(), time(at)?))).collect::<Result<_, String>>()?,
        records_written: status.records_written,
        records_unchanged: status.records_unchanged,
        errors: status.errors,
        dead_letters: status.dead_letters,
        last_error: status.last_error.clone(),
    })
}

fn only_the_last_sync_advanced_lately(previous: &SyncStatus, fresh: &SyncStatus) -> bool {
    let (Some(was), Some(now)) = (&previous.last_successful_sync, &fresh.last_successful_sync) else {
        return false;
    };
    let same_otherwise = SyncStatus { last_successful_sync: None, ..previous.clone() }
        == SyncStatus { last_successful_sync: None, ..fresh.clone() };
    same_otherwise && now.0 >= was.0 && !refresh_due(was.0, now.0)
}

/// Whether `now` is `SYNC_REFRESH` or more past `was`: when a later
/// `lastSuccessfulSync` alone is worth recording.
fn refresh_due(was: Timestamp, now: Timestamp) -> bool {
    now.duration_since(was).as_secs() >= SYNC_REFRESH.as_secs() as i64
}

/// Whether `new` would change what a reconcile concludes from `old`:
/// everything but `lastAttempt`, and `lastSuccessfulSync` only once it has
/// moved `SYNC_REFRESH` past the one the reconcile last saw.
pub fn worth_a_reconcile(old: &Report, new: &Report) -> bool {
    match (old, new) {
        (Report::Read(a), Report::Read(b)) => {
            let strip =
                |s: &ConnectorStatus| ConnectorStatus { last_attempt: None, last_successful_sync: None, ..s.clone() };
            let advanced = match (&a.last_successful_sync, &b.last_successful_sync) {
                (Some(x), Some(y)) => match (x.parse::<Timestamp>(), y.parse::<Timestamp>()) {
                    (Ok(x), Ok(y)) => refresh_due(x, y),
                    _ => x != y,
                },
                (x, y) => x != y,
            };
            strip(a) != strip(b) || advanced
        }
        (a, b) => a != b,
    }
}

/// A connector, by namespace and name.
pub type ConnectorKey = (String, String);

struct Entry {
    /// The latest report.
    latest: Report,
    /// The report the connector's last reconcile was woken for.
    delivered: Report,
}

/// Reads connectors' status and remembers the latest report of each.
pub struct SyncReader {
    settings: ConnectorStatusSettings,
    http: Option<reqwest::Client>,
    reports: Mutex<HashMap<ConnectorKey, Entry>>,
    pods: RwLock<ReadyPods>,
    pods_listed: tokio::sync::watch::Sender<bool>,
}

impl SyncReader {
    pub fn new(settings: &crate::settings::ConnectorStatusSettings) -> Self {
        // Plain HTTP to a pod address: no redirects, no proxies, a short limit.
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(settings.timeout_seconds.max(1)))
            .user_agent(concat!("ics-operator/", env!("CARGO_PKG_VERSION")))
            .build();
        if let Err(error) = &http {
            tracing::error!(%error, "cannot build the HTTP client that reads connectors' status");
        }
        Self {
            settings: settings.clone(),
            http: http.ok(),
            reports: Mutex::default(),
            pods: RwLock::default(),
            pods_listed: tokio::sync::watch::channel(false).0,
        }
    }

    /// The latest report for a connector, if any.
    pub fn report(&self, key: &ConnectorKey) -> Option<Report> {
        self.lock().get(key).map(|e| e.latest.clone())
    }

    /// The address of a ready pod of the connector, if it has one.
    pub fn ready_pod(&self, key: &ConnectorKey) -> Option<IpAddr> {
        self.pods.read().unwrap_or_else(|p| p.into_inner()).of(key)
    }

    /// Reads the connector's status now and remembers it as seen by its reconcile.
    pub async fn read_now(&self, key: &ConnectorKey, address: IpAddr) -> Report {
        let report = self.read(key, address).await;
        self.lock().insert(key.clone(), Entry { latest: report.clone(), delivered: report.clone() });
        report
    }

    /// Forgets connectors that no longer exist.
    pub fn retain(&self, exists: impl Fn(&ConnectorKey) -> bool) {
        self.lock().retain(|key, _| exists(key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectorKey, Entry>> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read(&self, key: &ConnectorKey, address: IpAddr) -> Report {
        let Some(http) = &self.http else { return Report::Unreadable("the operator has no HTTP client".into()) };
        let url = format!("http://{}/status", std::net::SocketAddr::new(address, CONNECTOR_ADMIN_PORT as u16));
        let answer = async {
            let mut response = http.get(&url).send().await.map_err(describe)?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(describe)? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_STATUS_BYTES {
                    return Err(format!("{url} answered more than {MAX_STATUS_BYTES} bytes"));
                }
            }
            let status: ConnectorStatus =
                serde_json::from_slice(&body).map_err(|e| format!("{url} did not answer a connector status: {e}"))?;
            // A pod address reused by another connector must not report for this one.
            if status.connector != key.1 {
                return Err(format!("{url} reports for connector {:?}, not {:?}", status.connector, key.1));
            }
            Ok(status)
        };
        match answer.await {
            Ok(status) => Report::Read(status),
            Err(why) => Report::Unreadable(why),
        }
    }

    /// Resolves once the connector pods have been listed (false if the
    /// watch ended first). Until then `ready_pod` would answer "none".
    pub fn pods_synced(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let mut listed = self.pods_listed.subscribe();
        async move { listed.wait_for(|l| *l).await.is_ok() }
    }

    /// Watches connector pods until the stream ends, into the index that
    /// feeds `ready_pod`. A relist replaces the index once it is complete.
    pub async fn watch_pods(self: Arc<Self>, client: Client) {
        let selector =
            format!("{}={},{}", labels::POD_COMPONENT, crate::render::tenant::CONNECTOR_COMPONENT, labels::CONNECTOR);
        let config = lists::paged(watcher::Config::default().labels(&selector), lists::WHOLE_PAGE);
        let stream = lists::gated(watcher(Api::<Pod>::all(client), config).default_backoff());
        let mut stream = std::pin::pin!(stream);
        let mut listing: Option<ReadyPods> = None;
        loop {
            let event = match stream.try_next().await {
                Ok(Some(event)) => event,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "connector pod watch failed; retrying");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listing = Some(ReadyPods::default()),
                watcher::Event::InitApply(pod) => {
                    if let Some(observed) = ready_pods::observe(&pod) {
                        listing.get_or_insert_default().apply(observed);
                    }
                }
                watcher::Event::InitDone => {
                    *self.pods.write().unwrap_or_else(|p| p.into_inner()) = listing.take().unwrap_or_default();
                    self.pods_listed.send_replace(true);
                }
                watcher::Event::Apply(pod) => {
                    if let Some(observed) = ready_pods::observe(&pod) {
                        self.pods.write().unwrap_or_else(|p| p.into_inner()).apply(observed);
                    }
                }
                watcher::Event::Delete(pod) => {
                    if let Some(observed) = ready_pods::observe(&pod) {
                        self.pods.write().unwrap_or_else(|p| p.into_inner()).delete(&observed);
                    }
                }
            }
        }
    }

    /// Re-reads every ready connector every interval and asks for a
    /// reconcile of those whose report changed what it would conclude.
    pub async fn refresh(self: Arc<Self>, wake: mpsc::Sender<ObjectRef<ProviderConnector>>) {
        let interval = Duration::from_secs(self.settings.interval_seconds.max(1));
        loop {
            tokio::time::sleep(interval).await;
            let targets = self.pods.read().unwrap_or_else(|p| p.into_inner()).all();
            let reads = futures::stream::iter(targets)
                .map(|(key, address)| {
                    let me = self.clone();
                    async move {
                        let report = me.read(&key, address).await;
                        (key, report)
                    }
                })
                .buffer_unordered(self.settings.max_concurrent.max(1))
                .collect::<Vec<_>>()
                .await;
            for (key, report) in reads {
                let woken = {
                    let mut reports = self.lock();
                    match reports.get_mut(&key) {
                        Some(entry) => {
                            let wake = worth_a_reconcile(&entry.delivered, &report);
                            if wake {
                                entry.delivered = report.clone();
                            }
                            entry.latest = report;
                            wake
                        }
                        // Never read by a reconcile: its reconcile reads it.
                        None => false,
                    }
                };
                if woken {
                    let _ = wake.send(ObjectRef::new(&key.1).within(&key.0)).await;
                }
            }
        }
    }
}

/// An HTTP error without the URL's query or anything the server sent.
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "connection refused or unreachable".into()
    } else {
        error.without_url().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(written: u64, last: Option<&str>) -> ConnectorStatus {
        ConnectorStatus {
            connector: "gp".into(),
            last_successful_sync: last.map(str::to_string),
            records_written: written,
            ..ConnectorStatus::default()
        }
    }

    fn read(written: u64, last: Option<&str>) -> Report {
        Report::Read(status(written, last))
    }

    #[test]
    fn a_committed_sync_is_synced_with_its_counts() {
        let (sync, condition) = conclude(None, Some(&read(12, Some("2026-12-02T10:00:00Z"))), ConnectorState::Running);
        assert_eq!(sync.unwrap().records_written, 12);
        assert_eq!((condition.status, condition.reason.as_str()), (ConditionStatus::True, "Synced"));
    }

    #[test]
    fn a_failing_sync_is_not_synced_and_says_why() {
        let mut s = status(0, Some("2026-12-02T10:00:00Z"));
        s.last_error = Some("provider answered 500".into());
        let (_, condition) = conclude(None, Some(&Report::Read(s)), ConnectorState::Running);
        assert_eq!((condition.status, condition.reason.as_str()), (ConditionStatus::False, "SyncFailing"));
        assert_eq!(condition.message, "provider answered 500");
    }

    #[test]
    fn an_unavailable_source_is_not_synced_and_says_why() {
        let mut s = status(0, None);
        s.unavailable = Some("needs the NHS Spine".into());
        let (_, condition) = conclude(None, Some(&Report::Read(s)), ConnectorState::Running);
        assert_eq!((condition.status, condition.reason.as_str()), (ConditionStatus::False, "SourceUnavailable"));
    }

    #[test]
    fn nothing_committed_yet_is_unknown() {
        let (_, condition) = conclude(None, Some(&read(0, None)), ConnectorState::Running);
        assert_eq!((condition.status, condition.reason.as_str()), (ConditionStatus::Unknown, "AwaitingFirstSync"));
    }

    #[test]
    fn an_unreadable_status_keeps_the_last_known_sync() {
        let (before, _) = conclude(None, Some(&read(5, Some("2026-12-02T10:00:00Z"))), ConnectorState::Running);
        let (after, condition) =
            conclude(before.as_ref(), Some(&Report::Unreadable("timed out".into())), ConnectorState::Running);
        assert_eq!(after, before);
        assert_eq!(condition.reason, "StatusUnreadable");
    }

    #[test]
    fn a_paused_connector_keeps_its_last_sync() {
        let (before, _) = conclude(None, Some(&read(5, Some("2026-12-02T10:00:00Z"))), ConnectorState::Running);
        let (after, condition) = conclude(before.as_ref(), None, ConnectorState::Paused);
        assert_eq!(after, before);
        assert_eq!((condition.status, condition.reason.as_str()), (ConditionStatus::Unknown, "Paused"));
    }

    #[test]
    fn a_later_sync_alone_is_recorded_only_after_the_refresh_period() {
        let (first, _) = conclude(None, Some(&read(5, Some("2026-12-02T10:00:00Z"))), ConnectorState::Running);
        let (soon, _) = conclude(first.as_ref(), Some(&read(5, Some("2026-12-02T10:01:00Z"))), ConnectorState::Running);
        assert_eq!(soon, first);
        let (later, _) =
            conclude(first.as_ref(), Some(&read(5, Some("2026-12-02T10:05:00Z"))), ConnectorState::Running);
        assert_ne!(later, first);
    }

    #[test]
    fn new_records_are_recorded_at_once() {
        let (first, _) = conclude(None, Some(&read(5, Some("2026-12-02T10:00:00Z"))), ConnectorState::Running);
        let (next, _) = conclude(first.as_ref(), Some(&read(6, Some("2026-12-02T10:00:30Z"))), ConnectorState::Running);
        assert_eq!(next.unwrap().records_written, 6);
    }

    #[test]
    fn a_timestamp_that_is_not_rfc_3339_makes_the_status_unreadable() {
        let (sync, condition) = conclude(None, Some(&read(1, Some("yesterday"))), ConnectorState::Running);
        assert_eq!((sync, condition.reason.as_str()), (None, "StatusUnreadable"));
    }

    #[test]
    fn a_steady_feed_is_not_worth_a_reconcile() {
        let mut later = status(5, Some("2026-12-02T10:01:00Z"));
        later.last_attempt = Some("2026-12-02T10:01:00Z".into());
        assert!(!worth_a_reconcile(&read(5, Some("2026-12-02T10:00:00Z")), &Report::Read(later)));
    }

    #[test]
    fn new_records_a_failure_or_a_silent_pod_are_worth_a_reconcile() {
        let before = read(5, Some("2026-12-02T10:00:00Z"));
        assert!(worth_a_reconcile(&before, &read(6, Some("2026-12-02T10:00:00Z"))));
        assert!(worth_a_reconcile(&before, &Report::Unreadable("timed out".into())));
        let mut failing = status(5, Some("2026-12-02T10:00:00Z"));
        failing.last_error = Some("provider answered 500".into());
        assert!(worth_a_reconcile(&before, &Report::Read(failing)));
        assert!(worth_a_reconcile(&before, &read(5, Some("2026-12-02T10:06:00Z"))));
    }
}
