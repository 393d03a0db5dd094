//! The `ics-operator` command: run the controller, print CRDs, render a
//! tenant offline.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ics_operator::api::{self, CareRecordTenant};
use ics_operator::render::{tenant as render_tenant, validate};
use ics_operator::settings::PlatformSettings;

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
    },
    /// Print every CustomResourceDefinition as multi-document YAML.
    Crds,
    /// Print, offline, the objects the controller would apply for a tenant.
    Render {
        /// File holding a CareRecordTenant ("-" for standard input).
        #[arg(short = 'f', long = "file")]
        file: String,
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
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { platform } => run(platform).await,
        Command::Crds => crds(),
        Command::Render { file, platform, without_cloudnative_pg, without_gateway_api } => {
            render(&file, platform.as_deref(), !without_cloudnative_pg, !without_gateway_api)
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

fn crds() -> anyhow::Result<()> {
    print!("{}", ics_operator::yaml::multi_doc(&api::crds())?);
    Ok(())
}

fn settings(path: Option<&str>) -> anyhow::Result<PlatformSettings> {
    Ok(match path {
        Some(p) => PlatformSettings::from_file(p)?,
        None => PlatformSettings::default(),
    })
}

fn render(file: &str, platform: Option<&str>, cnpg: bool, gateway_api: bool) -> anyhow::Result<()> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let settings = settings(platform)?;
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        let tenant: CareRecordTenant =
            serde_yaml::from_value(value).with_context(|| format!("{file}: not a valid CareRecordTenant"))?;
        validate::tenant(&tenant)
            .with_context(|| format!("{file}: tenant {}", kube::ResourceExt::name_any(&tenant)))?;
        let mode = render_tenant::resolve_database_mode(tenant.spec.database.mode, None, cnpg)?;
        let facts = render_tenant::Facts { database_mode: mode, gateway_api };
        for child in render_tenant::render(&tenant, &settings, &facts).into_children()? {
            out.push(child.to_value());
        }
    }
    print!("{}", ics_operator::yaml::multi_doc(&out)?);
    Ok(())
}

use serde::Deserialize as _;

async fn run(platform: Option<String>) -> anyhow::Result<()> {
    ics_operator::telemetry::init();
    let settings = settings(platform.as_deref())?;
    let client = kube::Client::try_default().await.context("cannot build a Kubernetes client")?;
    ics_operator::controller::run(client, settings, shutdown_signal()).await?;
    Ok(())
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
