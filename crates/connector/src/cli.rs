//! `ics-operator connector`: flags, start-up and the running sources.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use carerecord_config::{ChangeFeed, ConnectorConfig, Source, SourceKind};

use crate::bulk_export::Exporter;
use crate::poll::Poller;
use crate::source::{SourceClient, SourceError};
use crate::status::StatusBoard;
use crate::store::Store;
use crate::subscription::Inbox;
use crate::transform::Provenance;
use crate::writer::Writer;

/// Timeout of one request to the provider or the store.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of `ics-operator connector`. Flags override the configuration file.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectorArgs {
    /// Connector configuration (a carerecord.dev/connector/v1 document, YAML or JSON).
    #[arg(long, env = "ICS_CONNECTOR_CONFIG")]
    pub config: PathBuf,
    /// The record store's FHIR base URL (overrides `storeUrl`).
    #[arg(long, env = "ICS_CONNECTOR_STORE")]
    pub store: Option<String>,
    /// Admin listener address (overrides `adminListen`).
    #[arg(long, env = "ICS_CONNECTOR_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
}

/// Why the connector could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a connector configuration: {source}")]
    Parse { path: String, source: serde_yaml::Error },
    #[error("{path}: {source}")]
    Invalid { path: String, source: carerecord_config::Invalid },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Reads and checks the configuration, with flags applied.
pub fn effective_config(args: &ConnectorArgs) -> Result<ConnectorConfig, RunError> {
    let path = args.config.display().to_string();
    let text = std::fs::read_to_string(&args.config).map_err(|source| RunError::Read { path: path.clone(), source })?;
    let mut config: ConnectorConfig =
        serde_yaml::from_str(&text).map_err(|source| RunError::Parse { path: path.clone(), source })?;
    if let Some(store) = &args.store {
        config.store_url = store.trim_end_matches('/').to_string();
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = admin;
    }
    config.validate().map_err(|source| RunError::Invalid { path, source })?;
    Ok(config)
}

/// The `meta.source` of what a connector writes.
pub fn source_uri(config: &ConnectorConfig) -> String {
    format!("https://carerecord.dev/connector/{}/{}", config.tenant, config.name)
}

fn source_kind(source: &Source) -> SourceKind {
    match source {
        Source::FhirPoll(_) => SourceKind::FhirPoll,
        Source::Hl7v2Mllp(_) => SourceKind::Hl7v2Mllp,
        Source::Push(_) => SourceKind::Push,
        Source::Unavailable(_) => SourceKind::Unavailable,
    }
}

pub async fn run(args: ConnectorArgs) -> Result<(), RunError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = effective_config(&args)?;
    let status = Arc::new(StatusBoard::new(&config.name, source_kind(&config.source)));
    let mut registry = prometheus_client::registry::Registry::default();
    status.register(&mut registry);
    let store = Store::new(&config.store_url, REQUEST_TIMEOUT)?;
    let provenance = Provenance {
        source: source_uri(&config),
        provider_ods: config.provider.ods_code.clone(),
        rules: config.security_rules.clone(),
    };
    let key = format!("{}/{}", config.tenant, config.name);
    tracing::info!(connector = %config.name, tenant = %config.tenant, source = ?source_kind(&config.source), "starting the connector");

    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| RunError::Listen { address: config.admin_listen, source })?;
    let admin = axum::serve(admin, crate::admin::router(registry, status.clone()))
        .with_graceful_shutdown(carerecord_serve::shutdown());
    let work = async {
        match &config.source {
            Source::FhirPoll(poll) => {
                let client = SourceClient::new(poll, status.clone(), REQUEST_TIMEOUT)?;
                let writer = Writer::new(store, provenance, key, status.clone());
                match &poll.changes {
                    ChangeFeed::Search => Poller::new(poll.clone(), client, writer).run().await,
                    ChangeFeed::BulkExport { .. } => Exporter::new(poll.clone(), client, writer).run().await,
                    ChangeFeed::Subscription { listen } => {
                        let listener = tokio::net::TcpListener::bind(listen)
                            .await
                            .map_err(|source| RunError::Listen { address: *listen, source })?;
                        tracing::info!(listen = %listen, "subscription notification listener ready");
                        let inbox = Arc::new(Inbox::new(poll.resources.clone(), status.clone()));
                        let poller = Poller::new(poll.clone(), client, writer);
                        let interval = Duration::from_secs(poll.interval_seconds);
                        let serve = axum::serve(listener, crate::subscription::router(inbox.clone()))
                            .with_graceful_shutdown(carerecord_serve::shutdown());
                        tokio::select! {
                            result = serve => return result.map_err(RunError::Serve),
                            () = crate::subscription::read_forever(poller, inbox, interval) => {}
                        }
                    }
                }
                Ok(())
            }
            Source::Unavailable(u) => {
                tracing::warn!(reason = %u.reason, "this connector's source cannot run here; it moves nothing");
                status.unavailable(u.reason.clone());
                std::future::pending::<Result<(), RunError>>().await
            }
            Source::Hl7v2Mllp(mllp) => {
                let listener = tokio::net::TcpListener::bind(mllp.listen)
                    .await
                    .map_err(|source| RunError::Listen { address: mllp.listen, source })?;
                tracing::info!(listen = %mllp.listen, "MLLP listener ready");
                let listener_state = Arc::new(crate::mllp::Listener::new(mllp, store, provenance, key, status.clone()));
                listener_state.serve(listener).await.map_err(RunError::Serve)
            }
            Source::Push(push) => {
                let listener = tokio::net::TcpListener::bind(push.listen)
                    .await
                    .map_err(|source| RunError::Listen { address: push.listen, source })?;
                tracing::info!(listen = %push.listen, "push listener ready");
                let receiver = Arc::new(crate::push::Receiver { store, provenance, status: status.clone() });
                axum::serve(listener, crate::push::router(receiver))
                    .with_graceful_shutdown(carerecord_serve::shutdown())
                    .await
                    .map_err(RunError::Serve)
            }
        }
    };
    tokio::select! {
        result = admin => result.map_err(RunError::Serve),
        result = work => result,
    }
}
