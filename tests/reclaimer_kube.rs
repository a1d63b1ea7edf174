//! The reclaimer against a real kube-apiserver 1.20.2 and the real agent:
//! what it writes on its Node, when, and with which rights.
//!
//! Every test has its own Node, rules ConfigMap, agent and reclaimer; the
//! reclaimer runs with a ServiceAccount token under the project's RBAC
//! (deploy/base), so a write it is not allowed to make fails here.
#![cfg(target_os = "linux")]

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, ObjectReference, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchParams,
};
use kube::runtime::watcher;
use serde_json::json;
use support::apiserver::*;
use support::*;

/// The reclaimer's --recheck-interval in these tests, in milliseconds.
const RECHECK_MS: u64 = 500;
/// How long "nothing happened" is watched for: a few recheck intervals.
const QUIET: Duration = Duration::from_millis(3 * RECHECK_MS);
/// Deadline for anything that should happen.
const WAIT: Duration = Duration::from_secs(20);
const MATCHED: &str = "process matched: requesting reclaim";
const ARMED: &str = "); armed";

/// One test's world: a Node, the host's machine-id file, an agent, and the
/// reclaimer's ServiceAccount kubeconfig.
struct World {
    admin: kube::Client,
    node: String,
    agent: Agent,
    _dir: tempfile::TempDir,
    machine_id_file: PathBuf,
    kubeconfig: PathBuf,
}

/// A random-enough 32-hex-digit machine-id.
fn machine_id(salt: &str) -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let h = salt.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("{:016x}{:016x}", h, ns as u64)
}

impl World {
    /// A Node whose machineID is `node_id` (the host's own unless told
    /// otherwise) and the host's machine-id file.
    async fn new(tag: &str, host_id: &str, node_id: Option<&str>) -> World {
        let cluster = tokio::task::block_in_place(cluster);
        let admin = cluster.client().await;
        let node = create_node(&admin, tag, node_id)
            .await
            .metadata
            .name
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let machine_id_file = dir.path().join("machine-id");
        std::fs::write(&machine_id_file, format!("{host_id}\n")).unwrap();
        let kubeconfig = cluster.reclaimer_kubeconfig(dir.path()).await;
        World {
            admin,
            node,
            agent: Agent::start(&[]),
            _dir: dir,
            machine_id_file,
            kubeconfig,
        }
    }

    /// A World whose Node is this host.
    async fn matching(tag: &str) -> World {
        let id = machine_id(tag);
        World::new(tag, &id, Some(&id)).await
    }

    /// Starts the reclaimer for this Node with the ServiceAccount's kubeconfig.
    fn reclaimer(&self) -> Reclaimer {
        let recheck = format!("{RECHECK_MS}ms");
        Reclaimer::start(
            &[
                "--socket",
                self.agent.socket.to_str().unwrap(),
                "--node-name",
                &self.node,
                "--machine-id-file",
                self.machine_id_file.to_str().unwrap(),
                "--recheck-interval",
                &recheck,
            ],
            &[("KUBECONFIG", self.kubeconfig.to_str().unwrap())],
        )
    }

    async fn get(&self) -> Node {
        get_node(&self.admin, &self.node).await
    }

    /// Waits until the Node carries a request for `reason`.
    async fn requested(&self, reason: &str) -> Node {
        eventually(
            &format!("Node {} requested for {reason:?}", self.node),
            WAIT,
            || async {
                let n = self.get().await;
                (annotation(&n, REQUESTED) == Some("true")
                    && annotation(&n, REASON) == Some(reason))
                .then_some(n)
            },
        )
        .await
    }

    /// Waits until `n` ReclaimRequested Events exist, then a little longer
    /// to make sure no more come; returns them.
    async fn events(&self, n: usize) -> Vec<Event> {
        eventually(
            &format!("{n} Event(s) about {}", self.node),
            WAIT,
            || async { (reclaim_events(&self.admin, &self.node).await.len() >= n).then_some(()) },
        )
        .await;
        tokio::time::sleep(QUIET).await;
        let events = reclaim_events(&self.admin, &self.node).await;
        assert_eq!(events.len(), n, "{events:#?}");
        events
    }

    /// Rules matching a new program `tag`, a reclaimer, the program
    /// launched: the reclaimer must refuse to write. Asserts the Node stays
    /// as it was (`why`) with no Event; returns the reclaimer's log.
    async fn launch_refused(&self, tag: &str, why: &str) -> String {
        let prog = UniqueProgram::new(tag);
        put_rules(
            &self.admin,
            &self.node,
            &format!("match_commands = [\"{}\"]\n", prog.name),
        )
        .await;
        let reclaimer = self.reclaimer();
        wait_log(&reclaimer, "rules loaded from ConfigMap", 1);
        let before = self.get().await;
        let running = prog.spawn(60, &[]);
        let logs = wait_log(&reclaimer, "refusing to write", 1);
        self.unchanged(&before, why).await;
        assert!(reclaim_events(&self.admin, &self.node).await.is_empty());
        stop(running);
        logs
    }

    /// Asserts that over a few recheck intervals the Node stays exactly `before`.
    async fn unchanged(&self, before: &Node, why: &str) {
        tokio::time::sleep(QUIET).await;
        let now = self.get().await;
        assert_eq!(
            now.metadata.resource_version, before.metadata.resource_version,
            "{why}: the Node was written"
        );
        assert_eq!(
            now.metadata.annotations, before.metadata.annotations,
            "{why}"
        );
    }
}

/// Waits for `needle` in the log, `times` times, without holding up the runtime.
fn wait_log(r: &Reclaimer, needle: &str, times: usize) -> String {
    tokio::task::block_in_place(|| r.wait_log(needle, times, WAIT))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_java_launch_annotates_the_node_once_with_one_event() {
    let w = World::matching("java").await;
    put_rules(&w.admin, &w.node, "match_commands = [\"java\"]\n").await;
    let reclaimer = w.reclaimer();
    wait_log(&reclaimer, "connected to the agent", 1);
    wait_log(&reclaimer, "rules loaded from ConfigMap", 1);
    wait_log(&reclaimer, ARMED, 1);

    // Watch the Node (as admin) so the annotation is seen the moment it lands.
    let nodes: Api<Node> = Api::all(w.admin.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={}", w.node));
    let mut stream = watcher(nodes, config).boxed();
    while !matches!(
        stream.try_next().await.unwrap(),
        Some(watcher::Event::InitDone)
    ) {}

    let wall_before = jiff::Timestamp::now();
    let start = Instant::now();
    let mut java = Command::new("java")
        .args(["-Xshare:auto", "-cp", "/nonexistent", "ExecwatchNoSuchMain"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn java");
    let (node, latency) = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(watcher::Event::Apply(n)) = stream.try_next().await.unwrap() {
                if annotation(&n, REQUESTED) == Some("true") {
                    return (n, start.elapsed());
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no annotation within {WAIT:?}:\n{}", reclaimer.logs()));
    let _ = java.wait();
    // Straight to stderr, past the test harness's capture, so every run
    // shows it.
    let line = format!("java->annotation latency: {} ms\n", latency.as_millis());
    std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).unwrap();
    assert!(latency < Duration::from_secs(10), "{latency:?}");

    assert_eq!(annotation(&node, REASON), Some("process-match: java"));
    let at = annotation(&node, REQUESTED_AT).expect("requested-at");
    assert!(at.ends_with('Z'), "UTC: {at}");
    let at: jiff::Timestamp = at.parse().expect("RFC 3339");
    let floor = jiff::Timestamp::from_second(wall_before.as_second()).unwrap();
    assert!(
        at >= floor && at <= jiff::Timestamp::now(),
        "{at} not within the launch"
    );

    // The reclaimer is the field manager of exactly the three annotations.
    let owned: Vec<String> = node
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some("execwatch-reclaimer"))
        .flat_map(|m| m.fields_v1.as_ref().map(|f| f.0.to_string()))
        .collect();
    assert_eq!(owned.len(), 1, "{:#?}", node.metadata.managed_fields);
    for key in [REQUESTED, REASON, REQUESTED_AT] {
        assert!(
            owned[0].contains(&format!("f:{key}")),
            "{key} not in {}",
            owned[0]
        );
    }

    let events = w.events(1).await;
    let ev = &events[0];
    assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert_eq!(ev.involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(ev.involved_object.name.as_deref(), Some(w.node.as_str()));
    assert_eq!(ev.involved_object.uid, node.metadata.uid);
    let message = ev.message.as_deref().unwrap_or_default();
    assert!(
        message.starts_with("java (pid ") && message.ends_with("matched: process-match: java"),
        "{message}"
    );
    assert_eq!(
        reclaimer
            .logs()
            .matches("reclaim requested: Node annotated")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_already_on_the_node_is_never_overwritten_or_repeated() {
    let w = World::matching("idem").await;
    let prog = UniqueProgram::new("ewidem");
    put_rules(
        &w.admin,
        &w.node,
        &format!("match_commands = [\"{}\"]\n", prog.name),
    )
    .await;
    let theirs = annotate(
        &w.admin,
        &w.node,
        json!({REQUESTED: "true", REASON: "maintenance window", REQUESTED_AT: "2021-01-02T03:04:05Z"}),
    )
    .await;
    let reclaimer = w.reclaimer();
    wait_log(&reclaimer, "connected to the agent", 1);
    wait_log(&reclaimer, "rules loaded from ConfigMap", 1);

    // A matching launch while someone else's request stands writes nothing.
    let first = prog.spawn(60, &[]);
    w.unchanged(&theirs, "a request was already there").await;
    assert!(!reclaimer.logs().contains(MATCHED), "{}", reclaimer.logs());

    // The controller clears it; the program still runs: the reclaimer writes once.
    clear_request(&w.admin, &w.node).await;
    let ours = w.requested(&format!("process-match: {}", prog.name)).await;
    w.events(1).await;

    // A second launch while our request stands writes nothing more.
    let second = prog.spawn(60, &[]);
    w.unchanged(&ours, "our request was already there").await;
    assert_eq!(
        reclaimer.logs().matches(MATCHED).count(),
        1,
        "{}",
        reclaimer.logs()
    );
    w.events(1).await;
    stop(first);
    stop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configmap_arms_rearms_disarms_and_survives_a_bad_edit() {
    let w = World::matching("cm").await;
    let a = UniqueProgram::new("ewcma");
    let b = UniqueProgram::new("ewcmb");
    let reclaimer = w.reclaimer();
    wait_log(&reclaimer, "connected to the agent", 1);
    wait_log(&reclaimer, "is absent", 1);
    wait_log(&reclaimer, ARMED, 1);

    // No ConfigMap: inert. A matching program runs and nothing is written.
    let a1 = a.spawn(60, &[]);
    let before = w.get().await;
    w.unchanged(&before, "no ConfigMap").await;

    // Arm while it runs: it fires.
    put_rules(
        &w.admin,
        &w.node,
        &format!("match_commands = [\"{}\"]\n", a.name),
    )
    .await;
    let reason_a = format!("process-match: {}", a.name);
    w.requested(&reason_a).await;
    w.events(1).await;

    // The controller clears the request; the program still runs: it fires again.
    clear_request(&w.admin, &w.node).await;
    w.requested(&reason_a).await;
    w.events(2).await;

    // Disarm by making the rules inert, then clear: neither the running
    // program nor a new launch fires.
    put_rules(&w.admin, &w.node, "match_commands = []\n").await;
    wait_log(
        &reclaimer,
        &format!("{} rules=inert", rules_name(&w.node)),
        1,
    );
    clear_request(&w.admin, &w.node).await;
    wait_log(&reclaimer, ARMED, 3);
    let a2 = a.spawn(60, &[]);
    let before = w.get().await;
    w.unchanged(&before, "inert rules").await;

    // (Deleting the ConfigMap disarms too:
    // the_controller_rendered_configmap_arms_and_its_deletion_disarms.)

    // A malformed edit (unknown key) keeps the last good rules: a launch of
    // B fires, and A, which the bad document names, does not.
    let rules_b = format!("match_commands = [\"{}\", \"ewnever\"]\n", b.name);
    put_rules(&w.admin, &w.node, &rules_b).await;
    wait_log(&reclaimer, "commands=2", 1);
    let before = w.get().await;
    w.unchanged(&before, "B is not running; A is not in the rules")
        .await;
    let bad = format!(
        "match_commands = [\"{}\"]\nmatch_comands = [\"typo\"]\n",
        a.name
    );
    put_rules(&w.admin, &w.node, &bad).await;
    let logs = wait_log(&reclaimer, "rejected, keeping the last good rules", 1);
    assert!(logs.contains("line=2"), "{logs}");
    assert!(logs.contains("match_comands"), "{logs}");
    let b1 = b.spawn(60, &[]);
    w.requested(&format!("process-match: {}", b.name)).await;
    w.events(3).await;
    for child in [a1, a2, b1] {
        stop(child);
    }
}

/// `reclaim-agent-<node>` as the 5-Spot controller renders it from
/// `ScheduledMachine.spec.killIfCommands`.
fn controller_rendered(commands: &[&str]) -> String {
    let quoted: Vec<String> = commands.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "# Auto-generated by 5-spot controller from ScheduledMachine 5spot-system/workstation\n\
         # DO NOT EDIT: changes are overwritten from spec.killIfCommands\n\
         match_commands = [{}]\n\
         match_argv_substrings = []\n\
         poll_interval_ms = 250\n",
        quoted.join(", ")
    )
}

/// 5-Spot's contract: the controller's rendered ConfigMap arms the node; its
/// deletion (the user emptied killIfCommands) disarms it, so a matching
/// launch afterwards writes nothing; re-creating it arms again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_rendered_configmap_arms_and_its_deletion_disarms() {
    let w = World::matching("5spot").await;
    let prog = UniqueProgram::new("ew5spot");
    let body = controller_rendered(&[&prog.name]);
    put_rules(&w.admin, &w.node, &body).await;
    let reclaimer = w.reclaimer();
    wait_log(&reclaimer, "rules loaded from ConfigMap", 1);
    wait_log(&reclaimer, ARMED, 1);

    // Armed: a launch fires.
    let first = prog.spawn(60, &[]);
    w.requested(&prog.reason()).await;
    w.events(1).await;
    stop(first);

    // The controller deletes the ConfigMap; a request is cleared.
    delete_rules(&w.admin, &w.node).await;
    let logs = wait_log(&reclaimer, "was deleted: rules dropped", 1);
    let line = logs.lines().find(|l| l.contains("was deleted")).unwrap();
    assert!(
        line.contains("not armed") && line.contains("dropped=commands=1 "),
        "names the rules dropped: {line}"
    );
    assert!(line.contains("WARN"), "{line}");
    clear_request(&w.admin, &w.node).await;
    wait_log(&reclaimer, ARMED, 2);

    // Disarmed: a matching launch writes nothing.
    let second = prog.spawn(60, &[]);
    let before = w.get().await;
    w.unchanged(&before, "the ConfigMap was deleted").await;
    assert_eq!(reclaimer.logs().matches(MATCHED).count(), 1);
    w.events(1).await;

    // Re-created: armed again, and the program that runs fires.
    put_rules(&w.admin, &w.node, &body).await;
    wait_log(&reclaimer, "rules loaded from ConfigMap", 2);
    w.requested(&prog.reason()).await;
    w.events(2).await;
    assert_eq!(reclaimer.logs().matches(MATCHED).count(), 2);
    stop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_host_is_never_written() {
    let (host, other) = (machine_id("host"), machine_id("other-host"));
    let w = World::new("otherhost", &host, Some(&other)).await;
    let logs = w.launch_refused("ewhost", "machine-id mismatch").await;
    assert!(
        logs.contains(&host) && logs.contains(&other),
        "both machine-ids are named:\n{logs}"
    );
    assert!(logs.contains(w.machine_id_file.to_str().unwrap()), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_machine_id_is_never_written() {
    let w = World::new("noid", &machine_id("noid"), None).await;
    let logs = w.launch_refused("ewnoid", "no machineID on the Node").await;
    assert!(logs.contains("status.nodeInfo.machineID \"\""), "{logs}");
}

/// Asserts the real API server answered 403 Forbidden.
fn forbidden<T>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        Err(e) => panic!("{what}: expected 403, got {e}"),
        Ok(_) => panic!("{what}: expected 403, but it was allowed"),
    }
}

fn event_about(node: &Node, namespace: &str) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(unique_name("rbac-event")),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Node".into()),
            name: node.metadata.name.clone(),
            uid: node.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some("RbacTest".into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_can_do_its_job_and_nothing_more() {
    let w = World::matching("rbac").await;
    put_rules(&w.admin, &w.node, "match_commands = []\n").await;
    let sa = client_for(&w.kubeconfig).await;
    let nodes: Api<Node> = Api::all(sa.clone());
    let configmaps: Api<ConfigMap> = Api::namespaced(sa.clone(), NAMESPACE);
    let pp = PostParams::default();
    let mine = PatchParams {
        field_manager: Some("execwatch-reclaimer".into()),
        ..Default::default()
    };
    let patch = json!({"metadata": {"annotations": {"execwatch.test/rbac": "ok"}}});

    // Allowed: its own job.
    let node = nodes.get(&w.node).await.expect("get node");
    nodes
        .patch(&w.node, &mine, &Patch::Merge(&patch))
        .await
        .expect("patch node");
    let cm = configmaps
        .get(&rules_name(&w.node))
        .await
        .expect("get configmap");
    configmaps
        .list(&ListParams::default())
        .await
        .expect("list configmaps");
    let watch = configmaps
        .watch(&WatchParams::default().timeout(1), "0")
        .await;
    assert!(watch.is_ok(), "watch configmaps: {:?}", watch.err());
    Api::<Event>::namespaced(sa.clone(), "default")
        .create(&pp, &event_about(&node, "default"))
        .await
        .expect("create event in default");

    // Refused by the real server: everything else.
    forbidden("list nodes", nodes.list(&ListParams::default()).await);
    forbidden(
        "watch nodes",
        nodes.watch(&WatchParams::default(), "0").await.map(|_| ()),
    );
    forbidden(
        "delete node",
        nodes.delete(&w.node, &DeleteParams::default()).await,
    );
    forbidden(
        "patch nodes/status",
        nodes
            .patch_status(&w.node, &mine, &Patch::Merge(&patch))
            .await,
    );
    forbidden(
        "get secrets in 5spot-system",
        Api::<Secret>::namespaced(sa.clone(), NAMESPACE)
            .get("anything")
            .await,
    );
    let mut other = cm.clone();
    other.metadata = ObjectMeta {
        name: Some(unique_name("rbac-cm")),
        ..Default::default()
    };
    forbidden("create configmap", configmaps.create(&pp, &other).await);
    forbidden(
        "update configmap",
        configmaps.replace(&rules_name(&w.node), &pp, &cm).await,
    );
    forbidden(
        "patch configmap",
        configmaps
            .patch(
                &rules_name(&w.node),
                &mine,
                &Patch::Merge(&json!({"data": {"x": "y"}})),
            )
            .await,
    );
    forbidden(
        "create event in 5spot-system",
        Api::<Event>::namespaced(sa.clone(), NAMESPACE)
            .create(&pp, &event_about(&node, NAMESPACE))
            .await,
    );
    // The Node survived the attempt to delete it, with the one allowed patch.
    let after = w.get().await;
    assert_eq!(annotation(&after, "execwatch.test/rbac"), Some("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_rules_watch_stays_open_and_an_edit_applies_at_once() {
    let w = World::matching("quiet").await;
    let prog = UniqueProgram::new("ewquiet");
    put_rules(&w.admin, &w.node, "match_commands = []\n").await;
    let reclaimer = w.reclaimer();
    wait_log(&reclaimer, "rules loaded from ConfigMap", 1);
    let running = prog.spawn(60, &[]);
    // Nothing changes for longer than a Node request's 15 s read timeout:
    // the watch must neither fail nor re-list (both would delay edits).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let logs = reclaimer.logs();
    assert!(!logs.contains("watching ConfigMap"), "{logs}");
    assert_eq!(logs.matches("rules loaded from").count(), 1, "{logs}");
    let edited = Instant::now();
    put_rules(
        &w.admin,
        &w.node,
        &format!("match_commands = [\"{}\"]\n", prog.name),
    )
    .await;
    w.requested(&format!("process-match: {}", prog.name)).await;
    assert!(
        edited.elapsed() < Duration::from_secs(5),
        "{:?}",
        edited.elapsed()
    );
    stop(running);
}

/// Why reclaimer/node/event.rs writes a core/v1 Event itself instead of
/// using kube-runtime's `Recorder`: this API server (1.20.2) refuses the
/// Recorder's events.k8s.io/v1 Event about a Node, which it files in
/// `default`. If this starts to pass, the Recorder can do the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_api_server_refuses_the_recorders_event_about_a_node() {
    use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder};
    use kube::Resource;
    let cluster = tokio::task::block_in_place(cluster);
    let admin = cluster.client().await;
    let node = create_node(&admin, "recorder", None).await;
    let recorder = Recorder::new(admin, "execwatch-test".into());
    let event = RecorderEvent {
        type_: EventType::Normal,
        reason: "ReclaimRequested".into(),
        note: Some("probe".into()),
        action: "RequestReclaim".into(),
        secondary: None,
    };
    match recorder.publish(&event, &node.object_ref(&())).await {
        Err(kube::Error::Api(s)) if s.code == 422 => assert!(
            s.message.contains("does not match event.namespace"),
            "{s:?}"
        ),
        other => panic!("expected 422 from the 1.20 API server, got {other:?}"),
    }
}
