//! A real kube-apiserver v1.20.2 with etcd on loopback, for the reclaimer's
//! Kubernetes tests: no mocks, the API server code a cluster runs.
//!
//! One cluster per test binary, started on first use by [`cluster`] and
//! shared by that binary's tests (each test keeps to its own Node and
//! ConfigMap). The test process is the cluster's owner
//! (`EXECWATCH_KUBE_OWNER_PID`): the start script's watchdog stops etcd and
//! the API server once the process is gone, because a static is never
//! dropped. Its directory is `target/tmp/kube-<pid>-<ms>`; a later run
//! sweeps the ones nothing runs in any more.
//!
//! Everything fails loudly: an API server that cannot be built or will not
//! start is a test failure, never a skip.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use super::{eventually, Reclaimer};

/// Namespace of the rules ConfigMaps and of the reclaimer's ServiceAccount.
pub const NAMESPACE: &str = "5spot-system";
/// The reclaimer's ServiceAccount (deploy/base/rbac.yaml).
pub const SERVICE_ACCOUNT: &str = "execwatch-reclaimer";
/// Field manager of the writes the tests make as the 5-Spot controller.
pub const CONTROLLER: &str = "5spot-controller-test";
/// The three reclaim annotations.
pub const REQUESTED: &str = "5spot.finos.org/reclaim-requested";
pub const REASON: &str = "5spot.finos.org/reclaim-reason";
pub const REQUESTED_AT: &str = "5spot.finos.org/reclaim-requested-at";

/// The running test cluster: its script directory and API server port.
pub struct Cluster {
    /// The start script's DIR (kubeconfig, ca.crt, logs, ...).
    pub dir: PathBuf,
    /// https://127.0.0.1:`port`, the same across API server restarts.
    pub port: u16,
    bin: PathBuf,
    apply_lock: Mutex<()>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// This test binary's cluster, started (and given the project's RBAC) on
/// first use. Blocks for the few seconds the start takes.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let cluster = Cluster::start();
        cluster.apply_project_rbac();
        cluster
    })
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`; panics with its output unless it succeeds. Returns the last
/// line of stdout (where the tests/kube scripts print their result).
fn run(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap_or_default().trim().to_string()
}

/// `tests/kube/<name> args...` with the API server binary from `bin`.
fn script(name: &str, args: &[&OsStr], bin: &Path) -> Command {
    let mut cmd = Command::new(repo().join("tests/kube").join(name));
    cmd.args(args).env("KUBE_APISERVER_BIN", bin);
    cmd
}

impl Cluster {
    fn start() -> Cluster {
        // Builds on first use (minutes: tests/run.sh does it ahead of time);
        // otherwise checks the cache and prints the binary's path. Fails,
        // never skips, when it cannot.
        let bin = PathBuf::from(run(Command::new(
            repo().join("tests/kube/build-apiserver.sh"),
        )));
        assert!(bin.is_file(), "build-apiserver.sh gave no binary: {bin:?}");
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        sweep_stale(root);
        // The start time keeps a reused pid from meeting an old directory.
        let t = std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .as_millis();
        let dir = root.join(format!("kube-{}-{t}", std::process::id()));
        let mut start = script("start-apiserver.sh", &[dir.as_os_str()], &bin);
        start.env("EXECWATCH_KUBE_OWNER_PID", std::process::id().to_string());
        let port = run(start);
        let port = port.parse().unwrap_or_else(|_| panic!("no port: {port:?}"));
        let apply_lock = Mutex::new(());
        Cluster {
            dir,
            port,
            bin,
            apply_lock,
        }
    }

    /// The admin kubeconfig (user `admin` in `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// An admin client, bound to the calling test's runtime.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig()).await
    }

    /// Applies deploy/base (namespace 5spot-system and the reclaimer's RBAC)
    /// with kubectl, as an operator would. Idempotent; serialised because
    /// two concurrent applies may both try to create.
    pub fn apply_project_rbac(&self) {
        let _guard = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let base = repo().join("deploy/base");
        let kustomized = base.join("kustomization.yaml").exists();
        let mut kubectl = Command::new("kubectl");
        kubectl.arg("--kubeconfig").arg(self.kubeconfig());
        kubectl
            .args(["apply", if kustomized { "-k" } else { "-f" }])
            .arg(&base);
        run(kubectl);
    }

    /// Mints a token for the reclaimer's ServiceAccount (TokenRequest API)
    /// and writes a kubeconfig for it into `dir`: what the reclaimer gets as
    /// KUBECONFIG, so it runs with exactly the project's RBAC.
    pub async fn reclaimer_kubeconfig(&self, dir: &Path) -> PathBuf {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await, NAMESPACE);
        let request: TokenRequest = object(json!({"spec": {"expirationSeconds": 3600}}));
        let token = accounts
            .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
            .await
            .expect("TokenRequest for the reclaimer's ServiceAccount")
            .status
            .expect("TokenRequest answered without a status")
            .token;
        let (port, ca) = (self.port, self.dir.join("ca.crt"));
        let ca = ca.display();
        let path = dir.join("reclaimer.kubeconfig");
        let text = format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "https://127.0.0.1:{port}", certificate-authority: "{ca}"}}
users:
- name: reclaimer
  user: {{token: "{token}"}}
contexts:
- name: test
  context: {{cluster: test, user: reclaimer}}
current-context: test
"#
        );
        fs::write(&path, text).expect("write the reclaimer's kubeconfig");
        path
    }

    /// Stops only the API server (etcd keeps the data): an outage.
    pub fn stop_apiserver(&self) {
        let args = ["--only-apiserver".as_ref(), self.dir.as_os_str()];
        run(script("stop-apiserver.sh", &args, &self.bin));
    }

    /// Starts the API server again on the same port; returns once it is ready.
    pub fn start_apiserver(&self) {
        let args = ["--only-apiserver".as_ref(), self.dir.as_os_str()];
        let port = run(script("start-apiserver.sh", &args, &self.bin));
        assert_eq!(port, self.port.to_string(), "back on another port");
    }
}

/// Removes the directories of earlier runs whose owner and daemons are gone.
fn sweep_stale(root: &Path) {
    let alive = |pid: &str| {
        pid.trim()
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists())
    };
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((owner, _)) = name.strip_prefix("kube-").and_then(|n| n.split_once('-')) else {
            continue;
        };
        let busy = alive(owner)
            || ["etcd.pid", "apiserver.pid", "watchdog.pid"]
                .iter()
                .any(|f| fs::read_to_string(entry.path().join(f)).is_ok_and(|p| alive(&p)));
        if !busy {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A client from any kubeconfig file (admin, or the reclaimer's).
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to client config");
    kube::Client::try_from(config).expect("build kube client")
}

/// A name no other test of this run uses: `ew-<tag>-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("ew-{tag}-{}-{n}", std::process::id())
}

/// A typed object from its JSON (terser than the structs' literals).
fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("a well-formed object")
}

/// Writes as the test's 5-Spot controller.
fn as_controller() -> PatchParams {
    PatchParams {
        field_manager: Some(CONTROLLER.into()),
        ..Default::default()
    }
}

/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = object(json!({"metadata": {"name": name}}));
    match Api::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

/// Creates a Node named after `tag` with `status.nodeInfo.machineID` (no
/// status if `None`): status can only be given at creation or via /status.
pub async fn create_node(client: &kube::Client, tag: &str, machine_id: Option<&str>) -> Node {
    let mut node = json!({"metadata": {"name": unique_name(tag)}});
    if let Some(id) = machine_id {
        node["status"] = json!({"nodeInfo": {"machineID": id}});
    }
    Api::all(client.clone())
        .create(&PostParams::default(), &object(node))
        .await
        .expect("create Node")
}

/// The Node as it is now.
pub async fn get_node(client: &kube::Client, name: &str) -> Node {
    Api::all(client.clone()).get(name).await.expect("GET Node")
}

/// An annotation's value.
pub fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    let annotations = node.metadata.annotations.as_ref()?;
    annotations.get(key).map(String::as_str)
}

/// Merge-patches the Node's annotations as the controller would (`null`
/// removes one).
pub async fn annotate(client: &kube::Client, node: &str, annotations: serde_json::Value) -> Node {
    let patch = json!({"metadata": {"annotations": annotations}});
    Api::all(client.clone())
        .patch(node, &as_controller(), &Patch::Merge(&patch))
        .await
        .expect("annotate Node")
}

/// Removes the three reclaim annotations, as the controller does when done.
pub async fn clear_request(client: &kube::Client, node: &str) -> Node {
    let cleared = json!({REQUESTED: null, REASON: null, REQUESTED_AT: null});
    annotate(client, node, cleared).await
}

/// The name of `node`'s rules ConfigMap.
pub fn rules_name(node: &str) -> String {
    format!("reclaim-agent-{node}")
}

/// Creates `node`'s rules ConfigMap, or edits its `reclaim.toml`.
pub async fn put_rules(client: &kube::Client, node: &str, toml: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let name = rules_name(node);
    let data = json!({"reclaim.toml": toml});
    if api.get_opt(&name).await.expect("GET ConfigMap").is_some() {
        let patch = Patch::Merge(json!({ "data": data }));
        api.patch(&name, &as_controller(), &patch)
            .await
            .expect("edit ConfigMap");
    } else {
        let cm = object(json!({"metadata": {"name": name}, "data": data}));
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create ConfigMap");
    }
}

/// Deletes `node`'s rules ConfigMap.
pub async fn delete_rules(client: &kube::Client, node: &str) {
    Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .delete(&rules_name(node), &DeleteParams::default())
        .await
        .expect("delete ConfigMap");
}

/// The ReclaimRequested Events about `node` (in `default`, where the API
/// server wants events about cluster-scoped objects).
pub async fn reclaim_events(client: &kube::Client, node: &str) -> Vec<Event> {
    let about = format!("involvedObject.name={node},reason=ReclaimRequested");
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = api.list(&ListParams::default().fields(&about)).await;
    list.expect("list Events").items
}

/// What the reclaimer logs when it finds no request on its Node.
pub const ARMED: &str = "); armed";
/// The reclaimer's `--recheck-interval` under [`HostNode`].
pub const RECHECK: &str = "500ms";
/// How long a [`HostNode`] is watched for a second write: three recheck
/// intervals, each of which re-reads the Node.
pub const QUIET: Duration = Duration::from_millis(1500);
/// Deadline for what a [`HostNode`] waits for.
const DEADLINE: Duration = Duration::from_secs(30);

/// One test's Node that is this host: its `status.nodeInfo.machineID` is a
/// fresh id that a machine-id file gives the reclaimer too. Comes with its
/// rules ConfigMap and a kubeconfig holding the reclaimer's ServiceAccount
/// token, so reclaimers started on it run with the project's RBAC.
pub struct HostNode {
    pub admin: kube::Client,
    pub name: String,
    machine_id_file: PathBuf,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl HostNode {
    /// Creates the Node (named after `tag`) and its ConfigMap with `rules`.
    /// Needs a multi-thread runtime: the first caller starts the cluster.
    pub async fn create(tag: &str, rules: &str) -> HostNode {
        let host = HostNode::without_rules(tag).await;
        put_rules(&host.admin, &host.name, rules).await;
        host
    }

    /// Creates the Node (named after `tag`) and no ConfigMap.
    pub async fn without_rules(tag: &str) -> HostNode {
        let cluster = tokio::task::block_in_place(cluster);
        let admin = cluster.client().await;
        let nanos = std::time::UNIX_EPOCH.elapsed().unwrap_or_default();
        let id = format!("{:016x}{:016x}", std::process::id(), nanos.as_nanos());
        let node = create_node(&admin, tag, Some(&id)).await;
        let name = node.metadata.name.expect("a named Node");
        let dir = tempfile::tempdir().unwrap();
        let machine_id_file = dir.path().join("machine-id");
        fs::write(&machine_id_file, format!("{id}\n")).unwrap();
        let kubeconfig = cluster.reclaimer_kubeconfig(dir.path()).await;
        HostNode {
            admin,
            name,
            machine_id_file,
            kubeconfig,
            _dir: dir,
        }
    }

    /// Starts a reclaimer for this Node on the agent's `socket` and waits
    /// until it is connected and has its rules. (It logs [`ARMED`] once its
    /// first read of the Node finds no request there.)
    pub fn reclaimer(&self, socket: &Path) -> Reclaimer {
        let reclaimer = self.start_reclaimer(socket);
        tokio::task::block_in_place(|| {
            for needle in ["connected to the agent", "rules loaded from ConfigMap"] {
                reclaimer.wait_log(needle, 1, DEADLINE);
            }
        });
        reclaimer
    }

    /// Starts a reclaimer for this Node on the agent's `socket`, without
    /// waiting for anything.
    pub fn start_reclaimer(&self, socket: &Path) -> Reclaimer {
        self.start_reclaimer_with(socket, &[])
    }

    /// [`HostNode::start_reclaimer`] with `extra` arguments.
    pub fn start_reclaimer_with(&self, socket: &Path, extra: &[&str]) -> Reclaimer {
        let utf8 = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
        let (socket, machine_id_file) = (utf8(socket), utf8(&self.machine_id_file));
        let args = [
            "--socket",
            &socket,
            "--node-name",
            &self.name,
            "--machine-id-file",
            &machine_id_file,
            "--recheck-interval",
            RECHECK,
        ];
        Reclaimer::start(
            &[&args[..], extra].concat(),
            &[("KUBECONFIG", &utf8(&self.kubeconfig))],
        )
    }

    /// Waits until the Node carries a request for `reason` and its
    /// ReclaimRequested Event exists, then [`QUIET`] more: see
    /// [`requested_once`].
    pub async fn requested_once(&self, reason: &str) -> Node {
        requested_once(&self.admin, &self.name, reason).await
    }

    /// Asserts that over [`QUIET`] the Node stays `before` and exactly one
    /// ReclaimRequested Event exists.
    pub async fn unchanged_since(&self, before: &Node) {
        unchanged_since(&self.admin, &self.name, before).await
    }
}

/// Waits until Node `node` carries a request for `reason` and its
/// ReclaimRequested Event exists, then [`QUIET`] more; asserts that nothing
/// else was written meanwhile: one Event, the Node unchanged.
pub async fn requested_once(admin: &kube::Client, node: &str, reason: &str) -> Node {
    let what = format!("Node {node} requested for {reason:?}");
    let written = eventually(&what, DEADLINE, || async {
        let n = get_node(admin, node).await;
        let ours = annotation(&n, REQUESTED) == Some("true")
            && annotation(&n, REASON) == Some(reason)
            && annotation(&n, REQUESTED_AT).is_some();
        ours.then_some(n)
    })
    .await;
    eventually("the ReclaimRequested Event", DEADLINE, || async {
        let events = reclaim_events(admin, node).await;
        (!events.is_empty()).then_some(())
    })
    .await;
    unchanged_since(admin, node, &written).await;
    written
}

/// Asserts that over [`QUIET`] Node `node` stays `before` and exactly one
/// ReclaimRequested Event exists.
pub async fn unchanged_since(admin: &kube::Client, node: &str, before: &Node) {
    tokio::time::sleep(QUIET).await;
    let events = reclaim_events(admin, node).await;
    assert_eq!(events.len(), 1, "one Event: {events:#?}");
    let now = get_node(admin, node).await;
    assert_eq!(
        now.metadata.resource_version, before.metadata.resource_version,
        "the Node was written again: {:?}",
        now.metadata.annotations
    );
}
