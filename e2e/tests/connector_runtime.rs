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
    eventually("some records written", || async {
        let status = connector.status().await?;
        (status["recordsWritten"].as_u64()? >= 10).then_some(())
    })
    .await;
    connector.kill();
    let partial = stored_count(&double.ods).await;
    assert!(partial < 120, "the kill came after the sync ended ({partial} records); slow the double down");
    double.control("delay", json!({"ms": 0})).await;
    connector.restart();
    connector.synced().await;
    let source = double.stats().await;
    for t in TYPES {
        let records = stored(&double.ods, t).await;
        assert_eq!(records.len() as u64, source["records"][t].as_u64().unwrap(), "{t}: nothing lost, nothing twice");
        assert!(versions(&records).iter().all(|(_, v)| v == "1"), "{t}: a replayed record gained a version");
    }
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
