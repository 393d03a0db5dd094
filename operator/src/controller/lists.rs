//! How every watch this operator runs lists what it watches.
//!
//! A watch starts, and restarts after its resourceVersion expires, with a
//! list. A list at resourceVersion 0 (`any_semantic`) is served from the API
//! server's watch cache in one piece, whatever the limit
//! (kubernetes/kubernetes#70735): kube reads the whole body into one string
//! and parses it whole, managedFields included, before a single object can
//! be slimmed. Measured with heaptrack on a restart at 20 tenants x 20
//! connectors (the bench's world doubled), the one-piece lists of connector
//! pods and of children's metadata were most of a 56 MiB heap peak, and they
//! grow with the platform. Every list is therefore paged (resourceVersion
//! unset, `limit` and `continue`): each page is parsed, slimmed and dropped
//! before the next is asked for, so the peak is one page, however large the
//! platform grows. The cost is a few more requests when a watch (re)starts.
//!
//! Nor do all watches list at once: every watch starts with a list, and all
//! start together when the operator does. A restarted operator at England's
//! size (42 tenants x 200 connectors, about 34,000 children) peaked at
//! 374.8 MiB against 249 MiB for the same world onboarded, its twenty lists
//! all in flight together. `gated` lets `CONCURRENT_LISTS` watches list at
//! a time (the API server serves them no faster side by side on the cores
//! it shares with the operator), so the peak is that many pages.

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Objects per page for kinds listed whole (pods, Deployments, connectors):
/// a parsed object with its managedFields is tens of KiB.
pub const WHOLE_PAGE: u32 = 50;

/// Objects per page for metadata-only lists: a few KiB each.
pub const METADATA_PAGE: u32 = 500;

/// `config` listing `page` objects at a time.
pub fn paged(config: watcher::Config, page: u32) -> watcher::Config {
    config.list_semantic(watcher::ListSemantic::MostRecent).page_size(page)
}

/// How many watches of this process list at once.
pub const CONCURRENT_LISTS: usize = 2;

/// The process's permits to list (see `gated`).
static LISTS: Semaphore = Semaphore::const_new(CONCURRENT_LISTS);

/// `events` listing only while it holds one of the process's
/// `CONCURRENT_LISTS` permits. A watcher emits `Init` before it asks for
/// its first page, so the permit is taken before `Init` is passed on and
/// let go at `InitDone`, or at an error (the watcher then starts over with
/// `Init`).
pub fn gated<K: Send + 'static>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    gated_by(events, &LISTS)
}

fn gated_by<K: Send + 'static>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    gate: &'static Semaphore,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    let state = (Box::pin(events), None::<SemaphorePermit<'static>>, gate);
    futures::stream::unfold(state, |(mut events, mut permit, gate)| async move {
        let event = events.next().await?;
        match &event {
            Ok(watcher::Event::Init) => permit = gate.acquire().await.ok(),
            Ok(watcher::Event::InitDone) | Err(_) => permit = None,
            _ => {}
        }
        Some((event, (events, permit, gate)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_paged_rather_than_served_whole_from_the_watch_cache() {
        let config = paged(watcher::Config::default().any_semantic(), WHOLE_PAGE);
        assert_eq!(config.list_semantic, watcher::ListSemantic::MostRecent);
        assert_eq!(config.page_size, Some(WHOLE_PAGE));
    }

    fn list_of(n: u32) -> Vec<Result<watcher::Event<u32>, watcher::Error>> {
        vec![Ok(watcher::Event::Init), Ok(watcher::Event::InitApply(n)), Ok(watcher::Event::InitDone)]
    }

    #[tokio::test]
    async fn a_watch_lists_only_while_it_holds_a_permit_and_lets_it_go_when_listed() {
        let gate: &'static Semaphore = Box::leak(Box::new(Semaphore::new(1)));
        let mut first = Box::pin(gated_by(futures::stream::iter(list_of(1)), gate));
        let mut second = Box::pin(gated_by(futures::stream::iter(list_of(2)), gate));
        assert!(matches!(first.next().await, Some(Ok(watcher::Event::Init))));
        assert_eq!(gate.available_permits(), 0, "the first watch lists");
        let waiting = futures::poll!(second.next());
        assert!(waiting.is_pending(), "the second waits for the first's list");
        assert!(matches!(first.next().await, Some(Ok(watcher::Event::InitApply(1)))));
        assert!(matches!(first.next().await, Some(Ok(watcher::Event::InitDone))));
        assert!(matches!(second.next().await, Some(Ok(watcher::Event::Init))), "then the second lists");
    }

    #[tokio::test]
    async fn a_failed_list_lets_its_permit_go() {
        let gate: &'static Semaphore = Box::leak(Box::new(Semaphore::new(1)));
        let events = vec![Ok(watcher::Event::<u32>::Init), Err(watcher::Error::NoResourceVersion)];
        let mut watch = Box::pin(gated_by(futures::stream::iter(events), gate));
        let _ = watch.next().await;
        let _ = watch.next().await;
        assert_eq!(gate.available_permits(), 1);
    }
}
