//! Selectors end to end, against the real agent and real kernel events: a
//! filtered subscriber gets every matching exec and snapshot entry (by
//! comm, by argv only, by exe only, by uid, outside or inside a pod's
//! cgroup) and the exits of what it was sent, while an unfiltered one beside
//! it still gets everything, complete; a filtered stream that falls behind
//! resyncs like any other; bad selectors are refused with
//! INVALID_ARGUMENT naming the field; and the reclaimer, re-subscribing
//! with new rules, does not miss a program started during the switch.
#![cfg(target_os = "linux")]

mod support;

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use execwatch::proto::{watch_event::Kind, Process, WatchEvent, WatchRequest};
use support::*;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(15);

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs `prog` for 30 s with `argv0` as its argv[0] (so its command line
/// says `argv0` while its comm and exe still say `prog`), as `uid` if given.
fn run_as(prog: &UniqueProgram, argv0: Option<&str>, uid: Option<u32>) -> Child {
    for _ in 0..100 {
        let mut cmd = Command::new(&prog.path);
        cmd.arg("30");
        if let Some(argv0) = argv0 {
            cmd.arg0(argv0);
        }
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        match cmd.spawn() {
            // Another test thread's fork may still hold a fresh copy open.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => {
                let child = other.expect("spawn");
                wait_exec(child.id(), &prog.name);
                return child;
            }
        }
    }
    panic!("{} stayed busy (ETXTBSY)", prog.path.display())
}

/// The process an exec or snapshot entry reports.
fn process(ev: &WatchEvent) -> Option<&Process> {
    match &ev.kind {
        Some(Kind::Exec(p) | Kind::Existing(p)) => Some(p),
        _ => None,
    }
}

/// Reads the snapshot; checks `snapshot_complete` counts its entries and
/// returns the pids it listed.
async fn snapshot_pids(stream: &mut Streaming<WatchEvent>) -> HashSet<i32> {
    let (done, before) = until(stream, WAIT, |ev| {
        matches!(ev.kind, Some(Kind::SnapshotComplete(_)))
    })
    .await;
    assert_contiguous(&before, 1);
    let Some(Kind::SnapshotComplete(c)) = done.kind else {
        unreachable!()
    };
    assert!(before
        .iter()
        .all(|ev| matches!(ev.kind, Some(Kind::Existing(_)))));
    assert_eq!(c.processes, before.len() as u64);
    before.iter().filter_map(process).map(|p| p.pid).collect()
}

/// Reads until execs of all of `pids` have arrived; returns every item
/// read.
async fn until_execs(stream: &mut Streaming<WatchEvent>, pids: &[u32]) -> Vec<WatchEvent> {
    let mut missing: HashSet<i32> = pids.iter().map(|&p| p as i32).collect();
    let mut seen = Vec::new();
    while !missing.is_empty() {
        let ev = next(stream, WAIT).await;
        if let Some(Kind::Exec(p)) = &ev.kind {
            missing.remove(&p.pid);
        }
        seen.push(ev);
    }
    seen
}

fn exec_of(items: &[WatchEvent], pid: u32) -> Option<&Process> {
    items.iter().find_map(|ev| match &ev.kind {
        Some(Kind::Exec(p)) if p.pid == pid as i32 => Some(p),
        _ => None,
    })
}

fn is_exit(ev: &WatchEvent, pid: u32) -> bool {
    matches!(&ev.kind, Some(Kind::Exit(e)) if e.pid == pid as i32)
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A selector by comm, argv and exe, beside an unfiltered subscriber: the
/// snapshot and the live execs of the filtered one hold exactly what
/// matches, each kind of match on its own, with the omitted field cleared;
/// its exits are those of what it was sent; the unfiltered one gets every
/// record, complete.
#[tokio::test]
async fn comm_argv_or_exe_select_snapshot_entries_execs_and_exits() {
    let agent = Agent::start(&[]);
    let by_comm = UniqueProgram::new("ewsc");
    let by_argv = UniqueProgram::new("ewsa");
    let by_exe = UniqueProgram::new("ewse");
    let other = UniqueProgram::new("ewso");
    let marker = format!("selector-marker-{}", by_argv.name);
    let exe = by_exe.path.to_str().unwrap();
    let filtered_req = WatchRequest {
        include_exits: true,
        comms: vec![by_comm.name.clone()],
        argv_substrings: vec![marker.clone()],
        exe_paths: strings(&[exe]),
        omit_fields: strings(&["cwd"]),
        ..Default::default()
    };
    // Running before anyone subscribes: snapshot material.
    let mut before = vec![
        run_as(&by_comm, None, None),
        run_as(&by_argv, Some(&marker), None),
        run_as(&by_exe, None, None),
        run_as(&other, None, None),
    ];
    let before_pids: Vec<u32> = before.iter().map(Child::id).collect();

    let mut filtered = agent.watch(filtered_req).await;
    let mut all = agent
        .watch(WatchRequest {
            include_exits: true,
            ..Default::default()
        })
        .await;
    let listed = snapshot_pids(&mut filtered).await;
    let expected: HashSet<i32> = before_pids[..3].iter().map(|&p| p as i32).collect();
    assert_eq!(
        listed, expected,
        "the filtered snapshot lists the 3 matches only"
    );
    let listed_all = snapshot_pids(&mut all).await;
    assert!(before_pids
        .iter()
        .all(|&p| listed_all.contains(&(p as i32))));

    // Live: the one that does not match first, so it would come first.
    let mut live = vec![
        run_as(&other, None, None),
        run_as(&by_comm, None, None),
        run_as(&by_argv, Some(&marker), None),
        run_as(&by_exe, None, None),
    ];
    let live_pids: Vec<u32> = live.iter().map(Child::id).collect();
    let got = until_execs(&mut filtered, &live_pids[1..]).await;
    assert!(
        exec_of(&got, live_pids[0]).is_none(),
        "the filtered stream got the exec of a process that does not match"
    );
    for &pid in &live_pids[1..] {
        let p = exec_of(&got, pid).unwrap();
        assert_eq!(p.cwd, None, "cwd was omitted");
        assert!(p.exe.is_some() && !p.argv.is_empty());
    }
    assert_eq!(exec_of(&got, live_pids[2]).unwrap().argv[0], marker);
    assert_eq!(
        exec_of(&got, live_pids[3]).unwrap().exe.as_deref(),
        Some(exe)
    );

    let got_all = until_execs(&mut all, &live_pids).await;
    for &pid in &live_pids {
        let p = exec_of(&got_all, pid).unwrap();
        assert!(
            p.cwd.is_some() && p.exe.is_some() && !p.argv.is_empty(),
            "{p:?}"
        );
        assert!(p.credentials.is_some() && p.cgroup.is_some(), "{p:?}");
    }

    // Exits: the one not sent first, then one sent (live) and one listed
    // (snapshot).
    kill(&mut live[0]);
    kill(&mut live[1]);
    kill(&mut before[0]);
    let (_, items) = until(&mut filtered, WAIT, |ev| is_exit(ev, before_pids[0])).await;
    assert!(
        items.iter().any(|ev| is_exit(ev, live_pids[1])),
        "the exit of a process sent live"
    );
    assert!(
        !items.iter().any(|ev| is_exit(ev, live_pids[0])),
        "the exit of a process never sent"
    );
    let (_, items_all) = until(&mut all, WAIT, |ev| is_exit(ev, before_pids[0])).await;
    assert!(items_all.iter().any(|ev| is_exit(ev, live_pids[0])));
    for mut child in before.into_iter().chain(live) {
        kill(&mut child);
    }
}

/// `uids` and `outside_pods` filter: a process of another uid, or in a
/// pod's cgroup, is left out where the filter is set and sent where it is
/// not; inside and outside a pod are told apart in snapshots and live.
#[tokio::test]
async fn uids_and_outside_pods_filter_execs_and_snapshots() {
    let agent = Agent::start(&[]);
    let prog = UniqueProgram::new("ewsp");
    let root_prog = UniqueProgram::new("ewsr");
    let pod = PodCgroup::create();
    let comms = vec![prog.name.clone()];
    let host_only = WatchRequest {
        comms: comms.clone(),
        outside_pods: true,
        ..Default::default()
    };
    let anywhere = WatchRequest {
        comms: comms.clone(),
        ..Default::default()
    };
    let nobody = WatchRequest {
        uids: vec![65534],
        ..Default::default()
    };
    let mut s_host = agent.watch(host_only.clone()).await;
    let mut s_any = agent.watch(anywhere.clone()).await;
    let mut s_uid = agent.watch(nobody.clone()).await;
    for s in [&mut s_host, &mut s_any, &mut s_uid] {
        snapshot_pids(s).await;
    }

    // In order: in a pod (root), on the host as root, on the host as nobody.
    let mut in_pod = pod.spawn(&prog.path, "30");
    wait_exec(in_pod.id(), &prog.name);
    let mut as_root = run_as(&root_prog, None, Some(0));
    let mut on_host = run_as(&prog, None, Some(65534));
    let (pod_pid, root_pid, host_pid) = (in_pod.id(), as_root.id(), on_host.id());

    let got = until_execs(&mut s_host, &[host_pid]).await;
    assert!(
        exec_of(&got, pod_pid).is_none(),
        "outside_pods sent a pod's process"
    );
    let got = until_execs(&mut s_any, &[pod_pid, host_pid]).await;
    let p = exec_of(&got, pod_pid).unwrap();
    let cgroup = p.cgroup.as_ref().unwrap();
    assert!(
        cgroup.in_kubernetes_pod && cgroup.pod_uid == pod.pod_uid,
        "{p:?}"
    );
    let got = until_execs(&mut s_uid, &[host_pid]).await;
    assert!(
        exec_of(&got, root_pid).is_none(),
        "uids sent a root process"
    );
    assert!(exec_of(&got, pod_pid).is_none(), "uids sent a root process");
    assert_eq!(
        exec_of(&got, host_pid).unwrap().credentials.unwrap().uid,
        65534
    );

    // The same in the snapshots of new subscribers.
    let listed = snapshot_pids(&mut agent.watch(host_only).await).await;
    assert!(listed.contains(&(host_pid as i32)) && !listed.contains(&(pod_pid as i32)));
    let listed = snapshot_pids(&mut agent.watch(anywhere).await).await;
    assert!(listed.contains(&(host_pid as i32)) && listed.contains(&(pod_pid as i32)));
    let listed = snapshot_pids(&mut agent.watch(nobody).await).await;
    assert!(listed.contains(&(host_pid as i32)) && !listed.contains(&(root_pid as i32)));
    for child in [&mut in_pod, &mut as_root, &mut on_host] {
        kill(child);
    }
}

/// A filtered subscriber that falls behind gets `lost` and a resync like
/// any other: contiguous `seq`, a resync snapshot of what matches only,
/// and after it the exits of what it lists.
#[tokio::test]
async fn a_filtered_stream_that_overflows_resyncs_with_what_matches() {
    let agent = Agent::start(&["--queue-len=64"]);
    let survivor_prog = UniqueProgram::new("ewsv");
    let other_prog = UniqueProgram::new("ewsq");
    let req = WatchRequest {
        include_exits: true,
        skip_snapshot: true,
        // The storm's `true` fills the queue; the survivor must be listed.
        comms: vec!["true".into(), survivor_prog.name.clone()],
        ..Default::default()
    };
    let mut stalled = watch_small_window(&agent.socket, req).await;
    // Hooked once the agent counts it.
    eventually("the subscriber", WAIT, || async {
        (agent.stats().await.subscribers == 1).then_some(())
    })
    .await;
    let mut other = run_as(&other_prog, None, None);
    let mut survivor = run_as(&survivor_prog, None, None);
    tokio::task::spawn_blocking(|| {
        // 300-byte arguments: see agent_loss.rs (h2's small-frame budget).
        let pad = "x".repeat(300);
        for _ in 0..600 {
            Command::new("true").arg(&pad).status().unwrap();
        }
    })
    .await
    .unwrap();

    let (lost, before) = until(&mut stalled, WAIT, |ev| {
        matches!(ev.kind, Some(Kind::Lost(_)))
    })
    .await;
    assert_contiguous(&before, 1);
    let (done, resync) = until(&mut stalled, WAIT, |ev| {
        matches!(ev.kind, Some(Kind::SnapshotComplete(_)))
    })
    .await;
    assert_eq!(resync.first().map_or(done.seq, |ev| ev.seq), lost.seq + 1);
    assert_contiguous(&resync, lost.seq + 1);
    let listed: HashSet<i32> = resync.iter().filter_map(process).map(|p| p.pid).collect();
    assert!(
        listed.contains(&(survivor.id() as i32)),
        "the resync lists the match"
    );
    assert!(
        !listed.contains(&(other.id() as i32)),
        "and only what matches"
    );
    for ev in before.iter().chain(&resync) {
        if let Some(p) = process(ev) {
            assert!(p.comm == "true" || p.comm == survivor_prog.name, "{p:?}");
        }
    }
    // After the resync: the exit of what it listed, not of the other.
    kill(&mut other);
    let survivor_pid = survivor.id();
    kill(&mut survivor);
    let (_, after) = until(&mut stalled, WAIT, |ev| is_exit(ev, survivor_pid)).await;
    assert!(!after.iter().any(|ev| is_exit(ev, other.id())));
}

/// `no_processes`: a snapshot of none, then nothing but what is not a
/// process.
#[tokio::test]
async fn no_processes_sends_an_empty_snapshot_and_no_execs() {
    let agent = Agent::start(&[]);
    let mut stream = agent
        .watch(WatchRequest {
            include_exits: true,
            no_processes: true,
            ..Default::default()
        })
        .await;
    let first = next(&mut stream, WAIT).await;
    let Some(Kind::SnapshotComplete(c)) = first.kind else {
        panic!("expected an empty snapshot, got {first:?}")
    };
    assert_eq!((first.seq, c.processes), (1, 0));
    let prog = UniqueProgram::new("ewsn");
    let mut child = run_as(&prog, None, None);
    kill(&mut child);
    let quiet = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(quiet.is_err(), "sent {quiet:?}");
}

/// Each bad selector is refused with INVALID_ARGUMENT naming the field,
/// before it takes a subscriber's seat.
#[tokio::test]
async fn bad_selectors_are_refused_naming_the_field() {
    let agent = Agent::start(&[]);
    let cases = [
        (
            WatchRequest {
                comms: strings(&["java", ""]),
                ..Default::default()
            },
            "comms[1]: empty string",
        ),
        (
            WatchRequest {
                comms: strings(&["jetbrains-toolbox"]),
                ..Default::default()
            },
            "comms[0]: 17 bytes",
        ),
        (
            WatchRequest {
                argv_substrings: vec!["x".into(); 1001],
                ..Default::default()
            },
            "argv_substrings: 1001 entries; at most 1000",
        ),
        (
            WatchRequest {
                argv_substrings: vec!["x".repeat(4097)],
                ..Default::default()
            },
            "argv_substrings[0]: 4097 bytes",
        ),
        (
            WatchRequest {
                exe_paths: strings(&["bin/java"]),
                ..Default::default()
            },
            "exe_paths[0]: not an absolute path",
        ),
        (
            WatchRequest {
                uids: vec![1000, u32::MAX],
                ..Default::default()
            },
            "uids[1]: 4294967295",
        ),
        (
            WatchRequest {
                uids: (0..1001).collect(),
                ..Default::default()
            },
            "uids: 1001 entries",
        ),
        (
            WatchRequest {
                no_processes: true,
                comms: strings(&["java"]),
                ..Default::default()
            },
            "no_processes: set together with",
        ),
        (
            WatchRequest {
                omit_fields: strings(&["environ"]),
                ..Default::default()
            },
            "omit_fields[0]: \"environ\" is not one of",
        ),
    ];
    let mut client = agent.client().await;
    for (req, expected) in cases {
        let status = client.watch(req).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(expected),
            "{:?} does not say {expected:?}",
            status.message()
        );
    }
    assert_eq!(agent.stats().await.subscribers_total, 0);
}

/// The reclaimer re-subscribes when its rules change; a program matching
/// only the new rules, started while it switches streams, still fires.
#[test]
fn the_reclaimer_resubscribing_on_new_rules_misses_no_program() {
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let first = UniqueProgram::new("ewsw");
    let second = UniqueProgram::new("ewsx");
    let rules = rules_for(dir.path(), "rules.toml", &first, "");
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[]);
    reclaimer.wait_log("rules loaded from file", 1, WAIT);
    reclaimer.wait_log("connected to the agent", 1, WAIT);
    // Settle: the first rules' stream is in place (the link may have
    // connected with inert rules and switched once already).
    std::thread::sleep(Duration::from_millis(300));
    let switches = reclaimer.logs().matches("re-subscribing").count();

    // The old rules' stream never carries `second`'s launch: only the new
    // one's can.
    std::fs::write(&rules, second.rules()).unwrap();
    reclaimer.wait_log("re-subscribing", switches + 1, WAIT);
    // Started at once: while the link opens the new stream.
    let running = second.spawn(2, &[]);
    let logs = reclaimer.wait_log(&second.reason(), 1, WAIT);
    stop(running);
    assert!(logs.contains("dry-run: would merge-PATCH"), "{logs}");
    assert!(
        !logs.contains("reconnecting"),
        "a switch is not a reconnect:\n{logs}"
    );
    let agent_log = agent.logs();
    assert!(
        agent_log.contains("filtered=true"),
        "the reclaimer's streams are filtered:\n{agent_log}"
    );
}
