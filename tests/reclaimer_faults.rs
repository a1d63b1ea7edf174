//! The reclaimer against an API server that throttles, conflicts and fails:
//! a small proxy (tests/kube/fault-proxy.py) in front of the real API server
//! answers chosen requests with 429 + Retry-After, 409 or 503, and logs
//! every request. The reclaimer must wait as told, re-read on a conflict,
//! retry a failed read, and in every case write its Node once, with one
//! Event.
//!
//! The reclaimer reads its rules from a file here, so only its Node and
//! Event requests pass through the proxy, and the proxy's log is exactly
//! what it asked the API server.
#![cfg(target_os = "linux")]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kube::config::Kubeconfig;
use serde_json::Value;
use support::apiserver::*;
use support::*;

/// Deadline for anything that should happen.
const WAIT: Duration = Duration::from_secs(30);
const WRITTEN: &str = "reclaim requested: Node annotated";

/// The fault proxy, killed on drop.
struct Proxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// One request as the proxy logged it.
#[derive(Debug, Clone)]
struct Entry {
    /// Arrival, seconds on the proxy's monotonic clock.
    t0: f64,
    method: String,
    path: String,
    status: u16,
    injected: bool,
}

impl Proxy {
    /// Starts the proxy in front of the cluster's API server with `faults`
    /// (its `--fail ...` arguments), held until [`Proxy::arm`] if `held`.
    fn start(cluster: &Cluster, dir: &Path, faults: &[&str], held: bool) -> Proxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube/fault-proxy.py");
        let log = dir.join("proxy.log");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .arg("--upstream")
            .arg(format!("https://127.0.0.1:{}", cluster.port))
            .arg("--ca")
            .arg(cluster.dir.join("ca.crt"))
            .arg("--log")
            .arg(&log)
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .args(faults);
        if held {
            cmd.arg("--held");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fault-proxy.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the proxy's port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("fault-proxy printed no port: {line:?}"));
        Proxy { child, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Turns a held proxy's faults on.
    fn arm(&self) {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.write_all(
            b"POST /fault-proxy/arm HTTP/1.1\r\nHost: proxy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// Every request logged so far, in the order they were answered.
    fn entries(&self) -> Vec<Entry> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).expect("a JSON log line");
                Entry {
                    t0: v["t0"].as_f64().unwrap(),
                    method: v["method"].as_str().unwrap().to_string(),
                    path: v["path"].as_str().unwrap().to_string(),
                    status: v["status"].as_u64().unwrap() as u16,
                    injected: v["injected"].as_bool().unwrap(),
                }
            })
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's world: a Node that is this host, a rules file matching a
/// unique program, an agent, the proxy and the reclaimer talking through it.
struct World {
    admin: kube::Client,
    node: String,
    prog: UniqueProgram,
    proxy: Proxy,
    reclaimer: Reclaimer,
    metrics_addr: String,
    _agent: Agent,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(tag: &str, faults: impl Fn(&str) -> Vec<String>, held: bool) -> World {
        let cluster = tokio::task::block_in_place(cluster);
        let admin = cluster.client().await;
        let id = format!("{:016x}{:016x}", std::process::id(), rand_nanos());
        let node = create_node(&admin, tag, Some(&id))
            .await
            .metadata
            .name
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let machine_id = write_file(dir.path(), "machine-id", &format!("{id}\n"));
        let prog = UniqueProgram::new(&format!("ew{tag}"));
        let rules = rules_for(dir.path(), "rules.toml", &prog, "");
        let faults = faults(&format!("/api/v1/nodes/{node}"));
        let faults: Vec<&str> = faults.iter().map(String::as_str).collect();
        let proxy = Proxy::start(cluster, dir.path(), &faults, held);
        let kubeconfig = via_proxy(&cluster.reclaimer_kubeconfig(dir.path()).await, &proxy);
        let agent = Agent::start(&[]);
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let reclaimer = Reclaimer::start(
            &[
                "--socket",
                agent.socket.to_str().unwrap(),
                "--node-name",
                &node,
                "--machine-id-file",
                &machine_id,
                "--rules-file",
                &rules,
                "--recheck-interval",
                "500ms",
                "--metrics-addr",
                &metrics_addr,
            ],
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        );
        let w = World {
            admin,
            node,
            prog,
            proxy,
            reclaimer,
            metrics_addr,
            _agent: agent,
            _dir: dir,
        };
        w.wait_log("rules loaded from", 1);
        // The start-up check found no request on the Node: armed.
        w.wait_log("); armed", 1);
        w
    }

    fn wait_log(&self, needle: &str, times: usize) -> String {
        tokio::task::block_in_place(|| self.reclaimer.wait_log(needle, times, WAIT))
    }

    /// Starts the matching program; waits until the Node carries the
    /// request and the Event exists, then a few recheck intervals more.
    /// Asserts the request, one Event and one write in the reclaimer's log.
    async fn fire_and_settle(&self) -> Child {
        let running = self.prog.spawn(120, &[]);
        let reason = format!("process-match: {}", self.prog.name);
        requested_once(&self.admin, &self.node, &reason).await;
        let logs = self.reclaimer.logs();
        assert_eq!(logs.matches(WRITTEN).count(), 1, "{logs}");
        assert_eq!(logs.matches("process matched").count(), 1, "{logs}");
        running
    }

    /// The proxy's log of this Node's requests (GET and PATCH), in order.
    fn node_requests(&self) -> Vec<Entry> {
        let path = format!("/api/v1/nodes/{}", self.node);
        let all = self.proxy.entries();
        all.into_iter().filter(|e| e.path == path).collect()
    }

    /// Asserts that exactly one Event was created through the proxy.
    fn one_event_posted(&self) {
        let posts: Vec<Entry> = self
            .proxy
            .entries()
            .into_iter()
            .filter(|e| e.method == "POST" && e.path == "/api/v1/namespaces/default/events")
            .collect();
        assert_eq!(posts.len(), 1, "{posts:#?}");
        assert_eq!(posts[0].status, 201, "{posts:#?}");
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The value of the reclaimer's metric `name` (`execwatch_reclaimer_<name>`).
fn metric(addr: &str, name: &str) -> f64 {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to --metrics-addr");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let key = format!("execwatch_reclaimer_{name} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"));
    line[key.len()..].trim().parse().unwrap()
}

fn rand_nanos() -> u32 {
    std::time::UNIX_EPOCH.elapsed().unwrap().subsec_nanos()
}

/// A copy of the ServiceAccount kubeconfig `sa` whose server is the proxy
/// (plain HTTP, so no CA); the token stays. JSON is YAML.
fn via_proxy(sa: &Path, proxy: &Proxy) -> PathBuf {
    let mut kc = Kubeconfig::read_from(sa).expect("read the reclaimer's kubeconfig");
    for named in &mut kc.clusters {
        let cluster = named.cluster.as_mut().expect("a cluster entry");
        cluster.server = Some(proxy.url());
        cluster.certificate_authority = None;
    }
    let path = sa.with_file_name("via-proxy.kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    path
}

/// Proxy flags: the first `times` PATCHes of `node` get 429 with a
/// Retry-After of `seconds`.
fn throttled_patches(node: &str, times: u32, seconds: u32) -> Vec<String> {
    let patch = format!("PATCH {node}");
    let (times, seconds) = (times.to_string(), seconds.to_string());
    ["--fail", &patch, "429", &times, "--retry-after", &seconds]
        .map(String::from)
        .to_vec()
}

/// The PATCHes among `requests`.
fn patches(requests: &[Entry]) -> Vec<&Entry> {
    requests.iter().filter(|e| e.method == "PATCH").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_patches_wait_the_retry_after_then_write_once() {
    let w = World::new("429", |node| throttled_patches(node, 2, 1), false).await;
    let running = w.fire_and_settle().await;

    let requests = w.node_requests();
    let patches = patches(&requests);
    let statuses: Vec<(u16, bool)> = patches.iter().map(|e| (e.status, e.injected)).collect();
    assert_eq!(
        statuses,
        [(429, true), (429, true), (200, false)],
        "{requests:#?}"
    );
    // After each 429 the reclaimer's next request for its Node is a fresh
    // read, no sooner than Retry-After: 1 s after the 429's request arrived
    // (it could only start waiting once that request was answered).
    for (i, e) in requests.iter().enumerate() {
        if !e.injected {
            continue;
        }
        let next = requests.get(i + 1).expect("a request after the 429");
        let gap = next.t0 - e.t0;
        eprintln!("429 -> next {} after {gap:.3} s", next.method);
        assert!(gap >= 1.0, "retried after {gap:.3} s: {requests:#?}");
        assert_eq!(next.method, "GET", "re-read before retrying: {requests:#?}");
    }
    w.wait_log("patch refused for now; retrying", 2);
    w.one_event_posted();
    stop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_patch_is_answered_by_reading_again_and_writing_once() {
    let w = World::new(
        "409",
        |node| {
            ["--fail", &format!("PATCH {node}"), "409", "1"]
                .map(String::from)
                .to_vec()
        },
        false,
    )
    .await;
    let running = w.fire_and_settle().await;
    w.wait_log("Node changed while patching (409); reading it again", 1);

    let requests = w.node_requests();
    let patches = patches(&requests);
    let statuses: Vec<(u16, bool)> = patches.iter().map(|e| (e.status, e.injected)).collect();
    assert_eq!(statuses, [(409, true), (200, false)], "{requests:#?}");
    // Between the conflict and the write: a fresh read of the Node.
    let conflict = requests.iter().position(|e| e.injected).unwrap();
    let write = requests
        .iter()
        .position(|e| e.method == "PATCH" && e.status == 200)
        .unwrap();
    let between = &requests[conflict + 1..write];
    assert!(
        !between.is_empty() && between.iter().all(|e| e.method == "GET" && e.status == 200),
        "{requests:#?}"
    );
    w.one_event_posted();
    stop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_reads_are_retried_then_the_node_is_written_once() {
    let w = World::new(
        "503",
        |node| {
            ["--fail", &format!("GET {node}"), "503", "2"]
                .map(String::from)
                .to_vec()
        },
        // Held until the start-up check has passed: the faults hit the read
        // that precedes the write.
        true,
    )
    .await;
    let before = w.node_requests().len();
    w.proxy.arm();
    let running = w.fire_and_settle().await;

    let requests = w.node_requests();
    let ours = &requests[before..];
    let seen: Vec<(&str, u16, bool)> = ours
        .iter()
        .take(4)
        .map(|e| (e.method.as_str(), e.status, e.injected))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", 503, true),
            ("GET", 503, true),
            ("GET", 200, false),
            ("PATCH", 200, false)
        ],
        "{requests:#?}"
    );
    // Only the rechecks' reads follow the one write.
    assert_eq!(patches(&requests).len(), 1, "{requests:#?}");
    assert!(ours[4..].iter().all(|e| e.method == "GET"), "{requests:#?}");
    w.wait_log("GET Node refused for now; retrying", 2);
    w.one_event_posted();
    stop(running);
}

/// docs/operating.md promises, for 429 and 5xx: `patch refused for now;
/// retrying` in the log, each attempt counted in `patch_errors_total`, and
/// the server's Retry-After honoured up to 60 s. (kube-client 5's own retry
/// layer would answer 429, 503 and 504 before node.rs sees them, silently
/// and uncapped: the reclaimer turns it off.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_logged_and_counted_as_documented() {
    let w = World::new("429log", |node| throttled_patches(node, 2, 1), false).await;
    let running = w.fire_and_settle().await;
    let logs = w.reclaimer.logs();
    assert_eq!(
        logs.matches("patch refused for now; retrying").count(),
        2,
        "{logs}"
    );
    assert_eq!(metric(&w.metrics_addr, "patch_errors_total"), 2.0);
    assert_eq!(metric(&w.metrics_addr, "patches_total"), 1.0);
    stop(running);
}

/// docs/operating.md: the server's Retry-After is honoured "at most 60 s".
/// A 429 asking for 120 s holds the reclaim back a minute, not two.
/// Slow by nature: it waits out the minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_a_minute_is_capped_at_a_minute() {
    let w = World::new("429cap", |node| throttled_patches(node, 1, 120), false).await;
    let running = w.prog.spawn(180, &[]);
    let requests = eventually(
        "the PATCH after the 429",
        Duration::from_secs(150),
        || async {
            let requests = w.node_requests();
            (patches(&requests).len() == 2).then_some(requests)
        },
    )
    .await;
    let throttled = requests.iter().position(|e| e.injected).unwrap();
    let gap = requests[throttled + 1].t0 - requests[throttled].t0;
    eprintln!("Retry-After: 120 -> next request after {gap:.1} s");
    assert!(
        (60.0..65.0).contains(&gap),
        "waited {gap:.1} s: {requests:#?}"
    );
    stop(running);
}
