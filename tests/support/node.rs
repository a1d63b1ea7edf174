//! A real single-node Kubernetes v1.20.2 on this machine, for the tests that
//! run deploy/ as users install it: kube-apiserver, controller-manager,
//! scheduler, and a kubelet with containerd + runc (tests/kube/start-node.sh).
//!
//! The test process owns the node (`EXECWATCH_KUBE_OWNER_PID`): if it dies,
//! the script's watchdog tears everything down. [`TestNode`]'s `Drop` does it
//! otherwise, printing the kubelet's, containerd's and the pods' logs first
//! when the test is failing. Teardown undoes every change to the host;
//! [`HostState`] is what a test compares before and after.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the images are packed and tests/kube lives.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`; panics with its output unless it succeeds. Returns stdout.
pub fn run(mut cmd: Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The execwatch image as deploy/image/build.sh builds it (static binaries,
/// the name deploy/base/kustomization.yaml maps `execwatch` to). Returns the
/// archive; a no-op build when tests/run.sh built it already.
pub fn build_image() -> PathBuf {
    let mut cmd = Command::new(repo().join("deploy/image/build.sh"));
    // Without what `cargo test` adds to a test's environment (CARGO_*,
    // OUT_DIR, the library path): the build then sees the environment
    // tests/run.sh built the image in, and finds it up to date instead of
    // rebuilding it for minutes.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let added = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || ["OUT_DIR", "LD_LIBRARY_PATH", "RUSTC", "RUSTDOC"].contains(&key.as_str());
        if added {
            cmd.env_remove(&key);
        }
    }
    let out = run(cmd);
    let path = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    assert!(path.is_file(), "build.sh gave no archive: {out}");
    path
}

/// An image holding tests/kube/pause.c's static binary as `/<name>`, its
/// entrypoint: a process with that comm that sleeps until SIGTERM.
pub fn sleeper_image(dir: &Path, name: &str, reference: &str) -> PathBuf {
    let bin = dir.join(name);
    let mut cc = Command::new("cc");
    cc.args(["-static", "-Os", "-o"])
        .arg(&bin)
        .arg(repo().join("tests/kube/pause.c"));
    run(cc);
    let archive = dir.join(format!("{name}.oci.tar"));
    let mut pack = Command::new("python3");
    pack.arg(repo().join("deploy/image/oci_pack.py"))
        .arg("--out")
        .arg(&archive)
        .args(["--ref", reference, "--user", "65534:65534", "--entrypoint"])
        .arg(format!("/{name}"))
        .arg("--add")
        .arg(format!("{}:/{name}:0755", bin.display()));
    run(pack);
    archive
}

/// What teardown must leave as it found it.
#[derive(Debug, PartialEq, Eq)]
pub struct HostState {
    /// vm.overcommit_memory, kernel.panic, kernel.panic_on_oops.
    pub sysctls: Vec<(String, String)>,
    /// Which of the host paths the kubelet and containerd create exist.
    pub paths: Vec<(String, bool)>,
    /// The kubepods cgroups of every hierarchy.
    pub kubepods: Vec<String>,
}

impl HostState {
    pub fn now() -> HostState {
        let sysctls = [
            "vm/overcommit_memory",
            "kernel/panic",
            "kernel/panic_on_oops",
        ]
        .iter()
        .map(|k| {
            let v = fs::read_to_string(format!("/proc/sys/{k}")).unwrap();
            (k.to_string(), v.trim().to_string())
        })
        .collect();
        let paths = [
            "/var/lib/kubelet",
            "/var/log/pods",
            "/var/log/containers",
            "/run/containerd",
        ]
        .iter()
        .map(|p| (p.to_string(), Path::new(p).exists()))
        .collect();
        let mut kubepods: Vec<String> = fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join("kubepods"))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        kubepods.sort();
        HostState {
            sysctls,
            paths,
            kubepods,
        }
    }
}

/// The running node and its control plane.
pub struct TestNode {
    /// start-node.sh's DIR: kubeconfig, logs, containerd.sock, ...
    pub dir: PathBuf,
    /// https://127.0.0.1:`port` (admin kubeconfig: [`TestNode::kubeconfig`]).
    pub port: u16,
    /// The Node's name: this machine's hostname.
    pub name: String,
    stopped: bool,
}

impl TestNode {
    /// Starts the node with `images` imported into containerd; returns once
    /// the Node is Ready. Builds the Kubernetes binaries on first use.
    pub fn start(images: &[&Path]) -> TestNode {
        let t = std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .as_millis();
        let dir = PathBuf::from(format!("/tmp/execwatch-node-{}-{t}", std::process::id()));
        let mut cmd = Command::new(repo().join("tests/kube/start-node.sh"));
        cmd.arg(&dir)
            .args(images)
            .env("EXECWATCH_KUBE_OWNER_PID", std::process::id().to_string());
        let out = cmd.output().expect("run start-node.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stderr}");
        if !out.status.success() {
            // start-node.sh took everything down and kept DIR for its logs;
            // their tails are in the output above. Nothing stays behind.
            let _ = fs::remove_dir_all(&dir);
            panic!("start-node.sh failed ({})", out.status);
        }
        let port = String::from_utf8_lossy(&out.stdout);
        let port = port.lines().last().unwrap_or_default().trim().to_string();
        let port = port.parse().unwrap_or_else(|_| panic!("no port: {port:?}"));
        let name = fs::read_to_string(dir.join("node-name")).expect("node-name");
        TestNode {
            dir,
            port,
            name: name.trim().to_string(),
            stopped: false,
        }
    }

    /// The admin kubeconfig (user `admin` in `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// An admin client.
    pub async fn client(&self) -> kube::Client {
        super::apiserver::client_for(&self.kubeconfig()).await
    }

    /// `kubectl --kubeconfig <admin> args...`; panics unless it succeeds.
    pub fn kubectl(&self, args: &[&str]) -> String {
        run(self.kubectl_cmd(args))
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--request-timeout=20s")
            .args(args);
        cmd
    }

    /// `ctr` against this node's containerd, namespace k8s.io.
    pub fn ctr(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["-n", "k8s.io"])
            .args(args);
        run(cmd)
    }

    /// Imports an OCI image archive into containerd's k8s.io namespace.
    pub fn import(&self, archive: &Path) {
        self.ctr(&["images", "import", archive.to_str().unwrap()]);
    }

    /// The host pid of a running container (`containerd://<id>` or `<id>`).
    pub fn container_pid(&self, container_id: &str) -> u32 {
        let id = container_id.trim_start_matches("containerd://");
        let tasks = self.ctr(&["tasks", "ls"]);
        tasks
            .lines()
            .skip(1)
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id)).then(|| f.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no task {id} in:\n{tasks}"))
    }

    /// Tails of the daemons' logs and every container log on the node,
    /// and the host's TCP connections.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (name, lines) in [
            ("kubelet", 80),
            ("containerd", 40),
            ("controller-manager", 20),
            ("scheduler", 10),
            ("apiserver", 20),
            ("service-proxy", 20),
        ] {
            out += &tail(name, &self.dir.join(format!("{name}.log")), lines);
        }
        if let Ok(ss) = Command::new("ss").args(["-tnp"]).output() {
            out += "\n===== TCP connections =====\n";
            out += &String::from_utf8_lossy(&ss.stdout);
        }
        let mut pod_logs = Vec::new();
        for pod in fs::read_dir("/var/log/pods")
            .into_iter()
            .flatten()
            .flatten()
        {
            for c in fs::read_dir(pod.path()).into_iter().flatten().flatten() {
                for f in fs::read_dir(c.path()).into_iter().flatten().flatten() {
                    pod_logs.push(f.path());
                }
            }
        }
        pod_logs.sort();
        for f in pod_logs {
            out += &tail("pod log", &f, 40);
        }
        out
    }

    /// Tears everything down (idempotent).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let mut cmd = Command::new(repo().join("tests/kube/start-node.sh"));
        cmd.arg("--stop").arg(&self.dir);
        let out = cmd.output().expect("run start-node.sh --stop");
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "start-node.sh --stop failed");
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        if !self.stopped {
            self.stopped = true;
            let _ = Command::new(repo().join("tests/kube/start-node.sh"))
                .arg("--stop")
                .arg(&self.dir)
                .status();
        }
    }
}

/// The last `lines` lines of a log file under a title, each cut to 400
/// characters (some controller errors print whole objects on one line).
fn tail(title: &str, path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let all: Vec<&str> = text.lines().collect();
    let mut out = format!("\n===== {title} ({}) =====\n", path.display());
    for line in &all[all.len().saturating_sub(lines)..] {
        out.extend(line.chars().take(400));
        out.push('\n');
    }
    out
}
