//! Harness for the end-to-end tests: a client for the cluster named by
//! KUBECONFIG, the operator running in-process against it, and helpers that
//! play the controllers this test cluster does not run (a Gateway
//! controller, the CloudNativePG operator).

pub mod process_stats;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use ics_operator::api::CareRecordTenant;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// How long any eventual condition may take before a test fails. Generous:
/// this bounds a failure, it is not a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub async fn client() -> Client {
    Client::try_default().await.expect("KUBECONFIG names a reachable cluster")
}

/// The operator running on its own runtime, as in production, until stopped.
pub struct Operator {
    /// The operator's metrics, as `/metrics` would serve them.
    pub metrics: std::sync::Arc<ics_operator::controller::metrics::Metrics>,
    /// What `/healthz` and `/readyz` would answer.
    pub health: std::sync::Arc<ics_operator::controller::metrics::Health>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Operator {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// An operator taking part in leader election under `identity`.
    pub fn start_elected(namespace: &str, lease: &str, identity: &str) -> Self {
        Self::start_with(Some(ics_operator::controller::LeaderElection {
            namespace: namespace.into(),
            lease_name: lease.into(),
            identity: identity.into(),
        }))
    }

    fn start_with(leader_election: Option<ics_operator::controller::LeaderElection>) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // RUST_LOG=ics_operator=debug shows the operator's own logs in test output.
        if std::env::var_os("RUST_LOG").is_some() {
            ics_operator::telemetry::init();
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = std::sync::Arc::new(ics_operator::controller::metrics::Metrics::register(&mut registry));
        let operator_metrics = metrics.clone();
        let health = std::sync::Arc::new(ics_operator::controller::metrics::Health::default());
        let operator_health = health.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("operator runtime");
            runtime.block_on(async move {
                // The provisioner plays cluster infrastructure, so it uses the
                // test's admin client, not the operator's.
                tokio::spawn(provision_volumes(client().await));
                let client = operator_client().await;
                let runtime = ics_operator::controller::Runtime {
                    settings: settings(),
                    leader_election,
                    metrics: operator_metrics,
                    health: operator_health,
                };
                let shutdown = async move {
                    let _ = stopped.await;
                };
                ics_operator::controller::run(client, runtime, shutdown).await.expect("operator runs");
            });
        });
        Self { metrics, health, stop: Some(stop), thread: Some(thread) }
    }

    /// Stops the operator and waits until it has shut down.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Namespace and ServiceAccount the operator chart creates.
pub const OPERATOR_NAMESPACE: &str = "ics-system";
pub const OPERATOR_SERVICE_ACCOUNT: &str = "ics-operator";

/// A client acting as the operator chart's ServiceAccount, so every test
/// runs the operator with exactly the chart's RBAC. Installs the chart first
/// if the cluster does not have it yet.
pub async fn operator_client() -> Client {
    ensure_operator_chart().await;
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info.impersonate =
        Some(format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{OPERATOR_NAMESPACE}"),
        "system:authenticated".into(),
    ]);
    Client::try_from(config).expect("operator client")
}

async fn ensure_operator_chart() {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let client = client().await;
            let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client, OPERATOR_NAMESPACE);
            if accounts.get_opt(OPERATOR_SERVICE_ACCOUNT).await.ok().flatten().is_some() {
                return;
            }
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let helm = std::process::Command::new("bash")
                .arg(root.join("e2e/tools"))
                .arg("helm")
                .output()
                .expect("e2e/tools helm");
            let helm = String::from_utf8_lossy(&helm.stdout).trim().to_string();
            let status = std::process::Command::new(helm)
                .args(["upgrade", "--install", "ics-operator"])
                .arg(root.join("charts/ics-operator"))
                .args([
                    "--namespace",
                    OPERATOR_NAMESPACE,
                    "--create-namespace",
                    "--set",
                    "replicaCount=1",
                    "--wait",
                    "--timeout",
                    "3m",
                ])
                .status()
                .expect("helm runs");
            assert!(status.success(), "helm install of charts/ics-operator failed");
        })
        .await;
}

/// Platform settings of the e2e operator: defaults, plus loopback allowed
/// for probes so tests can stand up provider endpoints on this machine.
pub fn settings() -> ics_operator::settings::PlatformSettings {
    let mut s = ics_operator::settings::PlatformSettings::default();
    s.probe.allowed_cidrs = vec!["127.0.0.0/8".parse().expect("CIDR")];
    s.probe.interval_seconds = 15;
    s.connector_status.interval_seconds = 2;
    s
}

/// One operator shared by every test of a test binary (they run in parallel
/// on distinct tenants, as tenants of a real platform do).
pub fn shared_operator() {
    static OPERATOR: OnceLock<std::sync::Mutex<Operator>> = OnceLock::new();
    OPERATOR.get_or_init(|| std::sync::Mutex::new(Operator::start()));
}

/// A tenant name unique to this run, so tests never collide.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let suffix: String =
        rand::rng().sample_iter(rand::distr::Alphanumeric).take(5).map(|c| (c as char).to_ascii_lowercase()).collect();
    format!("{prefix}-{suffix}")
}

/// A tenant manifest with the given database section (YAML, indented for
/// `spec.database`).
pub fn tenant(name: &str, database: &str) -> Value {
    let yaml = format!(
        r#"
apiVersion: carerecord.dev/v1alpha1
kind: CareRecordTenant
metadata:
  name: {name}
spec:
  displayName: E2E test ICS {name}
  odsCode: QE2
  region: North West
  gateway:
    hostname: {name}.scr.example.nhs.uk
  admins:
    groups: ["scr:{name}-admins"]
  database:
{database}
"#
    );
    serde_yaml::from_str(&yaml).expect("tenant manifest parses")
}

pub fn tenants(client: &Client) -> Api<CareRecordTenant> {
    Api::all(client.clone())
}

/// Creates a tenant with server-side apply (as `kubectl apply --server-side` does).
pub async fn apply_tenant(client: &Client, manifest: &Value) -> Result<CareRecordTenant, kube::Error> {
    let name = manifest["metadata"]["name"].as_str().expect("named").to_string();
    tenants(client).patch(&name, &PatchParams::apply("e2e-test").force(), &Patch::Apply(manifest)).await
}

/// Creates a tenant with a plain create (as `kubectl create` does).
pub async fn create_tenant(client: &Client, manifest: &Value) -> Result<CareRecordTenant, kube::Error> {
    let tenant: CareRecordTenant = serde_json::from_value(manifest.clone()).expect("tenant manifest");
    tenants(client).create(&PostParams::default(), &tenant).await
}

pub fn namespace_of(name: &str) -> String {
    format!("scr-{name}")
}

/// Polls `check` until it returns `Some`, or fails the test after PATIENCE.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn dynamic(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn http_routes() -> ApiResource {
    dynamic("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
}

pub fn cnpg_clusters() -> ApiResource {
    dynamic("postgresql.cnpg.io", "v1", "Cluster", "clusters")
}

/// Plays the platform's Gateway controller: marks every HTTPRoute in the
/// namespace Accepted with resolved references. The local control plane runs
/// no Gateway implementation.
pub async fn accept_routes(client: &Client, namespace: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &http_routes());
    let routes = eventually("an HTTPRoute to accept", || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        (!list.items.is_empty()).then_some(list.items)
    })
    .await;
    for route in routes {
        let condition = |t: &str| {
            json!({"type": t, "status": "True", "reason": t, "message": "", "observedGeneration": route.metadata.generation,
                   "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        let status = json!({"status": {"parents": [{
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "platform", "namespace": "gateway-system"},
            "controllerName": "e2e.carerecord.dev/gateway",
            "conditions": [condition("Accepted"), condition("ResolvedRefs")],
        }]}});
        api.patch_status(&route.name_any(), &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("route status patch");
    }
}

/// Plays the CloudNativePG operator: reports the Cluster ready. The local
/// control plane has the Cluster CRD but no CloudNativePG controller.
pub async fn report_cnpg_ready(client: &Client, namespace: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &cnpg_clusters());
    let cluster =
        eventually("the CloudNativePG Cluster", || async { api.get_opt("records-db").await.ok().flatten() }).await;
    let instances = cluster.data["spec"]["instances"].as_i64().unwrap_or(1);
    let status = json!({"status": {"instances": instances, "readyInstances": instances, "phase": "Cluster in healthy state",
        "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady", "message": "Cluster is Ready",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    api.patch_status("records-db", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("cluster status patch");
}

/// Waits until the tenant's Ready condition is True and describes the
/// current generation.
pub async fn wait_ready(client: &Client, name: &str) -> CareRecordTenant {
    let api = tenants(client);
    eventually(&format!("tenant {name} Ready"), || async {
        let t = api.get_opt(name).await.ok().flatten()?;
        let status = t.status.as_ref()?;
        let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (ready && status.observed_generation == t.metadata.generation).then_some(t)
    })
    .await
}

/// The tenant's condition of the given type, once present for the current generation.
pub async fn wait_condition(
    client: &Client,
    name: &str,
    type_: &str,
    status: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let api = tenants(client);
    eventually(&format!("tenant {name} condition {type_}={status}"), || async {
        let t = api.get_opt(name).await.ok().flatten()?;
        let s = t.status.as_ref()?;
        if s.observed_generation != t.metadata.generation {
            return None;
        }
        s.conditions.iter().find(|c| c.type_ == type_ && c.status == status).cloned()
    })
    .await
}

/// Events about a tenant (cluster-scoped objects' Events land in `default`).
pub async fn tenant_events(client: &Client, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().fields(&format!("involvedObject.kind=CareRecordTenant,involvedObject.name={name}"));
    api.list(&lp).await.map(|l| l.items).unwrap_or_default()
}

/// Deletes a tenant and, whatever its policy, its namespace: tests leave no
/// data behind.
pub async fn remove_tenant(client: &Client, name: &str) {
    let _ = tenants(client).delete(name, &DeleteParams::default()).await;
    let api = tenants(client);
    eventually(&format!("tenant {name} gone"), || async {
        api.get_opt(name).await.ok().map(|t| t.is_none()).filter(|g| *g)
    })
    .await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(&namespace_of(name), &DeleteParams::background()).await;
}

/// Everything the operator labelled as this tenant's, as (kind, name, resourceVersion).
pub async fn children_versions(client: &Client, name: &str) -> Vec<(String, String, String)> {
    let ns = namespace_of(name);
    let selector = format!("carerecord.dev/tenant={name}");
    let mut out = Vec::new();
    for kind in ics_operator::render::ChildKind::ALL {
        let ar = kind.api_resource();
        let api: Api<kube::core::PartialObjectMeta<DynamicObject>> = if kind.namespaced() {
            Api::namespaced_with(client.clone(), &ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        if let Ok(list) = api.list_metadata(&ListParams::default().labels(&selector)).await {
            for item in list.items {
                out.push((ar.kind.clone(), item.name_any(), item.resource_version().unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// A connector manifest in a tenant namespace.
pub fn connector(name: &str, namespace: &str, system: &str, url: &str) -> Value {
    json!({
        "apiVersion": "carerecord.dev/v1alpha1",
        "kind": "ProviderConnector",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "provider": {"odsCode": "N82054", "name": "E2E Medical Centre", "kind": "GPPractice"},
            "system": system,
            "endpoint": {"url": url},
        }
    })
}

pub fn connectors(client: &Client, namespace: &str) -> Api<ics_operator::api::ProviderConnector> {
    Api::namespaced(client.clone(), namespace)
}

pub async fn apply_connector(
    client: &Client,
    manifest: &Value,
) -> Result<ics_operator::api::ProviderConnector, kube::Error> {
    let name = manifest["metadata"]["name"].as_str().expect("named");
    let ns = manifest["metadata"]["namespace"].as_str().expect("namespaced");
    connectors(client, ns).patch(name, &PatchParams::apply("e2e-test").force(), &Patch::Apply(manifest)).await
}

/// Waits for a connector condition of the given type and status for the current generation.
pub async fn wait_connector_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let api = connectors(client, namespace);
    eventually(&format!("connector {namespace}/{name} {type_}={status}"), || async {
        let c = api.get_opt(name).await.ok().flatten()?;
        let s = c.status.as_ref()?;
        if s.observed_generation != c.metadata.generation {
            return None;
        }
        s.conditions.iter().find(|x| x.type_ == type_ && x.status == status).cloned()
    })
    .await
}

/// An MLLP-style listener on loopback that accepts and drops connections.
pub async fn tcp_listener() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    addr
}

/// Onboards a StatefulSet tenant to Ready and returns its name and namespace.
pub async fn ready_tenant(client: &Client, prefix: &str, extra_spec: Value) -> (String, String) {
    let name = unique(prefix);
    let mut manifest = tenant(&name, "    mode: StatefulSet\n    storageSize: 1Gi\n    deletionPolicy: Delete");
    if let (Some(spec), Value::Object(extra)) = (manifest["spec"].as_object_mut(), extra_spec) {
        spec.extend(extra);
    }
    apply_tenant(client, &manifest).await.expect("tenant accepted");
    let ns = namespace_of(&name);
    accept_routes(client, &ns).await;
    wait_ready(client, &name).await;
    (name, ns)
}

/// Plays a storage provisioner for claims that name no StorageClass when
/// the cluster has no default one (the local control plane): creates a
/// PersistentVolume bound to each pending claim. On a cluster with a real
/// provisioner, claims get a StorageClass and this does nothing.
pub async fn provision_volumes(client: Client) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use kube::runtime::{WatchStreamExt, watcher};
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let stream = watcher(claims, watcher::Config::default()).applied_objects();
    futures::pin_mut!(stream);
    while let Some(Ok(claim)) = stream.next().await {
        let Some(spec) = &claim.spec else { continue };
        let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        let classless = spec.storage_class_name.as_deref().unwrap_or_default().is_empty();
        if !pending || !classless || spec.volume_name.is_some() {
            continue;
        }
        let size = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "1Gi".into());
        let uid = claim.uid().unwrap_or_default();
        let volume = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": format!("e2e-{uid}"), "labels": {"e2e.carerecord.dev/volume": "true"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes.clone().unwrap_or_default(),
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": format!("/tmp/e2e-{uid}")},
                "claimRef": {"namespace": claim.namespace(), "name": claim.name_any(), "uid": uid},
            }
        });
        let volume: PersistentVolume = serde_json::from_value(volume).expect("volume manifest");
        let _ = volumes.create(&PostParams::default(), &volume).await;
    }
}

/// Where the local data plane's environment is (`e2e/dataplane up` writes
/// it): DATAPLANE_ENV, else e2e/.dataplane/env.
fn dataplane_env_path() -> std::path::PathBuf {
    std::env::var_os("DATAPLANE_ENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".dataplane/env"))
}

/// The process id of one of the local data plane's components (`store`,
/// `idp`, `gateway`, ...), from the pid files beside its env file.
pub fn dataplane_pid(component: &str) -> Option<u32> {
    let pids = dataplane_env_path().parent()?.join("pids").join(component);
    std::fs::read_to_string(pids).ok()?.trim().parse().ok()
}

/// The local data plane's environment (`e2e/dataplane up` writes it).
pub fn dataplane_env() -> std::collections::HashMap<String, String> {
    let path = dataplane_env_path().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}; start the data plane first: bash e2e/dataplane up"));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('\'').trim_matches('"').to_string()))
        .collect()
}

/// The ics-operator binary the data-plane tests run as a process:
/// ICS_OPERATOR_BIN, else the debug build in Cargo's target directory.
pub fn operator_binary() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("ICS_OPERATOR_BIN") {
        return bin.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("target"));
    target.join("debug/ics-operator")
}

/// A TCP port free on localhost now, for a process a test or bench starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free localhost port")
}
