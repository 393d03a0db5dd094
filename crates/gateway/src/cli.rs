//! `ics-operator gateway`: flags, start-up and the serving loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{self, Readiness};
use crate::audit::writer::AuditWriter;
use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::objections::Objections;
use crate::paging::PageKey;
use crate::policy::{Policy, PolicyError};
use crate::reload::{self, PolicyHandle, SettingsHandle};
use crate::server::{self, Gateway};
use crate::settings::{self, Settings, SettingsError};

/// How long patients' objections are cached.
const OBJECTIONS_TTL: Duration = Duration::from_secs(5);
/// How often the policy and configuration files are checked for changes.
const POLL: Duration = Duration::from_secs(1);
/// Least time between two JWKS refreshes caused by unknown `kid`s.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
/// Upstream request timeout.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of `ics-operator gateway`. Flags override the configuration file.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Gateway configuration (a carerecord.dev/gateway/v1 document, YAML or JSON).
    #[arg(long, env = "ICS_GATEWAY_CONFIG")]
    pub config: PathBuf,
    /// Sharing policy file, watched for changes (overrides `policyFile`).
    #[arg(long, env = "ICS_GATEWAY_POLICY")]
    pub policy: Option<PathBuf>,
    /// The record store's FHIR base URL (overrides `upstreamUrl`).
    #[arg(long, env = "ICS_GATEWAY_UPSTREAM")]
    pub upstream: Option<String>,
    /// Public listener address (overrides `listen`).
    #[arg(long, env = "ICS_GATEWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Health and metrics listener address (overrides `adminListen`).
    #[arg(long, env = "ICS_GATEWAY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// File holding the key (at least 32 bytes) that binds page ids to callers;
    /// every replica must share it. Without it, a random key per process.
    #[arg(long, env = "ICS_GATEWAY_PAGE_KEY_FILE")]
    pub page_key_file: Option<PathBuf>,
}

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("sharing policy {path}: {source}")]
    Policy { path: String, source: PolicyError },
    #[error("page key file {path}: {problem}")]
    PageKey { path: String, problem: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Sets up JSON logs on stderr (plain text on a terminal).
pub fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if std::io::stderr().is_terminal() {
        builder.with_writer(std::io::stderr).try_init()
    } else {
        builder.json().flatten_event(true).with_writer(std::io::stderr).try_init()
    };
}

/// The configuration with flags applied.
pub fn effective_config(args: &GatewayArgs) -> Result<carerecord_config::GatewayConfig, SettingsError> {
    let mut config = settings::read_config(&args.config.to_string_lossy())?;
    if let Some(upstream) = &args.upstream {
        config.upstream_url = upstream.trim_end_matches('/').to_string();
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = admin;
    }
    if let Some(policy) = &args.policy {
        config.policy_file = Some(policy.to_string_lossy().into_owned());
    }
    Ok(config)
}

fn page_key(path: Option<&PathBuf>) -> Result<PageKey, RunError> {
    let Some(path) = path else {
        tracing::warn!("no page key file: page links work only on the replica that issued them");
        return Ok(PageKey::random());
    };
    let display = path.display().to_string();
    let secret =
        std::fs::read(path).map_err(|e| RunError::PageKey { path: display.clone(), problem: e.to_string() })?;
    if secret.len() < 32 {
        return Err(RunError::PageKey { path: display, problem: "shorter than 32 bytes".into() });
    }
    Ok(PageKey::from_secret(&secret))
}

/// How a changed configuration file becomes the settings in force: its
/// reloadable part is taken up; a changed start-up field (`start_up`, as the
/// gateway started) is logged and waits for the restart the operator's
/// config hash brings.
fn reload_config(
    args: GatewayArgs,
    start_up: carerecord_config::GatewayConfig,
    running: SettingsHandle,
) -> impl Fn(&std::path::Path) -> Result<Settings, SettingsError> {
    move |_| {
        let config = effective_config(&args)?;
        let settings = running.current().reloaded(&config)?;
        if config.start_up_part() != start_up {
            tracing::warn!(
                "the gateway configuration changed a field read at start-up; it takes effect at the next start"
            );
        }
        Ok(settings)
    }
}

/// Runs the gateway until SIGTERM or Ctrl-C.
pub async fn run(args: GatewayArgs) -> Result<(), RunError> {
    init_logging();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = effective_config(&args)?;
    let settings = Settings::compile(&config, page_key(args.page_key_file.as_ref())?)?;
    let policy_path = config.policy_file.as_ref().map(PathBuf::from);
    let policy = match &policy_path {
        // A missing file at start is an error: a typo must not silently mean "no sharing".
        Some(path) => {
            reload::load(path).map_err(|source| RunError::Policy { path: path.display().to_string(), source })?
        }
        None => Policy::default(),
    };
    tracing::info!(tenant = %settings.tenant, agreements = policy.agreements.len(), "starting the record gateway");
    let policy = PolicyHandle::new(policy);

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(UPSTREAM_TIMEOUT)
        .user_agent(concat!("ics-record-gateway/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let audit = AuditWriter::spawn(
        http.clone(),
        settings.upstream.clone(),
        config.audit.buffer_size,
        Duration::from_millis(config.audit.flush_bound_ms),
        metrics.clone(),
    );
    let auth = Authenticator::new(&config.issuers, http.clone(), JWKS_MIN_REFRESH);
    auth.prefetch().await;
    let objections = Objections::new(http.clone(), settings.upstream.clone(), OBJECTIONS_TTL);
    if let Some(path) = policy_path {
        tokio::spawn(reload::watch(
            path,
            policy.clone(),
            POLL,
            reload::load,
            "sharing policy",
            metrics.policy_reloads.clone(),
        ));
    }
    let settings = SettingsHandle::new(settings);
    tokio::spawn(reload::watch(
        args.config.clone(),
        settings.clone(),
        POLL,
        reload_config(args.clone(), config.start_up_part(), settings.clone()),
        "gateway configuration",
        metrics.config_reloads.clone(),
    ));
    let gateway = Arc::new(Gateway { settings, policy, auth, http, audit, objections, metrics });

    let ready = Arc::new(Readiness::default());
    let public = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen { address: config.listen, source })?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| RunError::Listen { address: config.admin_listen, source })?;
    tracing::info!(listen = %config.listen, admin = %config.admin_listen, "listening");
    ready.set_ready();
    let public = axum::serve(public, server::router(gateway)).with_graceful_shutdown(carerecord_serve::shutdown());
    let admin = axum::serve(admin_listener, admin::router(registry, ready))
        .with_graceful_shutdown(carerecord_serve::shutdown());
    tokio::select! {
        result = public => result.map_err(RunError::Serve),
        result = admin => result.map_err(RunError::Serve),
    }
}
