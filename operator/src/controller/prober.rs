//! Runs endpoint probes with bounded concurrency and rate across every
//! connector, and remembers the last result of each so a reconcile probes
//! only when one is due (requeue-after, never a polling loop per connector).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};

use crate::catalogue::Protocol;
use crate::probe::{self, Credentials, ProbeResult, ProbeSettings};
use crate::settings;

/// A remembered probe result and what it was a probe of.
#[derive(Clone, Debug)]
pub struct Remembered {
    pub at: Instant,
    pub target: String,
    pub result: ProbeResult,
}

pub struct Prober {
    settings: ProbeSettings,
    interval: Duration,
    permits: Semaphore,
    spacing: Duration,
    next_start: Mutex<Instant>,
    last: std::sync::Mutex<HashMap<String, Remembered>>,
}

impl Prober {
    pub fn new(s: &settings::ProbeSettings) -> Self {
        Self {
            settings: ProbeSettings {
                allowed: s.allowed_cidrs.clone(),
                timeout: Duration::from_secs(s.timeout_seconds.max(1)),
            },
            interval: Duration::from_secs(s.interval_seconds.max(10)),
            permits: Semaphore::new(s.max_concurrent.max(1)),
            spacing: Duration::from_secs(1) / s.max_per_second.max(1),
            next_start: Mutex::new(Instant::now()),
            last: std::sync::Mutex::default(),
        }
    }

    /// Time between probes of one endpoint: the configured interval, or
    /// longer when there are more endpoints than the rate limit can probe
    /// in one interval. Without the stretch, re-probes would be due faster
    /// than they can start, every connector reconcile would queue for a
    /// probe slot, and new connectors would starve behind them.
    pub fn interval(&self) -> Duration {
        let endpoints = self.last.lock().unwrap_or_else(|p| p.into_inner()).len() as u32;
        stretched(self.interval, self.spacing, endpoints)
    }

    /// The remembered result for `key`, if it probed `target` and is still fresh.
    pub fn fresh(&self, key: &str, target: &str) -> Option<Remembered> {
        let interval = self.interval();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.get(key).filter(|r| r.target == target && r.at.elapsed() < interval).cloned()
    }

    /// Forgets every result whose key `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).retain(|key, _| keep(key));
    }

    pub fn forget(&self, key: &str) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Probes now (waiting for a slot), remembers and returns the result.
    pub async fn probe(
        &self,
        key: &str,
        target: &str,
        url: &str,
        protocol: Protocol,
        path: Option<&str>,
        credentials: Option<&Credentials>,
    ) -> Remembered {
        let _permit = self.permits.acquire().await.ok();
        {
            let mut next = self.next_start.lock().await;
            let now = Instant::now();
            if *next > now {
                tokio::time::sleep(*next - now).await;
            }
            *next = Instant::now().max(*next) + self.spacing;
        }
        let result = probe::probe(url, protocol, path, credentials, &self.settings).await;
        let remembered = Remembered { at: Instant::now(), target: target.to_string(), result };
        self.last.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), remembered.clone());
        remembered
    }
}

/// The configured interval, or the time one round of `endpoints` probes
/// takes at the rate limit plus a quarter, so re-probes use at most four
/// fifths of the rate and new connectors are probed promptly.
fn stretched(interval: Duration, spacing: Duration, endpoints: u32) -> Duration {
    interval.max(spacing * endpoints * 5 / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_interval_holds_while_the_rate_limit_keeps_up() {
        let every_300s = Duration::from_secs(300);
        let ten_per_second = Duration::from_millis(100);
        assert_eq!(stretched(every_300s, ten_per_second, 2000), every_300s);
    }

    #[test]
    fn the_interval_stretches_when_endpoints_outgrow_the_rate_limit() {
        let every_300s = Duration::from_secs(300);
        let ten_per_second = Duration::from_millis(100);
        // 4,000 endpoints at 10 a second: a round takes 400 s, so re-probes
        // come every 500 s and use 8 of the 10 probes a second.
        assert_eq!(stretched(every_300s, ten_per_second, 4000), Duration::from_secs(500));
    }
}
