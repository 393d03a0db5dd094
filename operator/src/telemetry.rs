//! Logging: JSON lines when not on a terminal (in a cluster), readable text
//! on a terminal. Level from RUST_LOG (default info).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube_runtime=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Ignore the error: a second init (tests) keeps the first subscriber.
    let _ = if std::io::stderr().is_terminal() {
        builder.with_writer(std::io::stderr).try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(true).with_writer(std::io::stderr).try_init()
    };
}
