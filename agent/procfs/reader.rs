//! Reading one process's record from `/proc`, quickly and without guessing.
//!
//! Called right after the kernel reports an exec, so it must be cheap: one
//! `openat` of `/proc/<pid>` relative to a held `/proc` directory fd, then
//! `stat`, `status`, `cmdline`, `cgroup` and two `readlinkat`s relative to that
//! directory, into one reused buffer. Holding the directory fd also pins the
//! process: if it exits and its pid is reused mid-read, the remaining reads
//! fail instead of describing the newcomer.
//!
//! The caller may stop the read after `stat` ([`ProcReader::read_into`]'s
//! `wanted`): the netlink detector does when the comm alone tells that no
//! subscriber could want the process, and then a non-matching exec costs
//! two syscalls and no more.
//!
//! A field that cannot be read is left empty and named in `unavailable` with
//! the reason; a process that is gone yields a record with only what the
//! caller already knew and `exited_before_inspection` set. A read that fails
//! for a reason of the agent's own (out of descriptors or memory) yields no
//! record at all but an [`Exhausted`] error: such a record would describe
//! the agent's trouble, not the process, so callers report it as loss.

use std::os::fd::{AsRawFd, OwnedFd};

use execwatch::internal::cgroup;
use execwatch::proto::{Credentials, Process, Source, Unavailable};
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::Mode;

use crate::procfs::cmdline::ArgvPatterns;
use crate::procfs::stat_line::StatLine;
use execwatch::internal::clock;

/// First read size: every file read here but a long command line fits.
const READ_CHUNK: usize = 4096;

/// How a directory of `/proc` is opened.
const DIR: OFlag = OFlag::O_DIRECTORY.union(OFlag::O_CLOEXEC);

/// Kernel threads carry this flag in field 9 of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// A process's identity as a scan sees it: pid reuse changes the start
/// time; an `execve` changes the comm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
    /// The kernel's command name, NUL-padded as the proc connector's is
    /// (unpadded by [`execwatch::internal::cn_proc::comm_bytes`]).
    pub comm: [u8; 16],
}

/// Reads process records from one `/proc` mount.
pub struct ProcReader {
    proc_dir: OwnedFd,
    buf: Vec<u8>,
    /// What a command line past `max_argv_bytes` is read into, a chunk at a
    /// time, to be searched.
    chunk: Vec<u8>,
    max_argv_bytes: usize,
}

/// A read failed, or was not started, because the agent itself ran out of
/// something: nothing is known about the process, and the caller must say
/// so (as loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// Out of descriptors or memory.
    #[error("the agent cannot read /proc: {}", .0.desc())]
    Resources(Errno),
    /// This many reads are stuck in `/proc`, the most the agent leaves
    /// behind (see [`crate::procfs::watchdog`]); no other is started until
    /// one returns.
    #[error("the agent cannot read /proc: {0} reads are stuck there (--max-stuck-reads); no other starts until one returns")]
    Stuck(usize),
}

/// Passes `e` on, unless it is the agent's own exhaustion.
pub fn own(e: Errno) -> Result<Errno, Exhausted> {
    match e {
        Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM | Errno::ENOBUFS => {
            Err(Exhausted::Resources(e))
        }
        e => Ok(e),
    }
}

impl ProcReader {
    /// Opens the `/proc` mount at `root` (normally `/proc`).
    ///
    /// `max_argv_bytes` caps how much of a command line is read; longer ones
    /// are cut and flagged `argv_truncated`.
    pub fn open(root: &str, max_argv_bytes: usize) -> Result<Self, Errno> {
        let proc_dir = nix::fcntl::open(root, DIR, Mode::empty())?;
        Ok(Self::on(proc_dir, max_argv_bytes))
    }

    /// A reader of the mount open at `proc_dir`.
    fn on(proc_dir: OwnedFd, max_argv_bytes: usize) -> Self {
        let (buf, chunk) = (Vec::with_capacity(READ_CHUNK), Vec::new());
        Self {
            proc_dir,
            buf,
            chunk,
            max_argv_bytes,
        }
    }

    /// Another reader of the same mount, for another thread.
    pub fn try_clone(&self) -> Result<ProcReader, Exhausted> {
        let proc_dir = self.proc_dir.try_clone().map_err(|e| {
            Exhausted::Resources(e.raw_os_error().map_or(Errno::EMFILE, Errno::from_raw))
        })?;
        Ok(Self::on(proc_dir, self.max_argv_bytes))
    }

    /// Whether the agent can open a file under `/proc` right now (after an
    /// [`Exhausted`] read: have descriptors come back?).
    pub fn probe(&mut self) -> Result<(), Exhausted> {
        let read = read_at(&self.proc_dir, "self/stat", &mut self.buf, 4096);
        read.err().map_or(Ok(()), |e| own(e).map(drop))
    }

    /// The pids currently listed in `/proc` (thread-group leaders only).
    pub fn pids(&self) -> std::io::Result<Vec<i32>> {
        // The mount, by its descriptor: `/proc/self/fd/<n>`.
        let dir = std::fs::read_dir(format!("/proc/self/fd/{}", self.proc_dir.as_raw_fd()))?;
        Ok(dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect())
    }

    /// What one read of `pid`'s `stat` says about its identity: start time
    /// and comm. `None` if it is gone or a kernel thread.
    pub fn identity(&mut self, pid: i32) -> Result<Option<Identity>, Exhausted> {
        let (path, len) = pid_path(pid, b"stat");
        if let Err(e) = read_at(&self.proc_dir, &path[..len], &mut self.buf, 4096) {
            own(e)?;
            return Ok(None);
        }
        let Some(stat) = StatLine::parse(&self.buf) else {
            return Ok(None);
        };
        // A zombie is gone as far as a scan is concerned: its exit happened.
        if stat.flags & PF_KTHREAD != 0 || stat.exited() {
            return Ok(None);
        }
        Ok(Some(Identity {
            start_ticks: stat.start_ticks,
            comm: std::array::from_fn(|i| stat.comm.get(i).copied().unwrap_or(0)),
        }))
    }

    /// Whether `wanted` takes the comm of `pid`, read from
    /// `/proc/<pid>/comm` alone: one `openat` relative to the mount and one
    /// `read`, cheaper than `stat` for the execs nobody selects.
    /// [`CommCheck::Unknown`] when it cannot tell (the file is unreadable,
    /// or the comm holds a backslash: some kernels escape characters in that
    /// file, always with a backslash, where `stat` gives them raw); the
    /// caller then reads the record as usual. Reading a comm takes no lock
    /// of the process's memory and touches no file system of its, so it
    /// needs no time bound.
    pub fn comm_wanted(&mut self, pid: i32, wanted: impl Fn(&[u8]) -> bool) -> CommCheck {
        let (path, len) = pid_path(pid, b"comm");
        // TASK_COMM_LEN is 16; the kernel adds a newline.
        let mut buf = [0u8; 64];
        let read =
            open_at(&self.proc_dir, &path[..len]).and_then(|fd| nix::unistd::read(&fd, &mut buf));
        // The open fails with ENOENT once the process is reaped; the read,
        // with ESRCH.
        let n = match read {
            Ok(n) => n,
            Err(Errno::ENOENT | Errno::ESRCH) => return CommCheck::Gone,
            Err(_) => return CommCheck::Unknown,
        };
        match buf[..n].strip_suffix(b"\n") {
            Some(comm) if comm.contains(&b'\\') => CommCheck::Unknown,
            Some(comm) if wanted(comm) => CommCheck::Wanted,
            Some(_) => CommCheck::Unwanted,
            None => CommCheck::Unknown,
        }
    }

    /// Reads the record of `pid` into `sink`, one field at a time, so that
    /// a read given up midway (see [`crate::procfs::watchdog`]) still leaves
    /// every field read so far and the name of the one under way. The
    /// record in the sink starts as [`blank`] makes it.
    ///
    /// `wanted` is asked once, with the comm as `stat` gives it (bytes, as
    /// the kernel keeps them): if it says no, the read stops there with
    /// [`Outcome::Unwanted`], the record holding what `stat` gave. It is not
    /// asked if `stat` cannot be parsed (the read goes on).
    ///
    /// A command line cut at the limit is searched whole for `argv`'s
    /// patterns ([`crate::procfs::cmdline`]); those found go into
    /// `argv_matches`.
    pub(in crate::procfs) fn read_into(
        &mut self,
        pid: i32,
        sink: &mut impl Sink,
        wanted: impl FnOnce(&[u8]) -> bool,
        argv: &ArgvPatterns,
    ) -> Result<Outcome, Stop> {
        let gone_at_once = |sink: &mut _, e| {
            let e = own(e)?;
            Sink::put(sink, |p| gone(p, "all", e), None).map(|()| Outcome::Read)
        };
        let mut name = itoa::Buffer::new();
        let dir = match openat(&self.proc_dir, name.format(pid), DIR, Mode::empty()) {
            Ok(dir) => dir,
            Err(e) => return gone_at_once(sink, e),
        };
        sink.put(|_| {}, Some(Field::Comm))?;

        match read_at(&dir, "stat", &mut self.buf, 4096).map(|_| StatLine::parse(&self.buf)) {
            Ok(Some(stat)) => {
                if stat.flags & PF_KTHREAD != 0 {
                    return Ok(Outcome::KernelThread);
                }
                let exited = stat.exited();
                let unwanted = !wanted(stat.comm);
                let next = (!exited && !unwanted).then_some(Field::Credentials);
                let set = |p: &mut Process| {
                    p.comm = String::from_utf8_lossy(stat.comm).into_owned();
                    p.ppid = stat.ppid;
                    p.start_ticks = stat.start_ticks;
                    if exited {
                        // Reaping pending: the exit already happened, and a
                        // snapshot must not list it as running (its exit
                        // event may have gone by before the subscriber
                        // joined).
                        p.exited_before_inspection = true;
                        let why = "process exited (zombie) before it could be inspected";
                        unavailable(p, "argv", why.into());
                    }
                };
                sink.put(set, next)?;
                if unwanted {
                    return Ok(Outcome::Unwanted);
                }
                if exited {
                    return Ok(Outcome::Read);
                }
            }
            Ok(None) => {
                let why = "unparsable /proc/<pid>/stat";
                let set = |p: &mut Process| unavailable(p, "comm", why.into());
                sink.put(set, Some(Field::Credentials))?;
            }
            Err(e) => return gone_at_once(sink, e),
        }

        let read =
            read_at(&dir, "status", &mut self.buf, 8192).map(|_| parse_credentials(&self.buf));
        fill(sink, Field::Credentials, read, |p, c| p.credentials = c)?;

        let limit = self.max_argv_bytes;
        let (buf, chunk) = (&mut self.buf, &mut self.chunk);
        let read = open_at(&dir, "cmdline").and_then(|fd| {
            read_fd(&fd, buf, limit + 1)?;
            let cut = buf.len() > limit;
            let go_on = || sink.put(|_| {}, Some(Field::Argv)).is_ok();
            Ok(cut.then(|| argv.search(buf, &fd, chunk, go_on)))
        });
        let set = |p: &mut Process, found: Option<Vec<String>>| {
            set_argv(p, &self.buf, limit);
            p.argv_matches = found.unwrap_or_default();
        };
        fill(sink, Field::Argv, read, set)?;

        let read = read_at(&dir, "cgroup", &mut self.buf, 8192)
            .map(|_| cgroup::classify(&String::from_utf8_lossy(&self.buf)));
        fill(sink, Field::Cgroup, read, |p, c| p.cgroup = Some(c))?;

        let link = |name| readlinkat(&dir, name).map(|path| path.to_string_lossy().into_owned());
        fill(sink, Field::Exe, link("exe"), |p, path| p.exe = Some(path))?;
        fill(sink, Field::Cwd, link("cwd"), |p, path| p.cwd = Some(path))?;
        Ok(Outcome::Read)
    }
}

/// Why [`ProcReader::read_into`] stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    /// The sink refused to take more: the read was given up meanwhile.
    #[error("the read was given up meanwhile")]
    Abandoned,
    /// The agent's own exhaustion.
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
}

/// Puts one field's read into `sink` (the value `set` stores, or why the
/// field is missing) and notes that the next field is being read. A failure
/// of the agent's own stops the whole read instead, as does a sink that
/// refuses (see [`Sink::put`]).
fn fill<T>(
    sink: &mut impl Sink,
    field: Field,
    read: Result<T, Errno>,
    set: impl FnOnce(&mut Process, T),
) -> Result<(), Stop> {
    if let Err(e) = read {
        own(e)?;
    }
    let put_read = |p: &mut Process| match read {
        Ok(value) => set(p, value),
        Err(e) => missing(p, field.name(), e),
    };
    sink.put(put_read, field.next())
}

/// What [`ProcReader::comm_wanted`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommCheck {
    /// The comm passes the check.
    Wanted,
    /// The comm fails the check.
    Unwanted,
    /// The process was reaped before its comm could be read: its record
    /// would have no comm, which no comm selector matches.
    Gone,
    /// The comm file could not tell; read the record.
    Unknown,
}

/// A record with only what the caller knows before reading `/proc`.
pub fn blank(pid: i32, tgid: i32, source: Source) -> Process {
    Process {
        pid,
        tgid,
        source: source as i32,
        observed_unix_ns: clock::unix_ns(),
        ..Default::default()
    }
}

/// What [`ProcReader::read_into`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The record in the sink is complete (fields that could not be read
    /// are named in `unavailable`).
    Read,
    /// A kernel thread: no record.
    KernelThread,
    /// The caller's `wanted` ruled the process out by its comm: the read
    /// stopped after `stat`, and the record is for nobody.
    Unwanted,
}

/// The parts of a record, in the order [`ProcReader::read_into`] reads
/// them; each is one `/proc/<pid>` file or link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `/proc/<pid>` itself.
    All,
    /// `stat`: comm, ppid, start time.
    Comm,
    /// `status`: uids and gids.
    Credentials,
    /// `cmdline`.
    Argv,
    /// `cgroup`.
    Cgroup,
    /// The `exe` link.
    Exe,
    /// The `cwd` link.
    Cwd,
}

impl Field {
    /// Every field in reading order (each one's index is its discriminant),
    /// with the name `unavailable` gives it and its path after `/proc/<pid>`.
    const TABLE: [(Field, &'static str, &'static str); 7] = [
        (Field::All, "all", ""),
        (Field::Comm, "comm", "/stat"),
        (Field::Credentials, "credentials", "/status"),
        (Field::Argv, "argv", "/cmdline"),
        (Field::Cgroup, "cgroup", "/cgroup"),
        (Field::Exe, "exe", "/exe"),
        (Field::Cwd, "cwd", "/cwd"),
    ];

    /// The name `unavailable` gives it.
    pub fn name(self) -> &'static str {
        Self::TABLE[self as usize].1
    }

    /// Its path after `/proc/<pid>` (`/stat`; empty for [`Field::All`]).
    pub fn file(self) -> &'static str {
        Self::TABLE[self as usize].2
    }

    /// The field read after this one.
    fn next(self) -> Option<Field> {
        Self::TABLE.get(self as usize + 1).map(|f| f.0)
    }

    /// The fields read after this one.
    pub fn later(self) -> impl Iterator<Item = Field> {
        // Nothing but the directory could be read: one entry says so.
        let first = match self {
            Field::All => Self::TABLE.len(),
            _ => self as usize + 1,
        };
        Self::TABLE[first..].iter().map(|f| f.0)
    }
}

/// Where [`ProcReader::read_into`] puts a record as it reads it.
pub trait Sink {
    /// Applies `f` (what was just read) to the record, then notes that
    /// `next` is being read (`None`: the read is over). [`Stop::Abandoned`]
    /// if the read was given up meanwhile: the reader stops at once and must
    /// not touch the record again.
    fn put(&mut self, f: impl FnOnce(&mut Process), next: Option<Field>) -> Result<(), Stop>;
}

/// Reads at most `limit` bytes of `name` under `dir` into `buf`.
///
/// procfs hands these files over whole on the first read (`stat`, `status`
/// and `cgroup` are single-record seq files, and `cmdline` copies as much of
/// the argument area as is asked for), so a read that leaves room in the
/// buffer has reached the end: no second read just to see end-of-file.
fn read_at<P: nix::NixPath + ?Sized>(
    dir: &OwnedFd,
    name: &P,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, Errno> {
    read_fd(&open_at(dir, name)?, buf, limit)
}

/// `<pid>/<file>` (`file` at most 16 bytes) and its length, on the stack:
/// built for every exec a comm selector sees and for every process a scan
/// lists, so without an allocation or `fmt`.
fn pid_path(pid: i32, file: &[u8]) -> ([u8; 32], usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(pid).as_bytes();
    let (mut path, at) = ([0u8; 32], digits.len() + 1);
    path[..digits.len()].copy_from_slice(digits);
    path[digits.len()] = b'/';
    path[at..at + file.len()].copy_from_slice(file);
    (path, at + file.len())
}

/// Opens `name` under `dir` for reading.
fn open_at<P: nix::NixPath + ?Sized>(dir: &OwnedFd, name: &P) -> Result<OwnedFd, Errno> {
    openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
}

/// Reads at most `limit` bytes of `fd` into `buf`, as [`read_at`] does.
fn read_fd(fd: &OwnedFd, buf: &mut Vec<u8>, limit: usize) -> Result<usize, Errno> {
    buf.clear();
    let (mut filled, mut chunk) = (0, READ_CHUNK);
    loop {
        let end = (filled + chunk).min(limit);
        buf.resize(end, 0);
        match nix::unistd::read(fd, &mut buf[filled..end]) {
            Ok(n) => {
                filled += n;
                if n == 0 || filled < end || filled == limit {
                    break;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => {
                buf.clear();
                return Err(e);
            }
        }
        chunk *= 2;
    }
    buf.truncate(filled);
    Ok(filled)
}

/// Parses the `Uid:` and `Gid:` lines of `/proc/<pid>/status`.
fn parse_credentials(status: &[u8]) -> Option<Credentials> {
    let [uid, euid] = status_ids(status, "Uid:")?;
    let [gid, egid] = status_ids(status, "Gid:")?;
    Some(Credentials {
        uid,
        euid,
        gid,
        egid,
    })
}

/// The first `N` numbers of the `name` line (`Uid:` or `Gid:`: real,
/// effective, saved, filesystem) of a `status` file.
pub fn status_ids<const N: usize>(status: &[u8], name: &str) -> Option<[u32; N]> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(name.as_bytes()))?;
    let mut ids = std::str::from_utf8(line).ok()?.split_whitespace();
    let mut out = [0; N];
    for id in &mut out {
        *id = ids.next()?.parse().ok()?;
    }
    Some(out)
}

/// Fills argv from the NUL-separated `cmdline` bytes.
///
/// A non-UTF-8 command line is carried twice (exact bytes in `argv_raw`,
/// a lossy string in `argv`, where each bad byte takes three), so the two
/// together are capped at twice `limit`: arguments past that are dropped and
/// the record flagged `argv_truncated`. Whatever the input, one record's
/// command line weighs at most `2 * limit` bytes.
fn set_argv(p: &mut Process, cmdline: &[u8], limit: usize) {
    let bytes = &cmdline[..cmdline.len().min(limit)];
    p.argv_truncated = cmdline.len() > limit;
    // Nothing at all: a zombie or a kernel thread. A lone NUL, by contrast,
    // is one empty argument (argv = [""]), which is a real command line.
    if bytes.is_empty() {
        return;
    }
    // The kernel ends every argument with NUL; drop the last one only.
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    p.argv_lossy = std::str::from_utf8(bytes).is_err();
    // Only a lossy command line can outweigh the room: UTF-8 weighs two per
    // byte, and `bytes` holds at most `limit`.
    let mut room = 2 * limit;
    for arg in bytes.split(|&b| b == 0) {
        let text = String::from_utf8_lossy(arg);
        let weight = text.len() + arg.len();
        if weight > room {
            // The first argument that does not fit is cut: a byte weighs at
            // most four (itself and a three-byte U+FFFD), so a quarter of the
            // room always fits.
            let kept = &arg[..(room / 4).min(arg.len())];
            p.argv.push(String::from_utf8_lossy(kept).into_owned());
            p.argv_raw.push(kept.to_vec());
            p.argv_truncated = true;
            break;
        }
        p.argv.push(text.into_owned());
        p.argv_raw.extend(p.argv_lossy.then(|| arg.to_vec()));
        room -= weight;
    }
}

/// Records that the process vanished before it could be read.
fn gone(p: &mut Process, field: &str, e: Errno) {
    if matches!(e, Errno::ENOENT | Errno::ESRCH) {
        p.exited_before_inspection = true;
        let why = "process exited before it could be inspected";
        unavailable(p, field, why.into());
    } else {
        unavailable(p, field, reason(e));
    }
}

/// Records one unreadable field, noticing an exit in the middle of reading.
fn missing(p: &mut Process, field: &str, e: Errno) {
    p.exited_before_inspection |= e == Errno::ESRCH;
    unavailable(p, field, reason(e));
}

/// Names `field` in `p.unavailable` with `reason`.
pub fn unavailable(p: &mut Process, field: &str, reason: String) {
    p.unavailable.push(Unavailable {
        field: field.to_string(),
        reason,
    });
}

/// A reason an operator can act on.
fn reason(e: Errno) -> String {
    match e {
        Errno::EACCES | Errno::EPERM => {
            "permission denied (another user's process: needs CAP_SYS_PTRACE)".into()
        }
        Errno::ENOENT => "not present (kernel thread, zombie or exited process)".into(),
        Errno::ESRCH => "process exited while it was being inspected".into(),
        other => format!("read failed: {}", other.desc()),
    }
}

#[cfg(test)]
mod tests;
