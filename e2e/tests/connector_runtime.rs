//! The connector runtime on a real data plane: `ics-operator connector`
//! processes moving records from the project's provider test doubles (a GP
//! system's FHIR API, an HL7 v2 sender) into the provider tenant's real HAPI
//! FHIR store started by `e2e/dataplane up`.
//!
//! Each test has a double and a connector of its own: its own provider ODS
//! code and NHS numbers, so tests never see each other's records.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use e2e::{eventually, free_port};
use serde_json::{Value, json};

const TYPES: [&str; 6] =
    ["Patient", "AllergyIntolerance", "MedicationStatement", "Condition", "Immunization", "Observation"];

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// GETs JSON from the store, past any cache.
async fn get_json(url: &str) -> Value {
    http().get(url).header("Cache-Control", "no-cache").send().await.unwrap().json().await.unwrap()
}

/// Names unique to one run of one test, so that tests never see each
/// other's records (the store keeps them, and the connector's cursor): a
/// connector name, a provider ODS code and a block of 500 NHS numbers. A
/// run takes a random region of NHS numbers, above the data plane's own
/// (its connector's practice starts at 200000), and each test its own block
/// in it: a patient is written on its NHS number, so two tests sharing one
/// would overwrite each other's.
struct Names {
    connector: String,
    ods: String,
    nhs_seed: u64,
}

fn names(test: &str) -> Names {
    static REGION: OnceLock<u64> = OnceLock::new();
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);
    let region = *REGION.get_or_init(|| 300_000 + rand::random_range(0..60u64) * 10_000);
    let block = region + NEXT_BLOCK.fetch_add(1, Ordering::SeqCst) * 500;
    let tag: u32 = rand::random();
    Names {
        connector: format!("{test}-{:06x}", tag & 0xff_ffff),
        ods: format!("Q{:06}", tag % 1_000_000),
        nhs_seed: block,
    }
}

fn store_url() -> String {
    e2e::dataplane_env().get("STORE_URL").cloned().expect("STORE_URL in the data plane's env")
}

/// A child process killed when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The GP system's FHIR API double.
struct Double {
    _process: Process,
    base: String,
    ods: String,
}

impl Double {
    fn start(ods: &str, patients: usize, nhs_seed: u64) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_provider_double"))
            .args(["--listen", "127.0.0.1:0", "--ods", ods, "--patients", &patients.to_string()])
            .args(["--nhs-seed", &nhs_seed.to_string(), "--client-id", "carerecord", "--client-secret", "gp-secret"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the provider double");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line.trim().strip_prefix("listening on ").expect("the double says where it listens").to_string();
        Double { _process: Process(child), base: format!("http://{address}"), ods: ods.into() }
    }

    async fn control(&self, what: &str, body: Value) -> Value {
        let response = http().post(format!("{}/_control/{what}", self.base)).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "control {what}: {}", response.status());
        response.json().await.unwrap_or(Value::Null)
    }

    async fn stats(&self) -> Value {
        http().get(format!("{}/_control/stats", self.base)).send().await.unwrap().json().await.unwrap()
    }
}

/// One `ics-operator connector` process.
struct Connector {
    process: Option<Process>,
    config: std::path::PathBuf,
    admin: String,
}

impl Connector {
    fn config_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("connector-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn start_with(name: &str, source: Value, ods: &str) -> Self {
        let admin_port = free_port();
        let config = json!({
            "apiVersion": "carerecord.dev/connector/v1",
            "name": name,
            "tenant": "cheshire-merseyside",
            "provider": {"odsCode": ods, "name": format!("Practice {ods}")},
            "profile": "emis-web",
            "storeUrl": store_url(),
            "adminListen": format!("127.0.0.1:{admin_port}"),
            "source": source,
        });
        Self::start_from(name, &config)
    }

    /// A connector running `config` as it is.
    fn start_from(name: &str, config: &Value) -> Self {
        let path = Self::config_dir(name).join("connector.yaml");
        std::fs::write(&path, serde_yaml::to_string(config).unwrap()).unwrap();
        let admin = format!("http://{}", config["adminListen"].as_str().expect("adminListen"));
        let mut connector = Connector { process: None, config: path, admin };
        connector.restart();
        connector
    }

    /// A FHIR poll connector reading `double`.
    fn polling(name: &str, double: &Double, page_size: u32) -> Self {
        let dir = Self::config_dir(name);
        let secret = dir.join("client-secret");
        std::fs::write(&secret, "gp-secret\n").unwrap();
        let source = json!({
            "kind": "FhirPoll",
            "baseUrl": format!("{}/fhir", double.base),
            "resources": TYPES,
            "intervalSeconds": 1,
            "overlapSeconds": 300,
            "pageSize": page_size,
            "requestsPerSecond": 50,
            "auth": {"method": "ClientSecret", "tokenUrl": format!("{}/token", double.base), "clientId": "carerecord",
                     "clientSecretFile": secret.to_string_lossy()},
        });
        Self::start_with(name, source, &double.ods)
    }

    fn restart(&mut self) {
        self.process = None;
        let log = std::fs::File::create(self.config.with_file_name("connector.log")).unwrap();
        let child = Command::new(e2e::operator_binary())
            .args(["connector", "--config"])
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ics-operator connector (cargo build -p ics-operator first)");
        self.process = Some(Process(child));
    }

    /// Kills it (SIGKILL) once it has written some records, mid-sync.
    async fn kill_after_some_records(&mut self) {
        eventually("some records written", || async {
            let status = self.status().await?;
            (status["recordsWritten"].as_u64()? >= 10).then_some(())
        })
        .await;
        self.kill();
    }

    /// Kills it at once (SIGKILL: no chance to tidy up).
    fn kill(&mut self) {
        self.process = None;
    }

    async fn status(&self) -> Option<Value> {
        let response = http().get(format!("{}/status", self.admin)).send().await.ok()?;
        response.json().await.ok()
    }

    /// Waits for a whole poll that started after this call to succeed.
    async fn synced(&self) -> Value {
        let before = self.status().await.and_then(|s| s["lastSuccessfulSync"].as_str().map(str::to_string));
        let started = jiff::Timestamp::now();
        eventually("a completed sync", || async {
            let status = self.status().await?;
            let last: jiff::Timestamp = status["lastSuccessfulSync"].as_str()?.parse().ok()?;
            // Two polls after `started`: the first may have begun before it.
            (last > started + jiff::SignedDuration::from_secs(1) && Some(last.to_string()) != before).then_some(status)
        })
        .await
    }
}

/// Every type the source holds is in the store exactly as often, each
/// record at its first version: nothing lost, nothing written twice.
async fn store_holds_the_source_once(double: &Double) {
    let source = double.stats().await;
    for t in TYPES {
        let records = stored(&double.ods, t).await;
        assert_eq!(records.len() as u64, source["records"][t].as_u64().unwrap(), "{t}: nothing lost, nothing twice");
        assert!(versions(&records).iter().all(|(_, v)| v == "1"), "{t}: a replayed record gained a version");
    }
}

/// The store's records written by this provider's connector, by type.
async fn stored(ods: &str, resource_type: &str) -> Vec<Value> {
    let url =
        format!("{}/{resource_type}?identifier=https://carerecord.dev/fhir/sid/source/{ods}|&_count=500", store_url());
    let bundle: Value = http().get(url).header("Cache-Control", "no-cache").send().await.unwrap().json().await.unwrap();
    bundle["entry"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["resource"].clone()).collect()
}

async fn stored_count(ods: &str) -> usize {
    let mut n = 0;
    for t in TYPES {
        n += stored(ods, t).await.len();
    }
    n
}

fn versions(records: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = records
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["meta"]["versionId"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_full_sync_writes_exactly_what_the_source_holds() {
    let n = names("full-sync");
    let double = Double::start(&n.ods, 5, n.nhs_seed);
    let connector = Connector::polling(&n.connector, &double, 10);
    let status = connector.synced().await;
    let source = double.stats().await;
    for t in TYPES {
        let records = stored(&double.ods, t).await;
        assert_eq!(records.len() as u64, source["records"][t].as_u64().unwrap(), "{t}");
        for r in &records {
            // HAPI appends `#<request id>` to the source URI it was given.
            let source = r["meta"]["source"].as_str().unwrap_or_default();
            assert!(
                source.starts_with(&format!("https://carerecord.dev/connector/cheshire-merseyside/{}", n.connector))
            );
            let tags = r["meta"]["tag"].as_array().unwrap();
            assert!(tags.iter().any(|t| t["code"] == n.ods.as_str()), "{r}");
        }
    }
    // Every record refers to its patient in the store, resolved from the NHS number.
    for r in stored(&double.ods, "AllergyIntolerance").await {
        let reference = r["patient"]["reference"].as_str().unwrap();
        assert!(reference.starts_with("Patient/") && !reference.contains('?'), "{reference}");
    }
    assert_eq!(status["recordsWritten"], 30);
}

#[tokio::test]
async fn a_second_sync_writes_nothing_new() {
    let n = names("second-sync");
    let double = Double::start(&n.ods, 3, n.nhs_seed);
    let mut connector = Connector::polling(&n.connector, &double, 10);
    connector.synced().await;
    let mut before = Vec::new();
    for t in TYPES {
        before.extend(versions(&stored(&double.ods, t).await));
    }
    // Once from memory (the overlap window is skipped by versionId) and once
    // after a restart (nothing remembered: the store's idempotent writes).
    connector.synced().await;
    connector.restart();
    let status = connector.synced().await;
    let mut after = Vec::new();
    for t in TYPES {
        after.extend(versions(&stored(&double.ods, t).await));
    }
    assert_eq!(before, after, "no record gained a version");
    assert!(status["recordsUnchanged"].as_u64().unwrap_or(0) + status["recordsWritten"].as_u64().unwrap_or(0) > 0);
}

#[tokio::test]
async fn a_change_at_the_source_arrives_once_even_when_committed_late() {
    let n = names("late-change");
    let double = Double::start(&n.ods, 2, n.nhs_seed);
    let connector = Connector::polling(&n.connector, &double, 10);
    connector.synced().await;
    let allergy = stored(&double.ods, "AllergyIntolerance").await.into_iter().next().unwrap();
    let store_id = allergy["id"].as_str().unwrap().to_string();
    let source_id =
        allergy["identifier"][0]["value"].as_str().unwrap().trim_start_matches("AllergyIntolerance/").to_string();
    // Stamped a minute in the past: older than records already read, as a
    // transaction committed late would be. The overlap window catches it.
    double
        .control(
            "change",
            json!({"type": "AllergyIntolerance", "id": source_id, "lateSeconds": 60, "set": {"criticality": "high"}}),
        )
        .await;
    connector.synced().await;
    connector.synced().await;
    let now: Value = get_json(&format!("{}/AllergyIntolerance/{store_id}", store_url())).await;
    assert_eq!(now["criticality"], "high");
    let was: u64 = allergy["meta"]["versionId"].as_str().unwrap().parse().unwrap();
    assert_eq!(now["meta"]["versionId"], (was + 1).to_string(), "the change was written exactly once");
}

#[tokio::test]
async fn a_connector_killed_mid_sync_and_restarted_loses_nothing_and_duplicates_nothing() {
    let n = names("killed");
    let double = Double::start(&n.ods, 20, n.nhs_seed);
    // Slow pages, so the kill lands in the middle of the first sync.
    double.control("delay", json!({"ms": 150})).await;
    let mut connector = Connector::polling(&n.connector, &double, 5);
    connector.kill_after_some_records().await;
    let partial = stored_count(&double.ods).await;
    assert!(partial < 120, "the kill came after the sync ended ({partial} records); slow the double down");
    double.control("delay", json!({"ms": 0})).await;
    connector.restart();
    connector.synced().await;
    store_holds_the_source_once(&double).await;
}

#[tokio::test]
async fn a_provider_asking_to_wait_with_429_is_waited_for() {
    let n = names("throttled");
    let double = Double::start(&n.ods, 2, n.nhs_seed);
    double.control("throttle", json!({"count": 2, "retryAfter": 2})).await;
    let connector = Connector::polling(&n.connector, &double, 10);
    let status = connector.synced().await;
    let stats = double.stats().await;
    assert_eq!(stats["throttled"], 2);
    assert_eq!(stats["early"], 0, "the connector came back before Retry-After");
    assert!(status["throttled"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(stored_count(&double.ods).await, 12);
}

#[tokio::test]
async fn a_record_the_store_refuses_becomes_a_dead_letter_and_the_feed_goes_on() {
    let n = names("dead-letter");
    let double = Double::start(&n.ods, 2, n.nhs_seed);
    // An allergy of a patient the practice system no longer has: its
    // reference cannot be resolved, so the store refuses it.
    double
        .control(
            "add",
            json!({
                "resourceType": "AllergyIntolerance", "id": "orphan",
                "code": {"text": "Peanut allergy"}, "patient": {"reference": "Patient/gone"},
            }),
        )
        .await;
    let connector = Connector::polling(&n.connector, &double, 10);
    let status = connector.synced().await;
    assert_eq!(status["deadLetters"], 1, "{status}");
    assert_eq!(status["recentDeadLetters"][0]["sourceRef"], "AllergyIntolerance/orphan");
    assert_eq!(stored_count(&double.ods).await, 12, "every other record arrived");
    let letters: Value = get_json(&format!(
            "{}/Basic?identifier=https://carerecord.dev/fhir/sid/connector-dead-letter|cheshire-merseyside/{}/AllergyIntolerance/orphan/1",
            store_url(),
            n.connector
        )).await;
    assert_eq!(letters["total"], 1, "the dead letter is kept in the store: {letters}");
}

/// An HL7 v2 connector listening on a free port.
fn mllp_connector(name: &str, ods: &str) -> (Connector, String) {
    let port = free_port();
    let source = json!({"kind": "Hl7v2Mllp", "listen": format!("127.0.0.1:{port}")});
    (Connector::start_with(name, source, ods), format!("127.0.0.1:{port}"))
}

/// Sends one message and reads its ACK.
fn send(address: &str, message: &str) -> String {
    let mut stream = eventually_connect(address);
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(&carerecord_hl7v2::mllp::frame(message)).unwrap();
    let mut decoder = carerecord_hl7v2::mllp::Decoder::default();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "the connector closed the connection without an ACK");
        decoder.push(&buffer[..n]);
        if let Ok(Some(carerecord_hl7v2::mllp::Event::Frame(ack))) = decoder.next_event() {
            return String::from_utf8(ack).unwrap();
        }
    }
}

fn eventually_connect(address: &str) -> TcpStream {
    for _ in 0..100 {
        if let Ok(stream) = TcpStream::connect(address) {
            return stream;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the MLLP listener at {address} never answered");
}

fn msa(ack: &str) -> &str {
    ack.split(['\r', '\n']).find(|s| s.starts_with("MSA|")).expect("an MSA segment")
}

#[tokio::test]
async fn an_adt_a01_then_a08_for_one_nhs_number_gives_one_patient_updated() {
    use carerecord_hl7v2::fixtures::{AdtEvent, SyntheticPatient, adt};
    let n = names("mllp-adt");
    let (_connector, address) = mllp_connector(&n.connector, &n.ods);
    // nth(m) numbers patients 999<2m>: m = seed / 2 keeps them in this test's block.
    let mut patient = SyntheticPatient::nth((n.nhs_seed / 2) as u32);
    let a01 = adt(AdtEvent::A01, &patient, "V170001", "MSG170001", "20261125093000");
    let ack = tokio::task::spawn_blocking({
        let address = address.clone();
        move || send(&address, &a01)
    })
    .await
    .unwrap();
    assert!(msa(&ack).starts_with("MSA|AA|MSG170001"), "{ack}");
    patient.family = "Okafor-Smith".into();
    let a08 = adt(AdtEvent::A08, &patient, "V170001", "MSG170002", "20261125101500");
    let ack = tokio::task::spawn_blocking(move || send(&address, &a08)).await.unwrap();
    assert!(msa(&ack).starts_with("MSA|AA|MSG170002"), "{ack}");
    let found: Value = get_json(&format!(
        "{}/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
        store_url(),
        patient.nhs_number
    ))
    .await;
    assert_eq!(found["total"], 1, "one Patient for the NHS number: {found}");
    assert_eq!(found["entry"][0]["resource"]["name"][0]["family"], "Okafor-Smith");
}

#[tokio::test]
async fn a_malformed_message_is_refused_and_the_next_good_one_is_taken() {
    use carerecord_hl7v2::fixtures::{AdtEvent, SyntheticPatient, adt};
    let n = names("mllp-bad");
    let (_connector, address) = mllp_connector(&n.connector, &n.ods);
    let patient = SyntheticPatient::nth((n.nhs_seed / 2) as u32 + 1);
    // A valid header, but the PID's NHS number fails its check digit.
    let good = adt(AdtEvent::A04, &patient, "V180001", "MSG180002", "20261125093000");
    let bad = good.replace("MSG180002", "MSG180001").replace(&patient.nhs_number, "9990000019");
    let (bad_ack, good_ack) =
        tokio::task::spawn_blocking(move || (send(&address, &bad), send(&address, &good))).await.unwrap();
    let refused = msa(&bad_ack);
    assert!(refused.starts_with("MSA|AE|MSG180001") || refused.starts_with("MSA|AR|MSG180001"), "{bad_ack}");
    assert!(bad_ack.contains("ERR|"), "the ACK says why: {bad_ack}");
    assert!(msa(&good_ack).starts_with("MSA|AA|MSG180002"), "{good_ack}");
}

/// The operator reads a running connector's `/status` from its pod's address
/// into the ProviderConnector's `status.sync` and `Synced` condition. The
/// connector is the one the operator rendered (its ConfigMap), run here as
/// a process on the address kwok gave its pod (`e2e/cluster` routes kwok's
/// pod network to this machine), writing into the real record store.
#[tokio::test]
async fn the_connector_status_reaches_the_provider_connector_on_the_real_api_server() {
    use carerecord_hl7v2::fixtures::{AdtEvent, SyntheticPatient, adt};
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::api::{Api, ListParams};
    e2e::shared_operator();
    let client = e2e::client().await;
    let (tenant, ns) = e2e::ready_tenant(&client, "conn-sync", json!({})).await;
    let n = names("sync");
    let peer = e2e::tcp_listener().await;
    let manifest = e2e::connector(&n.connector, &ns, "hl7v2-mllp", &format!("mllp://{peer}"));
    e2e::apply_connector(&client, &manifest).await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let selector = format!("carerecord.dev/connector={}", n.connector);
    let address = eventually("a ready connector pod with an address", || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
        list.items.into_iter().find_map(|p| {
            let status = p.status?;
            let ready = status.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(status.pod_ip?)
        })
    })
    .await;
    let local = std::net::TcpListener::bind((address.as_str(), 0));
    assert!(
        local.is_ok(),
        "kwok's pod address {address} is not routed to this machine (e2e/cluster up adds the route; it needs CAP_NET_ADMIN)"
    );
    drop(local);
    let rendered = eventually("the connector's ConfigMap", || async {
        Api::<ConfigMap>::namespaced(client.clone(), &ns).get_opt(&format!("{}-config", n.connector)).await.ok()?
    })
    .await;
    let mut config: Value = serde_yaml::from_str(&rendered.data.unwrap()["connector.yaml"]).unwrap();
    // What the cluster's DNS and Service would give the pod, on this machine.
    let listen = format!("127.0.0.1:{}", free_port());
    config["storeUrl"] = json!(store_url());
    config["adminListen"] = json!(format!("{address}:9090"));
    config["source"]["listen"] = json!(listen);
    let _connector = Connector::start_from(&n.connector, &config);
    let patient = SyntheticPatient::nth((n.nhs_seed / 2) as u32);
    let a01 = adt(AdtEvent::A01, &patient, "V180001", "MSG180001", "20261202093000");
    let ack = tokio::task::spawn_blocking(move || send(&listen, &a01)).await.unwrap();
    assert!(msa(&ack).starts_with("MSA|AA|MSG180001"), "{ack}");
    let api = e2e::connectors(&client, &ns);
    let sync = eventually("status.sync counts the record", || async {
        let sync = api.get(&n.connector).await.ok()?.status?.sync?;
        (sync.records_written >= 1).then_some(sync)
    })
    .await;
    assert!(sync.last_successful_sync.is_some(), "{sync:?}");
    assert_eq!(sync.last_error, None);
    e2e::wait_connector_condition(&client, &ns, &n.connector, "Synced", "True").await;
    e2e::remove_tenant(&client, &tenant).await;
}

// ---------------------------------------------------------------- Bulk Data export

impl Connector {
    /// A connector reading `double` by Bulk Data `$export` with `_since`.
    fn exporting(name: &str, double: &Double, page_size: u32) -> Self {
        Self::fhir(name, double, page_size, 1, json!({"mode": "BulkExport", "level": "Patient", "timeoutSeconds": 120}))
    }

    /// A FHIR connector reading `double`, finding changes as `changes` says.
    fn fhir(name: &str, double: &Double, page_size: u32, interval: u64, changes: Value) -> Self {
        let dir = Self::config_dir(name);
        let secret = dir.join("client-secret");
        std::fs::write(&secret, "gp-secret\n").unwrap();
        let source = json!({
            "kind": "FhirPoll",
            "baseUrl": format!("{}/fhir", double.base),
            "resources": TYPES,
            "intervalSeconds": interval,
            "pageSize": page_size,
            "requestsPerSecond": 50,
            "auth": {"method": "ClientSecret", "tokenUrl": format!("{}/token", double.base), "clientId": "carerecord",
                     "clientSecretFile": secret.to_string_lossy()},
            "changes": changes,
        });
        Self::start_with(name, source, &double.ods)
    }
}

/// The connector's cursor as the store holds it: per type, `since`.
async fn stored_cursor(connector: &str) -> std::collections::BTreeMap<String, String> {
    let bundle = get_json(&format!(
        "{}/Basic?identifier=https://carerecord.dev/fhir/sid/connector-cursor|cheshire-merseyside/{connector}",
        store_url()
    ))
    .await;
    let mut cursor = std::collections::BTreeMap::new();
    for ext in bundle["entry"][0]["resource"]["extension"].as_array().cloned().unwrap_or_default() {
        let parts = ext["extension"].as_array().cloned().unwrap_or_default();
        let part = |name: &str| parts.iter().find(|p| p["url"] == name).cloned().unwrap_or(Value::Null);
        if let (Some(t), Some(since)) =
            (part("resourceType")["valueCode"].as_str(), part("since")["valueInstant"].as_str())
        {
            cursor.insert(t.to_string(), since.to_string());
        }
    }
    cursor
}

async fn all_versions(ods: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for t in TYPES {
        all.extend(versions(&stored(ods, t).await));
    }
    all
}

#[tokio::test]
async fn a_bulk_export_sync_writes_exactly_what_the_source_holds() {
    let n = names("export-full");
    let double = Double::start(&n.ods, 5, n.nhs_seed);
    let connector = Connector::exporting(&n.connector, &double, 10);
    let status = connector.synced().await;
    let source = double.stats().await;
    for t in TYPES {
        let records = stored(&double.ods, t).await;
        assert_eq!(records.len() as u64, source["records"][t].as_u64().unwrap(), "{t}");
        assert!(records.iter().all(|r| r["meta"]["tag"][0]["code"] == n.ods.as_str()), "{t}: tagged with the provider");
    }
    for r in stored(&double.ods, "Condition").await {
        let reference = r["subject"]["reference"].as_str().unwrap();
        assert!(reference.starts_with("Patient/") && !reference.contains('?'), "{reference}");
    }
    assert_eq!(status["recordsWritten"], 30, "{status}");
    assert!(source["exportJobsDeleted"].as_u64().unwrap() >= 1, "the finished export job was deleted: {source}");
    let cursor = stored_cursor(&n.connector).await;
    assert_eq!(cursor.len(), TYPES.len(), "every type's cursor is the export's transactionTime: {cursor:?}");
}

#[tokio::test]
async fn a_second_export_since_the_last_transaction_time_writes_nothing_new() {
    let n = names("export-second");
    let double = Double::start(&n.ods, 3, n.nhs_seed);
    let mut connector = Connector::exporting(&n.connector, &double, 10);
    connector.synced().await;
    let before = all_versions(&double.ods).await;
    let exported = double.stats().await["exportedRecords"].as_u64().unwrap();
    // Once from the same process and once after a restart (nothing remembered but the store's cursor).
    connector.synced().await;
    connector.restart();
    let status = connector.synced().await;
    assert_eq!(all_versions(&double.ods).await, before, "no record gained a version");
    let stats = double.stats().await;
    assert_eq!(stats["exportedRecords"].as_u64().unwrap(), exported, "later exports held nothing: _since was sent");
    assert_eq!(status["recordsWritten"], 0, "{status}");
    assert!(stats["exportKickOffs"].as_u64().unwrap() >= 3);
}

#[tokio::test]
async fn a_change_at_the_source_arrives_once_via_the_next_export() {
    let n = names("export-change");
    let double = Double::start(&n.ods, 2, n.nhs_seed);
    let connector = Connector::exporting(&n.connector, &double, 10);
    connector.synced().await;
    let allergy = stored(&double.ods, "AllergyIntolerance").await.into_iter().next().unwrap();
    let store_id = allergy["id"].as_str().unwrap().to_string();
    let source_id = source_id(&allergy, "AllergyIntolerance");
    double
        .control("change", json!({"type": "AllergyIntolerance", "id": source_id, "set": {"criticality": "high"}}))
        .await;
    connector.synced().await;
    connector.synced().await;
    let now: Value = get_json(&format!("{}/AllergyIntolerance/{store_id}", store_url())).await;
    assert_eq!(now["criticality"], "high");
    let was: u64 = allergy["meta"]["versionId"].as_str().unwrap().parse().unwrap();
    assert_eq!(now["meta"]["versionId"], (was + 1).to_string(), "the change was written exactly once");
}

/// The provider's id of a stored record (its source identity, `<type>/<id>`).
fn source_id(record: &Value, resource_type: &str) -> String {
    record["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["system"].as_str().unwrap_or_default().starts_with("https://carerecord.dev/fhir/sid/source/"))
        .and_then(|i| i["value"].as_str())
        .unwrap()
        .trim_start_matches(&format!("{resource_type}/"))
        .to_string()
}

#[tokio::test]
async fn a_connector_killed_mid_export_and_restarted_loses_nothing_and_duplicates_nothing() {
    let n = names("export-killed");
    let double = Double::start(&n.ods, 20, n.nhs_seed);
    // Small, slow files, so the kill lands in the middle of the export.
    double.control("export", json!({"fileSize": 5, "fileDelayMs": 300})).await;
    let mut connector = Connector::exporting(&n.connector, &double, 5);
    connector.kill_after_some_records().await;
    let partial = stored_count(&double.ods).await;
    assert!(partial < 120, "the kill came after the export ended ({partial} records); slow the double down");
    assert!(stored_cursor(&n.connector).await.is_empty(), "the cursor moved before every file committed");
    double.control("export", json!({"fileDelayMs": 0})).await;
    connector.restart();
    connector.synced().await;
    store_holds_the_source_once(&double).await;
}

#[tokio::test]
async fn an_error_the_provider_reports_in_the_manifest_is_kept_as_a_dead_letter() {
    let n = names("export-error");
    let double = Double::start(&n.ods, 2, n.nhs_seed);
    double.control("export", json!({"errors": ["Observation/x1 could not be read from the archive"]})).await;
    let connector = Connector::exporting(&n.connector, &double, 10);
    let status = connector.synced().await;
    let letters = status["recentDeadLetters"].as_array().cloned().unwrap_or_default();
    assert!(
        letters.iter().any(|l| l["reason"].as_str().unwrap_or_default().contains("could not be read from the archive")),
        "{status}"
    );
    assert_eq!(stored_count(&double.ods).await, 12, "every record still arrived");
}

// ---------------------------------------------------------------- Subscription (rest-hook)

/// A record gateway of its own for one test, forwarding
/// `/inbound/<connector>` to the connector's notification listener. The
/// data plane's IdP has one provider client (ODS `QYG`), so the gateway names
/// QYG as the connector's provider: it lets only that organisation notify.
struct InboundGateway {
    _process: Process,
    base: String,
}

impl InboundGateway {
    async fn start(connector: &str, upstream: &str) -> Self {
        let env = e2e::dataplane_env();
        let dir = Connector::config_dir(&format!("{connector}-gateway"));
        let (port, admin) = (free_port(), free_port());
        let config = json!({
            "apiVersion": "carerecord.dev/gateway/v1",
            "tenant": {"name": "cheshire-merseyside", "organisations": ["QYG"]},
            "publicBaseUrl": format!("http://127.0.0.1:{port}"),
            "upstreamUrl": store_url(),
            "listen": format!("127.0.0.1:{port}"),
            "adminListen": format!("127.0.0.1:{admin}"),
            "issuers": [{"issuer": env["ISSUER_URL"], "audience": env["TOKEN_AUDIENCE"], "jwksUri": env["JWKS_URL"]}],
            "inboundConnectors": [{"name": connector, "providerOdsCode": "QYG", "upstreamUrl": upstream}],
        });
        let config_path = dir.join("gateway.yaml");
        let policy_path = dir.join("policy.yaml");
        std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
        std::fs::write(&policy_path, "apiVersion: carerecord.dev/sharing-policy/v1\nagreements: []\n").unwrap();
        let log = std::fs::File::create(dir.join("gateway.log")).unwrap();
        let child = Command::new(e2e::operator_binary())
            .args(["gateway", "--config"])
            .arg(&config_path)
            .arg("--policy")
            .arg(&policy_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ics-operator gateway");
        let gateway = InboundGateway { _process: Process(child), base: format!("http://127.0.0.1:{port}") };
        eventually("the gateway answers", || async {
            http()
                .get(format!("http://127.0.0.1:{admin}/healthz"))
                .send()
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        })
        .await;
        gateway
    }
}

/// A bearer token of the provider (ODS QYG) from the data plane's IdP: what
/// the provider's Subscription would carry in `channel.header`.
async fn provider_token() -> String {
    let env = e2e::dataplane_env();
    let body: Value = http()
        .post(&env["TOKEN_URL"])
        .basic_auth(&env["PROVIDER_CLIENT_ID"], Some(&env["PROVIDER_CLIENT_SECRET"]))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().expect("a provider token").to_string()
}

/// A Subscription connector for `double`, reached through a gateway of its own.
async fn notified_connector(n: &Names, double: &Double) -> (Connector, InboundGateway) {
    let port = free_port();
    // A safety-net interval longer than any test: only start-up catches up.
    let changes = json!({"mode": "Subscription", "listen": format!("127.0.0.1:{port}")});
    let connector = Connector::fhir(&n.connector, double, 10, 3600, changes);
    let gateway = InboundGateway::start(&n.connector, &format!("http://127.0.0.1:{port}")).await;
    eventually("the catch-up read at start", || async {
        connector.status().await?["lastSuccessfulSync"].as_str().map(|_| ())
    })
    .await;
    (connector, gateway)
}

impl Double {
    /// Changes a record and notifies `url` as the provider's Subscription would.
    async fn notify(&self, url: &str, authorization: Option<&str>, payload: &str, change: Value) -> Value {
        let mut body = json!({"url": url, "payload": payload, "change": change});
        if let Some(authorization) = authorization {
            body["authorization"] = json!(authorization);
        }
        self.control("notify", body).await
    }
}

async fn first_allergy(ods: &str) -> (String, String, u64) {
    let allergy = stored(ods, "AllergyIntolerance").await.into_iter().next().expect("an allergy in the store");
    let version = allergy["meta"]["versionId"].as_str().unwrap().parse().unwrap();
    (allergy["id"].as_str().unwrap().to_string(), source_id(&allergy, "AllergyIntolerance"), version)
}

async fn wait_for_criticality(store_id: &str, criticality: &str) -> Value {
    eventually("the changed record in the store", || async {
        let now = get_json(&format!("{}/AllergyIntolerance/{store_id}", store_url())).await;
        (now["criticality"] == criticality).then_some(now)
    })
    .await
}

#[tokio::test]
async fn an_id_only_rest_hook_notification_brings_the_changed_record_into_the_store() {
    let n = names("notify-id-only");
    let double = Double::start(&n.ods, 2, n.nhs_seed);
    let (_connector, gateway) = notified_connector(&n, &double).await;
    assert_eq!(stored_count(&double.ods).await, 12, "the catch-up at start brought everything");
    let (store_id, source_id, was) = first_allergy(&double.ods).await;
    let token = format!("Bearer {}", provider_token().await);
    let change = json!({"type": "AllergyIntolerance", "id": source_id, "set": {"criticality": "high"}});
    let answer =
        double.notify(&format!("{}/inbound/{}", gateway.base, n.connector), Some(&token), "id-only", change).await;
    assert_eq!(answer["delivered"], 200, "{answer}");
    let now = wait_for_criticality(&store_id, "high").await;
    assert_eq!(now["meta"]["versionId"], (was + 1).to_string(), "written once");
}

#[tokio::test]
async fn an_empty_rest_hook_notification_starts_an_incremental_read() {
    let n = names("notify-empty");
    let double = Double::start(&n.ods, 2, n.nhs_seed);
    let (_connector, gateway) = notified_connector(&n, &double).await;
    let (store_id, source_id, _) = first_allergy(&double.ods).await;
    let token = format!("Bearer {}", provider_token().await);
    let change = json!({"type": "AllergyIntolerance", "id": source_id, "set": {"criticality": "high"}});
    let answer =
        double.notify(&format!("{}/inbound/{}", gateway.base, n.connector), Some(&token), "empty", change).await;
    assert_eq!(answer["delivered"], 200, "{answer}");
    wait_for_criticality(&store_id, "high").await;
}

#[tokio::test]
async fn a_notification_without_the_providers_token_is_refused_by_the_gateway() {
    let n = names("notify-no-token");
    let double = Double::start(&n.ods, 1, n.nhs_seed);
    let (_connector, gateway) = notified_connector(&n, &double).await;
    let (_, source_id, _) = first_allergy(&double.ods).await;
    let change = json!({"type": "AllergyIntolerance", "id": source_id, "set": {"criticality": "high"}});
    let answer = double.notify(&format!("{}/inbound/{}", gateway.base, n.connector), None, "id-only", change).await;
    assert_eq!(answer["delivered"], 401, "{answer}");
}

#[tokio::test]
async fn a_notification_missed_while_the_connector_was_down_is_caught_up_on_start() {
    let n = names("notify-missed");
    let double = Double::start(&n.ods, 2, n.nhs_seed);
    let (mut connector, gateway) = notified_connector(&n, &double).await;
    let (store_id, source_id, was) = first_allergy(&double.ods).await;
    connector.kill();
    let token = format!("Bearer {}", provider_token().await);
    let change = json!({"type": "AllergyIntolerance", "id": source_id, "set": {"criticality": "high"}});
    let answer =
        double.notify(&format!("{}/inbound/{}", gateway.base, n.connector), Some(&token), "id-only", change).await;
    assert_ne!(answer["delivered"], 200, "the connector was down, yet the notification was taken: {answer}");
    connector.restart();
    let now = wait_for_criticality(&store_id, "high").await;
    assert_eq!(now["meta"]["versionId"], (was + 1).to_string(), "written once");
}
