//! Tests of the `/proc` reader against real processes on this machine.

use std::ffi::OsStr;
use std::process::Command;

use super::*;

/// Waits until `pid` has finished executing `comm`. spawn returns before
/// the exec, and mid-exec the new comm shows before the new command line.
fn wait_for_comm(pid: u32, comm: &str) {
    for _ in 0..500 {
        let now = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if now.trim_end() == comm && !cmdline.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("pid {pid} never became {comm}");
}

impl ProcReader {
    /// Reads the record of `pid`. Returns `Ok(None)` for kernel threads,
    /// which never exec and are not processes a user launches. Unbounded
    /// (for tests; the agent's reads are bounded, see
    /// [`crate::procfs::watchdog`]), and not redacted: see
    /// [`crate::procfs::mount::ProcMount::finish`].
    fn read(&mut self, pid: i32, tgid: i32, source: Source) -> Result<Option<Process>, Exhausted> {
        let mut p = blank(pid, tgid, source);
        match self.read_into(pid, &mut p, |_| true, &ArgvPatterns::NONE) {
            Ok(Outcome::Read) => Ok(Some(p)),
            Err(Stop::Exhausted(e)) => Err(e),
            Ok(Outcome::KernelThread | Outcome::Unwanted) | Err(Stop::Abandoned) => Ok(None),
        }
    }
}

/// A record read without a bound fills itself.
impl Sink for Process {
    fn put(&mut self, f: impl FnOnce(&mut Process), _next: Option<Field>) -> Result<(), Stop> {
        f(self);
        Ok(())
    }
}

fn reader() -> ProcReader {
    ProcReader::open("/proc", 64 * 1024).expect("open /proc")
}

/// A shell that stays alive (the trailing `:` stops it from exec'ing sleep)
/// with `args` as its positional parameters.
fn shell_with(args: &[&OsStr]) -> std::process::Child {
    let child = Command::new("sh")
        .args(["-c", "sleep 30; :", "sh"])
        .args(args)
        .spawn()
        .expect("spawn sh");
    wait_for_comm(child.id(), "sh");
    child
}

#[test]
fn reads_a_live_child_with_odd_arguments() {
    use std::os::unix::ffi::OsStrExt;
    let mut child = shell_with(&[OsStr::from_bytes(b"\xffnot-utf8"), OsStr::new("")]);
    let pid = child.id() as i32;
    let p = reader()
        .read(pid, pid, Source::Poll)
        .unwrap()
        .expect("not a kernel thread");
    child.kill().ok();
    child.wait().ok();
    assert_eq!(p.pid, pid);
    assert_eq!(p.comm, "sh");
    assert_eq!(p.ppid as u32, std::process::id());
    assert!(!p.exited_before_inspection, "{p:?}");
    assert!(p.start_ticks > 0);
    let me = nix::unistd::Uid::current().as_raw();
    assert_eq!(p.credentials.unwrap().uid, me);
    assert!(p.exe.is_some(), "{:?}", p.unavailable);
    assert!(p.cwd.is_some(), "{:?}", p.unavailable);
    assert!(p.cgroup.is_some());
    assert_eq!(p.argv.len(), 6, "{:?}", p.argv);
    assert_eq!(&p.argv[..4], ["sh", "-c", "sleep 30; :", "sh"]);
    assert!(p.argv_lossy);
    assert!(!p.argv_truncated);
    assert_eq!(p.argv_raw[4], b"\xffnot-utf8");
    assert_eq!(p.argv[4], "\u{fffd}not-utf8");
    assert_eq!(p.argv[5], "");
}

#[test]
fn long_command_lines_are_cut_and_flagged() {
    let long = "x".repeat(10_000);
    let mut child = shell_with(&[OsStr::new(&long)]);
    let pid = child.id() as i32;
    let mut small = ProcReader::open("/proc", 100).unwrap();
    let p = small.read(pid, pid, Source::Poll).unwrap().unwrap();
    child.kill().ok();
    child.wait().ok();
    assert!(p.argv_truncated, "{p:?}");
    assert!(!p.argv_lossy);
    // 100 bytes kept: "sh\0-c\0sleep 30; :\0sh\0" is 21, the rest is x's.
    assert_eq!(p.argv.iter().map(|a| a.len() + 1).sum::<usize>(), 101);
    assert_eq!(p.argv[4], "x".repeat(79));
}

#[test]
fn command_lines_longer_than_one_read_are_read_whole() {
    // 3 arguments of 5,000 bytes: several reads of growing size, and the
    // limit (32 KiB) is far away, so nothing may be cut.
    let args: Vec<String> = (b'a'..=b'c')
        .map(|c| (c as char).to_string().repeat(5_000))
        .collect();
    let os: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let mut child = shell_with(&os);
    let pid = child.id() as i32;
    let p = reader().read(pid, pid, Source::Poll).unwrap().unwrap();
    child.kill().ok();
    child.wait().ok();
    assert!(!p.argv_truncated, "{p:?}");
    assert_eq!(p.argv[4..], args[..], "every byte of every argument");
}

#[test]
fn a_vanished_pid_is_flagged_not_dropped() {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id() as i32;
    child.wait().unwrap();
    let p = reader().read(pid, pid, Source::Netlink).unwrap().unwrap();
    assert!(p.exited_before_inspection);
    assert_eq!(p.pid, pid);
    assert!(!p.unavailable.is_empty());
}

#[test]
fn kernel_threads_are_skipped_and_self_is_listed() {
    let r = reader();
    let pids = r.pids().unwrap();
    assert!(pids.contains(&(std::process::id() as i32)));
    // kthreadd is pid 2 in the initial pid namespace.
    if pids.contains(&2) {
        assert!(reader().read(2, 2, Source::Snapshot).unwrap().is_none());
    }
}

#[test]
fn credentials_parse_real_and_effective() {
    let status = b"Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t5\t5\t5\n";
    assert_eq!(
        parse_credentials(status),
        Some(Credentials {
            uid: 1000,
            euid: 0,
            gid: 100,
            egid: 5
        })
    );
    assert_eq!(parse_credentials(b"Uid:\t1\n"), None);
}

#[test]
fn argv_of_one_empty_argument_is_kept() {
    let mut p = Process::default();
    set_argv(&mut p, b"\0", 100);
    assert_eq!(p.argv, [""]);
    let mut p = Process::default();
    set_argv(&mut p, b"", 100);
    assert!(p.argv.is_empty(), "no command line at all (zombie)");
    let mut p = Process::default();
    set_argv(&mut p, b"a\0\0b\0", 100);
    assert_eq!(p.argv, ["a", "", "b"]);
}

#[test]
fn a_zombie_counts_as_exited() {
    // A child that exits and is not reaped stays a zombie until wait().
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id() as i32;
    let mut r = reader();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let p = loop {
        let p = r.read(pid, pid, Source::Snapshot).unwrap().unwrap();
        if p.exited_before_inspection {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never became a zombie"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(p.comm, "true", "what could be read is kept");
    assert!(
        r.identity(pid).unwrap().is_none(),
        "a scan treats a zombie as gone"
    );
    child.wait().unwrap();
}

/// However bad the bytes, argv and argv_raw together weigh at most twice
/// the argv limit (a non-UTF-8 byte is one raw byte plus a three-byte
/// U+FFFD in the lossy string).
#[test]
fn a_non_utf8_command_line_is_capped_raw_and_lossy_together() {
    for limit in [1, 7, 600, 32 * 1024] {
        let mut cmdline = vec![0xffu8; 3 * limit];
        cmdline.push(0);
        cmdline.extend(vec![0xfeu8; limit]);
        cmdline.push(0);
        let mut p = Process::default();
        set_argv(&mut p, &cmdline, limit);
        let weight: usize = p.argv.iter().map(String::len).sum::<usize>()
            + p.argv_raw.iter().map(Vec::len).sum::<usize>();
        assert!(weight <= 2 * limit, "{limit}: {weight} bytes");
        assert!(p.argv_truncated && p.argv_lossy, "{limit}");
        assert_eq!(p.argv.len(), p.argv_raw.len(), "{limit}");
        assert!(
            !p.argv.is_empty(),
            "{limit}: the first argument is cut, not dropped"
        );
    }
    // Valid UTF-8 is carried once and only cut at the limit.
    let mut p = Process::default();
    set_argv(&mut p, b"java\0-version\0", 1024);
    assert_eq!(p.argv, ["java", "-version"]);
    assert!(p.argv_raw.is_empty() && !p.argv_truncated);
}

/// A sink that notes which field the reader says it reads next.
#[derive(Default)]
struct Steps {
    record: Process,
    next: Vec<Option<Field>>,
}

impl Sink for Steps {
    fn put(&mut self, f: impl FnOnce(&mut Process), next: Option<Field>) -> Result<(), Stop> {
        f(&mut self.record);
        self.next.push(next);
        Ok(())
    }
}

#[test]
fn an_unwanted_comm_stops_the_read_after_stat() {
    let pid = std::process::id() as i32;
    let mut asked = Vec::new();
    let mut unwanted = Steps::default();
    let unwant = |comm: &[u8]| {
        asked.push(comm.to_vec());
        false
    };
    let outcome = reader().read_into(pid, &mut unwanted, unwant, &ArgvPatterns::NONE);
    assert_eq!(outcome, Ok(Outcome::Unwanted));
    let own_comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(asked, [own_comm.trim_end().as_bytes()]);
    // Nothing after `stat` is even begun.
    assert_eq!(unwanted.next, [Some(Field::Comm), None]);
    assert_eq!(unwanted.record.comm, own_comm.trim_end());
    assert!(unwanted.record.credentials.is_none() && unwanted.record.argv.is_empty());

    let mut wanted = Steps::default();
    let outcome = reader().read_into(pid, &mut wanted, |_| true, &ArgvPatterns::NONE);
    assert_eq!(outcome, Ok(Outcome::Read));
    let order = [Field::Comm, Field::Credentials, Field::Argv, Field::Cgroup];
    let order = order.into_iter().chain([Field::Exe, Field::Cwd]).map(Some);
    assert_eq!(wanted.next, order.chain([None]).collect::<Vec<_>>());
    assert!(wanted.record.credentials.is_some() && !wanted.record.argv.is_empty());
}

/// The comm check reads what `stat` would give for a plain comm, says
/// "cannot tell" for a comm the kernel escapes in `/proc/<pid>/comm` and
/// for a process that is gone, and never answers for one it did not read.
#[test]
fn the_comm_check_matches_stat_and_gives_up_on_what_it_cannot_tell() {
    let mut r = reader();
    let mut child = shell_with(&[]);
    let pid = child.id() as i32;
    let seen = std::cell::RefCell::new(Vec::new());
    let wanted = r.comm_wanted(pid, |comm| {
        seen.borrow_mut().push(comm.to_vec());
        comm == b"sh"
    });
    assert_eq!(wanted, CommCheck::Wanted);
    assert_eq!(seen.borrow().as_slice(), [b"sh".to_vec()]);
    assert_eq!(r.comm_wanted(pid, |_| false), CommCheck::Unwanted);
    // A comm with a backslash: some kernels escape characters in the comm
    // file (always with a backslash), never in stat, so the check leaves it
    // to stat. Only a thread's own group may rename it: this test's thread.
    let tid = nix::unistd::gettid().as_raw();
    std::fs::write("/proc/thread-self/comm", "a\\b").expect("rename this thread");
    assert_eq!(
        r.comm_wanted(tid, |_| panic!("asked about an escaped comm")),
        CommCheck::Unknown
    );
    let stat = r.read(tid, tid, Source::Netlink).unwrap().unwrap();
    assert_eq!(stat.comm, "a\\b");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        r.comm_wanted(pid, |_| panic!("asked about a gone process")),
        CommCheck::Gone
    );
}

#[test]
fn the_field_table_is_in_reading_order() {
    for (at, (field, ..)) in Field::TABLE.iter().enumerate() {
        assert_eq!(*field as usize, at, "{field:?}");
    }
    assert_eq!(Field::Cwd.next(), None);
    assert_eq!(Field::All.later().count(), 0);
}
