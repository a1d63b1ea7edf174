//! deploy/ as users install it, on a real Kubernetes node: the image built
//! without a registry (deploy/image/build.sh) is imported into containerd,
//! `kubectl apply -k deploy` is run unchanged, and the node is opted in with
//! its label. Then what only a running pod shows, read from the host: the
//! privileges of each container, the socket between them, the reclaimer's
//! own token against RBAC, a real `java` ending in the annotations, pod
//! scope, and the pod surviving a rollout restart and an agent restart.
//!
//! One test, in order, on one node (a node takes ~30 s to start and needs
//! the machine's kubelet paths and cgroups to itself). Timings are printed,
//! not asserted beyond generous sanity bounds. Needs root; never skips.

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use support::apiserver::{
    annotation, clear_request, client_for, put_rules, reclaim_events, ARMED, NAMESPACE, REASON,
    REQUESTED, REQUESTED_AT,
};
use support::eventually;
use support::node::{build_image, sleeper_image, HostState, TestNode};

/// The DaemonSet's pods.
const SELECTOR: &str = "app.kubernetes.io/name=execwatch";
/// The label that opts a node in (deploy/base's nodeSelector).
const OPT_IN: &str = "5spot.finos.org/reclaim-agent=enabled";
/// Generous bound for anything the kubelet does.
const KUBELET_WAIT: Duration = Duration::from_secs(120);
/// The reclaimer re-reads a Node with a request every 10 s (its default).
const REARM_WAIT: Duration = Duration::from_secs(30);
/// How long "nothing more happens" is watched.
const QUIET: Duration = Duration::from_secs(3);
/// The stand-in `java` that runs inside an ordinary pod.
const FAKE_JAVA_IMAGE: &str = "execwatch.test/fake-java:1";

/// The uid every `java` of this test runs as. The pod sees the whole host,
/// and other javas may run there (a shared CI machine, a developer's IDE):
/// the rules match only this uid's, so theirs neither fire nor hide ours.
const JAVA_UID: u32 = 54321;

/// The node's rules: the default scope, `java` launched by [`JAVA_UID`].
fn rules() -> String {
    format!("match_commands = [\"java\"]\nmatch_uids = [{JAVA_UID}]\n")
}

/// A real `/usr/bin/java` with `args`, run as [`JAVA_UID`] in `cwd`.
fn java(args: &[&str], cwd: &std::path::Path) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new("/usr/bin/java")
        .args(args)
        .current_dir(cwd)
        .uid(JAVA_UID)
        .gid(JAVA_UID)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn java")
}

/// Prints past the harness's capture, so every run shows the figures, with
/// the time since the test began.
fn report(line: String) {
    use std::io::Write;
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    let _ = writeln!(std::io::stderr(), "[node_pod {t:6.1}s] {line}");
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_runs_on_a_real_node() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "run as root: a kubelet needs it"
    );
    let before = HostState::now();
    report("building the image (deploy/image/build.sh), starting the node".into());
    let image = tokio::task::block_in_place(build_image);
    let started = Instant::now();
    let mut node = tokio::task::block_in_place(|| TestNode::start(&[&image]));
    report(format!(
        "node Ready {} after start",
        secs(started.elapsed())
    ));
    let admin = node.client().await;
    let w = World {
        node: &node,
        admin: admin.clone(),
    };

    // Install as an operator does: the manifests unchanged, rules, opt-in.
    let deploy = support::node::repo().join("deploy");
    node.kubectl(&["apply", "-k", deploy.to_str().unwrap()]);
    put_rules(&admin, &node.name, &rules()).await;
    let labelled = Instant::now();
    node.kubectl(&["label", "node", &node.name, OPT_IN]);
    let pod = w.ready_pod(None).await;
    let ready_at = Instant::now();
    report(format!(
        "pod 2/2 Ready {} after the node label",
        secs(labelled.elapsed())
    ));
    let agent = w.container_pid(&pod, "agent");
    let reclaimer = w.container_pid(&pod, "reclaimer");

    privileges_read_from_the_host(&w, &pod, agent, reclaimer);
    the_socket_is_reachable_through_the_group_only(agent, reclaimer);
    the_reclaimers_token_has_exactly_its_rbac(&w, reclaimer).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    w.wait_log(&pod_name, "reclaimer", "rules loaded from ConfigMap", 1)
        .await;
    w.wait_log(&pod_name, "reclaimer", ARMED, 1).await;
    w.ensure_clear(&pod_name).await;
    a_real_java_ends_in_the_annotations(&w).await;
    w.clear_and_rearm(&pod_name).await;
    a_java_inside_a_pod_does_not_reclaim(&w).await;

    // Two liveness periods (30 s each) with 0 restarts and Ready throughout.
    report("waiting out two liveness periods".into());
    let two_periods = Duration::from_secs(65);
    if let Some(left) = two_periods.checked_sub(ready_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let now = w.pod(&pod_name).await;
    assert!(is_ready(&now), "not Ready after two liveness periods");
    assert_eq!(
        restarts(&now),
        vec![0, 0],
        "restarts after two liveness periods"
    );
    report(format!(
        "Ready with 0 restarts {} after Ready",
        secs(ready_at.elapsed())
    ));

    let pod = rollout_restart_keeps_a_java_started_meanwhile(&w, &pod_name).await;
    the_agent_stops_on_sigterm_and_the_reclaimer_reconnects(&w, &pod).await;

    // Teardown leaves the host as it was (DIR, mounts, processes too).
    report("tearing down".into());
    let dir = node.dir.clone();
    tokio::task::block_in_place(|| node.stop());
    let after = HostState::now();
    assert_eq!(before, after, "host state changed by the node");
    assert!(!dir.exists(), "{} left behind", dir.display());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "mounts left: {mounts}"
    );
    let leftover: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(dir.to_str().unwrap()))
        .collect();
    assert!(leftover.is_empty(), "processes left: {leftover:?}");
    report(
        "torn down: sysctls, host directories, kubepods cgroups, mounts and processes as before"
            .into(),
    );
}

/// The node under test and an admin client.
struct World<'a> {
    node: &'a TestNode,
    admin: kube::Client,
}

impl World<'_> {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), NAMESPACE)
    }

    async fn pod(&self, name: &str) -> Pod {
        self.pods().get(name).await.expect("GET Pod")
    }

    /// Waits for the DaemonSet's one pod (other than `old`) to be Ready.
    async fn ready_pod(&self, old: Option<&str>) -> Pod {
        eventually("the execwatch pod 2/2 Ready", KUBELET_WAIT, || async {
            let list = self
                .pods()
                .list(&ListParams::default().labels(SELECTOR))
                .await;
            list.expect("list pods").items.into_iter().find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata.name.as_deref() != old
                    && is_ready(p)
            })
        })
        .await
    }

    /// The host pid of container `name` of `pod`.
    fn container_pid(&self, pod: &Pod, name: &str) -> u32 {
        let id = container_status(pod, name)
            .container_id
            .clone()
            .unwrap_or_else(|| panic!("{name} has no container id"));
        self.node.container_pid(&id)
    }

    /// The container's log, through the API server and the kubelet.
    fn logs(&self, pod: &str, container: &str) -> String {
        self.node
            .kubectl(&["-n", NAMESPACE, "logs", pod, "-c", container])
    }

    /// Waits until the container's log holds `needle` `times` times
    /// (polled twice a second: each poll is a kubectl run).
    async fn wait_log(&self, pod: &str, container: &str, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + REARM_WAIT;
        loop {
            let logs = tokio::task::block_in_place(|| self.logs(pod, container));
            if logs.matches(needle).count() >= times {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no {times}x {needle:?} in the {container} log within {REARM_WAIT:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Clears the request as the 5-Spot controller does and waits until the
    /// reclaimer of `pod` says it is armed again.
    async fn clear_and_rearm(&self, pod: &str) {
        let armed = self.logs(pod, "reclaimer").matches(ARMED).count();
        clear_request(&self.admin, &self.node.name).await;
        self.wait_log(pod, "reclaimer", ARMED, armed + 1).await;
    }

    /// Makes sure no request stands on the Node before a step that expects
    /// one. A request found here was written for some other `java` run on
    /// this machine meanwhile (the pod sees the whole host): clear it and
    /// let the reclaimer of `pod` arm again.
    async fn ensure_clear(&self, pod: &str) {
        let node: Node = Api::all(self.admin.clone())
            .get(&self.node.name)
            .await
            .unwrap();
        if annotation(&node, REQUESTED).is_some() {
            report(
                "a request already stood on the Node (another java on this machine?): clearing it"
                    .into(),
            );
            self.clear_and_rearm(pod).await;
        }
    }

    /// A watch on the Node, past its initial listing.
    async fn watch_node(
        &self,
    ) -> futures::stream::BoxStream<'static, Result<watcher::Event<Node>, watcher::Error>> {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.node.name));
        let mut stream = watcher(nodes, config).boxed();
        while !matches!(
            stream.try_next().await.unwrap(),
            Some(watcher::Event::InitDone)
        ) {}
        stream
    }

    /// Waits (on `stream`) for the request; returns the Node and when.
    async fn requested(
        &self,
        stream: &mut futures::stream::BoxStream<
            'static,
            Result<watcher::Event<Node>, watcher::Error>,
        >,
    ) -> (Node, Instant) {
        tokio::time::timeout(KUBELET_WAIT, async {
            loop {
                if let Some(watcher::Event::Apply(n)) = stream.try_next().await.unwrap() {
                    if annotation(&n, REQUESTED) == Some("true") {
                        return (n, Instant::now());
                    }
                }
            }
        })
        .await
        .expect("no reclaim request on the Node")
    }

    /// Waits for one new ReclaimRequested Event (`before` existed), which
    /// names `pid`, and checks that no other follows.
    async fn one_event_for(&self, pid: u32, before: usize) {
        eventually("the ReclaimRequested Event", KUBELET_WAIT, || async {
            let events = reclaim_events(&self.admin, &self.node.name).await;
            (events.len() > before).then_some(())
        })
        .await;
        tokio::time::sleep(QUIET).await;
        let all = reclaim_events(&self.admin, &self.node.name).await;
        assert_eq!(
            all.len(),
            before + 1,
            "exactly one new ReclaimRequested Event"
        );
        let wanted = format!("(pid {pid})");
        let named = |e: &Event| e.message.as_deref().unwrap_or_default().contains(&wanted);
        assert!(all.iter().any(named), "no Event names pid {pid}: {all:?}");
    }
}

fn container_status<'a>(
    pod: &'a Pod,
    name: &str,
) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    statuses
        .and_then(|s| s.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no status for container {name}"))
}

fn is_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let cond = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let containers = status.container_statuses.iter().flatten();
    cond && containers.clone().count() == 2 && containers.clone().all(|c| c.ready)
}

fn restarts(pod: &Pod) -> Vec<i32> {
    ["agent", "reclaimer"]
        .iter()
        .map(|c| container_status(pod, c).restart_count)
        .collect()
}

/// `/proc/<pid>/status` as (key, value) lines.
fn proc_status(pid: u32) -> Vec<(String, String)> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(status: &'a [(String, String)], key: &str) -> &'a str {
    status
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in /proc/<pid>/status"))
}

fn same_ns(pid: u32, ns: &str) -> bool {
    let of = |p: &str| fs::read_link(format!("/proc/{p}/ns/{ns}")).unwrap();
    of(&pid.to_string()) == of("self")
}

/// What deploy/base leaves the agent once it serves, read on the host for
/// every thread of both containers: exact uids and gids, no capability in
/// the effective, permitted or ambient set, a bounding set of just what the
/// manifest adds (nothing can raise it again under no_new_privs), seccomp,
/// and the host's pid and network namespaces.
fn privileges_read_from_the_host(w: &World<'_>, pod: &Pod, agent: u32, reclaimer: u32) {
    // CAP_SETGID (6), CAP_SETUID (7), CAP_NET_ADMIN (12).
    const AGENT_BOUNDING: &str = "00000000000010c0";
    let mut seen = Vec::new();
    for (who, pid, uid, gid, bounding) in [
        ("agent", agent, 65534, 65532, AGENT_BOUNDING),
        ("reclaimer", reclaimer, 65532, 65532, "0000000000000000"),
    ] {
        let threads = support::assert_unprivileged(pid as i32, uid, gid);
        for (tid, status) in support::thread_statuses(pid as i32) {
            let field = |k| support::status_field(&status, k);
            assert_eq!(
                field("CapBnd"),
                bounding,
                "{who} thread {tid}: bounding set"
            );
            assert_eq!(field("NoNewPrivs"), "1", "{who} thread {tid}: no_new_privs");
            assert_eq!(
                field("Seccomp"),
                "2",
                "{who} thread {tid}: seccomp (RuntimeDefault)"
            );
        }
        assert!(same_ns(pid, "pid"), "{who}: the host's pid namespace");
        assert!(same_ns(pid, "net"), "{who}: the host's network namespace");
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), who, "pid {pid} is the {who}");
        seen.push(format!(
            "{who} {threads} threads uid {uid} gid {gid} CapEff=CapPrm=CapAmb=0 CapBnd={bounding}"
        ));
    }
    let name = pod.metadata.name.as_deref().unwrap();
    let logs = w.logs(name, "agent");
    assert!(
        logs.contains("kernel-filtered"),
        "agent log names the kernel-filtered subscription:\n{logs}"
    );
    let switched = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("now runs as uid 65534 gid 65532 with no capability"))
        })
        .unwrap_or_else(|| panic!("no privilege line in the agent's log:\n{logs}"));
    assert_eq!(switched["subscribed_with"], "CAP_NET_ADMIN", "{switched}");
    let held_ms = switched["privileged_ms"].as_f64().expect("privileged_ms");
    report(format!(
        "{}; NoNewPrivs 1, Seccomp 2, host pid and network namespaces; the agent ran as uid 0 for {held_ms:.1} ms after start",
        seen.join("; ")
    ));
}

fn the_socket_is_reachable_through_the_group_only(agent: u32, reclaimer: u32) {
    // The emptyDir as the containers see it.
    let socket = PathBuf::from(format!("/proc/{agent}/root/run/execwatch/agent.sock"));
    let meta = fs::metadata(&socket).unwrap_or_else(|e| panic!("{}: {e}", socket.display()));
    assert!(meta.file_type().is_socket(), "a socket");
    assert_eq!(meta.mode() & 0o7777, 0o660, "socket mode");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65532),
        "owned by the agent, group 65532"
    );
    let s = proc_status(reclaimer);
    let uid: u32 = field(&s, "Uid")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid, meta.uid(), "the reclaimer is not the socket's owner");
    let groups: Vec<&str> = field(&s, "Groups").split_whitespace().collect();
    let gid = field(&s, "Gid").split_whitespace().next().unwrap();
    assert!(
        gid == "65532" || groups.contains(&"65532"),
        "reclaimer in group 65532"
    );
    // Same emptyDir for both.
    let theirs = PathBuf::from(format!("/proc/{reclaimer}/root/run/execwatch/agent.sock"));
    assert_eq!(
        fs::metadata(theirs).unwrap().ino(),
        meta.ino(),
        "one socket, shared"
    );
}

fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

async fn the_reclaimers_token_has_exactly_its_rbac(w: &World<'_>, reclaimer: u32) {
    // The credentials exactly as the reclaimer reads them, and the Service
    // address its in-cluster configuration dials.
    let sa = PathBuf::from(format!(
        "/proc/{reclaimer}/root/var/run/secrets/kubernetes.io/serviceaccount"
    ));
    let token = fs::read_to_string(sa.join("token")).expect("the reclaimer's projected token");
    let ns = fs::read_to_string(sa.join("namespace")).unwrap();
    assert_eq!(ns.trim(), NAMESPACE);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    fs::copy(sa.join("ca.crt"), &ca).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"https://127.96.0.1:443\", certificate-authority: \"{}\"}}\nusers:\n- name: u\n  user: {{token: \"{}\"}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            ca.display(),
            token.trim()
        ),
    )
    .unwrap();
    let me = client_for(&kubeconfig).await;
    let name = &w.node.name;
    let nodes: Api<Node> = Api::all(me.clone());
    nodes.get(name).await.expect("the reclaimer gets its Node");
    let rules: Api<ConfigMap> = Api::namespaced(me.clone(), NAMESPACE);
    rules
        .get(&format!("reclaim-agent-{name}"))
        .await
        .expect("the reclaimer gets its ConfigMap");
    let probe = json!({"metadata": {"annotations": {"execwatch.test/rbac-probe": "1"}}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&probe))
        .await
        .expect("the reclaimer patches its Node");
    let undo = json!({"metadata": {"annotations": {"execwatch.test/rbac-probe": null}}});
    Api::<Node>::all(w.admin.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&undo))
        .await
        .unwrap();

    forbidden("list nodes", nodes.list(&ListParams::default()).await);
    for ns in [NAMESPACE, "kube-system", "default"] {
        let secrets: Api<Secret> = Api::namespaced(me.clone(), ns);
        forbidden(
            &format!("list secrets in {ns}"),
            secrets.list(&ListParams::default()).await,
        );
        forbidden(&format!("get a secret in {ns}"), secrets.get("any").await);
    }
    let event = |ns: &str| -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "execwatch-rbac-probe", "namespace": ns},
            "involvedObject": {"kind": "Node", "name": name},
            "reason": "RbacProbe", "message": "dry run", "type": "Normal"
        }))
        .unwrap()
    };
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for ns in [NAMESPACE, "kube-system"] {
        let events: Api<Event> = Api::namespaced(me.clone(), ns);
        forbidden(
            &format!("create an Event in {ns}"),
            events.create(&dry, &event(ns)).await,
        );
    }
    let events: Api<Event> = Api::namespaced(me.clone(), "default");
    events
        .create(&dry, &event("default"))
        .await
        .expect("create an Event in default");
    report("the reclaimer's own token: get Node and ConfigMap, patch Node, Event in default; 403 for list nodes, secrets, Events elsewhere".into());
}

async fn a_real_java_ends_in_the_annotations(w: &World<'_>) {
    let mut stream = w.watch_node().await;
    let before = reclaim_events(&w.admin, &w.node.name).await.len();
    let wall_before = jiff::Timestamp::now();
    let launched = Instant::now();
    let mut java = java(&["-version"], std::path::Path::new("/"));
    let pid = java.id();
    let (node, seen) = w.requested(&mut stream).await;
    let latency = seen - launched;
    let _ = java.wait();
    report(format!(
        "java -version (pid {pid}) -> annotation seen by a watch: {} ms (target < 100 ms)",
        latency.as_millis()
    ));
    assert!(latency < Duration::from_secs(10), "{latency:?}");
    assert_eq!(annotation(&node, REASON), Some("process-match: java"));
    let at: jiff::Timestamp = annotation(&node, REQUESTED_AT)
        .expect("requested-at")
        .parse()
        .expect("RFC 3339");
    let floor = jiff::Timestamp::from_second(wall_before.as_second()).unwrap();
    assert!(
        at >= floor && at <= jiff::Timestamp::now(),
        "{at} not within the launch"
    );
    w.one_event_for(pid, before).await;
}

async fn a_java_inside_a_pod_does_not_reclaim(w: &World<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let archive =
        tokio::task::block_in_place(|| sleeper_image(dir.path(), "java", FAKE_JAVA_IMAGE));
    tokio::task::block_in_place(|| w.node.import(&archive));
    let events = reclaim_events(&w.admin, &w.node.name).await.len();
    // An ordinary pod (its own pid namespace and cgroup); host network only
    // so that no CNI plugin is called (loopback-only machine).
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "fake-java", "namespace": "default"},
        "spec": {
            "nodeName": w.node.name,
            "hostNetwork": true,
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            // The uid the rules match: only the scope keeps it out.
            "securityContext": {"runAsUser": JAVA_UID, "runAsGroup": JAVA_UID},
            "containers": [{"name": "java", "image": FAKE_JAVA_IMAGE, "imagePullPolicy": "Never"}]
        }
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(w.admin.clone(), "default");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the fake-java pod");
    let running = eventually("the fake-java pod Running", KUBELET_WAIT, || async {
        let p = pods.get("fake-java").await.expect("GET fake-java");
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        (phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let id = running
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let pid = w.node.container_pid(&id);
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "java", "the pod's process is a `java`");
    let uid = field(&proc_status(pid), "Uid")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(uid, JAVA_UID.to_string(), "run by the uid the rules match");
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup.contains("/kubepods/"), "in a pod's cgroup: {cgroup}");
    tokio::time::sleep(QUIET).await;
    let node: Node = Api::all(w.admin.clone()).get(&w.node.name).await.unwrap();
    assert_eq!(
        annotation(&node, REQUESTED),
        None,
        "a java in a pod reclaimed the node"
    );
    assert_eq!(
        reclaim_events(&w.admin, &w.node.name).await.len(),
        events,
        "no Event"
    );
    pods.delete("fake-java", &DeleteParams::default())
        .await
        .unwrap();
    report(format!(
        "a `java` (pid {pid}) inside an ordinary pod: no request with the default scope"
    ));
}

/// A real java that stays up, paused at VM start-up (HotSpot's
/// PauseAtStartup waits until its `vm.paused.<pid>` file is removed): a
/// launch the next agent must find in its snapshot.
struct PausedJava {
    child: Child,
    _cwd: tempfile::TempDir,
}

impl PausedJava {
    fn start() -> PausedJava {
        // The JVM writes its pause file here, as JAVA_UID.
        let cwd = tempfile::tempdir().unwrap();
        fs::set_permissions(cwd.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let args = [
            "-XX:+UnlockDiagnosticVMOptions",
            "-XX:+PauseAtStartup",
            "-version",
        ];
        let child = java(&args, cwd.path());
        PausedJava { child, _cwd: cwd }
    }
}

impl Drop for PausedJava {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie has exited; only its parent's wait is missing.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

async fn rollout_restart_keeps_a_java_started_meanwhile(w: &World<'_>, old: &str) -> Pod {
    w.ensure_clear(old).await;
    let old_pod = w.pod(old).await;
    let old_agent = w.container_pid(&old_pod, "agent");
    let mut stream = w.watch_node().await;
    let events = reclaim_events(&w.admin, &w.node.name).await.len();
    let t0 = Instant::now();
    w.node
        .kubectl(&["-n", NAMESPACE, "rollout", "restart", "daemonset/execwatch"]);
    // The old pod terminating and its agent gone: nobody watches any more.
    eventually("the old agent to exit", KUBELET_WAIT, || async {
        gone(old_agent).then_some(())
    })
    .await;
    let old_stopped = t0.elapsed();
    let java = PausedJava::start();
    let pid = java.child.id();
    let new_pod = w.ready_pod(Some(old)).await;
    let new_ready = t0.elapsed();
    let (_, seen) = w.requested(&mut stream).await;
    report(format!(
        "rollout restart: old agent gone {}, new pod Ready {}, java started in between (pid {pid}) annotated {} after the restart",
        secs(old_stopped),
        secs(new_ready),
        secs(seen - t0)
    ));
    let name = new_pod.metadata.name.clone().unwrap();
    assert_ne!(name, old);
    w.one_event_for(pid, events).await;
    let logs = w
        .wait_log(&name, "reclaimer", "reclaim requested: Node annotated", 1)
        .await;
    assert!(
        logs.contains("reclaim requested"),
        "the new pod's reclaimer wrote it"
    );
    drop(java);
    w.clear_and_rearm(&name).await;
    new_pod
}

async fn the_agent_stops_on_sigterm_and_the_reclaimer_reconnects(w: &World<'_>, pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap();
    w.ensure_clear(&name).await;
    let agent = w.container_pid(pod, "agent");
    let connected = w
        .logs(&name, "reclaimer")
        .matches("connected to the agent")
        .count();
    let mut stream = w.watch_node().await;
    let events = reclaim_events(&w.admin, &w.node.name).await.len();
    // What the kubelet does to a container whose liveness probe failed.
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let deadline = t0 + Duration::from_secs(2);
    while !gone(agent) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = t0.elapsed();
    assert!(
        gone(agent),
        "the agent did not exit within 2 s of SIGTERM while the reclaimer was subscribed"
    );
    report(format!(
        "agent exited {} ms after SIGTERM",
        stopped.as_millis()
    ));
    let java = PausedJava::start();
    let pid = java.child.id();
    let restarted = eventually("the agent restarted and Ready", KUBELET_WAIT, || async {
        let p = w.pod(&name).await;
        (container_status(&p, "agent").restart_count == 1 && is_ready(&p)).then_some(p)
    })
    .await;
    let back = t0.elapsed();
    assert_eq!(restarts(&restarted)[1], 0, "the reclaimer kept running");
    w.wait_log(&name, "reclaimer", "connected to the agent", connected + 1)
        .await;
    let (_, seen) = w.requested(&mut stream).await;
    report(format!(
        "agent restart: back and Ready {}, java started in the gap (pid {pid}) annotated {} after SIGTERM",
        secs(back),
        secs(seen - t0)
    ));
    w.one_event_for(pid, events).await;
    drop(java);
}
