//! The scale benchmark: see e2e/bench/README.md. Prints a table and writes
//! e2e/bench/results.json. Times are ratios against a floor measured in the
//! same run: `kubectl apply --server-side` of exactly what `render` prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use e2e::*;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

struct Args {
    tenants: usize,
    connectors: usize,
    window: u64,
    /// Skip the second set of N tenants installed with `helm install` each
    /// (England's size would not fit CI's 90 minutes with it: it doubles the
    /// world).
    skip_helm: bool,
}

fn args() -> Result<Args> {
    let mut a = Args { tenants: 100, connectors: 20, window: 60, skip_helm: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().context("flag needs a value")?.parse::<u64>().context("a number");
        match flag.as_str() {
            "--tenants" => a.tenants = value()? as usize,
            "--connectors" => a.connectors = value()? as usize,
            "--window" => a.window = value()?,
            "--skip-helm" => a.skip_helm = true,
            other => bail!("unknown flag {other}; use --tenants N --connectors M [--window SECONDS] [--skip-helm]"),
        }
    }
    Ok(a)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's target directory: CARGO_TARGET_DIR when the developer sets it.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn tool(name: &str) -> String {
    let out = Command::new("bash").arg(root().join("e2e/tools")).arg(name).output().expect("e2e/tools");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn operator_binary() -> PathBuf {
    std::env::var_os("ICS_OPERATOR_BIN").map(PathBuf::from).unwrap_or_else(|| target_dir().join("release/ics-operator"))
}

/// Manifests of one ICS: tenant, connectors and (optionally) provider sides of agreements.
fn ics(name: &str, connectors: usize, endpoint: &str, agreements: &[(&str, &str)]) -> Vec<Value> {
    let mut out = vec![tenant(name, "    mode: StatefulSet\n    storageSize: 1Gi\n    deletionPolicy: Delete")];
    // Each connector requests 100m of CPU: the default quota (16) holds
    // about 150 of them beside the record store and the database.
    out[0]["spec"]["quota"] = json!({"maxConnectors": connectors.max(1), "cpu": (16 + connectors / 10).to_string()});
    let ns = namespace_of(name);
    for i in 0..connectors {
        out.push(connector(&format!("gp-{i}"), &ns, "hl7v2-mllp", endpoint));
    }
    for (id, counterpart) in agreements {
        out.push(json!({
            "apiVersion": "carerecord.dev/v1alpha1", "kind": "SharingAgreement",
            "metadata": {"name": id.to_lowercase(), "namespace": ns},
            "spec": {"role": "Provider", "agreementId": id, "counterpartTenant": counterpart, "purpose": "DirectCare",
                     "legalBasis": {"article6": "PublicTask", "article9": "HealthOrSocialCare"},
                     "resources": ["MedicationStatement", "AllergyIntolerance"],
                     "validFrom": "2026-01-01T00:00:00Z", "expires": "2030-01-01T00:00:00Z"}
        }));
    }
    out
}

fn to_yaml(objects: &[Value]) -> String {
    objects.iter().map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap())).collect()
}

/// `kubectl apply --server-side` of a YAML stream; returns seconds taken,
/// retries included. A create in a namespace whose ResourceQuota the quota
/// controller is still counting can be refused with a conflict on the quota
/// ("the object has been modified"); kubectl does not retry it, so this
/// does, as a person would, at most twice. Other failures fail at once.
fn kubectl_apply(yaml: &str, manager: &str) -> Result<f64> {
    let start = Instant::now();
    for attempt in 1..=3 {
        let mut child = Command::new(tool("kubectl"))
            .args(["apply", "--server-side", "--force-conflicts", "--field-manager", manager, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        if out.status.success() {
            return Ok(start.elapsed().as_secs_f64());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stderr}");
        if attempt == 3 || !stderr.contains("the object has been modified") {
            break;
        }
        eprintln!("kubectl apply met a quota conflict; applying again (attempt {})", attempt + 1);
    }
    bail!("kubectl apply failed")
}

/// The floor: what `render` prints for these manifests, applied server-side.
fn floor(manifests: &[Value]) -> Result<f64> {
    let mut child = Command::new(operator_binary())
        .args(["render", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), to_yaml(manifests).as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("render failed");
    }
    kubectl_apply(&String::from_utf8(out.stdout)?, "bench-floor")
}

/// Values for charts/ics-tenant that describe the same ICS as `ics()`.
fn chart_values(objects: &[Value]) -> Value {
    let mut tenant = objects[0]["spec"].clone();
    tenant["name"] = objects[0]["metadata"]["name"].clone();
    let connectors: Vec<Value> = objects[1..]
        .iter()
        .filter(|o| o["kind"] == "ProviderConnector")
        .map(|c| {
            let mut spec = c["spec"].clone();
            spec["name"] = c["metadata"]["name"].clone();
            spec
        })
        .collect();
    json!({"tenant": tenant, "connectors": connectors})
}

/// One `helm install` of charts/ics-tenant per ICS, in sequence, as an
/// onboarding team would run them.
fn helm_install_each(all: &[Vec<Value>]) -> Result<()> {
    let helm = tool("helm");
    let chart = root().join("charts/ics-tenant");
    let values = target_dir().join("bench-values.json");
    for objects in all {
        std::fs::write(&values, serde_json::to_string(&chart_values(objects))?)?;
        let release = objects[0]["metadata"]["name"].as_str().context("named")?;
        let out = Command::new(&helm)
            .args(["install", release])
            .arg(&chart)
            .args(["--namespace", "default", "-f"])
            .arg(&values)
            .output()?;
        if !out.status.success() {
            bail!("helm install {release} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

fn helm_uninstall(releases: &[String]) {
    for release in releases {
        let _ =
            Command::new(tool("helm")).args(["uninstall", release, "--namespace", "default", "--wait=false"]).output();
    }
}

/// A kubeconfig acting as the operator chart's ServiceAccount.
fn operator_kubeconfig() -> Result<PathBuf> {
    let source = std::env::var("KUBECONFIG").context("KUBECONFIG")?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&source)?)?;
    let sa = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}");
    for user in config["users"].as_sequence_mut().context("users")? {
        user["user"]["as"] = sa.clone().into();
        user["user"]["as-groups"] = serde_yaml::to_value([
            "system:serviceaccounts",
            "system:serviceaccounts:ics-system",
            "system:authenticated",
        ])?;
    }
    let path = target_dir().join("bench-operator.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

struct OperatorProcess {
    child: Child,
    port: u16,
    /// The largest anonymous resident memory seen so far, in KiB: Linux
    /// keeps a peak of the whole RSS (VmHWM) but not of its anonymous part,
    /// so a thread samples it.
    anon_peak_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl OperatorProcess {
    fn start(port: u16) -> Result<Self> {
        let settings = target_dir().join("bench-platform.yaml");
        // Probe limits sized for the fleet, as a platform team would set
        // them: the defaults (10 a second, every 300 s) suit up to about
        // 3,000 connectors, and a default-size run has 4,000.
        std::fs::write(&settings, "probe:\n  allowedCidrs: [127.0.0.0/8]\n  maxPerSecond: 100\n  maxConcurrent: 16\n")?;
        let child = Command::new(operator_binary())
            .args(["run", "--platform"])
            .arg(&settings)
            .args(["--http-bind", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", operator_kubeconfig()?)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()?;
        let anon_peak_kib = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (pid, peak) = (child.id(), anon_peak_kib.clone());
        // Ends when the process has gone (its /proc entry with it).
        std::thread::spawn(move || {
            while let Ok(memory) = e2e::process_stats::memory(pid) {
                peak.fetch_max((memory.anon_mib * 1024.0) as u64, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Ok(Self { child, port, anon_peak_kib })
    }

    fn metrics(&self) -> String {
        let out = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{}/metrics", self.port)]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default()
    }

    /// Peak resident memory (MiB) and CPU seconds so far (0 for what cannot be read).
    fn cost(&self) -> (f64, f64) {
        let pid = self.child.id();
        let peak = e2e::process_stats::memory(pid).map(|m| m.peak_mib).unwrap_or(0.0);
        (peak, e2e::process_stats::cpu_seconds(pid).unwrap_or(0.0))
    }

    /// The peak of the anonymous part of its resident memory, in MiB (as
    /// sampled every 200 ms).
    fn anon_peak(&self) -> f64 {
        self.anon_peak_kib.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    }

    /// Stops it gracefully (SIGTERM), waiting for it to exit.
    fn stop(self) {
        drop(self);
    }
}

/// However the bench ends (a failed wait, an error, a panic), the operator
/// it started does not outlive it: a leftover would hold its port and serve
/// the next run's cluster.
impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Sum of a metric family's samples matching `filter`.
/// Reads of children that reached the API server (the operator's metric).
const CHILD_READS: &str = "ics_operator_child_reads_total";

fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative histogram buckets (le -> count) of the tenant reconcile duration.
fn buckets(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("ics_operator_reconcile_duration_seconds_bucket") && l.contains("kind=\"tenant\""))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_string();
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// A quantile (upper bucket bound, ms) of the reconciles between two snapshots.
fn quantile_ms(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, q: f64) -> Option<f64> {
    let mut rows: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            (
                if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) },
                n - before.get(le).unwrap_or(&0.0),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let total = rows.last()?.1;
    if total <= 0.0 {
        return None;
    }
    rows.iter().find(|(_, n)| *n >= q * total).map(|(le, _)| le * 1000.0)
}

/// Writes (create/update/patch/delete) by the operator's user in the audit
/// log between two instants; None when the cluster has no local audit log.
fn operator_writes(since: jiff::Timestamp, until: jiff::Timestamp) -> Option<usize> {
    // The API server rotates the log at 200 MB (audit.log, then
    // audit-<time>.log): read every file, or a window spanning a rotation
    // would lose writes.
    let logs = root().join("e2e/.cluster/logs");
    let mut text = String::new();
    for entry in std::fs::read_dir(logs).ok()?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("audit") {
            text.push_str(&std::fs::read_to_string(entry.path()).ok()?);
        }
    }
    if text.is_empty() {
        return None;
    }
    let sa = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}");
    Some(
        text.lines()
            .filter(|l| l.contains(sa.as_str()))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete")
            .filter(|e| e["impersonatedUser"]["username"] == sa.as_str() || e["user"]["username"] == sa.as_str())
            .filter(|e| {
                e["requestReceivedTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t >= since && t <= until)
            })
            .count(),
    )
}

async fn all_ready(client: &Client, names: &[String], connectors: usize) -> bool {
    let api = tenants(client);
    for name in names {
        let Ok(Some(t)) = api.get_opt(name).await else { return false };
        let status = t.status.unwrap_or_default();
        let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        let counted = status.connectors.is_some_and(|c| c.ready as usize == connectors);
        if !(ready && counted) {
            return false;
        }
    }
    true
}

/// Whether every Deployment and StatefulSet in `namespace` (at least one)
/// has all its replicas available.
async fn rolled_out(client: &Client, namespace: &str) -> bool {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace).list(&ListParams::default()).await;
    let sets = Api::<StatefulSet>::namespaced(client.clone(), namespace).list(&ListParams::default()).await;
    let (Ok(deployments), Ok(sets)) = (deployments, sets) else { return false };
    let deployed = deployments.items.iter().all(|d| {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) >= want
    });
    let set = sets.items.iter().all(|s| {
        let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        s.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= want
    });
    !(deployments.items.is_empty() && sets.items.is_empty()) && deployed && set
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Ok(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{what} did not happen within {}s", limit.as_secs())
}

/// Plays the Gateway controller for every tenant namespace, continuously.
fn spawn_gateway(client: Client, namespaces: Vec<String>) {
    tokio::spawn(async move {
        loop {
            for ns in &namespaces {
                let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &http_routes());
                if let Ok(list) = api.list(&ListParams::default().labels("!carerecord.dev/agreement")).await {
                    for r in list.items.iter().filter(|r| r.data.get("status").and_then(|s| s.get("parents")).is_none())
                    {
                        let name = kube::ResourceExt::name_any(r);
                        let status = json!({"status": {"parents": [{"parentRef": {"name": "platform", "namespace": "gateway-system"},
                            "controllerName": "bench.carerecord.dev/gateway",
                            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}});
                        let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

/// Pods one kwok node holds in this benchmark.
const PODS_PER_NODE: usize = 1000;

/// Adds kwok nodes for the pods this run starts (the local cluster's own
/// three nodes hold 750; a default-size run starts about 6,600). Only on a
/// cluster that already runs kwok nodes: a real cluster's capacity is its
/// owner's business. The nodes stay for later runs.
async fn ensure_capacity(client: &Client, pods: usize) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let nodes = Api::<Node>::all(client.clone());
    if nodes.list_metadata(&ListParams::default().labels("type=kwok")).await?.items.is_empty() {
        return Ok(());
    }
    for i in 0..pods.div_ceil(PODS_PER_NODE) {
        let name = format!("bench-node-{i}");
        let capacity =
            json!({"cpu": "1000", "memory": "4Ti", "ephemeral-storage": "16Ti", "pods": PODS_PER_NODE.to_string()});
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"}},
            "status": {"allocatable": capacity, "capacity": capacity}
        });
        if nodes.get_opt(&name).await?.is_none() {
            nodes.create(&Default::default(), &serde_json::from_value(node)?).await?;
        }
        // Admission taints new nodes not-ready, and no node lifecycle
        // controller runs here to lift it.
        nodes.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": null}}))).await?;
    }
    Ok(())
}

async fn delete_tenants(client: &Client, names: &[String]) {
    for name in names {
        let _ = tenants(client).delete(name, &Default::default()).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    // Interrupted (Ctrl-C, or SIGTERM from a CI runner's timeout), the run
    // is dropped, and with it the operator process it started (its Drop
    // stops it): nothing is left holding its port for the next bench.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = run(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the operator this bench started was stopped"),
        _ = terminate.recv() => bail!("terminated; the operator this bench started was stopped"),
    }
}

async fn run(args: Args) -> Result<()> {
    let client = client().await;
    tokio::spawn(provision_volumes(client.clone()));
    let _ = operator_client().await; // installs the operator chart (RBAC) if missing
    // Pods started: onboarding (two ICSs, 10 connectors) and three sets of
    // N ICSs (operator, helm unless skipped, floor), each ICS a record store,
    // a database and its connectors.
    let sets = if args.skip_helm { 2 } else { 3 };
    ensure_capacity(&client, 16 + sets * args.tenants * (args.connectors + 2)).await?;
    let endpoint = tcp_listener().await;
    let endpoint = format!("mllp://{endpoint}");
    let run = unique("b");
    // A free port for the operator's /metrics (fixed ones collide with
    // whatever else the machine runs, such as the local data plane).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut operator = OperatorProcess::start(port)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(status) = operator.child.try_wait()? {
        bail!("the operator exited at start ({status}); run it by hand to see why");
    }

    // 1. Onboarding: one ICS with 10 connectors and 2 agreements (their
    // consumer sides in a second ICS), against the floor.
    let partner = format!("{run}-partner");
    let mut partner_objects = ics(&partner, 0, &endpoint, &[]);
    for id in ["DSA-B-1", "DSA-B-2"] {
        partner_objects.push(json!({
            "apiVersion": "carerecord.dev/v1alpha1", "kind": "SharingAgreement",
            "metadata": {"name": id.to_lowercase(), "namespace": namespace_of(&partner)},
            "spec": {"role": "Consumer", "agreementId": id, "counterpartTenant": format!("{run}-ics"), "purpose": "DirectCare",
                     "legalBasis": {"article6": "PublicTask", "article9": "HealthOrSocialCare"},
                     "resources": ["MedicationStatement"], "validFrom": "2026-01-01T00:00:00Z", "expires": "2030-01-01T00:00:00Z"}
        }));
    }
    let one = format!("{run}-ics");
    spawn_gateway(client.clone(), vec![namespace_of(&one), namespace_of(&partner)]);
    kubectl_apply(&to_yaml(&partner_objects[..1]), "bench")?;
    wait_until("partner Ready", Duration::from_secs(300), || all_ready(&client, std::slice::from_ref(&partner), 0))
        .await?;
    let objects = ics(&one, 10, &endpoint, &[("DSA-B-1", partner.as_str()), ("DSA-B-2", partner.as_str())]);
    let start = Instant::now();
    kubectl_apply(&to_yaml(&objects[..1]), "bench")?;
    wait_until("namespace", Duration::from_secs(120), || async {
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get_opt(&namespace_of(&one))
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await?;
    kubectl_apply(&to_yaml(&objects[1..]), "bench")?;
    kubectl_apply(&to_yaml(&partner_objects[1..]), "bench")?;
    // Tenant (StatefulSet mode): 16 children; each MLLP connector 4 (no
    // inbound route); each agreement one route per type asked (1) + 1 policy.
    let expected_children = 16 + 10 * 4 + 2 * 2;
    wait_until("children present", Duration::from_secs(300), || async {
        children_versions(&client, &one).await.len() >= expected_children
    })
    .await?;
    let operator_present = start.elapsed().as_secs_f64();
    wait_until("onboarding Ready", Duration::from_secs(300), || all_ready(&client, std::slice::from_ref(&one), 10))
        .await?;
    let operator_ready = start.elapsed().as_secs_f64();
    let floor_start = Instant::now();
    let floor_onboarding = floor(&ics(&format!("{run}-floor"), 10, &endpoint, &[]))?;
    // The apply floor stops when the API server has the objects; the
    // operator's time runs on until the platform's own controllers have
    // started every pod. The same wait after the floor's apply is what an
    // operator with no overhead at all would measure.
    let floor_namespace = namespace_of(&format!("{run}-floor"));
    wait_until("floor rolled out", Duration::from_secs(300), || rolled_out(&client, &floor_namespace)).await?;
    let floor_rollout = floor_start.elapsed().as_secs_f64();

    // 2. Scale: N tenants x M connectors.
    let names: Vec<String> = (0..args.tenants).map(|i| format!("{run}-t{i}")).collect();
    spawn_gateway(client.clone(), names.iter().map(|n| namespace_of(n)).collect());
    let all: Vec<Vec<Value>> = names.iter().map(|n| ics(n, args.connectors, &endpoint, &[])).collect();
    let start = Instant::now();
    kubectl_apply(&to_yaml(&all.iter().map(|o| o[0].clone()).collect::<Vec<_>>()), "bench")?;
    for name in &names {
        wait_until("namespace", Duration::from_secs(600), || async {
            Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .get_opt(&namespace_of(name))
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await?;
    }
    kubectl_apply(&to_yaml(&all.iter().flat_map(|o| o[1..].to_vec()).collect::<Vec<_>>()), "bench")?;
    // Half a second a connector, and never less than 30 minutes: England's
    // size (8,400 connectors) takes longer than the default's.
    let scale_timeout = Duration::from_secs(((args.tenants * args.connectors) as u64 / 2).max(1800));
    wait_until("scale Ready", scale_timeout, || all_ready(&client, &names, args.connectors)).await?;
    let scale_operator = start.elapsed().as_secs_f64();
    // The same tenants installed with one `helm install` each of the
    // ics-tenant chart, to all Ready (the operator still does the onboarding).
    let helm_count = if args.skip_helm { 0 } else { args.tenants };
    let helm_names: Vec<String> = (0..helm_count).map(|i| format!("{run}-h{i}")).collect();
    let helm_all: Vec<Vec<Value>> = helm_names.iter().map(|n| ics(n, args.connectors, &endpoint, &[])).collect();
    let scale_helm = if args.skip_helm {
        None
    } else {
        spawn_gateway(client.clone(), helm_names.iter().map(|n| namespace_of(n)).collect());
        let start = Instant::now();
        helm_install_each(&helm_all)?;
        wait_until("helm Ready", scale_timeout, || all_ready(&client, &helm_names, args.connectors)).await?;
        Some(start.elapsed().as_secs_f64())
    };
    let floor_names: Vec<Vec<Value>> =
        (0..args.tenants).map(|i| ics(&format!("{run}-f{i}"), args.connectors, &endpoint, &[])).collect();
    let scale_floor = floor(&floor_names.concat())?;

    // 3. Steady state: no writes by the operator while nothing changes, even
    // when every tenant is nudged (an annotation, which changes no spec).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_text = operator.metrics();
    let before_buckets = buckets(&before_text);
    let before_reads = metric_sum(&before_text, CHILD_READS, "");
    let since = jiff::Timestamp::now();
    for name in names.iter().chain(&helm_names).chain([&one]) {
        let poke = json!({"metadata": {"annotations": {"bench.carerecord.dev/poke": since.to_string()}}});
        tenants(&client).patch(name, &PatchParams::default(), &Patch::Merge(&poke)).await?;
    }
    tokio::time::sleep(Duration::from_secs(args.window)).await;
    let until = jiff::Timestamp::now();
    let steady_writes = operator_writes(since, until);
    let after_text = operator.metrics();
    let after_buckets = buckets(&after_text);
    let steady_reads = metric_sum(&after_text, CHILD_READS, "") - before_reads;
    let p50 = quantile_ms(&before_buckets, &after_buckets, 0.5);
    let p99 = quantile_ms(&before_buckets, &after_buckets, 0.99);
    let (rss, cpu) = operator.cost();
    let anon = operator.anon_peak();

    // 4. Restart over the converged set: writes and time until every tenant
    // has been reconciled again.
    operator.stop();
    let since = jiff::Timestamp::now();
    let start = Instant::now();
    let operator2 = OperatorProcess::start(port)?;
    let expected = (names.len() + helm_names.len() + 2) as f64;
    let resync = wait_until("resync", Duration::from_secs(900), || {
        let text = operator2.metrics();
        async move { metric_sum(&text, "ics_operator_reconciles_total", "kind=\"tenant\"") >= expected }
    })
    .await
    .unwrap_or(start.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restart_writes = operator_writes(since, jiff::Timestamp::now());
    let restart_reads = metric_sum(&operator2.metrics(), CHILD_READS, "");
    let (rss2, _) = operator2.cost();
    let anon2 = operator2.anon_peak();
    operator2.stop();

    let results = json!({
        "onboarding": {"operator_s": operator_ready, "children_present_s": operator_present, "floor_s": floor_onboarding, "ratio": operator_ready / floor_onboarding, "floor_rollout_s": floor_rollout, "rollout_ratio": operator_ready / floor_rollout},
        "scale": {"tenants": args.tenants, "connectors": args.connectors, "operator_s": scale_operator, "floor_s": scale_floor, "ratio": scale_operator / scale_floor, "helm_s": scale_helm, "helm_ratio": scale_helm.map(|h| h / scale_floor)},
        "steady_state_writes": steady_writes,
        "steady_state_window_s": args.window,
        "steady_state_child_reads": steady_reads,
        "restart": {"writes": restart_writes, "child_reads": restart_reads, "resync_s": resync},
        "rss_mib": rss.max(rss2),
        "rss_first_mib": rss,
        "rss_restart_mib": rss2,
        "anon_first_mib": anon,
        "anon_restart_mib": anon2,
        "cpu_s": cpu,
        "noop_reconcile_p50_ms": p50,
        "noop_reconcile_p99_ms": p99,
    });
    std::fs::write(root().join("e2e/bench/results.json"), serde_json::to_string_pretty(&results)?)?;
    println!("{:<42} {:>12}", "measure", "value");
    println!("{:<42} {:>12.2}", "onboarding: operator apply -> Ready (s)", operator_ready);
    println!("{:<42} {:>12.2}", "onboarding: floor, kubectl SSA (s)", floor_onboarding);
    println!("{:<42} {:>12.2}", "onboarding: ratio", operator_ready / floor_onboarding);
    println!("{:<42} {:>12.2}", "onboarding: children present (s)", operator_present);
    println!("{:<42} {:>12.2}", "onboarding: floor + pods available (s)", floor_rollout);
    println!("{:<42} {:>12.2}", "onboarding: ratio to floor + pods", operator_ready / floor_rollout);
    println!("{:<42} {:>12}", "scale: tenants x connectors", format!("{}x{}", args.tenants, args.connectors));
    println!("{:<42} {:>12.2}", "scale: operator apply -> all Ready (s)", scale_operator);
    println!("{:<42} {:>12.2}", "scale: floor, kubectl SSA (s)", scale_floor);
    println!("{:<42} {:>12.2}", "scale: ratio", scale_operator / scale_floor);
    if let Some(helm) = scale_helm {
        println!("{:<42} {:>12.2}", "scale: helm install each -> all Ready (s)", helm);
        println!("{:<42} {:>12.2}", "scale: helm ratio (vs floor)", helm / scale_floor);
    }
    println!("{:<42} {:>12}", "steady state: operator writes", format!("{steady_writes:?}"));
    println!("{:<42} {:>12}", "steady state: child reads from the API", steady_reads);
    println!("{:<42} {:>12}", "restart: operator writes", format!("{restart_writes:?}"));
    println!("{:<42} {:>12}", "restart: child reads from the API", restart_reads);
    println!("{:<42} {:>12.2}", "restart: time to resync (s)", resync);
    println!("{:<42} {:>12.1}", "operator peak RSS (MiB)", rss.max(rss2));
    println!("{:<42} {:>12}", "  first operator / restarted (MiB)", format!("{rss:.1}/{rss2:.1}"));
    println!("{:<42} {:>12}", "  anonymous: first / restarted (MiB)", format!("{anon:.1}/{anon2:.1}"));
    println!("{:<42} {:>12.2}", "operator CPU until steady (s)", cpu);
    println!("{:<42} {:>12}", "no-op reconcile p50 / p99 (ms, bucket)", format!("{p50:?}/{p99:?}"));

    delete_tenants(&client, &names).await;
    helm_uninstall(&helm_names);
    delete_tenants(&client, &[one, partner]).await;
    for f in floor_names.iter().chain(&helm_all).chain([&ics(&format!("{run}-floor"), 0, &endpoint, &[])]) {
        let _ = Command::new(tool("kubectl"))
            .args(["delete", "ns", &namespace_of(f[0]["metadata"]["name"].as_str().unwrap()), "--wait=false"])
            .output();
    }
    if steady_writes.is_some_and(|w| w > 0) {
        bail!("the operator wrote {steady_writes:?} times while nothing changed");
    }
    if restart_writes.is_some_and(|w| w > 0) {
        bail!("the restarted operator wrote {restart_writes:?} times over a converged world");
    }
    Ok(())
}
