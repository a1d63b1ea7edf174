//! The examples of the docs, run as the docs show them against a real
//! agent: README.md's grpcurl commands (read from README.md, so this test
//! follows the text), the Rust consumer docs/policy-engine.md quotes
//! (docs/examples/consumer.rs, also an example target) and the Python
//! consumer's documented command. grpcurl and grpcio come from tests/run.sh.
#![cfg(target_os = "linux")]

mod support;

#[allow(dead_code)]
#[path = "../docs/examples/consumer.rs"]
mod consumer;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// The ```sh blocks of `section` (a heading line) in `file`, up to the next
/// heading of the same or a higher level, as lines.
fn sh_lines(file: &str, section: &str) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let at = text
        .find(&format!("\n{section}\n"))
        .unwrap_or_else(|| panic!("{file} has no {section:?}"));
    let level = section.split(' ').next().unwrap();
    let body = &text[at + section.len() + 2..];
    let end = body
        .lines()
        .position(|l| {
            l.split(' ').next().is_some_and(|h| {
                !h.is_empty() && h.chars().all(|c| c == '#') && h.len() <= level.len()
            })
        })
        .unwrap_or(usize::MAX);
    let mut lines = Vec::new();
    let mut in_sh = false;
    for line in body.lines().take(end) {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && !l.is_empty() && !l.starts_with('#') => lines.push(l.to_string()),
            _ => {}
        }
    }
    assert!(
        !lines.is_empty(),
        "no ```sh lines under {section:?} in {file}"
    );
    lines
}

/// Runs one README line in bash as root (`sudo` is the identity), with `S`
/// set to the agent's socket and `./target/release/agent` this build's agent.
fn readme_command(line: &str, socket: &Path, workdir: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("sudo() {{ \"$@\"; }}\n{line}"))
        .env("S", socket)
        .current_dir(workdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// Reads `child`'s stdout on a thread, line by line.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Kills a process group started with `process_group(0)`, and reaps it.
fn kill_group(mut child: Child) -> String {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

#[test]
fn the_readme_grpcurl_commands_run_as_written() {
    let lines = sh_lines("README.md", "### Tail the stream with grpcurl");
    let agent = Agent::start(&[]);
    // `./target/release/agent` in the README is this build's agent here.
    let work = world_readable_tempdir();
    std::fs::create_dir_all(work.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_agent"),
        work.path().join("target/release/agent"),
    )
    .unwrap();
    let java = UniqueProgram::named("java");
    let mut ran = 0;
    for line in &lines {
        if line.starts_with("S=") {
            continue;
        }
        ran += 1;
        if !line.contains("/Watch") {
            let out = readme_command(line, &agent.socket, work.path())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{line}\n{out:?}");
            let expected = if line.contains(" list") {
                "execwatch.v1.ExecEvents"
            } else if line.contains("/GetStats") {
                "\"detector\": \"netlink\""
            } else if line.contains("health-check") {
                "SERVING"
            } else {
                panic!("README.md: no expectation for {line:?}")
            };
            assert!(text.contains(expected), "{line}\n{text}");
            continue;
        }
        // A Watch runs until stopped: launch what it selects until it
        // prints it.
        let unique = UniqueProgram::new("ewreadme");
        let (launch, expected): (Box<dyn Fn() -> Child>, String) = if line.contains("\"comms\"") {
            assert!(line.contains("\"java\""), "{line}");
            (
                Box::new(|| java.spawn(1, &[])),
                "\"comm\": \"java\"".to_string(),
            )
        } else if line.contains("\"uids\"") {
            assert!(
                line.contains("[1000]") && line.contains("\"-jar\""),
                "{line}"
            );
            (
                Box::new(|| {
                    let mut cmd = Command::new("bash");
                    cmd.args(["-c", "exec -a -jar sleep 1"]).uid(1000).gid(1000);
                    cmd.spawn().unwrap()
                }),
                "\"-jar\"".to_string(),
            )
        } else {
            (
                Box::new(|| unique.spawn(1, &[])),
                format!("\"comm\": \"{}\"", unique.name),
            )
        };
        let mut tail = readme_command(line, &agent.socket, work.path())
            .spawn()
            .unwrap();
        let rx = lines_of(&mut tail);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        let mut children = Vec::new();
        while !seen.iter().any(|l: &String| l.contains(&expected)) {
            assert!(
                Instant::now() < deadline,
                "{line}: no {expected} in\n{}",
                seen.join("\n")
            );
            children.push(launch());
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
                seen.push(l);
            }
        }
        let err = kill_group(tail);
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(
            !err.contains("ERROR") && !err.contains("Code:"),
            "{line}\n{err}"
        );
        if line.contains("\"omit_fields\": [\"cwd\"]") {
            assert!(!seen.iter().any(|l| l.contains("\"cwd\"")), "{line}");
        }
    }
    assert!(ran >= 4, "README.md shows only {ran} commands: {lines:?}");
}

/// docs/policy-engine.md quotes docs/examples/consumer.rs whole.
#[test]
fn the_policy_engine_page_quotes_the_rust_consumer() {
    let page = std::fs::read_to_string("docs/policy-engine.md").unwrap();
    let file = std::fs::read_to_string("docs/examples/consumer.rs").unwrap();
    assert!(
        page.contains(&format!("```rust\n{file}```\n")),
        "docs/policy-engine.md does not quote docs/examples/consumer.rs as it is"
    );
}

/// The Rust consumer reports a watched program running when it subscribes
/// (from the snapshot) and one launched later (a live exec).
#[tokio::test(flavor = "multi_thread")]
async fn the_rust_consumer_reports_running_and_launched_programs() {
    let agent = Agent::start(&[]);
    let prog = UniqueProgram::new("ewdocrs");
    let running = prog.spawn(30, &[]);
    wait_exec(running.id(), &prog.name);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let socket = agent.socket.to_str().unwrap().to_string();
    let watched = vec![prog.name.clone()];
    let task = tokio::spawn(async move {
        consumer::consume(&socket, watched, move |p| {
            let _ = tx.send((p.pid, p.comm.clone()));
        })
        .await
    });
    assert_eq!(
        next(&mut rx).await,
        (running.id() as i32, prog.name.clone())
    );
    let launched = prog.spawn(1, &[]);
    assert_eq!(
        next(&mut rx).await,
        (launched.id() as i32, prog.name.clone())
    );
    assert!(!task.is_finished());
    task.abort();
    stop(launched);
    stop(running);
}

/// The next process the consumer reported.
async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(i32, String)>) -> (i32, String) {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the consumer reported nothing")
        .expect("the consumer ended")
}

/// The command docs/policy-engine.md gives for the Python consumer: the
/// snapshot, a live launch, then Ctrl-C ends it with status 0 and no
/// traceback; with `--max-seconds` it ends by itself the same way.
#[test]
fn the_python_consumer_runs_as_documented() {
    let line = sh_lines("docs/policy-engine.md", "### Any other language")
        .into_iter()
        .find(|l| l.contains("consumer.py"))
        .expect("docs/policy-engine.md shows no consumer.py command");
    let documented = "/tmp/execwatch/agent.sock";
    assert!(line.contains(documented), "{line}");
    let agent = Agent::start(&[]);
    let line = line.replace(documented, agent.socket.to_str().unwrap());
    let prog = UniqueProgram::new("ewdocpy");

    let mut consumer = readme_command(&line, &agent.socket, Path::new("."))
        .spawn()
        .unwrap();
    let rx = lines_of(&mut consumer);
    let first = rx.recv_timeout(Duration::from_secs(60)).expect("no output");
    assert!(first.starts_with("snapshot_complete processes="), "{first}");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Other programs run on the machine too: look for ours among them.
    let launched = 'found: loop {
        let child = prog.spawn(1, &[]);
        let ours = format!("exec pid={} comm={}", child.id(), prog.name);
        let wait = Instant::now() + Duration::from_secs(2);
        while let Ok(l) = rx.recv_timeout(wait.saturating_duration_since(Instant::now())) {
            if l.starts_with(&ours) {
                break 'found child;
            }
        }
        stop(child);
        assert!(Instant::now() < deadline, "the consumer printed no exec");
    };
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(consumer.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = consumer.wait().unwrap();
    let mut err = String::new();
    consumer
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    stop(launched);
    assert!(status.success(), "{status:?}\n{err}");
    assert!(!err.contains("Traceback"), "{err}");

    let started = Instant::now();
    let out = readme_command(
        &format!("{line} --max-seconds 2"),
        &agent.socket,
        Path::new("."),
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(!err.contains("Traceback"), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stopped after 2.0s"),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// The pages for users: README.md, docs/*.md and fuzz/README.md.
fn pages() -> Vec<std::path::PathBuf> {
    let mut pages: Vec<_> = std::fs::read_dir("docs")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.extend(["README.md".into(), "fuzz/README.md".into()]);
    pages
}

/// A page's text outside its code blocks.
fn prose(page: &Path) -> String {
    let text = std::fs::read_to_string(page).unwrap();
    let mut in_code = false;
    let mut prose = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    prose
}

/// The anchors GitHub gives a page's headings.
fn anchors(page: &Path) -> Vec<String> {
    prose(page)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// Every relative link of the pages reaches a file, and a heading where it
/// names one; every file of the repository they name exists; and they speak
/// to users, not of how the work went.
#[test]
fn the_pages_link_to_what_exists_and_carry_no_lab_log() {
    let numbered = regex::Regex::new(r"\bissues? #?[0-9]|#[0-9]+\b").unwrap();
    let named = regex::Regex::new(
        r"`((?:agent|reclaimer|src|tests|deploy|benches|fuzz|docs|proto)/[A-Za-z0-9_./-]*)`",
    )
    .unwrap();
    for page in pages() {
        let text = prose(&page);
        for (at, _) in text.match_indices("](") {
            let link = &text[at + 2..];
            let link = &link[..link.find(')').unwrap()];
            if link.starts_with("http") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            assert!(target.exists(), "{}: {link} leads nowhere", page.display());
            assert!(
                anchor.is_empty() || anchors(&target).iter().any(|a| a == anchor),
                "{}: {link}: no such heading",
                page.display()
            );
        }
        // Files of this repository named in the text exist (5-Spot's page
        // names 5-Spot's), unless git ignores them (what a run generates).
        for path in named.captures_iter(&text).map(|c| c[1].to_string()) {
            let ignored = || {
                Command::new("git")
                    .args(["check-ignore", "-q", &path])
                    .status()
                    .unwrap()
                    .success()
            };
            assert!(
                page.ends_with("5-spot.md") || Path::new(&path).exists() || ignored(),
                "{}: `{path}` does not exist",
                page.display()
            );
        }
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("this machine"),
            "{}: \"this machine\"",
            page.display()
        );
        assert!(
            !numbered.is_match(&lower),
            "{}: an issue number",
            page.display()
        );
    }
}

/// Code, manifests and scripts point users at sections of the docs
/// (`docs/operating.md#memory`): every such section exists.
#[test]
fn the_sections_the_repository_points_at_exist() {
    let reference = regex::Regex::new(r"(docs/[a-z0-9-]+\.md)#([a-z0-9-]+)").unwrap();
    let files = Command::new("git").arg("ls-files").output().unwrap().stdout;
    for file in String::from_utf8(files).unwrap().lines() {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for c in reference.captures_iter(&text) {
            assert!(
                anchors(Path::new(&c[1])).iter().any(|a| a == &c[2]),
                "{file}: {}#{} has no such section",
                &c[1],
                &c[2]
            );
        }
    }
}
