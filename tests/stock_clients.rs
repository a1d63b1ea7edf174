//! Stock gRPC clients, each with its defaults, against the real agent on
//! its Unix socket: Python grpcio (which sends the %-encoded socket path as
//! `:authority`), Node's @grpc/grpc-js, and the project's own client. Then
//! raw HTTP/2 bytes: what the agent advertises, and how it refuses and logs
//! a request it cannot serve. grpcurl is in tests/grpcurl.rs; tests/run.sh
//! installs every client.
#![cfg(target_os = "linux")]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use execwatch::proto::watch_event::Kind;
use execwatch::proto::StatsRequest;
use support::*;

/// The log line of a refusal.
const REFUSED: &str = "refused an HTTP/2 request on the socket";

fn grpcio_calls(target: &str, extra: &[&str]) -> Output {
    let have = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .unwrap();
    assert!(
        have.status.success(),
        "python3 lacks grpcio: run tests/run.sh or `pip install grpcio grpcio-tools`"
    );
    Command::new("python3")
        .arg("tests/fixtures/clients/grpcio_calls.py")
        .arg(target)
        .args(extra)
        .output()
        .unwrap()
}

fn assert_stats_and_health(out: &Output) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("stats detector=netlink"), "{text}");
    assert!(text.contains("health status=1"), "SERVING: {text}");
}

/// grpcio sends `unix:/abs` as `%2F`-encoded and `unix:///abs` as the
/// plain path; both work without a channel option.
#[test]
fn grpcio_calls_work_with_either_unix_target_form_and_no_option() {
    let agent = Agent::start(&[]);
    let socket = agent.socket.display().to_string();
    for target in [format!("unix:{socket}"), format!("unix://{socket}")] {
        assert_stats_and_health(&grpcio_calls(&target, &[]));
    }
    assert!(!agent.logs().contains(REFUSED), "{}", agent.logs());
}

/// The option older agents needed still works.
#[test]
fn grpcio_with_the_old_default_authority_option_still_works() {
    let agent = Agent::start(&[]);
    let target = format!("unix:{}", agent.socket.display());
    assert_stats_and_health(&grpcio_calls(&target, &["--authority", "localhost"]));
}

/// Where tests/run.sh installs @grpc/grpc-js and @grpc/proto-loader:
/// $EXECWATCH_NODE_MODULES, or node/node_modules in the project's cache
/// ($EXECWATCH_CACHE, else ~/.cache/execwatch).
fn node_modules() -> PathBuf {
    let dir = std::env::var_os("EXECWATCH_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("EXECWATCH_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/execwatch")
                });
            cache.join("node/node_modules")
        });
    assert!(
        dir.join("@grpc/grpc-js").is_dir() && dir.join("@grpc/proto-loader").is_dir(),
        "{} lacks @grpc/grpc-js or @grpc/proto-loader: run tests/run.sh",
        dir.display()
    );
    dir
}

#[test]
fn node_grpc_js_watches_until_a_live_exec() {
    let modules = node_modules();
    let agent = Agent::start(&[]);
    let prog = UniqueProgram::new("ewnode");
    let mut node = Command::new("node")
        .arg("tests/fixtures/clients/node_watch.js")
        .arg(&agent.socket)
        .args([prog.name.as_str(), "30"])
        .env("NODE_PATH", &modules)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let first = lines.next().expect("node output").unwrap();
    assert_eq!(first, "subscribed");
    let launched = prog.spawn(0, &["0.3"]);
    let found = lines.next().expect("node output").unwrap();
    let status = node.wait().unwrap();
    let pid = launched.id();
    stop(launched);
    assert!(status.success(), "{found}");
    assert_eq!(found, format!("found {} pid={pid}", prog.name));
}

#[tokio::test]
async fn the_project_client_gets_stats_and_a_live_exec() {
    let agent = Agent::start(&[]);
    let mut client = execwatch::client::exec_events(&agent.socket)
        .await
        .expect("connect");
    let stats = client
        .get_stats(StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.detector, "netlink");
    let mut stream = client.watch(live(false)).await.unwrap().into_inner();
    let prog = UniqueProgram::new("ewrust");
    let child = prog.spawn(0, &["0.3"]);
    let pid = child.id();
    let (ev, _) = until(&mut stream, Duration::from_secs(10), |ev| {
        is_process(ev, pid, false)
    })
    .await;
    stop(child);
    assert!(matches!(&ev.kind, Some(Kind::Exec(p)) if p.comm == prog.name));
}

/// Raw HTTP/2 to the agent's socket.
struct Raw {
    stream: std::os::unix::net::UnixStream,
}

/// A frame the agent wrote.
#[derive(Debug)]
struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Raw {
    /// Connects and sends the preface and an empty SETTINGS frame.
    fn connect(socket: &std::path::Path) -> Raw {
        let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Raw { stream };
        raw.send(PREFACE);
        raw.send(&[0, 0, 0, 0x4, 0x0, 0, 0, 0, 0]);
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends `block` as one HEADERS frame (END_HEADERS, END_STREAM).
    fn headers(&mut self, stream: u32, block: &[u8]) {
        let mut frame = vec![0, 0, block.len() as u8, 0x1, 0x5];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(block);
        self.send(&frame);
    }

    /// The next frame, or None at the end of the connection.
    fn frame(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.stream.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).unwrap();
        Some(Frame {
            kind: head[3],
            stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload,
        })
    }

    /// Frames until one of `kind`.
    fn until(&mut self, kind: u8) -> Frame {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.frame() {
                Some(f) if f.kind == kind => return f,
                Some(_) => {}
                None => break,
            }
        }
        panic!("no frame of type {kind:#x}");
    }
}

/// Waits until the agent's log holds `needle` (the log is written as the
/// agent goes).
fn wait_log(agent: &Agent, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = agent.logs();
        if logs.contains(needle) || Instant::now() > deadline {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent's HPACK table is HTTP/2's default 4096 bytes (the normalizer
/// decodes client blocks against that size): its SETTINGS say nothing else.
#[test]
fn the_agent_advertises_the_default_header_table_size() {
    let agent = Agent::start(&[]);
    let mut raw = Raw::connect(&agent.socket);
    let settings = raw.until(0x4);
    for entry in settings.payload.chunks(6) {
        let id = u16::from_be_bytes([entry[0], entry[1]]);
        let value = u32::from_be_bytes(entry[2..6].try_into().unwrap());
        if id == 0x1 {
            assert_eq!(value, 4096, "SETTINGS_HEADER_TABLE_SIZE");
        }
        if id == 0x5 {
            assert_eq!(value, 16_384, "SETTINGS_MAX_FRAME_SIZE");
        }
    }
}

/// A header block that is not valid HPACK ends the connection with
/// GOAWAY PROTOCOL_ERROR, as h2 alone would, and the log says why.
#[test]
fn an_invalid_header_block_ends_the_connection_and_is_logged() {
    let agent = Agent::start(&[]);
    let mut raw = Raw::connect(&agent.socket);
    raw.headers(1, &[0x83, 0xc6]); // dynamic index 70: no such entry
    let goaway = raw.until(0x7);
    assert_eq!(goaway.payload[4..8], [0, 0, 0, 0x1], "PROTOCOL_ERROR");
    let logs = wait_log(&agent, REFUSED);
    let uid = nix::unistd::getuid();
    let line = logs.lines().find(|l| l.contains(REFUSED)).expect(&logs);
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("peer_uid={uid}")), "{line}");
    assert!(line.contains("stream 1 is not valid HPACK"), "{line}");
}

/// A request h2 refuses (here: no `:path`) gets RST_STREAM
/// PROTOCOL_ERROR; the first refusal on a connection is logged, once.
#[test]
fn a_refused_request_is_logged_once_per_connection() {
    let agent = Agent::start(&[]);
    let mut raw = Raw::connect(&agent.socket);
    // POST, http, :authority "/tmp/x" (indexed), no :path.
    let block = [0x83, 0x86, 0x41, 0x06, b'/', b't', b'm', b'p', b'/', b'x'];
    raw.headers(1, &block);
    let reset = raw.until(0x3);
    assert_eq!(
        (reset.stream, reset.payload.as_slice()),
        (1, &[0, 0, 0, 1][..])
    );
    raw.headers(3, &[0x83, 0x86, 0xbe]); // again, the authority by index
    let reset = raw.until(0x3);
    assert_eq!(reset.stream, 3);
    let logs = wait_log(&agent, REFUSED);
    let lines: Vec<_> = logs.lines().filter(|l| l.contains(REFUSED)).collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains("reset stream 1 with PROTOCOL_ERROR (POST )"),
        "{}",
        lines[0]
    );
    // The connection goes on: a ping is answered.
    raw.send(&[0, 0, 8, 0x6, 0x0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let pong = raw.until(0x6);
    assert_eq!(pong.payload, [1, 2, 3, 4, 5, 6, 7, 8]);
}
