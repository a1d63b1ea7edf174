//! Wire format of the kernel's process events connector (`cn_proc`).
//!
//! This module is pure: it turns the bytes of a `NETLINK_CONNECTOR` datagram
//! into values and builds the subscribe request. It makes no system call, so it
//! compiles and is tested on any OS; the socket lives elsewhere.
//!
//! Sources: `include/uapi/linux/netlink.h`, `include/uapi/linux/connector.h`,
//! `include/uapi/linux/cn_proc.h` and `drivers/connector/cn_proc.c`. Every
//! integer is in host byte order.
//!
//! One event as the kernel sends it (76 bytes, offsets from the datagram start):
//!
//! ```text
//!  0         4         6         8         12        16
//!  +---------+---------+---------+---------+---------+
//!  | len u32 | type u16| flags   | seq u32 | pid u32 |  struct nlmsghdr (16)
//!  +---------+---------+---------+---------+---------+  type = NLMSG_DONE (3)
//!  16        20        24        28        32   34   36
//!  +---------+---------+---------+---------+----+----+
//!  | idx u32 | val u32 | seq u32 | ack u32 |len |flag|  struct cn_msg (20)
//!  +---------+---------+---------+---------+----+----+  idx = val = 1 (proc)
//!  36        40        44                  52           76
//!  +---------+---------+-------------------+------------+
//!  | what u32| cpu u32 | timestamp_ns u64  | event_data |  struct proc_event (40)
//!  +---------+---------+-------------------+------------+  cn_msg.len = 40
//! ```
//!
//! `event_data` is a union chosen by `what`; words from its start (offset 16 in
//! `proc_event`), pids are `__kernel_pid_t` (i32):
//!
//! ```text
//!  what          +0           +4            +8          +12          +16        +20
//!  NONE (ack)    err
//!  FORK          parent_pid   parent_tgid   child_pid   child_tgid
//!  EXEC          pid          tgid
//!  UID / GID     pid          tgid          ruid|rgid   euid|egid
//!  SID           pid          tgid
//!  PTRACE        pid          tgid          tracer_pid  tracer_tgid
//!  COMM          pid          tgid          comm[16] ...........................
//!  COREDUMP      pid          tgid          parent_pid  parent_tgid
//!  EXIT          pid          tgid          exit_code   exit_signal  parent_pid parent_tgid
//! ```
//!
//! The subscribe request is the same nlmsghdr + cn_msg followed by
//! `struct proc_input { mcast_op u32, event_type u32 }` (8 bytes, kernels
//! >= 6.6) or by the bare `mcast_op u32` (4 bytes, every kernel).

use core::ops::Range;
use thiserror::Error;

/// Connector index of the process events connector (`CN_IDX_PROC`); also the
/// netlink multicast group to bind to.
pub const CN_IDX_PROC: u32 = 0x1;
/// Connector value of the process events connector (`CN_VAL_PROC`).
pub const CN_VAL_PROC: u32 = 0x1;

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDR_LEN: usize = 16;
/// Size of `struct cn_msg` without its trailing data.
pub const CN_MSG_HDR_LEN: usize = 20;
/// Size of the fixed part of `struct proc_event` (what, cpu, timestamp_ns).
pub const PROC_EVENT_HDR_LEN: usize = 16;
/// Size of the `event_data` union (its largest members, comm and exit).
pub const EVENT_DATA_LEN: usize = 24;
/// Size of `struct proc_event`, the `cn_msg.len` of every kernel event.
pub const PROC_EVENT_LEN: usize = PROC_EVENT_HDR_LEN + EVENT_DATA_LEN;
/// Netlink messages in one datagram start on multiples of this (`NLMSG_ALIGNTO`).
pub const NLMSG_ALIGNTO: usize = 4;

/// `nlmsg_type` of a message to skip.
pub const NLMSG_NOOP: u16 = 0x1;
/// `nlmsg_type` of an error report (`struct nlmsgerr`).
pub const NLMSG_ERROR: u16 = 0x2;
/// `nlmsg_type` of every connector message.
pub const NLMSG_DONE: u16 = 0x3;
/// `nlmsg_type` telling that data was lost.
pub const NLMSG_OVERRUN: u16 = 0x4;

/// Bits of `enum proc_cn_event`: both the `what` of an event and, OR-ed
/// together, the filter of a subscription (`proc_input.event_type`).
pub mod event_mask {
    /// `PROC_EVENT_NONE`: the `what` of an ack; as a filter it means "all".
    pub const NONE: u32 = 0x0000_0000;
    /// `PROC_EVENT_FORK`: a task was created.
    pub const FORK: u32 = 0x0000_0001;
    /// `PROC_EVENT_EXEC`: a task called execve.
    pub const EXEC: u32 = 0x0000_0002;
    /// `PROC_EVENT_UID`: a task changed its uids.
    pub const UID: u32 = 0x0000_0004;
    /// `PROC_EVENT_GID`: a task changed its gids.
    pub const GID: u32 = 0x0000_0040;
    /// `PROC_EVENT_SID`: a task started a session.
    pub const SID: u32 = 0x0000_0080;
    /// `PROC_EVENT_PTRACE`: a tracer attached or detached.
    pub const PTRACE: u32 = 0x0000_0100;
    /// `PROC_EVENT_COMM`: a task changed its comm.
    pub const COMM: u32 = 0x0000_0200;
    /// `PROC_EVENT_NONZERO_EXIT`: a filter bit only. The kernel (checked up to
    /// 6.18, `cn_filter` in drivers/connector/cn_proc.c) never sends it as a
    /// `what`; it lets `EXIT` events with a nonzero `exit_code` through, and
    /// those still arrive with `what = EXIT`.
    pub const NONZERO_EXIT: u32 = 0x2000_0000;
    /// `PROC_EVENT_COREDUMP`: a task dumped core.
    pub const COREDUMP: u32 = 0x4000_0000;
    /// `PROC_EVENT_EXIT`: a task exited.
    pub const EXIT: u32 = 0x8000_0000;
    /// `PROC_EVENT_ALL`: every bit above; the kernel treats this filter as "no filter".
    pub const ALL: u32 =
        FORK | EXEC | UID | GID | SID | PTRACE | COMM | NONZERO_EXIT | COREDUMP | EXIT;
}

/// Byte ranges of `struct nlmsghdr`, from the start of the header.
mod nlmsghdr {
    use core::ops::Range;
    pub const LEN: Range<usize> = 0..4;
    pub const TYPE: Range<usize> = 4..6;
}

/// Byte ranges of `struct cn_msg`, from the start of the netlink payload.
mod cn_msg {
    use core::ops::Range;
    pub const IDX: Range<usize> = 0..4;
    pub const VAL: Range<usize> = 4..8;
    pub const LEN: Range<usize> = 16..18;
}

/// Byte ranges of `struct proc_event`, from the start of `cn_msg.data`.
mod proc_event {
    use core::ops::Range;
    pub const WHAT: Range<usize> = 0..4;
    pub const CPU: Range<usize> = 4..8;
    pub const TIMESTAMP_NS: Range<usize> = 8..16;
    /// Start of the `event_data` union.
    pub const DATA: usize = 16;
    /// Offset of `comm[16]` inside `event_data.comm`.
    pub const COMM: Range<usize> = 8..24;
}

/// Why bytes could not be read as a connector message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The bytes end before the structure named by `at` does: `needed` bytes
    /// are required, only `got` are there (within the enclosing declared
    /// length). Happens on a short `recv` or a malformed message.
    #[error("truncated {at}: need {needed} bytes, got {got}")]
    Truncated {
        /// The structure being read, e.g. "nlmsghdr" or "proc_event.exec".
        at: &'static str,
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A length field declares a size outside what the bytes around it allow,
    /// e.g. `nlmsg_len` smaller than its own header, or `cn_msg.len` larger
    /// than its netlink message.
    #[error("bad length in {at}: declared {declared}, allowed {min}..={max}")]
    BadLength {
        /// The length field, e.g. "nlmsghdr.nlmsg_len" or "cn_msg.len".
        at: &'static str,
        /// The value it declares.
        declared: usize,
        /// Smallest value that would be accepted.
        min: usize,
        /// Largest value that would be accepted.
        max: usize,
    },
}

/// The subscription operation (`enum proc_cn_mcast_op`); `op as u32` is
/// its value on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum McastOp {
    /// `PROC_CN_MCAST_LISTEN`: start receiving events.
    Listen = 1,
    /// `PROC_CN_MCAST_IGNORE`: stop receiving events.
    Ignore = 2,
}

/// Builds the datagram that (un)subscribes a socket bound to `CN_IDX_PROC`.
///
/// With `Some(mask)` the payload is `struct proc_input { op, mask }` (8 bytes),
/// understood by kernels >= 6.6, which then filter events by `mask` (bits of
/// [`event_mask`]; 0 or [`event_mask::ALL`] mean everything). With `None` it is
/// the legacy 4-byte op, which every kernel accepts and which means everything.
/// Older kernels ignore an 8-byte payload silently: no ack, no events; so does
/// any kernel for a sender outside the initial user and pid namespaces.
///
/// The kernel answers with an [`EventKind::Ack`] only when the filter is
/// everything: its own filter drops the ack (`what` = 0) for any other mask.
///
/// `seq` goes into both headers; `pid` is the sender's netlink port id.
pub fn subscribe_message(op: McastOp, filter: Option<u32>, seq: u32, pid: u32) -> Vec<u8> {
    let mut payload = (op as u32).to_ne_bytes().to_vec();
    if let Some(mask) = filter {
        payload.extend_from_slice(&mask.to_ne_bytes());
    }
    connector_datagram(seq, pid, &payload)
}

/// nlmsghdr (NLMSG_DONE, flags 0) + cn_msg (proc id, ack 0) + `payload`.
/// Payloads here are at most 40 bytes, so the narrowing casts cannot truncate.
fn connector_datagram(seq: u32, pid: u32, payload: &[u8]) -> Vec<u8> {
    let total = NLMSG_HDR_LEN + CN_MSG_HDR_LEN + payload.len();
    let mut out = Vec::with_capacity(nlmsg_align(total));
    // struct nlmsghdr
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&pid.to_ne_bytes());
    // struct cn_msg
    out.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    out.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(payload);
    // Pad to NLMSG_ALIGNTO like NLMSG_SPACE; a no-op for the sizes built here.
    out.resize(nlmsg_align(total), 0);
    out
}

/// Rounds `len` up to a multiple of [`NLMSG_ALIGNTO`] (`NLMSG_ALIGN`), saturating.
pub const fn nlmsg_align(len: usize) -> usize {
    len.saturating_add(NLMSG_ALIGNTO - 1) & !(NLMSG_ALIGNTO - 1)
}

/// One netlink message of a datagram, as the receive loop needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A process event (including the ack to a subscribe request).
    Event(ProcEvent),
    /// `NLMSG_ERROR`: `errno` is the positive errno (the wire holds its
    /// negation); 0 is a plain netlink ack.
    Error {
        /// Positive errno, or 0.
        errno: i32,
    },
    /// `NLMSG_OVERRUN`: the kernel says data was lost.
    Overrun,
    /// A connector message for another connector (`cn_msg.id` not proc).
    Foreign {
        /// `cn_msg.id.idx`.
        idx: u32,
        /// `cn_msg.id.val`.
        val: u32,
    },
    /// A netlink message of a type this module does not read.
    Other {
        /// Its `nlmsg_type`.
        msg_type: u16,
    },
}

/// One `struct proc_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEvent {
    /// CPU that sent it.
    pub cpu: u32,
    /// `ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds (since boot, without suspend).
    pub timestamp_ns: u64,
    /// What happened.
    pub kind: EventKind,
}

/// The `event_data` union, decoded by `what`. `pid` is the thread id and
/// `tgid` the process id as user space knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `PROC_EVENT_NONE`: the kernel's answer to a subscribe request; `err` is
    /// a positive errno or 0. Filtered out unless the filter is "all". Its
    /// `cn_msg.ack` is the request's ack + 1, but its seq is the kernel's
    /// per-CPU counter, not the request's.
    Ack {
        /// 0 on success, else e.g. EPERM (1) or EINVAL (22).
        err: u32,
    },
    /// `PROC_EVENT_FORK`: `child` was created by `parent`.
    Fork {
        /// Parent's thread id.
        parent_pid: i32,
        /// Parent's process id.
        parent_tgid: i32,
        /// Child's thread id.
        child_pid: i32,
        /// Child's process id.
        child_tgid: i32,
    },
    /// `PROC_EVENT_EXEC`: the task called execve.
    Exec {
        /// Thread id.
        pid: i32,
        /// Process id.
        tgid: i32,
    },
    /// `PROC_EVENT_UID`: real and effective uid after a change.
    Uid {
        /// Thread id.
        pid: i32,
        /// Process id.
        tgid: i32,
        /// Real uid.
        ruid: u32,
        /// Effective uid.
        euid: u32,
    },
    /// `PROC_EVENT_GID`: real and effective gid after a change.
    Gid {
        /// Thread id.
        pid: i32,
        /// Process id.
        tgid: i32,
        /// Real gid.
        rgid: u32,
        /// Effective gid.
        egid: u32,
    },
    /// `PROC_EVENT_SID`: the task called setsid.
    Sid {
        /// Thread id.
        pid: i32,
        /// Process id.
        tgid: i32,
    },
    /// `PROC_EVENT_PTRACE`: a tracer attached (tracer ids 0 on detach).
    Ptrace {
        /// Traced thread id.
        pid: i32,
        /// Traced process id.
        tgid: i32,
        /// Tracer's thread id.
        tracer_pid: i32,
        /// Tracer's process id.
        tracer_tgid: i32,
    },
    /// `PROC_EVENT_COMM`: the task's new comm (see [`comm_bytes`]).
    Comm {
        /// Thread id.
        pid: i32,
        /// Process id.
        tgid: i32,
        /// NUL-padded name, as `char comm[16]`.
        comm: [u8; 16],
    },
    /// `PROC_EVENT_COREDUMP`: the task dumped core.
    Coredump {
        /// Thread id.
        pid: i32,
        /// Process id.
        tgid: i32,
        /// Parent's thread id (0 if already gone).
        parent_pid: i32,
        /// Parent's process id (0 if already gone).
        parent_tgid: i32,
    },
    /// `PROC_EVENT_EXIT`: the task exited.
    Exit {
        /// Thread id.
        pid: i32,
        /// Process id.
        tgid: i32,
        /// Wait status as in `waitpid` (`code << 8 | signal`).
        exit_code: u32,
        /// Signal sent to the parent (usually SIGCHLD; -1 as u32 for threads).
        exit_signal: u32,
        /// Parent's thread id (0 if already gone).
        parent_pid: i32,
        /// Parent's process id (0 if already gone).
        parent_tgid: i32,
    },
    /// `what = PROC_EVENT_NONZERO_EXIT`, which no kernel up to 6.18 sends (the
    /// bit is a filter, see [`event_mask::NONZERO_EXIT`]); decoded with the
    /// exit layout in case one ever does. Same fields as [`EventKind::Exit`].
    NonzeroExit {
        /// Thread id.
        pid: i32,
        /// Process id.
        tgid: i32,
        /// Wait status.
        exit_code: u32,
        /// Signal sent to the parent.
        exit_signal: u32,
        /// Parent's thread id.
        parent_pid: i32,
        /// Parent's process id.
        parent_tgid: i32,
    },
    /// A `what` this module does not know (a newer kernel); its data is skipped.
    Unknown {
        /// The raw `what`.
        what: u32,
    },
}

/// `comm` up to its first NUL (all 16 bytes if there is none).
pub fn comm_bytes(comm: &[u8; 16]) -> &[u8] {
    comm.split(|&b| b == 0).next().unwrap_or(comm)
}

/// Copies N bytes at `r`; callers check lengths first, the zeros are a last
/// defense so that a wrong range can never panic.
fn field<const N: usize>(b: &[u8], r: Range<usize>) -> [u8; N] {
    b.get(r).and_then(|s| s.try_into().ok()).unwrap_or([0; N])
}

/// Range of the `i`-th 32-bit word.
const fn word(i: usize) -> Range<usize> {
    4 * i..4 * i + 4
}

/// `Ok` if `b` holds at least `needed` bytes, else `Truncated` at `at`.
fn need(at: &'static str, needed: usize, b: &[u8]) -> Result<(), ParseError> {
    let got = b.len();
    (got >= needed)
        .then_some(())
        .ok_or(ParseError::Truncated { at, needed, got })
}

impl EventKind {
    /// The `what` value this kind is sent with.
    pub const fn what(&self) -> u32 {
        use event_mask as m;
        match self {
            EventKind::Ack { .. } => m::NONE,
            EventKind::Fork { .. } => m::FORK,
            EventKind::Exec { .. } => m::EXEC,
            EventKind::Uid { .. } => m::UID,
            EventKind::Gid { .. } => m::GID,
            EventKind::Sid { .. } => m::SID,
            EventKind::Ptrace { .. } => m::PTRACE,
            EventKind::Comm { .. } => m::COMM,
            EventKind::Coredump { .. } => m::COREDUMP,
            EventKind::Exit { .. } => m::EXIT,
            EventKind::NonzeroExit { .. } => m::NONZERO_EXIT,
            EventKind::Unknown { what } => *what,
        }
    }

    /// The comm of a `Comm` event up to its first NUL; `None` for other kinds.
    pub fn comm(&self) -> Option<&[u8]> {
        match self {
            EventKind::Comm { comm, .. } => Some(comm_bytes(comm)),
            _ => None,
        }
    }

    /// Decodes the union of `ev` (a whole `proc_event`, header included).
    // Tabular on purpose: one line per union member, as in the module diagram.
    #[rustfmt::skip]
    fn parse(what: u32, ev: &[u8]) -> Result<Self, ParseError> {
        use event_mask as m;
        use EventKind::*;
        let (at, member_len) = match what {
            m::NONE => ("proc_event.ack", 4),
            m::FORK => ("proc_event.fork", 16),
            m::EXEC => ("proc_event.exec", 8),
            m::UID | m::GID => ("proc_event.id", 16),
            m::SID => ("proc_event.sid", 8),
            m::PTRACE => ("proc_event.ptrace", 16),
            m::COMM => ("proc_event.comm", 24),
            m::COREDUMP => ("proc_event.coredump", 16),
            m::EXIT | m::NONZERO_EXIT => ("proc_event.exit", 24),
            _ => return Ok(Unknown { what }),
        };
        // `needed` counts from the start of proc_event, as `got` does.
        need(at, proc_event::DATA + member_len, ev)?;
        let d = ev.get(proc_event::DATA..).unwrap_or_default();
        let u = |i: usize| u32::from_ne_bytes(field(d, word(i)));
        let p = |i: usize| i32::from_ne_bytes(field(d, word(i)));
        Ok(match what {
            m::NONE => Ack { err: u(0) },
            m::FORK => Fork { parent_pid: p(0), parent_tgid: p(1), child_pid: p(2), child_tgid: p(3) },
            m::EXEC => Exec { pid: p(0), tgid: p(1) },
            m::UID => Uid { pid: p(0), tgid: p(1), ruid: u(2), euid: u(3) },
            m::GID => Gid { pid: p(0), tgid: p(1), rgid: u(2), egid: u(3) },
            m::SID => Sid { pid: p(0), tgid: p(1) },
            m::PTRACE => Ptrace { pid: p(0), tgid: p(1), tracer_pid: p(2), tracer_tgid: p(3) },
            m::COMM => Comm { pid: p(0), tgid: p(1), comm: field(d, proc_event::COMM) },
            m::COREDUMP => Coredump { pid: p(0), tgid: p(1), parent_pid: p(2), parent_tgid: p(3) },
            m::EXIT => Exit { pid: p(0), tgid: p(1), exit_code: u(2), exit_signal: u(3), parent_pid: p(4), parent_tgid: p(5) },
            m::NONZERO_EXIT => NonzeroExit { pid: p(0), tgid: p(1), exit_code: u(2), exit_signal: u(3), parent_pid: p(4), parent_tgid: p(5) },
            _ => Unknown { what },
        })
    }

    /// Encodes the union, zero-filled past the member like the kernel's memset.
    #[rustfmt::skip]
    fn encode(&self) -> [u8; EVENT_DATA_LEN] {
        use EventKind::*;
        // Bit-for-bit: the kernel stores `__kernel_pid_t` in the same words.
        let w = |p: i32| u32::from_ne_bytes(p.to_ne_bytes());
        let words: [u32; 6] = match *self {
            Ack { err } => [err, 0, 0, 0, 0, 0],
            Fork { parent_pid: a, parent_tgid: b, child_pid: c, child_tgid: d } => [w(a), w(b), w(c), w(d), 0, 0],
            Exec { pid, tgid } | Sid { pid, tgid } | Comm { pid, tgid, .. } => [w(pid), w(tgid), 0, 0, 0, 0],
            Uid { pid, tgid, ruid: r, euid: e } | Gid { pid, tgid, rgid: r, egid: e } => [w(pid), w(tgid), r, e, 0, 0],
            Ptrace { pid, tgid, tracer_pid: a, tracer_tgid: b }
            | Coredump { pid, tgid, parent_pid: a, parent_tgid: b } => [w(pid), w(tgid), w(a), w(b), 0, 0],
            Exit { pid, tgid, exit_code: c, exit_signal: s, parent_pid: a, parent_tgid: b }
            | NonzeroExit { pid, tgid, exit_code: c, exit_signal: s, parent_pid: a, parent_tgid: b } => {
                [w(pid), w(tgid), c, s, w(a), w(b)]
            }
            Unknown { .. } => [0; 6],
        };
        let mut d = [0u8; EVENT_DATA_LEN];
        for (chunk, v) in d.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        if let Comm { comm, .. } = self {
            d[proc_event::COMM].copy_from_slice(comm);
        }
        d
    }
}

impl ProcEvent {
    /// Decodes one `struct proc_event` from exactly `cn_msg.data[..cn_msg.len]`.
    /// Bytes past the member that `what` selects are ignored (the kernel may
    /// grow the struct); an unknown `what` needs only the 16-byte header.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] if `ev` is shorter than the header or than
    /// the union member that `what` selects.
    pub fn parse(ev: &[u8]) -> Result<Self, ParseError> {
        need("proc_event", PROC_EVENT_HDR_LEN, ev)?;
        let what = u32::from_ne_bytes(field(ev, proc_event::WHAT));
        Ok(ProcEvent {
            cpu: u32::from_ne_bytes(field(ev, proc_event::CPU)),
            timestamp_ns: u64::from_ne_bytes(field(ev, proc_event::TIMESTAMP_NS)),
            kind: EventKind::parse(what, ev)?,
        })
    }

    /// Encodes the 40-byte `struct proc_event`.
    pub fn to_bytes(&self) -> [u8; PROC_EVENT_LEN] {
        let mut out = [0u8; PROC_EVENT_LEN];
        out[proc_event::WHAT].copy_from_slice(&self.kind.what().to_ne_bytes());
        out[proc_event::CPU].copy_from_slice(&self.cpu.to_ne_bytes());
        out[proc_event::TIMESTAMP_NS].copy_from_slice(&self.timestamp_ns.to_ne_bytes());
        out[proc_event::DATA..].copy_from_slice(&self.kind.encode());
        out
    }

    /// Encodes the whole datagram as the kernel sends it: nlmsghdr (76,
    /// NLMSG_DONE, flags 0, `seq`, port 0) + cn_msg (proc id, `seq`, ack 0,
    /// len 40) + proc_event. For tests, fixtures and fuzzing.
    pub fn to_datagram(&self, seq: u32) -> Vec<u8> {
        connector_datagram(seq, 0, &self.to_bytes())
    }
}

/// Iterates over the messages of one received datagram.
///
/// `NLMSG_NOOP` is skipped. A message whose inside is bad yields an `Err` and
/// the walk goes on with the next one (its `nlmsg_len` is trusted); a bad or
/// truncated `nlmsghdr` yields an `Err` and ends the walk. Never panics and
/// never reads past a declared length.
pub fn parse_datagram(buf: &[u8]) -> impl Iterator<Item = Result<Message, ParseError>> + '_ {
    // The bytes not walked yet; emptied after an error that hides where the
    // next message starts.
    let mut rest = buf;
    core::iter::from_fn(move || {
        while !rest.is_empty() {
            // A message to skip is `Ok(None)`: on to the next one.
            if let Some(item) = step(&mut rest).transpose() {
                return Some(item);
            }
        }
        None
    })
    .fuse()
}

/// Reads the next message and moves `rest` past it; `Ok(None)` for one to
/// skip.
fn step(rest: &mut &[u8]) -> Result<Option<Message>, ParseError> {
    let buf = core::mem::take(rest);
    need("nlmsghdr", NLMSG_HDR_LEN, buf)?;
    let len = u32::from_ne_bytes(field(buf, nlmsghdr::LEN)) as usize;
    if len < NLMSG_HDR_LEN {
        return Err(ParseError::BadLength {
            at: "nlmsghdr.nlmsg_len",
            declared: len,
            min: NLMSG_HDR_LEN,
            max: buf.len(),
        });
    }
    need("netlink message", len, buf)?;
    // Move on before looking inside, so a bad payload cannot stop the
    // walk; the last message may lack its alignment padding.
    *rest = buf.get(nlmsg_align(len)..).unwrap_or_default();
    let payload = buf.get(NLMSG_HDR_LEN..len).unwrap_or_default();
    match u16::from_ne_bytes(field(buf, nlmsghdr::TYPE)) {
        NLMSG_NOOP => Ok(None),
        NLMSG_ERROR => {
            // struct nlmsgerr { int error; struct nlmsghdr msg; }
            need("nlmsgerr", 4, payload)?;
            let errno = i32::from_ne_bytes(field(payload, word(0))).wrapping_neg();
            Ok(Some(Message::Error { errno }))
        }
        NLMSG_OVERRUN => Ok(Some(Message::Overrun)),
        NLMSG_DONE => parse_connector(payload).map(Some),
        msg_type => Ok(Some(Message::Other { msg_type })),
    }
}

/// Decodes the `cn_msg` that fills the payload of an `NLMSG_DONE` message.
fn parse_connector(p: &[u8]) -> Result<Message, ParseError> {
    need("cn_msg", CN_MSG_HDR_LEN, p)?;
    let idx = u32::from_ne_bytes(field(p, cn_msg::IDX));
    let val = u32::from_ne_bytes(field(p, cn_msg::VAL));
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC) {
        return Ok(Message::Foreign { idx, val });
    }
    let len = usize::from(u16::from_ne_bytes(field(p, cn_msg::LEN)));
    let data = p
        .get(CN_MSG_HDR_LEN..CN_MSG_HDR_LEN + len)
        .ok_or(ParseError::BadLength {
            at: "cn_msg.len",
            declared: len,
            min: 0,
            max: p.len() - CN_MSG_HDR_LEN,
        })?;
    ProcEvent::parse(data).map(Message::Event)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
