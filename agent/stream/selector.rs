//! Server-side selectors: which processes, and which of their fields, one
//! subscriber asked for in its `WatchRequest`.
//!
//! A selector is a pre-filter, never a decision: the agent may send more
//! than a subscriber asked for, never less than what matches. The semantics
//! (how lists combine, what an unreadable field does, the limits) are the
//! contract's, written on `WatchRequest` in `proto/execwatch/v1/execwatch.proto`;
//! this module implements them.
//!
//! [`Selector`] is compiled once per subscriber from its request and answers
//! [`Selector::wants`] for each record; [`Filter`] adds what a filtered
//! stream needs besides, knowing which exits to send: the exits of the
//! processes it was sent. [`Omit`] clears the fields a subscriber said it
//! does not need. [`Interest`] is the union of every hooked subscriber's
//! selector, as much as the detector needs to know to read a new process
//! only as far as some subscriber could want it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use execwatch::internal::argv;
use execwatch::internal::lock::lock;
use execwatch::proto::{Process, WatchRequest};

use crate::procfs::cmdline::ArgvPatterns;

/// Most entries one selector list may hold.
pub const MAX_ENTRIES: usize = 1000;
/// Longest `argv_substrings` or `exe_paths` entry, in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// Longest `comms` entry, in bytes: what the kernel keeps of a command name.
pub const COMM_MAX_BYTES: usize = 15;
/// `(uid_t) -1`: not a uid (the kernel reads it as "leave unchanged").
const NO_UID: u32 = u32::MAX;
/// Processes a filtered stream tracks for their exits before it gives up
/// and sends every exit (more than asked, never less).
const MAX_TRACKED: usize = 1 << 16;

/// One invalid field of a `WatchRequest`, for an INVALID_ARGUMENT status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WatchRequest: {field}: {reason}")]
pub struct SelectorError {
    /// The field as the contract names it, with the index of the bad entry,
    /// e.g. `comms[2]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SelectorError {
    SelectorError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Everything a subscriber chose in its request, compiled.
pub struct Choice {
    /// Its selector, `None` if it wants every process.
    pub filter: Option<Arc<Filter>>,
    /// The fields it does not need.
    pub omit: Omit,
    /// Whether it wants exits too.
    pub include_exits: bool,
    /// Whether it starts with live events, without a snapshot.
    pub skip_snapshot: bool,
}

impl Choice {
    /// What `req` chose, or the first invalid field.
    pub fn from_request(req: &WatchRequest) -> Result<Choice, SelectorError> {
        let filter =
            Selector::from_request(req)?.map(|s| Arc::new(Filter::new(s, req.include_exits)));
        Ok(Choice {
            filter,
            omit: Omit::from_request(req)?,
            include_exits: req.include_exits,
            skip_snapshot: req.skip_snapshot,
        })
    }
}

/// Which processes a subscriber wants, compiled from its request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    comms: HashSet<String>,
    /// The argv substrings, for reads that search whole command lines.
    pub argv: ArgvPatterns,
    exe_paths: HashSet<String>,
    uids: HashSet<u32>,
    outside_pods: bool,
    /// True if no process passes (`no_processes`): a snapshot need not even
    /// read `/proc`.
    pub nothing: bool,
}

impl Selector {
    /// The selector of `req`: `None` if it selects nothing in particular
    /// (every process is sent), or the first invalid field.
    pub fn from_request(req: &WatchRequest) -> Result<Option<Selector>, SelectorError> {
        let comm =
            format!("a command name is at most {COMM_MAX_BYTES} bytes (the kernel keeps no more)");
        check_list("comms", &req.comms, COMM_MAX_BYTES, &comm, false)?;
        let (max, limit) = (MAX_PATTERN_BYTES, format!("at most {MAX_PATTERN_BYTES}"));
        let (argv, exe) = (&req.argv_substrings, &req.exe_paths);
        check_list("argv_substrings", argv, max, &limit, false)?;
        check_list("exe_paths", exe, max, &limit, true)?;
        check_len("uids", req.uids.len())?;
        if let Some(i) = req.uids.iter().position(|&u| u == NO_UID) {
            return Err(invalid(
                format!("uids[{i}]"),
                "4294967295 is (uid_t) -1, not a uid",
            ));
        }
        let selector = Selector {
            comms: req.comms.iter().cloned().collect(),
            argv: ArgvPatterns::new(req.argv_substrings.clone()),
            exe_paths: req.exe_paths.iter().cloned().collect(),
            uids: req.uids.iter().copied().collect(),
            outside_pods: req.outside_pods,
            nothing: req.no_processes,
        };
        let by_field = selector.has_matchers() || !req.uids.is_empty() || req.outside_pods;
        if selector.nothing && by_field {
            return Err(invalid(
                "no_processes",
                "set together with comms, argv_substrings, exe_paths, uids or outside_pods; it selects nothing, so it is set alone",
            ));
        }
        Ok((selector.nothing || by_field).then_some(selector))
    }

    fn has_matchers(&self) -> bool {
        !self.comms.is_empty() || !self.argv.patterns().is_empty() || !self.exe_paths.is_empty()
    }

    /// The comms, if they are the only matchers: then [`Selector::wants`]
    /// passes no process whose comm is not among them, whatever its other
    /// fields (the filters only narrow).
    fn only_comms(&self) -> Option<&HashSet<String>> {
        let other = !self.argv.patterns().is_empty() || !self.exe_paths.is_empty();
        (!self.comms.is_empty() && !other).then_some(&self.comms)
    }

    /// Whether `p` passes: every filter that is set, then any matcher (or
    /// none is set). A filter passes a field that could not be read; a
    /// matcher never matches one.
    pub fn wants(&self, p: &Process) -> bool {
        let in_pod = self.outside_pods && p.cgroup.as_ref().is_some_and(|c| c.in_kubernetes_pod);
        let uids = &self.uids;
        let other_uid =
            (p.credentials.as_ref()).is_some_and(|c| !uids.is_empty() && !uids.contains(&c.uid));
        if self.nothing || in_pod || other_uid {
            return false;
        }
        if !self.has_matchers() {
            return true;
        }
        self.comms.contains(&p.comm)
            || argv::find_in(p, self.argv.patterns()).is_some()
            || p.exe.as_ref().is_some_and(|e| self.exe_paths.contains(e))
    }
}

/// What the hooked subscribers could want of a new process, all together:
/// how much of `/proc/<pid>` the detector must read before it knows that
/// nobody will be sent the record.
///
/// Never narrower than the union of the selectors it was built from: a
/// process it rules out is one that no [`Selector::wants`] of them passes,
/// whatever the fields not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Interest {
    /// Nobody wants any process (no subscriber, or only `no_processes`
    /// ones): `/proc` is not read at all.
    #[default]
    Nothing,
    /// Every subscriber selects by comm alone (filters besides): a process
    /// whose comm is in none of their lists is read no further than its
    /// comm.
    Comms(HashSet<String>),
    /// Some subscriber may want any process (it is unfiltered, or matches
    /// argv or the executable): every record is read in full, and a command
    /// line longer than the read limit is searched whole for these, every
    /// subscriber's argv substrings.
    All(ArgvPatterns),
}

impl Interest {
    /// The union of the selectors of some subscribers, `None` for one that
    /// wants every process.
    pub fn of<'a>(selectors: impl IntoIterator<Item = Option<&'a Selector>>) -> Interest {
        let (mut comms, mut all, mut argv) = (None::<HashSet<String>>, false, Vec::new());
        for selector in selectors {
            let Some(selector) = selector else {
                all = true;
                continue;
            };
            if selector.nothing {
                continue;
            }
            argv.extend_from_slice(selector.argv.patterns());
            match selector.only_comms() {
                Some(c) => comms.get_or_insert_default().extend(c.iter().cloned()),
                None => all = true,
            }
        }
        if all {
            return Interest::All(ArgvPatterns::new(argv));
        }
        comms.map_or(Interest::Nothing, Interest::Comms)
    }

    /// The argv substrings to search whole command lines for.
    pub fn argv(&self) -> &ArgvPatterns {
        static NONE: ArgvPatterns = ArgvPatterns::NONE;
        match self {
            Interest::All(argv) => argv,
            _ => &NONE,
        }
    }

    /// Whether a process with this comm (the bytes of `/proc/<pid>/stat`)
    /// may be wanted by someone: false only if no selector in the union
    /// could pass it. Compared as the record would carry it, so that the
    /// answer is the one [`Selector::wants`] would give on the full record.
    pub fn may_want(&self, comm: &[u8]) -> bool {
        match self {
            Interest::Nothing => false,
            Interest::Comms(comms) => comms.contains(String::from_utf8_lossy(comm).as_ref()),
            Interest::All(_) => true,
        }
    }
}

/// Checks a list's length and each entry: not empty, at most `max` bytes
/// (`limit` says so), and absolute if `absolute`.
fn check_list(
    field: &str,
    list: &[String],
    max: usize,
    limit: &str,
    absolute: bool,
) -> Result<(), SelectorError> {
    check_len(field, list.len())?;
    for (i, s) in list.iter().enumerate() {
        let reason = if s.is_empty() {
            "empty string".into()
        } else if s.len() > max {
            format!("{} bytes; {limit}", s.len())
        } else if absolute && !s.starts_with('/') {
            "not an absolute path".into()
        } else {
            continue;
        };
        return Err(invalid(format!("{field}[{i}]"), reason));
    }
    Ok(())
}

/// Checks a list's length.
fn check_len(field: &str, len: usize) -> Result<(), SelectorError> {
    let too_many = || invalid(field, format!("{len} entries; at most {MAX_ENTRIES}"));
    (len <= MAX_ENTRIES).then_some(()).ok_or_else(too_many)
}

/// The `Process` fields a subscriber may omit, as the contract names them.
const OMITTABLE: [&str; 6] = ["exe", "argv", "argv_raw", "cwd", "cgroup", "credentials"];

/// The `Process` fields a subscriber does not need, cleared before sending:
/// bit `i` stands for `OMITTABLE[i]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Omit(u8);

impl Omit {
    /// The omissions of `req`, or the first name that is not an omittable
    /// field.
    pub fn from_request(req: &WatchRequest) -> Result<Omit, SelectorError> {
        check_len("omit_fields", req.omit_fields.len())?;
        let mut omit = Omit::default();
        for (i, name) in req.omit_fields.iter().enumerate() {
            let Some(bit) = OMITTABLE.iter().position(|f| f == name) else {
                let fields = OMITTABLE.join(", ");
                let reason = format!("{name:?} is not one of {fields}");
                return Err(invalid(format!("omit_fields[{i}]"), reason));
            };
            omit.0 |= 1 << bit;
        }
        Ok(omit)
    }

    /// Whether the field the contract calls `name` is omitted. argv_raw is
    /// argv as the kernel has it: omitting argv omits both.
    fn omits(&self, name: &str) -> bool {
        let bit = OMITTABLE.iter().position(|f| *f == name);
        bit.is_some_and(|bit| self.0 & 1 << bit != 0) || name == "argv_raw" && self.omits("argv")
    }

    /// Clears the omitted fields of `p`, and their `unavailable` entries.
    pub fn apply(&self, p: &mut Process) {
        if self.0 == 0 {
            return;
        }
        for name in OMITTABLE.into_iter().filter(|f| self.omits(f)) {
            match name {
                "exe" => p.exe = None,
                "argv" => p.argv.clear(),
                "argv_raw" => p.argv_raw.clear(),
                "cwd" => p.cwd = None,
                "cgroup" => p.cgroup = None,
                _ => p.credentials = None,
            }
        }
        p.unavailable.retain(|u| !self.omits(&u.field));
    }
}

/// A filtered subscriber's selector, and the processes it was sent, so
/// that it gets their exits.
///
/// Shared by the fan-out, which offers live items in publish order, and
/// the subscriber's snapshots. An exit is sent if its pid was sent since
/// the last snapshot, or while a snapshot is being taken (the snapshot may
/// list a process whose exit the fan-out is offered before the record is
/// read): never less than the exits of what was sent.
#[derive(Debug)]
pub struct Filter {
    /// What the subscriber selected.
    pub selector: Selector,
    /// The subscriber asked for exits: the pids it is sent are tracked.
    exits: bool,
    sent: Mutex<Sent>,
}

/// The pids sent, each with the generation it was sent in.
#[derive(Debug, Default)]
struct Sent {
    pids: HashMap<i32, u64>,
    /// Snapshots begun and not yet complete.
    snapshots: u32,
    /// Bumped by every snapshot that begins.
    generation: u64,
    /// The generation when the snapshots under way began: what was sent
    /// before and not listed again since is gone.
    since: u64,
    /// Too many processes to track: every exit is sent from now on.
    every_exit: bool,
}

impl Filter {
    /// A filter for `selector`; `exits` if the subscriber asked for exits.
    /// Its first snapshot begins when it is hooked into the fan-out.
    pub fn new(selector: Selector, exits: bool) -> Filter {
        Filter {
            selector,
            exits,
            sent: Mutex::default(),
        }
    }

    /// Whether to send `p` (live or in a snapshot); if so, it is
    /// remembered for its exit.
    pub fn offer_process(&self, p: &Process) -> bool {
        let wanted = self.selector.wants(p);
        if !wanted || !self.exits {
            return wanted;
        }
        let sent = &mut *lock(&self.sent);
        if sent.pids.len() >= MAX_TRACKED && !sent.pids.contains_key(&p.pid) {
            sent.every_exit = true;
            sent.pids = HashMap::new();
        }
        if !sent.every_exit {
            sent.pids.insert(p.pid, sent.generation);
        }
        true
    }

    /// Whether to send the exit of `pid`.
    pub fn offer_exit(&self, pid: i32) -> bool {
        // Not even while a snapshot is taken: that snapshot lists nothing.
        if self.selector.nothing {
            return false;
        }
        let mut sent = lock(&self.sent);
        let known = sent.pids.remove(&pid).is_some();
        known || sent.snapshots > 0 || sent.every_exit
    }

    /// A snapshot begins: called in order with the live items offered, when
    /// the item it follows (a loss, or the stream's start) is queued.
    pub fn snapshot_begin(&self) {
        let mut sent = lock(&self.sent);
        sent.generation += 1;
        if sent.snapshots == 0 {
            sent.since = sent.generation;
        }
        sent.snapshots += 1;
    }

    /// A snapshot is complete (or one begun was not queued after all). When
    /// none is left under way, a pid sent before they began and not listed
    /// by them is gone, its exit sent or lost: it is forgotten.
    pub fn snapshot_end(&self) {
        let mut sent = lock(&self.sent);
        sent.snapshots = sent.snapshots.saturating_sub(1);
        if sent.snapshots == 0 {
            let since = sent.since;
            sent.pids.retain(|_, generation| *generation >= since);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use execwatch::proto::{Cgroup, Credentials, Unavailable};

    fn process(comm: &str, argv: &[&str], exe: Option<&str>) -> Process {
        Process {
            pid: 42,
            comm: comm.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            exe: exe.map(Into::into),
            credentials: Some(Credentials {
                uid: 1000,
                ..Default::default()
            }),
            cgroup: Some(Cgroup {
                path: "/user.slice".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn compile(req: WatchRequest) -> Selector {
        Selector::from_request(&req)
            .expect("valid")
            .expect("selective")
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_empty_request_selects_nothing_in_particular() {
        assert_eq!(Selector::from_request(&WatchRequest::default()), Ok(None));
        let only_flags = WatchRequest {
            include_exits: true,
            skip_snapshot: true,
            omit_fields: strings(&["cwd"]),
            ..Default::default()
        };
        assert_eq!(Selector::from_request(&only_flags), Ok(None));
    }

    #[test]
    fn matchers_are_exact_case_sensitive_and_any_one_is_enough() {
        let s = compile(WatchRequest {
            comms: strings(&["java"]),
            argv_substrings: strings(&["-jar app"]),
            exe_paths: strings(&["/opt/idea/bin/idea"]),
            ..Default::default()
        });
        // By comm only.
        assert!(s.wants(&process("java", &["x"], None)));
        assert!(!s.wants(&process("Java", &["x"], None)));
        assert!(!s.wants(&process("javac", &["x"], None)));
        // By argv only, across arguments.
        assert!(s.wants(&process("sh", &["java", "-jar", "app.jar"], None)));
        assert!(!s.wants(&process("sh", &["java", "-JAR", "app.jar"], None)));
        assert!(s.wants(&process("sh", &["-jar app"], None)));
        // By exe only; an unreadable exe matches nothing.
        assert!(s.wants(&process("idea.sh", &[], Some("/opt/idea/bin/idea"))));
        assert!(!s.wants(&process("idea.sh", &[], Some("/opt/idea/bin/idea2"))));
        assert!(!s.wants(&process("idea.sh", &[], None)));
        // A cut command line: what the agent found past the cut counts.
        let mut cut = process("sh", &["java", "-cp", "a.jar"], None);
        cut.argv_matches = strings(&["-jar app"]);
        assert!(!s.wants(&cut), "only on a record flagged argv_truncated");
        cut.argv_truncated = true;
        assert!(s.wants(&cut));
    }

    #[test]
    fn filters_restrict_and_let_through_what_cannot_be_told() {
        let s = compile(WatchRequest {
            comms: strings(&["java"]),
            uids: vec![1000],
            outside_pods: true,
            ..Default::default()
        });
        let host = process("java", &[], None);
        assert!(s.wants(&host));
        let mut other_uid = host.clone();
        other_uid.credentials.as_mut().unwrap().uid = 0;
        assert!(!s.wants(&other_uid));
        let mut unknown_uid = host.clone();
        unknown_uid.credentials = None;
        assert!(s.wants(&unknown_uid));
        let mut in_pod = host.clone();
        in_pod.cgroup.as_mut().unwrap().in_kubernetes_pod = true;
        assert!(!s.wants(&in_pod));
        let mut unknown_cgroup = host.clone();
        unknown_cgroup.cgroup = None;
        assert!(s.wants(&unknown_cgroup));
        // Filters alone select every process they pass.
        let uid_only = compile(WatchRequest {
            uids: vec![1000],
            ..Default::default()
        });
        assert!(uid_only.wants(&process("anything", &[], None)));
        assert!(!uid_only.wants(&other_uid));
    }

    #[test]
    fn no_processes_selects_none_and_is_set_alone() {
        let s = compile(WatchRequest {
            no_processes: true,
            ..Default::default()
        });
        assert!(s.nothing);
        assert!(!s.wants(&process("java", &[], None)));
        let both = WatchRequest {
            no_processes: true,
            uids: vec![1],
            ..Default::default()
        };
        assert_eq!(
            Selector::from_request(&both).unwrap_err().field,
            "no_processes"
        );
    }

    #[test]
    fn bad_selectors_name_the_field() {
        let field = |req: WatchRequest| Selector::from_request(&req).unwrap_err().field;
        let comms = |list: &[&str]| WatchRequest {
            comms: strings(list),
            ..Default::default()
        };
        assert_eq!(field(comms(&["java", ""])), "comms[1]");
        assert_eq!(field(comms(&["sixteen-bytes-xx"])), "comms[0]");
        assert!(Selector::from_request(&comms(&["fifteen-bytes-x"])).is_ok());
        assert_eq!(field(comms(&vec!["x"; MAX_ENTRIES + 1])), "comms");
        assert!(Selector::from_request(&comms(&vec!["x"; MAX_ENTRIES])).is_ok());
        let argv = WatchRequest {
            argv_substrings: vec!["a".repeat(MAX_PATTERN_BYTES + 1)],
            ..Default::default()
        };
        assert_eq!(field(argv), "argv_substrings[0]");
        let exe = WatchRequest {
            exe_paths: strings(&["/bin/ok", "relative/idea"]),
            ..Default::default()
        };
        assert_eq!(field(exe), "exe_paths[1]");
        let uids = WatchRequest {
            uids: vec![0, u32::MAX],
            ..Default::default()
        };
        assert_eq!(field(uids), "uids[1]");
        let err = Selector::from_request(&comms(&[""])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid WatchRequest: comms[0]: empty string"
        );
        let omit = WatchRequest {
            omit_fields: strings(&["cwd", "environ"]),
            ..Default::default()
        };
        assert_eq!(
            Omit::from_request(&omit).unwrap_err().field,
            "omit_fields[1]"
        );
    }

    #[test]
    fn the_interest_is_the_union_of_what_the_selectors_could_pass() {
        let comms = |list: &[&str]| {
            compile(WatchRequest {
                comms: strings(list),
                uids: vec![1000],
                outside_pods: true,
                ..Default::default()
            })
        };
        let nothing = compile(WatchRequest {
            no_processes: true,
            ..Default::default()
        });
        let by_argv = compile(WatchRequest {
            comms: strings(&["java"]),
            argv_substrings: strings(&["-jar"]),
            ..Default::default()
        });
        let by_exe = compile(WatchRequest {
            exe_paths: strings(&["/usr/bin/java"]),
            ..Default::default()
        });
        let by_uid = compile(WatchRequest {
            uids: vec![0],
            ..Default::default()
        });
        assert_eq!(Interest::of([]), Interest::Nothing);
        assert_eq!(Interest::of([Some(&nothing)]), Interest::Nothing);
        let (java, idea) = (comms(&["java"]), comms(&["idea", "java"]));
        let union = Interest::of([Some(&java), Some(&nothing), Some(&idea)]);
        assert_eq!(
            union,
            Interest::Comms(["java", "idea"].map(String::from).into())
        );
        assert!(union.may_want(b"java") && union.may_want(b"idea"));
        assert!(!union.may_want(b"javac") && !union.may_want(b""));
        // Compared as the record's comm: invalid UTF-8 as replaced there.
        let odd = comms(&["a\u{fffd}"]);
        assert!(Interest::of([Some(&odd)]).may_want(b"a\xff"));
        assert!(odd.wants(&process("a\u{fffd}", &[], None)));
        let all = Interest::All(ArgvPatterns::NONE);
        for any in [None, Some(&by_exe), Some(&by_uid)] {
            assert_eq!(Interest::of([Some(&java), any]), all);
            assert!(all.may_want(b"anything"));
        }
        // Every subscriber's argv substrings, whoever else wants everything.
        let jar = Interest::All(ArgvPatterns::new(strings(&["-jar"])));
        assert_eq!(Interest::of([Some(&java), Some(&by_argv)]), jar);
        assert_eq!(Interest::of([None, Some(&by_argv), Some(&by_argv)]), jar);
        assert_eq!(jar.argv().patterns(), ["-jar"]);
        assert!(!Interest::Nothing.may_want(b"java"));
    }

    #[test]
    fn a_comm_the_interest_rules_out_is_one_no_selector_wants() {
        // Whatever the other fields, unreadable or not.
        let s = compile(WatchRequest {
            comms: strings(&["java"]),
            uids: vec![1000],
            outside_pods: true,
            ..Default::default()
        });
        let interest = Interest::of([Some(&s)]);
        let mut bare = process("sh", &["java"], Some("/usr/bin/java"));
        for p in [bare.clone(), {
            bare.credentials = None;
            bare.cgroup = None;
            bare
        }] {
            assert!(!interest.may_want(p.comm.as_bytes()));
            assert!(!s.wants(&p));
        }
    }

    #[test]
    fn omitted_fields_are_cleared_with_their_unavailable_entries() {
        let req = WatchRequest {
            omit_fields: strings(&["cwd", "argv", "credentials"]),
            ..Default::default()
        };
        let omit = Omit::from_request(&req).unwrap();
        let mut p = process("java", &["java", "-jar"], Some("/usr/bin/java"));
        p.cwd = Some("/home".into());
        p.argv_raw = vec![b"java".to_vec()];
        p.unavailable = vec![
            Unavailable {
                field: "cwd".into(),
                reason: "gone".into(),
            },
            Unavailable {
                field: "exe".into(),
                reason: "gone".into(),
            },
        ];
        omit.apply(&mut p);
        assert_eq!(p.cwd, None);
        assert!(p.argv.is_empty() && p.argv_raw.is_empty());
        assert_eq!(p.credentials, None);
        assert_eq!(p.exe.as_deref(), Some("/usr/bin/java"));
        assert_eq!(p.comm, "java");
        let left: Vec<_> = p.unavailable.iter().map(|u| u.field.as_str()).collect();
        assert_eq!(left, ["exe"]);
    }

    /// A filter on comm `java` that wants exits, with no snapshot yet.
    fn java_filter() -> Filter {
        let selector = compile(WatchRequest {
            comms: strings(&["java"]),
            ..Default::default()
        });
        Filter::new(selector, true)
    }

    fn java(pid: i32) -> Process {
        Process {
            pid,
            ..process("java", &[], None)
        }
    }

    #[test]
    fn a_filtered_stream_gets_the_exits_of_what_it_was_sent() {
        let f = java_filter();
        assert!(f.offer_process(&java(10)));
        assert!(!f.offer_process(&Process {
            pid: 11,
            ..process("sh", &[], None)
        }));
        assert!(f.offer_exit(10));
        assert!(!f.offer_exit(11));
        // Once: a later exit of that pid is another process's.
        assert!(!f.offer_exit(10));
    }

    #[test]
    fn no_processes_gets_no_exit_even_while_its_snapshot_is_taken() {
        let f = Filter::new(
            compile(WatchRequest {
                no_processes: true,
                include_exits: true,
                ..Default::default()
            }),
            true,
        );
        f.snapshot_begin();
        assert!(!f.offer_process(&java(21)));
        assert!(!f.offer_exit(21));
        assert!(!f.offer_exit(22), "its snapshot lists nothing");
    }

    #[test]
    fn every_exit_is_sent_while_a_snapshot_is_taken() {
        let f = Filter::new(
            compile(WatchRequest {
                comms: strings(&["java"]),
                ..Default::default()
            }),
            true,
        );
        f.snapshot_begin();
        // The exit may come before the snapshot reads the process (a zombie).
        assert!(f.offer_exit(20));
        assert!(f.offer_process(&java(21)));
        f.snapshot_end();
        assert!(!f.offer_exit(20));
        assert!(f.offer_exit(21));
    }

    #[test]
    fn a_snapshot_forgets_what_it_does_not_list_again() {
        let f = java_filter();
        assert!(f.offer_process(&java(30)));
        assert!(f.offer_process(&java(31)));
        // A loss: 30's exit was dropped; the resync lists only 31. Two
        // snapshots overlap (a second loss before the first completes).
        f.snapshot_begin();
        f.snapshot_begin();
        assert!(f.offer_process(&java(31)));
        f.snapshot_end();
        assert!(f.offer_exit(99), "a snapshot is still under way");
        f.snapshot_end();
        assert!(!f.offer_exit(30));
        assert!(f.offer_exit(31));
    }

    #[test]
    fn too_many_tracked_processes_mean_every_exit() {
        let f = java_filter();
        for pid in 0..MAX_TRACKED as i32 + 1 {
            assert!(f.offer_process(&java(pid)));
        }
        assert!(f.offer_exit(-5));
        assert!(lock(&f.sent).pids.is_empty());
    }
}
