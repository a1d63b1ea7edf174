//! execwatch against 5-Spot's /proc-poll agent, on the same launches.
//!
//! The test carries an oracle that applies that agent's documented rules to
//! live processes: every 250 ms (`poll_interval_ms` as the 5-Spot controller
//! renders it) it lists `/proc` and matches each process's
//! `/proc/<pid>/comm` exactly against `match_commands`, and its whole
//! `/proc/<pid>/cmdline`, NULs turned into spaces, against
//! `match_argv_substrings`. A corpus of launches runs one at a time with
//! the oracle and a dry-run reclaimer on a real agent watching; each launch
//! has a rule of its own, so both deciders' answers are told apart by the
//! pattern.
//!
//! Every launch the oracle decides on, having lived at least one poll
//! period, the reclaimer decides on too, and no later than the oracle (with
//! one poll period of slack for a loaded machine; the measured times are
//! printed). The launches the reclaimer decides on and the oracle does not
//! are printed with the reason.
#![cfg(target_os = "linux")]

mod support;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{symlink, FileExt};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use support::*;

/// 5-Spot's poll period as its controller renders it.
const POLL: Duration = Duration::from_millis(250);
const WAIT: Duration = Duration::from_secs(10);
/// How long the launches that live long enough live.
const LIFE: &str = "1.2";

/// 5-Spot's /proc-poll agent, reduced to its decision: the first time each
/// rule matched a live process.
struct Oracle {
    seen: Arc<Mutex<HashMap<String, SystemTime>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Oracle {
    fn start(commands: Vec<String>, substrings: Vec<String>) -> Oracle {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now();
            while !halt.load(Ordering::Relaxed) {
                for pid in fs::read_dir("/proc").unwrap().flatten() {
                    let Ok(pid) = pid.file_name().to_string_lossy().parse::<u32>() else {
                        continue;
                    };
                    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    let hits = commands
                        .iter()
                        .filter(|c| **c == comm.trim_end_matches('\n'));
                    let hits = hits.chain(substrings.iter().filter(|s| line.contains(s.as_str())));
                    for rule in hits {
                        s.lock()
                            .unwrap()
                            .entry(rule.clone())
                            .or_insert_with(SystemTime::now);
                    }
                }
                next += POLL;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Oracle {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self, rule: &str) -> Option<SystemTime> {
        self.seen.lock().unwrap().get(rule).copied()
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().map(|t| t.join());
    }
}

/// One launch of the corpus: its rule (a command or a substring) and how
/// it is started.
struct Case {
    name: &'static str,
    rule: Rule,
    /// Lives at least one poll period.
    lasting: bool,
    /// A rename after the exec, which execwatch hears of as a comm event.
    rename: bool,
}

enum Rule {
    Command(String),
    Substring(String),
}

impl Rule {
    fn pattern(&self) -> &str {
        match self {
            Rule::Command(s) | Rule::Substring(s) => s,
        }
    }
}

/// A name unique to this run, at most 15 bytes (a comm).
fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100_000;
    format!("{prefix}{n:05}")
}

/// When the reclaimer decided on `pattern`, from its JSON log.
fn decided(logs: &str, pattern: &str) -> Option<SystemTime> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "process matched: requesting reclaim" && v["pattern"] == pattern)
        .map(|v| {
            let t: jiff::Timestamp = v["timestamp"].as_str().unwrap().parse().unwrap();
            SystemTime::from(t)
        })
}

fn ms(from: SystemTime, to: Option<SystemTime>) -> String {
    match to {
        Some(t) => match t.duration_since(from) {
            Ok(d) => format!("{:>7.1} ms", d.as_secs_f64() * 1e3),
            Err(e) => format!("{:>7.1} ms", -e.duration().as_secs_f64() * 1e3),
        },
        None => "      never".into(),
    }
}

#[test]
fn execwatch_decides_every_launch_the_proc_poll_agent_decides_and_sooner() {
    let dir = world_readable_tempdir();
    let sleep = which("sleep");
    let copy = |name: &str| {
        let path = dir.path().join(name);
        fs::copy(&sleep, &path).unwrap();
        path
    };
    let sh = |script: &str, args: &[String]| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script, "sh"]).args(args);
        cmd
    };

    // Each case: its rule, and the command that launches it.
    let mut corpus: Vec<(Case, Box<dyn Fn() -> Child>)> = Vec::new();
    let case = |name, rule, lasting, rename| Case {
        name,
        rule,
        lasting,
        rename,
    };

    let plain = unique("ewplain");
    let path = copy(&plain);
    corpus.push((
        case("plain exec", Rule::Command(plain), true, false),
        Box::new(move || Command::new(&path).arg(LIFE).spawn().unwrap()),
    ));

    // The shell renames itself after its exec.
    let renamed = unique("ewrename");
    let script = format!("printf {renamed} > /proc/$$/comm; sleep {LIFE}; :");
    corpus.push((
        case(
            "rename after exec (leader)",
            Rule::Command(renamed),
            true,
            true,
        ),
        Box::new(move || sh(&script, &[]).spawn().unwrap()),
    ));

    // A thread other than the leader takes the name: neither the oracle
    // (which reads the leader's comm) nor the agent (which reports only a
    // leader's rename) decides on it.
    let thread = unique("ewthread");
    let name = thread.clone();
    corpus.push((
        case(
            "rename after exec (non-leader thread)",
            Rule::Command(thread),
            true,
            true,
        ),
        Box::new(move || renamed_thread(&name)),
    ));

    let main = unique("com.vendor.Main");
    corpus.push((
        case(
            "200 KB command line, pattern at the end",
            Rule::Substring(main.clone()),
            true,
            false,
        ),
        Box::new(move || {
            let mut args = vec!["x".to_string(); 100_000];
            args.push(main.clone());
            sh("read x", &args).stdin(Stdio::piped()).spawn().unwrap()
        }),
    ));

    let alias = unique("ewalias");
    let script = format!("exec -a {alias} sleep {LIFE}");
    corpus.push((
        case("exec -a", Rule::Substring(alias), true, false),
        Box::new(move || Command::new("bash").args(["-c", &script]).spawn().unwrap()),
    ));

    let interpreted = unique("ewscript");
    let script = dir.path().join(&interpreted);
    fs::write(&script, format!("#!/bin/sh\nsleep {LIFE}\n")).unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    corpus.push((
        case(
            "interpreter script",
            Rule::Command(interpreted),
            true,
            false,
        ),
        Box::new(move || Command::new(&script).spawn().unwrap()),
    ));

    let memfd = unique("ewmemfd");
    let image = fs::read(&sleep).unwrap();
    corpus.push((
        case("memfd exec", Rule::Substring(memfd.clone()), true, false),
        Box::new(move || memfd_exec(&image, &memfd)),
    ));

    let link = unique("ewlink");
    let target = copy(&unique("ewtarget"));
    let link_path = dir.path().join(&link);
    symlink(&target, &link_path).unwrap();
    corpus.push((
        case("symlinked launcher", Rule::Command(link), true, false),
        Box::new(move || Command::new(&link_path).arg(LIFE).spawn().unwrap()),
    ));

    let namespaced = unique("ewpidns");
    let path = copy(&namespaced);
    corpus.push((
        case("new pid namespace", Rule::Command(namespaced), true, false),
        Box::new(move || {
            Command::new("unshare")
                .args(["--pid", "--fork"])
                .arg(&path)
                .arg(LIFE)
                .spawn()
                .unwrap()
        }),
    ));

    let short = unique("ewshort");
    let path = copy(&short);
    corpus.push((
        case("20 ms program", Rule::Command(short), false, false),
        Box::new(move || Command::new(&path).arg("0.02").spawn().unwrap()),
    ));

    let (mut commands, mut substrings) = (Vec::new(), Vec::new());
    for (c, _) in &corpus {
        match &c.rule {
            Rule::Command(s) => commands.push(s.clone()),
            Rule::Substring(s) => substrings.push(s.clone()),
        }
    }
    let toml = format!("match_commands = {commands:?}\nmatch_argv_substrings = {substrings:?}\n");
    let rules = write_file(dir.path(), "rules.toml", &toml);
    let agent = Agent::start(&[]);
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &["--log-format=json"]);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    reclaimer.wait_log("rules loaded from", 1, WAIT);
    // The stream with the rules' selector is under way.
    std::thread::sleep(Duration::from_secs(1));
    let oracle = Oracle::start(commands, substrings);

    let mut report = Vec::new();
    let mut decisions = 0;
    for (case, launch) in &corpus {
        let pattern = case.rule.pattern();
        let at = SystemTime::now();
        let mut child = launch();
        let started = Instant::now();
        // Decided, or not, within the program's life and a poll after it.
        let mut execwatch = None;
        while started.elapsed() < Duration::from_secs(3) {
            execwatch = decided(&reclaimer.logs(), pattern);
            if execwatch.is_some() && child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(child.stdin.take());
        let _ = child.kill();
        child.wait().unwrap();
        // The oracle's next poll, and the reclaimer armed again.
        std::thread::sleep(POLL * 2);
        if execwatch.is_some() {
            decisions += 1;
            reclaimer.wait_log("armed again", decisions, WAIT);
        }
        let oracle = oracle.seen(pattern);
        report.push(Outcome {
            case,
            at,
            oracle,
            execwatch,
        });
    }

    println!("{:<42} {:>10} {:>10}", "launch", "oracle", "execwatch");
    for o in &report {
        let (oracle, execwatch) = (ms(o.at, o.oracle), ms(o.at, o.execwatch));
        println!("{:<42} {oracle} {execwatch}", o.case.name);
    }
    for o in report
        .iter()
        .filter(|o| o.execwatch.is_some() && o.oracle.is_none())
    {
        let why = if !o.case.lasting {
            "it ended before the oracle's next poll; execwatch hears of every exec"
        } else if o.case.rename {
            "execwatch hears of the rename when it happens, the oracle at a poll"
        } else {
            "the oracle polled before the launch was visible"
        };
        println!("execwatch decides more: {}: {why}", o.case.name);
    }
    for o in &report {
        let name = o.case.name;
        let Some(oracle) = o.oracle.filter(|_| o.case.lasting) else {
            continue;
        };
        let execwatch = o
            .execwatch
            .unwrap_or_else(|| panic!("{name}: the oracle decided, execwatch did not"));
        assert!(
            execwatch <= oracle + POLL,
            "{name}: execwatch decided {:?} after the oracle",
            execwatch.duration_since(oracle).unwrap()
        );
    }
    let short = report.iter().find(|o| !o.case.lasting).unwrap();
    assert!(
        short.execwatch.is_some(),
        "execwatch decides on the 20 ms program"
    );
}

/// What each decider did with one launch.
struct Outcome<'a> {
    case: &'a Case,
    /// When it was launched.
    at: SystemTime,
    oracle: Option<SystemTime>,
    execwatch: Option<SystemTime>,
}

/// A process whose second thread renames itself `name` after the exec;
/// its leader keeps the comm `python3`.
fn renamed_thread(name: &str) -> Child {
    let code = format!(
        "import threading, time\n\
         def named():\n\
         \x20   tid = threading.get_native_id()\n\
         \x20   open(f'/proc/self/task/{{tid}}/comm', 'w').write('{name}')\n\
         \x20   time.sleep({LIFE})\n\
         t = threading.Thread(target=named)\n\
         t.start()\n\
         t.join()\n"
    );
    Command::new("python3").args(["-c", &code]).spawn().unwrap()
}

/// Runs the `sleep` in `image` from a memfd, with `arg0` as its argv[0].
fn memfd_exec(image: &[u8], arg0: &str) -> Child {
    let fd = nix::sys::memfd::memfd_create("ewmemfd", nix::sys::memfd::MFdFlags::empty()).unwrap();
    fs::File::from(fd.try_clone().unwrap())
        .write_all_at(image, 0)
        .unwrap();
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    let child = Command::new(path).arg0(arg0).arg(LIFE).spawn().unwrap();
    drop(fd);
    child
}
