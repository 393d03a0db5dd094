//! Progress reported at a steady pace.
//!
//! A tenant's status counts its ready connectors. While a tenant onboards
//! its connectors become ready one after another, each waking the tenant,
//! and writing every intermediate count (1/20, 2/20, ...) was most of the
//! tenant status writes of a bulk onboarding: about 24 per tenant of 20
//! connectors, each a status update the API server serves and every watch
//! of tenants receives. A write that reports progress alone waits until
//! the tenant's last status write is `every` old; anything else (a
//! condition, the phase, counts that have settled) is written at once, so
//! no transition and no finished count is ever late.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When each owner's status was last written, for those written within
/// the pace.
pub struct Pacer {
    every: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    pub fn new(every: Duration) -> Self {
        Self { every, last: Mutex::default() }
    }

    /// How long a write of `owner`'s status that reports only progress
    /// must wait at `now`; None when it may be written now.
    pub fn wait(&self, owner: &str, now: Instant) -> Option<Duration> {
        let last = self.lock();
        let since = now.saturating_duration_since(*last.get(owner)?);
        (since < self.every).then(|| self.every - since)
    }

    /// Records that `owner`'s status was written at `now`. Owners written
    /// longer ago than the pace are forgotten here, so the map holds only
    /// recent writers (deleted tenants included).
    pub fn wrote(&self, owner: &str, now: Instant) {
        let mut last = self.lock();
        last.retain(|_, at| now.saturating_duration_since(*at) < self.every);
        last.insert(owner.to_string(), now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(5);

    #[test]
    fn an_owner_never_written_may_write_at_once() {
        assert_eq!(Pacer::new(EVERY).wait("a", Instant::now()), None);
    }

    #[test]
    fn progress_soon_after_a_write_waits_for_the_rest_of_the_pace() {
        let pacer = Pacer::new(EVERY);
        let t0 = Instant::now();
        pacer.wrote("a", t0);
        assert_eq!(pacer.wait("a", t0 + Duration::from_secs(2)), Some(Duration::from_secs(3)));
    }

    #[test]
    fn progress_a_pace_after_the_last_write_goes_at_once() {
        let pacer = Pacer::new(EVERY);
        let t0 = Instant::now();
        pacer.wrote("a", t0);
        assert_eq!(pacer.wait("a", t0 + EVERY), None);
    }

    #[test]
    fn one_owners_write_does_not_hold_back_another() {
        let pacer = Pacer::new(EVERY);
        let t0 = Instant::now();
        pacer.wrote("a", t0);
        assert_eq!(pacer.wait("b", t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn owners_written_longer_ago_than_the_pace_are_forgotten() {
        let pacer = Pacer::new(EVERY);
        let t0 = Instant::now();
        pacer.wrote("gone", t0);
        pacer.wrote("a", t0 + EVERY);
        assert_eq!(pacer.lock().keys().collect::<Vec<_>>(), vec!["a"]);
    }
}
