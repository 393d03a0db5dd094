//! The connector ingest benchmark: see e2e/bench/README.md ("The connector
//! runtime"). In one run, against the local data plane's real HAPI store:
//!
//! - **Poll**: a FHIR poll connector (the binary in ICS_OPERATOR_BIN) syncs
//!   a provider double's records with a fresh cursor; records/s from its
//!   start to its first complete sync. The floor: the bench itself reads the
//!   same records from a double of its own (same generator, fresh ODS code
//!   and NHS numbers, so every write is a create as the connector's are) and
//!   commits the same transaction Bundles straight to the store, built with
//!   the connector's own public code (`transform::prepare`,
//!   `transform::transaction`, `Cursor::entry`, `Store::commit`).
//! - **MLLP**: ADT A01 messages of distinct patients sent to an MLLP
//!   connector on one connection, each waiting for its ACK; messages/s. The
//!   floor: the same messages (for other patients) mapped with
//!   `carerecord_hl7v2::map::to_bundle`, as the connector maps them, and
//!   committed one transaction per message, in sequence.
//!
//! Each floor runs before and after the connector and the better of the two
//! counts, so a store warming up (or filling up) never flatters the
//! connector. Ratio = connector / floor. Also the connectors' peak RSS
//! (VmHWM). Needs the local data plane: e2e/dataplane up.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use carerecord_connector::cursor::Cursor;
use carerecord_connector::poll::next_link;
use carerecord_connector::store::Store;
use carerecord_connector::transform::{self, Provenance};
use carerecord_hl7v2::fixtures::{AdtEvent, SyntheticPatient, adt};
use carerecord_hl7v2::{map, mllp};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Resource types the provider double serves: one record of each per patient.
const TYPES: [&str; 6] =
    ["Patient", "AllergyIntolerance", "MedicationStatement", "Condition", "Immunization", "Observation"];
/// The data plane's provider tenant (the connectors' `tenant`).
const TENANT: &str = "cheshire-merseyside";
/// The double's client credentials.
const CLIENT_ID: &str = "carerecord";
const CLIENT_SECRET: &str = "gp-secret";
/// The bench's NHS numbers come from this part of the double's range
/// (`999<n:06>`): below the data plane's own practice (200000) and the
/// connector tests' regions (300000 and up), above the loaded data.
const NHS_REGION: std::ops::Range<u64> = 20_000..200_000;
/// Bound on any one wait (a sync, a readiness): it bounds a failure only.
const PATIENCE: Duration = Duration::from_secs(1800);

struct Args {
    /// Poll records (rounded up to whole patients, six records each).
    poll_records: usize,
    /// Records per page read and per transaction written.
    page_size: u32,
    /// The poll connector's request rate limit (the profiles' default is 10).
    requests_per_second: u32,
    /// ADT A01 messages sent to the MLLP connector.
    mllp_messages: usize,
}

fn args() -> Result<Args> {
    let mut a = Args { poll_records: 2000, page_size: 100, requests_per_second: 10, mllp_messages: 300 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().context("flag needs a value")?.parse::<u64>().context("a number");
        match flag.as_str() {
            "--poll-records" => a.poll_records = value()? as usize,
            "--page-size" => a.page_size = value()? as u32,
            "--requests-per-second" => a.requests_per_second = value()? as u32,
            "--mllp-messages" => a.mllp_messages = value()? as usize,
            other => bail!(
                "unknown flag {other}; use --poll-records N --page-size N --requests-per-second N --mllp-messages N"
            ),
        }
    }
    ensure!(a.poll_records >= 6, "--poll-records must be at least 6 (one patient)");
    ensure!(a.page_size >= 1 && a.requests_per_second >= 1, "--page-size and --requests-per-second must be at least 1");
    ensure!(a.mllp_messages >= 1, "--mllp-messages must be at least 1");
    Ok(a)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A process the bench started: killed when dropped, on every exit path
/// (an error, a panic, Ctrl-C: `main` drops the run's future).
struct Process {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Process {
    fn spawn(what: &str, command: &mut Command, log: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = command
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {what} ({})", command.get_program().to_string_lossy()))?;
        Ok(Process { child, what: what.to_string(), log })
    }

    /// An error naming why the process is gone, if it is.
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("{} exited ({status}); the end of {}:\n{}", self.what, self.log.display(), tail.join("\n"));
        }
        Ok(())
    }

    /// Peak resident memory (VmHWM) in MiB.
    fn peak_rss_mib(&self) -> Result<f64> {
        Ok(e2e::process_stats::memory(self.child.id())?.peak_mib)
    }
}

impl Process {
    /// CPU seconds (user + system) used so far.
    fn cpu_seconds(&self) -> Result<f64> {
        Ok(e2e::process_stats::cpu_seconds(self.child.id())?)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listen address on a port free now; an error, not a wait, if it is taken.
fn free_address() -> Result<String> {
    let address = format!("127.0.0.1:{}", e2e::free_port());
    std::net::TcpListener::bind(&address).with_context(|| format!("port {address} is already in use"))?;
    Ok(address)
}

/// Where the bench's files go: connector configurations and logs.
fn work_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("connector-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// A provider double (a GP system's FHIR API) with `patients` patients.
struct Double {
    _process: Process,
    base: String,
    ods: String,
}

impl Double {
    fn start(ods: &str, patients: usize, nhs_seed: u64, dir: &Path) -> Result<Self> {
        // Built beside this binary by e2e/bench/connector, in the same profile.
        let bin = std::env::current_exe()?.with_file_name("provider_double");
        let mut command = Command::new(&bin);
        command
            .args(["--listen", "127.0.0.1:0", "--ods", ods, "--patients", &patients.to_string()])
            .args(["--nhs-seed", &nhs_seed.to_string(), "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
            .stdout(Stdio::piped());
        let mut process =
            Process::spawn(&format!("the provider double {ods}"), &mut command, dir.join(format!("double-{ods}.log")))?;
        let stdout = process.child.stdout.take().context("the double's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(address) = line.trim().strip_prefix("listening on ") else {
            process.check_running()?;
            bail!("the provider double did not say where it listens: {line:?}");
        };
        let base = format!("http://{address}");
        Ok(Double { _process: process, base, ods: ods.to_string() })
    }

    /// Records it holds, by type.
    async fn records(&self, http: &reqwest::Client) -> Result<BTreeMap<String, u64>> {
        let stats: Value =
            http.get(format!("{}/_control/stats", self.base)).send().await?.error_for_status()?.json().await?;
        let per_type = stats["records"].as_object().context("the double's stats name its records")?;
        Ok(per_type.iter().map(|(t, n)| (t.clone(), n.as_u64().unwrap_or(0))).collect())
    }
}

/// Names of one run: unique ODS codes and a block of NHS numbers no
/// earlier run or test used, so every write is a create.
struct Names {
    tag: String,
    /// First NHS-number seed (the double's numbering) of the block.
    base: u64,
    /// Seeds per poll double.
    poll_span: u64,
}

impl Names {
    /// The ODS code of one phase (`code`: two letters naming it), 9 characters.
    fn ods(&self, code: &str) -> String {
        format!("B{code}{}", self.tag)
    }

    /// The seed of poll double `k` (0: floor before, 1: connector, 2: floor after).
    fn poll_seed(&self, k: u64) -> u64 {
        self.base + k * self.poll_span
    }

    /// The `SyntheticPatient::nth` index of MLLP message `i` of phase `k`:
    /// nth(m) has NHS number 999<2m>, so phases take 2 x messages seeds each.
    fn mllp_patient(&self, k: u64, messages: usize, i: usize) -> u32 {
        let start = self.base + 3 * self.poll_span + k * 2 * messages as u64;
        (start / 2 + 1 + i as u64) as u32
    }
}

/// The double's NHS number for seed `n` (`999<n:06>` and its check digit).
fn nhs_at(n: u64) -> Option<String> {
    let body = format!("999{:06}", n % 1_000_000);
    let mut nine = [0u8; 9];
    for (d, b) in nine.iter_mut().zip(body.bytes()) {
        *d = b - b'0';
    }
    carerecord_hl7v2::nhs::check_digit(&nine).map(|c| format!("{body}{c}"))
}

/// Picks a block of `width` seeds whose NHS numbers the store does not hold
/// (sampled), so that a rerun never updates an earlier run's patients.
async fn pick_names(http: &reqwest::Client, store: &str, width: u64, poll_span: u64) -> Result<Names> {
    ensure!(width < NHS_REGION.end - NHS_REGION.start, "the run needs {width} NHS numbers; use smaller sizes");
    for _ in 0..20 {
        let base = rand::random_range(NHS_REGION.start..NHS_REGION.end - width);
        let step = (width / 40).max(1);
        let sample: Vec<String> = (base..base + width)
            .step_by(step as usize)
            .filter_map(nhs_at)
            .map(|n| format!("{}|{n}", transform::NHS_NUMBER_SYSTEM))
            .collect();
        let url = format!("{store}/Patient?identifier={}&_summary=count", sample.join(","));
        let found: Value =
            http.get(url).header("Cache-Control", "no-cache").send().await?.error_for_status()?.json().await?;
        if found["total"].as_u64() == Some(0) {
            let tag = format!("{:06}", rand::random_range(0..1_000_000u32));
            return Ok(Names { tag, base, poll_span });
        }
    }
    bail!("found no unused block of {width} NHS numbers in 20 tries; the store is full of earlier runs")
}

/// How many of the store's records of `resource_type` carry the provider's tag.
async fn stored(http: &reqwest::Client, store: &str, resource_type: &str, ods: &str) -> Result<u64> {
    let url = format!("{store}/{resource_type}?_tag={}|{ods}&_summary=count", transform::ODS_SYSTEM);
    let body: Value =
        http.get(url).header("Cache-Control", "no-cache").send().await?.error_for_status()?.json().await?;
    body["total"].as_u64().context("a count from the store")
}

/// Checks the store holds exactly `expected` of the provider's records, by type.
async fn check_stored(http: &reqwest::Client, store: &str, ods: &str, expected: &BTreeMap<String, u64>) -> Result<()> {
    for (t, n) in expected {
        let found = stored(http, store, t, ods).await?;
        ensure!(found == *n, "the store holds {found} {t} records of {ods}, expected {n}");
    }
    Ok(())
}

/// One measured run: what moved (records, or messages) and how long it took.
struct Run {
    records: u64,
    seconds: f64,
    /// Of `seconds`, the time spent waiting for the store's commits (floors only).
    store_seconds: Option<f64>,
    /// CPU seconds the connector process used (connectors only).
    cpu_seconds: Option<f64>,
    /// Median time per message, sent to ACK or commit to commit (MLLP only).
    p50_ms: Option<f64>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    /// `unit`: what `records` counts (records, or messages).
    fn json(&self, unit: &str) -> Value {
        json!({
            unit: self.records, "seconds": round(self.seconds), format!("{unit}_per_s"): round(self.per_second()),
            "store_seconds": self.store_seconds.map(round), "cpu_seconds": self.cpu_seconds.map(round),
            "p50_ms": self.p50_ms.map(round),
        })
    }
}

// ---------------------------------------------------------------- connectors

/// An `ics-operator connector` process and its admin address.
struct Connector {
    process: Process,
    admin: String,
}

impl Connector {
    fn start(name: &str, ods: &str, store: &str, source: Value, dir: &Path) -> Result<Self> {
        let bin = std::env::var_os("ICS_OPERATOR_BIN").context("ICS_OPERATOR_BIN names the ics-operator binary")?;
        let admin = free_address()?;
        let config = json!({
            "apiVersion": "carerecord.dev/connector/v1",
            "name": name,
            "tenant": TENANT,
            "provider": {"odsCode": ods, "name": format!("Bench practice {ods}")},
            "profile": "emis-web",
            "storeUrl": store,
            "adminListen": admin,
            "source": source,
        });
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        let mut command = Command::new(bin);
        command.args(["connector", "--config"]).arg(&path).stdout(Stdio::null());
        let process = Process::spawn(&format!("connector {name}"), &mut command, dir.join(format!("{name}.log")))?;
        Ok(Connector { process, admin: format!("http://{admin}") })
    }

    async fn status(&mut self, http: &reqwest::Client) -> Result<Option<Value>> {
        self.process.check_running()?;
        match http.get(format!("{}/status", self.admin)).send().await {
            Ok(response) if response.status().is_success() => Ok(Some(response.json().await?)),
            // Not listening yet.
            _ => Ok(None),
        }
    }
}

// ---------------------------------------------------------------- poll

fn patients_for(records: usize) -> usize {
    records.div_ceil(TYPES.len())
}

/// The poll connector: from its start to its first complete sync.
async fn poll_connector(
    http: &reqwest::Client,
    store: &str,
    double: &Double,
    a: &Args,
    name: &str,
    dir: &Path,
) -> Result<(Run, f64)> {
    let secret = dir.join("client-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n"))?;
    let source = json!({
        "kind": "FhirPoll",
        "baseUrl": format!("{}/fhir", double.base),
        "resources": TYPES,
        // One poll is measured; the next would start long after.
        "intervalSeconds": 3600,
        "overlapSeconds": 300,
        "pageSize": a.page_size,
        "requestsPerSecond": a.requests_per_second,
        "auth": {"method": "ClientSecret", "tokenUrl": format!("{}/token", double.base), "clientId": CLIENT_ID,
                 "clientSecretFile": secret.to_string_lossy()},
    });
    let expected = double.records(http).await?;
    let total: u64 = expected.values().sum();
    let start = Instant::now();
    let mut connector = Connector::start(name, &double.ods, store, source, dir)?;
    let status = loop {
        ensure!(start.elapsed() < PATIENCE, "the poll connector did not finish a sync within {PATIENCE:?}");
        if let Some(status) = connector.status(http).await? {
            if status["lastSuccessfulSync"].is_string() {
                break status;
            }
            // A failed first poll would be retried an hour later: stop now, saying why.
            if let Some(error) = status["lastError"].as_str() {
                bail!("the poll connector's sync failed: {error}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = start.elapsed().as_secs_f64();
    let peak = connector.process.peak_rss_mib()?;
    let cpu = connector.process.cpu_seconds()?;
    drop(connector);
    let written = status["recordsWritten"].as_u64().unwrap_or(0);
    ensure!(written == total, "the connector wrote {written} records, the double holds {total}: {status}");
    ensure!(status["deadLetters"].as_u64() == Some(0), "the connector set records aside: {status}");
    check_stored(http, store, &double.ods, &expected).await?;
    Ok((Run { records: written, seconds, store_seconds: None, cpu_seconds: Some(cpu), p50_ms: None }, peak))
}

/// The poll floor: the bench reads the double as the connector does (same
/// searches, same page size) and commits each page, with a cursor entry,
/// in one transaction straight to the store.
async fn poll_floor(http: &reqwest::Client, store_url: &str, double: &Double, a: &Args, name: &str) -> Result<Run> {
    let store = Store::new(store_url, Duration::from_secs(60))?;
    let expected = double.records(http).await?;
    let provenance = Provenance {
        source: format!("https://carerecord.dev/connector/{TENANT}/{name}"),
        provider_ods: double.ods.clone(),
        rules: Vec::new(),
    };
    let key = format!("{TENANT}/{name}");
    let meta = provenance.meta();
    let start = Instant::now();
    let mut store_time = Duration::ZERO;
    let token: Value = http
        .post(format!("{}/token", double.base))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = token["access_token"].as_str().context("the double's token")?.to_string();
    let mut patients: HashMap<String, String> = HashMap::new();
    let mut cursor = Cursor::default();
    let mut written = 0u64;
    for t in TYPES {
        let mut url = Some(format!("{}/fhir/{t}?_count={}&_sort=_lastUpdated", double.base, a.page_size));
        while let Some(page_url) = url.take() {
            let page: Value = http.get(&page_url).bearer_auth(&token).send().await?.error_for_status()?.json().await?;
            let records: Vec<Value> =
                page["entry"].as_array().into_iter().flatten().filter_map(|e| e.get("resource").cloned()).collect();
            // Patients come first, so every reference resolves to an NHS number, as in the connector.
            for r in records.iter().filter(|r| r["resourceType"] == "Patient") {
                if let (Some(id), Some(nhs)) = (r["id"].as_str(), transform::nhs_number(r)) {
                    patients.insert(id.to_string(), nhs.to_string());
                }
            }
            if let Some(newest) =
                records.iter().filter_map(|r| r["meta"]["lastUpdated"].as_str()?.parse::<jiff::Timestamp>().ok()).max()
            {
                cursor.advance(t, newest);
            }
            let mut entries = Vec::with_capacity(records.len() + 1);
            for r in records {
                let prepared = transform::prepare(r, &provenance, &patients)?;
                entries.push(transform::transaction_entry(&prepared));
            }
            let n = entries.len() as u64;
            entries.push(cursor.entry(&key, &meta));
            let committing = Instant::now();
            store.commit(&transform::transaction(entries)).await?;
            store_time += committing.elapsed();
            written += n;
            url = next_link(&page);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let total: u64 = expected.values().sum();
    ensure!(written == total, "the floor wrote {written} records, the double holds {total}");
    check_stored(http, store_url, &double.ods, &expected).await?;
    Ok(Run {
        records: written,
        seconds,
        store_seconds: Some(store_time.as_secs_f64()),
        cpu_seconds: None,
        p50_ms: None,
    })
}

async fn measure_poll(http: &reqwest::Client, store: &str, names: &Names, a: &Args, dir: &Path) -> Result<Value> {
    let patients = patients_for(a.poll_records);
    let mut runs = Vec::new();
    let mut connector = None;
    for (k, what, code) in [(0, "floor before", "PF"), (1, "connector", "PC"), (2, "floor after", "PA")] {
        let ods = names.ods(code);
        let double = Double::start(&ods, patients, names.poll_seed(k), dir)?;
        let name = format!("bench-poll-{}", ods.to_lowercase());
        if k == 1 {
            connector = Some(poll_connector(http, store, &double, a, &name, dir).await?);
        } else {
            runs.push(poll_floor(http, store, &double, a, &name).await?);
        }
        println!("poll: {what} done");
    }
    let (run, peak) = connector.context("the connector ran")?;
    let floor = runs.iter().map(Run::per_second).fold(0.0, f64::max);
    Ok(json!({
        "records": run.records, "patients": patients, "page_size": a.page_size,
        "requests_per_second_limit": a.requests_per_second,
        "connector": run.json("records"), "floor_before": runs[0].json("records"), "floor_after": runs[1].json("records"),
        "floor_records_per_s": round(floor), "ratio": round(run.per_second() / floor),
        "connector_peak_rss_mib": round(peak),
    }))
}

// ---------------------------------------------------------------- MLLP

fn median_ms(mut each: Vec<Duration>) -> f64 {
    each.sort();
    each.get(each.len() / 2).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// ADT A01 messages of distinct patients for phase `k`, stamped now.
fn messages(names: &Names, k: u64, count: usize) -> Vec<(String, String)> {
    let stamp = jiff::Zoned::now().strftime("%Y%m%d%H%M%S").to_string();
    (0..count)
        .map(|i| {
            let patient = SyntheticPatient::nth(names.mllp_patient(k, count, i));
            // Visit numbers are keyed on the sending facility, not the provider: unique per run and phase.
            let visit = format!("V{}{k}{i:05}", names.tag);
            let control = format!("BENCH{}{k}{i:05}", names.tag);
            (control.clone(), adt(AdtEvent::A01, &patient, &visit, &control, &stamp))
        })
        .collect()
}

/// Records (Bundle entries) per resource type the messages map to, as the connector maps them.
fn mapped_counts(messages: &[(String, String)], ctx: &map::MapContext) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for (_, text) in messages {
        let bundle = map::to_bundle(&carerecord_hl7v2::Message::parse(text)?, ctx)?;
        for e in bundle["entry"].as_array().into_iter().flatten() {
            *counts.entry(e["resource"]["resourceType"].as_str().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Sends each message on one connection and waits for its ACK, as a sender does.
/// Returns the seconds from the first send to the last ACK, and each message's.
async fn send_all(address: &str, messages: &[(String, String)]) -> Result<(f64, Vec<Duration>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match tokio::net::TcpStream::connect(address).await {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => bail!("the MLLP listener at {address} never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let start = Instant::now();
    let mut decoder = mllp::Decoder::default();
    let mut buffer = vec![0u8; 16 * 1024];
    let mut each = Vec::with_capacity(messages.len());
    for (control, text) in messages {
        let sent = Instant::now();
        stream.write_all(&mllp::frame(text)).await?;
        let ack = loop {
            if let Some(mllp::Event::Frame(ack)) = decoder.next_event()? {
                break String::from_utf8_lossy(&ack).into_owned();
            }
            let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer))
                .await
                .context("no ACK within 60 s")??;
            ensure!(n > 0, "the connector closed the connection without an ACK for {control}");
            decoder.push(&buffer[..n]);
        };
        let msa = ack.split(['\r', '\n']).find(|s| s.starts_with("MSA|")).unwrap_or_default();
        ensure!(msa.starts_with(&format!("MSA|AA|{control}")), "{control} was not accepted: {ack}");
        each.push(sent.elapsed());
    }
    Ok((start.elapsed().as_secs_f64(), each))
}

async fn mllp_connector(
    http: &reqwest::Client,
    store: &str,
    messages: &[(String, String)],
    ods: &str,
    name: &str,
    dir: &Path,
) -> Result<(Run, f64)> {
    let listen = free_address()?;
    let source = json!({"kind": "Hl7v2Mllp", "listen": listen});
    let mut connector = Connector::start(name, ods, store, source, dir)?;
    let ctx = map::MapContext::new(format!("https://carerecord.dev/connector/{TENANT}/{name}"), ods);
    let expected = mapped_counts(messages, &ctx)?;
    // Started once /status answers; send_all waits for the MLLP listener itself.
    let ready = Instant::now();
    while connector.status(http).await?.is_none() {
        ensure!(ready.elapsed() < Duration::from_secs(30), "the MLLP connector was not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_before = connector.process.cpu_seconds()?;
    let (seconds, each) = send_all(&listen, messages).await?;
    let peak = connector.process.peak_rss_mib()?;
    let cpu = connector.process.cpu_seconds()? - cpu_before;
    let status = connector.status(http).await?.context("the connector's status")?;
    drop(connector);
    let total: u64 = expected.values().sum();
    ensure!(status["recordsWritten"].as_u64() == Some(total), "expected {total} records written: {status}");
    check_stored(http, store, ods, &expected).await?;
    let run = Run {
        records: messages.len() as u64,
        seconds,
        store_seconds: None,
        cpu_seconds: Some(cpu),
        p50_ms: Some(median_ms(each)),
    };
    Ok((run, peak))
}

/// The MLLP floor: each message mapped as the connector maps it and
/// committed in its own transaction, in sequence.
async fn mllp_floor(store_url: &str, http: &reqwest::Client, messages: &[(String, String)], ods: &str) -> Result<Run> {
    let store = Store::new(store_url, Duration::from_secs(60))?;
    let ctx = map::MapContext::new(format!("https://carerecord.dev/connector/{TENANT}/bench-mllp-floor"), ods);
    let expected = mapped_counts(messages, &ctx)?;
    let start = Instant::now();
    let mut store_time = Duration::ZERO;
    let mut each = Vec::with_capacity(messages.len());
    for (_, text) in messages {
        let bundle = map::to_bundle(&carerecord_hl7v2::Message::parse(text)?, &ctx)?;
        let committing = Instant::now();
        store.commit(&bundle).await?;
        store_time += committing.elapsed();
        each.push(committing.elapsed());
    }
    let seconds = start.elapsed().as_secs_f64();
    check_stored(http, store_url, ods, &expected).await?;
    Ok(Run {
        records: messages.len() as u64,
        seconds,
        store_seconds: Some(store_time.as_secs_f64()),
        cpu_seconds: None,
        p50_ms: Some(median_ms(each)),
    })
}

async fn measure_mllp(http: &reqwest::Client, store: &str, names: &Names, a: &Args, dir: &Path) -> Result<Value> {
    let mut floors = Vec::new();
    let mut connector = None;
    let mut records_per_message = 0.0;
    for (k, what, code) in [(0, "floor before", "MF"), (1, "connector", "MC"), (2, "floor after", "MA")] {
        let ods = names.ods(code);
        let batch = messages(names, k, a.mllp_messages);
        let ctx = map::MapContext::new("", ods.as_str());
        records_per_message = mapped_counts(&batch, &ctx)?.values().sum::<u64>() as f64 / a.mllp_messages as f64;
        if k == 1 {
            let name = format!("bench-mllp-{}", ods.to_lowercase());
            connector = Some(mllp_connector(http, store, &batch, &ods, &name, dir).await?);
        } else {
            floors.push(mllp_floor(store, http, &batch, &ods).await?);
        }
        println!("mllp: {what} done");
    }
    let (run, peak) = connector.context("the connector ran")?;
    let floor = floors.iter().map(Run::per_second).fold(0.0, f64::max);
    Ok(json!({
        "messages": run.records, "records_per_message": records_per_message,
        "connector": run.json("messages"), "floor_before": floors[0].json("messages"),
        "floor_after": floors[1].json("messages"),
        "floor_messages_per_s": round(floor), "ratio": round(run.per_second() / floor),
        "connector_records_per_s": round(run.per_second() * records_per_message),
        "floor_records_per_s": round(floor * records_per_message),
        "connector_peak_rss_mib": round(peak),
    }))
}

// ---------------------------------------------------------------- main

async fn run(a: &Args) -> Result<Value> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let env_path = std::env::var("DATAPLANE_ENV")
        .unwrap_or_else(|_| root().join("e2e/.dataplane/env").to_string_lossy().into_owned());
    ensure!(Path::new(&env_path).exists(), "{env_path} is missing: the data plane is not up (bash e2e/dataplane up)");
    let env = e2e::dataplane_env();
    let store = env.get("STORE_URL").context("STORE_URL missing from the data plane's env file")?.clone();
    http.get(format!("{store}/metadata"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("the record store at {store} does not answer: is the data plane up?"))?;
    let dir = work_dir()?;
    let patients = patients_for(a.poll_records) as u64;
    // The double skips seeds without a check digit (about one in eleven).
    let poll_span = patients + patients / 8 + 16;
    let width = 3 * poll_span + 3 * 2 * a.mllp_messages as u64 + 4;
    let names = pick_names(&http, &store, width, poll_span).await?;
    println!("run {} (NHS-number seeds {}..{}), files in {}", names.tag, names.base, names.base + width, dir.display());
    let poll = measure_poll(&http, &store, &names, a, &dir).await?;
    let mllp = measure_mllp(&http, &store, &names, a, &dir).await?;
    Ok(json!({
        "poll": poll, "mllp": mllp,
        "goals": {"ratio": 0.8, "connector_peak_rss_mib": 32.0},
    }))
}

fn print_table(report: &Value) {
    let n = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let (p, m) = (&report["poll"], &report["mllp"]);
    println!("\n{:<36} {:>12} {:>12} {:>7} {:>14}", "ingest", "connector/s", "floor/s", "ratio", "peak RSS MiB");
    println!(
        "{:<36} {:>12.1} {:>12.1} {:>7.2} {:>14.1}",
        format!("poll: {} records, pages of {}", p["records"], p["page_size"]),
        n(&p["connector"]["records_per_s"]),
        n(&p["floor_records_per_s"]),
        n(&p["ratio"]),
        n(&p["connector_peak_rss_mib"])
    );
    println!(
        "{:<36} {:>12.1} {:>12.1} {:>7.2} {:>14.1}",
        format!("mllp: {} ADT A01 (messages)", m["messages"]),
        n(&m["connector"]["messages_per_s"]),
        n(&m["floor_messages_per_s"]),
        n(&m["ratio"]),
        n(&m["connector_peak_rss_mib"])
    );
    println!(
        "{:<36} {:>12.1} {:>12.1}",
        format!("mllp: records ({} a message)", m["records_per_message"]),
        n(&m["connector_records_per_s"]),
        n(&m["floor_records_per_s"])
    );
    let messages = n(&m["messages"]);
    println!(
        "mllp per message: p50 {:.1} ms sent to ACK, floor p50 {:.1} ms a commit; connector CPU {:.2} ms",
        n(&m["connector"]["p50_ms"]),
        n(&m["floor_before"]["p50_ms"]).min(n(&m["floor_after"]["p50_ms"])),
        n(&m["connector"]["cpu_seconds"]) * 1000.0 / messages
    );
    println!("poll connector CPU {:.2} s", n(&p["connector"]["cpu_seconds"]));
    println!("goals: ratio >= 0.8, peak RSS <= 32 MiB");
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // On a signal the run's future is dropped, and with it every process it started.
    let report = tokio::select! {
        report = run(&a) => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the processes the bench started are stopped"),
        _ = terminate.recv() => bail!("terminated; the processes the bench started are stopped"),
    };
    print_table(&report);
    // CONNECTOR_BENCH_OUT lets CI's smoke run keep the committed figures.
    let out = std::env::var_os("CONNECTOR_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("e2e/bench/connector-results.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwritten to {}", out.display());
    Ok(())
}
