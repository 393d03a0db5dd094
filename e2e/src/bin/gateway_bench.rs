//! The record gateway benchmark: see e2e/bench/README.md ("The record
//! gateway"). The same reads and searches, in one run, straight to the
//! record store (the floor) and through a gateway this bench starts (the
//! binary in ICS_OPERATOR_BIN, configured exactly as `e2e/dataplane up`
//! configured its own, from what `ics-operator render` prints). Reports the
//! latency the gateway adds (p50, p99), its throughput as a share of the
//! store's, and its memory. Needs the local data plane: e2e/dataplane up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

struct Args {
    /// Timed requests per workload and path, after the warm-up.
    requests: usize,
    warmup: usize,
    /// Concurrent callers in the throughput runs.
    concurrency: usize,
    /// Seconds per throughput run.
    seconds: u64,
}

fn args() -> Result<Args> {
    let mut a = Args { requests: 2000, warmup: 200, concurrency: 8, seconds: 10 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().context("flag needs a value")?.parse::<u64>().context("a number");
        match flag.as_str() {
            "--requests" => a.requests = value()? as usize,
            "--warmup" => a.warmup = value()? as usize,
            "--concurrency" => a.concurrency = value()? as usize,
            "--seconds" => a.seconds = value()?,
            other => bail!("unknown flag {other}; use --requests N --warmup N --concurrency N --seconds S"),
        }
    }
    ensure!(a.requests >= 100, "--requests must be at least 100 for a p99");
    Ok(a)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Plane {
    env: HashMap<String, String>,
    http: reqwest::Client,
}

impl Plane {
    fn var(&self, name: &str) -> Result<&str> {
        self.env.get(name).map(String::as_str).with_context(|| format!("{name} missing from the data plane's env file"))
    }

    async fn token(&self, who: &str) -> Result<String> {
        let response = self
            .http
            .post(self.var("TOKEN_URL")?)
            .basic_auth(self.var(&format!("{who}_CLIENT_ID"))?, Some(self.var(&format!("{who}_CLIENT_SECRET"))?))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await?
            .error_for_status()?;
        let body: Value = response.json().await?;
        Ok(body["access_token"].as_str().context("no access_token")?.to_string())
    }
}

/// A gateway of the bench's own, so that its memory and CPU are measured
/// alone and the binary is the one being measured (a release build).
struct Gateway {
    child: Child,
    base: String,
}

impl Gateway {
    async fn start(plane: &Plane, http: &reqwest::Client) -> Result<Self> {
        let bin = std::env::var_os("ICS_OPERATOR_BIN").context("ICS_OPERATOR_BIN names the ics-operator binary")?;
        // The data plane keeps the page key beside the gateway's configuration.
        let config = Path::new(plane.var("GATEWAY_CONFIG_FILE")?);
        let page_key = config.parent().context("the gateway's configuration has a directory")?.join("page-key");
        let (listen, admin) = (e2e::free_port(), e2e::free_port());
        let log = std::fs::File::create(std::env::temp_dir().join("gateway-bench.log"))?;
        let child = Command::new(bin)
            .arg("gateway")
            .arg("--config")
            .arg(plane.var("GATEWAY_CONFIG_FILE")?)
            .arg("--policy")
            .arg(plane.var("GATEWAY_POLICY_FILE")?)
            .arg("--upstream")
            .arg(plane.var("STORE_URL")?)
            .arg("--listen")
            .arg(format!("127.0.0.1:{listen}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin}"))
            .arg("--page-key-file")
            .arg(page_key)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start the gateway")?;
        let mut gateway = Gateway { child, base: format!("http://127.0.0.1:{listen}") };
        for _ in 0..100 {
            if let Some(status) = gateway.child.try_wait()? {
                bail!(
                    "the gateway exited ({status}); see {}",
                    std::env::temp_dir().join("gateway-bench.log").display()
                );
            }
            let ready = http.get(format!("http://127.0.0.1:{admin}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(gateway);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        gateway.stop();
        bail!("the gateway was not ready within 10 s")
    }

    fn memory(&self) -> Result<e2e::process_stats::Memory> {
        Ok(e2e::process_stats::memory(self.child.id())?)
    }

    fn cpu_seconds(&self) -> Result<f64> {
        Ok(e2e::process_stats::cpu_seconds(self.child.id())?)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request, the same on both paths but for the base and the token.
#[derive(Clone)]
struct Workload {
    name: &'static str,
    /// Path and query after the base.
    path: String,
    /// The gateway's base for it (the tenant's own /fhir, or federation).
    gateway_base: String,
    token: String,
}

async fn call(http: &reqwest::Client, url: &str, token: Option<&str>) -> Result<Duration> {
    let start = Instant::now();
    let mut request = http.get(url).header("Accept", "application/fhir+json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    let elapsed = start.elapsed();
    ensure!(status.is_success(), "{url}: {status}: {}", String::from_utf8_lossy(&body));
    Ok(elapsed)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// p50 and p99 in ms straight to the store and through the gateway,
/// requests interleaved so that both paths see the same store and machine.
async fn latency(http: &reqwest::Client, store: &str, gateway: &Gateway, w: &Workload, a: &Args) -> Result<Value> {
    let direct_url = format!("{store}/{}", w.path);
    let gateway_url = format!("{}{}/{}", gateway.base, w.gateway_base, w.path);
    let (mut direct, mut through) = (Vec::with_capacity(a.requests), Vec::with_capacity(a.requests));
    for i in 0..a.warmup + a.requests {
        let d = call(http, &direct_url, None).await?;
        let g = call(http, &gateway_url, Some(&w.token)).await?;
        if i >= a.warmup {
            direct.push(d);
            through.push(g);
        }
    }
    direct.sort();
    through.sort();
    let (d50, d99, g50, g99) =
        (percentile(&direct, 0.50), percentile(&direct, 0.99), percentile(&through, 0.50), percentile(&through, 0.99));
    Ok(json!({
        "workload": w.name, "path": w.path, "requests": a.requests,
        "direct_p50_ms": round(d50), "direct_p99_ms": round(d99),
        "gateway_p50_ms": round(g50), "gateway_p99_ms": round(g99),
        "added_p50_ms": round(g50 - d50), "added_p99_ms": round(g99 - d99),
    }))
}

/// One throughput run: requests a second, and the CPU each request cost the
/// store and the gateway (where it is on the path).
struct Run {
    rps: f64,
    store_cpu_ms: f64,
    gateway_cpu_ms: Option<f64>,
}

/// `concurrency` callers for `seconds`, the CPU of the store (and of the
/// gateway, if given) read before and after.
async fn throughput(
    http: &reqwest::Client,
    url: String,
    token: Option<String>,
    store_pid: u32,
    gateway: Option<&Gateway>,
    a: &Args,
) -> Result<Run> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let store_cpu = e2e::process_stats::cpu_seconds(store_pid)?;
    let gateway_cpu = gateway.map(Gateway::cpu_seconds).transpose()?;
    let start = Instant::now();
    let workers: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (http, url, token, done, stop) = (http.clone(), url.clone(), token.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    call(&http, &url, token.as_deref()).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let requests = done.load(Ordering::Relaxed).max(1) as f64;
    let per_request = |before: f64, after: f64| (after - before) * 1000.0 / requests;
    Ok(Run {
        rps: requests / elapsed,
        store_cpu_ms: per_request(store_cpu, e2e::process_stats::cpu_seconds(store_pid)?),
        gateway_cpu_ms: match (gateway, gateway_cpu) {
            (Some(g), Some(before)) => Some(per_request(before, g.cpu_seconds()?)),
            _ => None,
        },
    })
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = e2e::dataplane_env();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let plane = Plane { env, http: http.clone() };
    let store = plane.var("STORE_URL")?.to_string();
    let patient = plane.var("OTHER_PATIENT_ID")?.to_string();
    let mut gateway = Gateway::start(&plane, &http).await?;
    let result = measure(&plane, &http, &store, &patient, &gateway, &a).await;
    let memory = gateway.memory();
    gateway.stop();
    let (mut report, memory) = (result?, memory?);
    report["gateway_rss_mib"] = json!(round(memory.rss_mib));
    report["gateway_peak_rss_mib"] = json!(round(memory.peak_mib));
    print_table(&report);
    // GATEWAY_BENCH_OUT lets CI's smoke run keep the committed figures.
    let out = std::env::var_os("GATEWAY_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("e2e/bench/gateway-results.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwritten to {}", out.display());
    Ok(())
}

async fn measure(
    plane: &Plane,
    http: &reqwest::Client,
    store: &str,
    patient: &str,
    gateway: &Gateway,
    a: &Args,
) -> Result<Value> {
    let tenant_base = "/fhir".to_string();
    let federation_base = format!("/federation/{}/fhir", plane.var("CONSUMER_TENANT")?);
    let workloads = [
        Workload {
            name: "read",
            path: format!("Patient/{patient}"),
            gateway_base: tenant_base.clone(),
            token: plane.token("PROVIDER").await?,
        },
        Workload {
            name: "search",
            path: format!("MedicationStatement?patient={patient}"),
            gateway_base: tenant_base.clone(),
            token: plane.token("PROVIDER").await?,
        },
        Workload {
            name: "federated search",
            path: format!("MedicationStatement?patient={patient}"),
            gateway_base: federation_base,
            token: plane.token("CONSUMER").await?,
        },
    ];
    let mut latencies = Vec::new();
    for w in &workloads {
        latencies.push(latency(http, store, gateway, w, a).await?);
    }
    // Throughput of the read: straight, through, straight again; the floor is
    // the better of the two straight runs, so a store warming up never flatters
    // the gateway.
    let read = &workloads[0];
    let token = Some(plane.token("PROVIDER").await?);
    let direct_url = format!("{store}/{}", read.path);
    let gateway_url = format!("{}{}/{}", gateway.base, read.gateway_base, read.path);
    let store_pid = e2e::dataplane_pid("store").context("the record store's pid file (e2e/.dataplane/pids/store)")?;
    let first = throughput(http, direct_url.clone(), None, store_pid, None, a).await?;
    let through = throughput(http, gateway_url, token, store_pid, Some(gateway), a).await?;
    let second = throughput(http, direct_url, None, store_pid, None, a).await?;
    let floor = if first.rps >= second.rps { &first } else { &second };
    Ok(json!({
        "latency": latencies,
        "throughput": {
            "workload": "read", "concurrency": a.concurrency, "seconds": a.seconds,
            "direct_rps": floor.rps.round(), "gateway_rps": through.rps.round(), "ratio": round(through.rps / floor.rps),
            // Where each request's CPU went: what bounds the ratio on a machine
            // the store and the gateway share.
            "direct_store_cpu_ms": round(floor.store_cpu_ms),
            "gateway_store_cpu_ms": round(through.store_cpu_ms),
            "gateway_cpu_ms": through.gateway_cpu_ms.map(round),
        },
        "goals": {"added_p50_ms": 1.0, "added_p99_ms": 5.0, "throughput_ratio": 0.9, "rss_mib": 32.0},
    }))
}

fn print_table(report: &Value) {
    let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "{:<18} {:>11} {:>9} {:>9} {:>11} {:>9} {:>9}",
        "workload", "direct p50", "gw p50", "added", "direct p99", "gw p99", "added"
    );
    for l in report["latency"].as_array().into_iter().flatten() {
        println!(
            "{:<18} {:>11.3} {:>9.3} {:>9.3} {:>11.3} {:>9.3} {:>9.3}",
            l["workload"].as_str().unwrap_or_default(),
            ms(&l["direct_p50_ms"]),
            ms(&l["gateway_p50_ms"]),
            ms(&l["added_p50_ms"]),
            ms(&l["direct_p99_ms"]),
            ms(&l["gateway_p99_ms"]),
            ms(&l["added_p99_ms"])
        );
    }
    let t = &report["throughput"];
    println!(
        "\nthroughput (read, {} callers): direct {} req/s, gateway {} req/s, ratio {}",
        t["concurrency"], t["direct_rps"], t["gateway_rps"], t["ratio"]
    );
    println!(
        "CPU per request (ms): store {} direct, store {} and gateway {} through the gateway",
        t["direct_store_cpu_ms"], t["gateway_store_cpu_ms"], t["gateway_cpu_ms"]
    );
    println!("gateway RSS {} MiB (peak {} MiB)", report["gateway_rss_mib"], report["gateway_peak_rss_mib"]);
}
