//! The `ics-operator` command: run the controller, print CRDs, render a
//! tenant offline.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ics_operator::api::{self, CareRecordTenant};
use ics_operator::render::{tenant as render_tenant, validate};
use ics_operator::settings::PlatformSettings;

/// mimalloc rather than the C library's allocator, for every command of the
/// binary. The image's binary is static musl, whose allocator is compact but
/// slow under many threads (one lock); glibc's keeps per-thread arenas that
/// it rarely gives back, so the operator's resident memory stood at about
/// three times its live heap. The bench (e2e/bench/README.md) has the
/// figures of both against this one. Without the `mimalloc` feature (for
/// heap profiles) the C library's allocator is used.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ics-operator",
    version,
    about = "Onboards Integrated Care Systems onto a shared care record platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster in KUBECONFIG or in-cluster config.
    Run {
        /// Platform settings file (YAML); defaults apply when omitted.
        #[arg(long, env = "ICS_PLATFORM_SETTINGS")]
        platform: Option<String>,
        /// Address serving /healthz, /readyz and /metrics.
        #[arg(long, env = "ICS_HTTP_BIND", default_value = "0.0.0.0:8080")]
        http_bind: std::net::SocketAddr,
        /// Take part in leader election, so several replicas are safe.
        #[arg(long, env = "ICS_LEADER_ELECT", default_value_t = false)]
        leader_elect: bool,
        /// Namespace of the leader Lease (normally the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "ics-system")]
        lease_namespace: String,
        /// Name of the leader Lease.
        #[arg(long, default_value = "ics-operator-leader")]
        lease_name: String,
        /// This replica's identity in the Lease (normally the pod name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
    },
    /// Print every CustomResourceDefinition as multi-document YAML.
    Crds,
    /// Print, offline, the objects the controller would apply for a tenant.
    Render {
        /// Files holding tenants, connectors and agreements ("-" for standard
        /// input); repeat to render several (e.g. both sides of an agreement).
        #[arg(short = 'f', long = "file")]
        file: Vec<String>,
        /// Platform settings file (YAML).
        #[arg(long)]
        platform: Option<String>,
        /// Render as if CloudNativePG were not installed.
        #[arg(long)]
        without_cloudnative_pg: bool,
        /// Render as if the Gateway API were not served (Ingress fallback).
        #[arg(long)]
        without_gateway_api: bool,
    },
    /// List the connector catalogue (built-in profiles).
    Catalogue {
        /// Output format: table or yaml.
        #[arg(short = 'o', long = "output", default_value = "table")]
        output: String,
    },
    /// Probe a provider endpoint the way the operator does, before applying a connector.
    Probe {
        /// Endpoint URL (https://... or mllp://host:port).
        url: String,
        /// Catalogue profile deciding how to probe (FHIR metadata or MLLP connect).
        #[arg(long, default_value = "generic-fhir-r4")]
        system: String,
        /// CIDR that may be probed although private or loopback (repeatable).
        #[arg(long = "allow-cidr")]
        allow_cidr: Vec<ipnet::IpNet>,
        /// Output format: text or json.
        #[arg(short = 'o', long = "output", default_value = "text")]
        output: String,
    },
    /// Run the record gateway in front of one tenant's record store (the data plane).
    Gateway(carerecord_gateway::cli::GatewayArgs),
    /// Run one ProviderConnector: bring its provider's records into the tenant's record store (the data plane).
    Connector(carerecord_connector::cli::ConnectorArgs),
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { platform, http_bind, leader_elect, lease_namespace, lease_name, identity } => {
            let election = leader_elect.then(|| ics_operator::controller::LeaderElection {
                namespace: lease_namespace,
                lease_name,
                identity: identity.unwrap_or_else(default_identity),
            });
            run(platform, http_bind, election).await
        }
        Command::Crds => crds(),
        Command::Render { file, platform, without_cloudnative_pg, without_gateway_api } => {
            render(&file, platform.as_deref(), !without_cloudnative_pg, !without_gateway_api)
        }
        Command::Catalogue { output } => catalogue(&output),
        Command::Probe { url, system, allow_cidr, output } => probe(&url, &system, allow_cidr, &output).await,
        Command::Gateway(args) => carerecord_gateway::cli::run(args).await.map_err(anyhow::Error::from),
        Command::Connector(args) => {
            ics_operator::telemetry::init();
            carerecord_connector::cli::run(args).await.map_err(anyhow::Error::from)
        }
        Command::Version => {
            println!("ics-operator {}", ics_operator::VERSION);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn catalogue(output: &str) -> anyhow::Result<()> {
    let catalogue = ics_operator::catalogue::Catalogue::built_in();
    match output {
        "yaml" => print!("{}", serde_yaml::to_string(&catalogue.iter().collect::<Vec<_>>())?),
        "table" => {
            println!("{:<26} {:<10} {:<13} {:<40} RESOURCES", "NAME", "PROTOCOL", "SCHEDULE", "SYSTEM");
            for p in catalogue.iter() {
                let schedule = match p.schedule.interval_seconds {
                    Some(s) => format!("{:?}/{s}s", p.schedule.mode),
                    None => format!("{:?}", p.schedule.mode),
                };
                println!(
                    "{:<26} {:<10} {:<13} {:<40} {}",
                    p.name,
                    format!("{:?}", p.protocol),
                    schedule,
                    p.display_name,
                    p.resources.join(",")
                );
            }
        }
        other => anyhow::bail!("unknown output format {other}; use table or yaml"),
    }
    Ok(())
}

async fn probe(url: &str, system: &str, allowed: Vec<ipnet::IpNet>, output: &str) -> anyhow::Result<()> {
    let catalogue = ics_operator::catalogue::Catalogue::built_in();
    let profile = catalogue.get(system).with_context(|| {
        format!("system {system} is not in the catalogue (known: {})", catalogue.names().join(", "))
    })?;
    let settings = ics_operator::probe::ProbeSettings { allowed, ..Default::default() };
    let result =
        ics_operator::probe::probe(url, profile.protocol, profile.probe_path.as_deref(), None, &settings).await;
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(&result)?),
        _ => {
            let verdict = if result.reachable { "reachable" } else { "NOT reachable" };
            println!("{url}: {verdict} in {}ms", result.latency_ms);
            if let Some(failure) = result.failure {
                println!("  reason:  {}", failure.as_str());
            }
            println!("  detail:  {}", result.message);
            if let Some(v) = &result.fhir_version {
                println!("  FHIR:    {v}");
            }
            if let Some(s) = &result.software {
                println!("  software: {s}");
            }
        }
    }
    if !result.reachable {
        anyhow::bail!("{url} is not reachable: {}", result.message);
    }
    Ok(())
}

fn crds() -> anyhow::Result<()> {
    print!("{}", ics_operator::yaml::multi_doc(&api::crds())?);
    Ok(())
}

fn settings(path: Option<&str>) -> anyhow::Result<PlatformSettings> {
    // The chart passes the operator's own image, as deployed, for the record
    // gateways (one version, one image); read here, at the binary's edge.
    let operator_image = std::env::var(ics_operator::settings::OPERATOR_IMAGE_ENV).ok();
    Ok(PlatformSettings::load(path, operator_image)?)
}

fn render(files: &[String], platform: Option<&str>, cnpg: bool, gateway_api: bool) -> anyhow::Result<()> {
    let settings = settings(platform)?;
    let catalogue = ics_operator::catalogue::Catalogue::built_in();
    let (mut tenants, mut connectors, mut agreements) = (Vec::new(), Vec::new(), Vec::new());
    for file in files {
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
        };
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)?;
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
            let name =
                value.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or("?").to_string();
            match kind.as_str() {
                "" if value.is_null() => {}
                "CareRecordTenant" => {
                    let t: CareRecordTenant =
                        serde_yaml::from_value(value).with_context(|| format!("{file}: tenant {name} is not valid"))?;
                    validate::tenant(&t).with_context(|| format!("{file}: tenant {name}"))?;
                    tenants.push(t);
                }
                "ProviderConnector" => {
                    let c: api::ProviderConnector = serde_yaml::from_value(value)
                        .with_context(|| format!("{file}: connector {name} is not valid"))?;
                    validate::connector(&c).with_context(|| format!("{file}: connector {name}"))?;
                    connectors.push(c);
                }
                "SharingAgreement" => {
                    let a: api::SharingAgreement = serde_yaml::from_value(value)
                        .with_context(|| format!("{file}: agreement {name} is not valid"))?;
                    validate::agreement(&a).with_context(|| format!("{file}: agreement {name}"))?;
                    // What an agreement exposes depends on the other side: judged below.
                    agreements.push(a);
                }
                // A chart's prerequisites (the tenant namespace): nothing to render.
                other => eprintln!("{file}: skipping {other} {name}: not a carerecord.dev kind"),
            }
        }
    }
    let file = files.join(", ");
    let mut out = Vec::new();
    let decided = ics_operator::render::agreement::offline::decisions(&agreements, &tenants, jiff::Timestamp::now());
    for tenant in &tenants {
        let name = kube::ResourceExt::name_any(tenant);
        render_tenant::claim::namespace(tenant, None, &settings).with_context(|| format!("{file}: tenant {name}"))?;
        let mode = render_tenant::resolve_database_mode(tenant.spec.database.mode, None, None, cnpg)?;
        if let Some(holder) = render_tenant::claim::hostname_holder(tenant, &tenants) {
            anyhow::bail!(
                "{file}: tenant {name}: gateway.hostname {} is also named by tenant {holder}",
                tenant.spec.gateway.hostname
            );
        }
        let namespace = tenant.target_namespace();
        let own: Vec<_> =
            connectors.iter().filter(|c| c.metadata.namespace.as_deref() == Some(namespace.as_str())).collect();
        let organisations = own.iter().map(|c| c.spec.provider.ods_code.clone()).collect();
        let inbound_connectors = own
            .iter()
            .filter_map(|c| {
                let profile = catalogue.get(&c.spec.system)?;
                ics_operator::render::connector::inbound(c, profile, &namespace)
            })
            .collect();
        let active_agreements =
            ics_operator::render::agreement::offline::active_for_provider(tenant, &decided, &tenants);
        let facts = render_tenant::Facts {
            database_mode: mode,
            gateway_api,
            active_agreements,
            hostname_held_by: None,
            organisations,
            inbound_connectors,
        };
        for child in render_tenant::render(tenant, &settings, &facts).into_children()? {
            out.push(child.to_value());
        }
    }
    for (agreement, decision) in &decided {
        let provider = tenants.iter().find(|t| Some(t.target_namespace()) == agreement.metadata.namespace);
        if let Some(provider) = provider.filter(|_| gateway_api) {
            for child in
                ics_operator::render::agreement::children(agreement, decision, provider, &settings).into_children()?
            {
                out.push(child.to_value());
            }
        }
    }
    for connector in &connectors {
        let name = kube::ResourceExt::name_any(connector);
        let ns = connector.metadata.namespace.clone().unwrap_or_default();
        let tenant = tenants
            .iter()
            .find(|t| t.target_namespace() == ns)
            .with_context(|| format!("{file}: connector {name} is in {ns}, which no tenant in the input owns"))?;
        let profile = catalogue.get(&connector.spec.system).with_context(|| {
            format!(
                "{file}: connector {name}: system {} is not in the catalogue ({})",
                connector.spec.system,
                catalogue.names().join(", ")
            )
        })?;
        for child in ics_operator::render::connector::render(connector, profile, tenant, &settings, gateway_api)
            .into_children()?
        {
            out.push(child.to_value());
        }
    }
    print!("{}", ics_operator::yaml::multi_doc(&out)?);
    Ok(())
}

use serde::Deserialize as _;

async fn run(
    platform: Option<String>,
    http_bind: std::net::SocketAddr,
    election: Option<ics_operator::controller::LeaderElection>,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    ics_operator::telemetry::init();
    let settings = settings(platform.as_deref())?;
    let client = kube::Client::try_default().await.context("cannot build a Kubernetes client")?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(ics_operator::controller::metrics::Metrics::register(&mut registry));
    let health = Arc::new(ics_operator::controller::metrics::Health::default());
    let listener =
        tokio::net::TcpListener::bind(http_bind).await.with_context(|| format!("cannot listen on {http_bind}"))?;
    let server = ics_operator::http::serve(listener, Arc::new(registry), health.clone());
    let runtime = ics_operator::controller::Runtime { settings, leader_election: election, metrics, health };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    tokio::select! {
        result = ics_operator::controller::run(client, runtime, shutdown.clone()) => result?,
        result = server => result.context("HTTP server failed")?,
    }
    Ok(())
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("ics-operator-{}", std::process::id()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or_default(),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or_default();
}
