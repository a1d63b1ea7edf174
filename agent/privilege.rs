//! Who the agent runs as.
//!
//! Some kernels let any user in the initial network namespace join the proc
//! connector; others admit only `CAP_NET_ADMIN`. So `deploy/base` starts the
//! agent as uid 0 holding just `CAP_NET_ADMIN` (to join), `CAP_SETUID` and
//! `CAP_SETGID` (to leave), and [`settle`] switches every thread to
//! `--run-as-uid` / `--run-as-gid` right after the subscription: before any
//! other thread starts, the socket is bound or a client's byte is read. Going
//! from uid 0 to another uid makes the kernel clear the permitted, effective
//! and ambient capability sets; [`settle`] then reads every thread back from
//! `/proc/self/task` and refuses to go on if one still holds anything.
//!
//! The proc connector socket keeps receiving after the switch: the kernel
//! checks the capability when the socket joins the group, not per message.

use std::io;
use std::time::Instant;

use execwatch::proto;
use nix::unistd::{getegid, geteuid};

use crate::procfs::reader::status_ids;

/// `CAP_NET_ADMIN`'s bit in the capability masks of `/proc/<pid>/status`.
pub const CAP_NET_ADMIN: u32 = 12;

/// Why the agent could not settle who it runs as.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `/proc/self/task` or a thread's `status` could not be read.
    #[error("cannot read the agent's own credentials from {path}: {source}")]
    Read {
        /// The path read.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A thread's `status` lacked a line the check needs.
    #[error("{path} has no readable {field} line")]
    Malformed {
        /// The file.
        path: String,
        /// The line missing.
        field: &'static str,
    },
    /// A step of the switch failed.
    #[error(
        "cannot switch to uid {uid} gid {gid} ({step}): {source}; to switch, the agent must start \
         as uid 0 holding CAP_SETUID and CAP_SETGID (deploy/base), or start as that uid and gid"
    )]
    Switch {
        /// The uid asked for.
        uid: u32,
        /// The gid asked for.
        gid: u32,
        /// The call that failed.
        step: &'static str,
        /// What it said.
        #[source]
        source: nix::errno::Errno,
    },
    /// After the switch a thread still runs as another user or holds a
    /// capability.
    #[error(
        "after switching to uid {uid} gid {gid}, thread {} runs as uid {} gid {} with \
         capabilities {:#x}: refusing to serve",
        .thread.tid, .thread.uid[1], .thread.gid[1], .thread.capabilities
    )]
    StillPrivileged {
        /// The uid asked for.
        uid: u32,
        /// The gid asked for.
        gid: u32,
        /// The thread found.
        thread: ThreadCredentials,
    },
}

/// One thread's credentials, as `/proc/<pid>/task/<tid>/status` states them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCredentials {
    /// The thread's id.
    pub tid: i32,
    /// Real, effective, saved and filesystem uid.
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem gid.
    pub gid: [u32; 4],
    /// `CapEff`.
    pub effective: u64,
    /// Every capability the thread holds or could make effective: `CapEff`,
    /// `CapPrm` and `CapAmb` together.
    pub capabilities: u64,
}

impl ThreadCredentials {
    /// Parses a `status` file's text; the error names the line missing or
    /// malformed.
    fn parse(tid: i32, status: &str) -> Result<Self, &'static str> {
        let ids = |name| status_ids(status.as_bytes(), name).ok_or(name);
        let mask = |name: &'static str| {
            let line = status.lines().find_map(|l| l.strip_prefix(name));
            line.and_then(|l| u64::from_str_radix(l.trim(), 16).ok())
                .ok_or(name)
        };
        Ok(Self {
            tid,
            uid: ids("Uid:")?,
            gid: ids("Gid:")?,
            effective: mask("CapEff:")?,
            capabilities: mask("CapEff:")? | mask("CapPrm:")? | mask("CapAmb:")?,
        })
    }

    /// Runs as exactly `uid` and `gid` (all four ids each) and holds no
    /// capability.
    fn is_exactly(&self, uid: u32, gid: u32) -> bool {
        self.uid == [uid; 4] && self.gid == [gid; 4] && self.capabilities == 0
    }
}

/// The credentials of every thread of the agent.
pub fn threads() -> Result<Vec<ThreadCredentials>, PrivilegeError> {
    let dir = "/proc/self/task";
    let read_err = |path: String| move |source| PrivilegeError::Read { path, source };
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err(dir.into()))? {
        let entry = entry.map_err(read_err(dir.into()))?;
        let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let path = format!("{dir}/{tid}/status");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // A thread that ended since the listing holds nothing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(PrivilegeError::Read { path, source }),
        };
        let thread = ThreadCredentials::parse(tid, &text)
            .map_err(|field| PrivilegeError::Malformed { path, field })?;
        threads.push(thread);
    }
    Ok(threads)
}

/// Whether the calling thread holds `CAP_NET_ADMIN` in its effective set
/// (`false` if that cannot be read).
pub fn holds_net_admin() -> bool {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|text| ThreadCredentials::parse(0, &text).ok())
        .is_some_and(|t| t.effective & (1 << CAP_NET_ADMIN) != 0)
}

/// Switches every thread to `uid` and `gid` with no supplementary group, if
/// the agent does not already run as exactly them. Returns whether it
/// switched. glibc's (and musl's) `setgroups`, `setresgid` and `setresuid`
/// change every thread of the process, not only the caller.
pub fn switch(uid: u32, gid: u32) -> Result<bool, PrivilegeError> {
    use nix::unistd::{getresgid, getresuid, setgroups, setresgid, setresuid, Gid, Uid};
    let fail = |step| {
        move |source| PrivilegeError::Switch {
            uid,
            gid,
            step,
            source,
        }
    };
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    let uids = getresuid().map_err(fail("getresuid"))?;
    let gids = getresgid().map_err(fail("getresgid"))?;
    if [uids.real, uids.effective, uids.saved] == [u; 3]
        && [gids.real, gids.effective, gids.saved] == [g; 3]
    {
        return Ok(false);
    }
    setgroups(&[]).map_err(fail("setgroups"))?;
    setresgid(g, g, g).map_err(fail("setresgid"))?;
    setresuid(u, u, u).map_err(fail("setresuid"))?;
    Ok(true)
}

/// Settles who the agent runs as, once, after it subscribed (holding
/// `CAP_NET_ADMIN` or not) and before it starts another thread: with
/// `run_as`, switches to that uid and gid and proves that no thread kept
/// uid 0 or a capability; without, records what it runs as. `started` is
/// when `main` began. Logs the one line that says how the agent subscribed
/// and who it runs as now: at `warn` while it keeps uid 0 or a capability.
pub fn settle(
    run_as: Option<(u32, u32)>,
    subscribed_with_net_admin: bool,
    started: Instant,
) -> Result<proto::Privilege, PrivilegeError> {
    let switched = run_as
        .map(|(uid, gid)| switch(uid, gid))
        .transpose()?
        .unwrap_or(false);
    let privileged_micros = switched.then(|| started.elapsed().as_micros());
    let threads = threads()?;
    if let Some((uid, gid)) = run_as {
        if let Some(t) = threads.iter().find(|t| !t.is_exactly(uid, gid)) {
            let thread = t.clone();
            return Err(PrivilegeError::StillPrivileged { uid, gid, thread });
        }
    }
    // Called on the main thread: its effective ids.
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    let capabilities = threads.iter().fold(0, |all, t| all | t.capabilities);
    let subscribed_with = if subscribed_with_net_admin {
        "CAP_NET_ADMIN"
    } else {
        "no capability"
    };
    let caps = format!("{capabilities:#x}");
    if uid == 0 || capabilities != 0 {
        tracing::warn!(
            uid,
            gid,
            capabilities = caps,
            subscribed_with,
            "runs as uid {uid} with capabilities {caps}: start it as uid 0 with \
             --run-as-uid and --run-as-gid to drop them once subscribed"
        );
    } else {
        let privileged_ms = privileged_micros.map(|m| m as f64 / 1000.0);
        let now = if switched { "now runs" } else { "runs" };
        let held = privileged_ms.map_or(String::new(), |ms| {
            format!(" (uid 0 for the first {ms:.1} ms)")
        });
        tracing::info!(
            uid,
            gid,
            capabilities = caps,
            subscribed_with,
            privileged_ms,
            "subscribed holding {subscribed_with}; {now} as uid {uid} gid {gid} with no \
             capability{held}"
        );
    }
    Ok(proto::Privilege {
        uid,
        gid,
        capabilities,
        subscribed_with_net_admin,
        switched,
        privileged_micros: privileged_micros.map_or(0, |m| u64::try_from(m).unwrap_or(u64::MAX)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of a real `status` after a switch from root (abridged).
    const SWITCHED: &str = "Name:\tagent\nUmask:\t0022\nState:\tS (sleeping)\n\
        Uid:\t65534\t65534\t65534\t65534\nGid:\t65532\t65532\t65532\t65532\n\
        Groups:\t\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
        CapEff:\t0000000000000000\nCapBnd:\t00000000000010c0\nCapAmb:\t0000000000000000\n\
        NoNewPrivs:\t1\nSeccomp:\t2\n";

    #[test]
    fn a_switched_thread_is_exactly_its_uid_and_holds_nothing() {
        let t = ThreadCredentials::parse(7, SWITCHED).unwrap();
        assert_eq!(t.uid, [65534; 4]);
        assert_eq!(t.gid, [65532; 4]);
        assert_eq!(t.capabilities, 0);
        assert!(t.is_exactly(65534, 65532));
        assert!(!t.is_exactly(65534, 65534));
    }

    #[test]
    fn a_capability_or_a_uid_left_behind_is_seen() {
        let kept = SWITCHED.replace("CapPrm:\t0000000000000000", "CapPrm:\t0000000000001000");
        let t = ThreadCredentials::parse(7, &kept).unwrap();
        assert_eq!(t.capabilities, 1 << CAP_NET_ADMIN);
        assert!(!t.is_exactly(65534, 65532));
        let saved_root = SWITCHED.replace("Uid:\t65534\t65534\t65534", "Uid:\t65534\t65534\t0");
        let t = ThreadCredentials::parse(7, &saved_root).unwrap();
        assert!(!t.is_exactly(65534, 65532));
    }

    #[test]
    fn a_missing_line_is_named() {
        let no_amb = SWITCHED.replace("CapAmb:", "Other:");
        assert_eq!(ThreadCredentials::parse(7, &no_amb), Err("CapAmb:"));
        let short = SWITCHED.replace("Uid:\t65534\t65534\t65534\t65534", "Uid:\t1\t2");
        assert_eq!(ThreadCredentials::parse(7, &short), Err("Uid:"));
    }

    /// The test process's own threads read back as they are.
    #[test]
    fn the_own_threads_are_read() {
        let threads = threads().unwrap();
        assert!(threads.iter().any(|t| t.tid == std::process::id() as i32));
        let euid = nix::unistd::geteuid().as_raw();
        assert!(threads.iter().all(|t| t.uid[1] == euid));
    }
}
