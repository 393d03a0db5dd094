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

use kube::runtime::watcher;

/// Objects per page for kinds listed whole (pods, Deployments, connectors):
/// a parsed object with its managedFields is tens of KiB.
pub const WHOLE_PAGE: u32 = 50;

/// Objects per page for metadata-only lists: a few KiB each.
pub const METADATA_PAGE: u32 = 500;

/// `config` listing `page` objects at a time.
pub fn paged(config: watcher::Config, page: u32) -> watcher::Config {
    config.list_semantic(watcher::ListSemantic::MostRecent).page_size(page)
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
}
