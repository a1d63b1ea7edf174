//! Matching a process against the rules: the hot path, run for every exec
//! on the node.

use execwatch::internal::argv;
use execwatch::proto::Process;

use super::{Match, MatcherKind, Rules, Scope, COMM_MAX_BYTES};

impl Rules {
    /// The first matcher that matches `p`, if `p` passes the filters.
    ///
    /// Called for every exec on the node: it allocates only to build the
    /// returned [`Match`]; joining argv reuses a per-thread buffer (which keeps
    /// the capacity of the longest command line seen, itself bounded by the
    /// agent's read limit).
    pub fn matches(&self, p: &Process) -> Option<Match> {
        if self.is_inert() {
            return None;
        }
        // Unknown cgroup counts as host: better a launch in a pod wrongly
        // considered than an owner's launch missed.
        if self.scope == Scope::Host && p.cgroup.as_ref().is_some_and(|c| c.in_kubernetes_pod) {
            return None;
        }
        let uid = p.credentials.as_ref().map(|c| c.uid);
        if !self.uids.is_empty() && !uid.is_some_and(|u| self.uids.contains(&u)) {
            return None;
        }

        // The agent's comm is at most 15 bytes before its lossy UTF-8
        // conversion (which may lengthen it); only another producer's longer
        // name needs cutting.
        let command = self
            .commands
            .get(p.comm.as_str())
            .or_else(|| self.commands.get(comm_prefix(&p.comm)?));
        // Matchers in their fixed order, each tried only if the ones before
        // missed.
        let argv = || argv::find_in(p, &self.argv_substrings);
        let exe = || self.exe_paths.get(p.exe.as_deref()?);
        let (pattern, matcher) = command
            .map(|c| (c, MatcherKind::Command))
            .or_else(|| Some((argv()?, MatcherKind::ArgvSubstring)))
            .or_else(|| Some((exe()?, MatcherKind::ExePath)))?;
        Some(Match {
            pattern: pattern.clone(),
            matcher,
        })
    }
}

/// Launchers in `/usr/bin` that the alternatives system
/// (`update-alternatives`) usually makes links into `/etc/alternatives/`,
/// and on to the program itself.
const ALTERNATIVES: &str = "java javac jshell python editor vi x-www-browser x-terminal-emulator";

impl Rules {
    /// The `match_exe_paths` entries that are most likely links, and so never
    /// match (`exe` is the path the kernel resolved), each with why, told
    /// from the path alone: no file on the host is looked at.
    pub fn exe_paths_through_links(&self) -> Vec<(&str, &'static str)> {
        let merged = ["/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/"];
        let why = |path: &str| {
            if merged.iter().any(|m| path.starts_with(m)) {
                Some("on a merged-/usr system (Debian 12, Ubuntu, Fedora, Arch) it is reached through a link into /usr")
            } else if path.starts_with("/etc/alternatives/")
                || path
                    .strip_prefix("/usr/bin/")
                    .is_some_and(|p| ALTERNATIVES.split(' ').any(|a| a == p))
            {
                Some("the alternatives system makes it a link to the program it selects")
            } else {
                None
            }
        };
        self.exe_paths
            .iter()
            .filter_map(|p| Some((p.as_str(), why(p)?)))
            .collect()
    }
}

/// A configured command as the kernel would keep it: its first 15 bytes,
/// converted the way the agent converts `comm` (a character cut in half
/// becomes U+FFFD).
pub(super) fn comm_key(command: &str) -> String {
    let bytes = command.as_bytes();
    let kept = &bytes[..bytes.len().min(COMM_MAX_BYTES)];
    String::from_utf8_lossy(kept).into_owned()
}

/// A reported command name longer than 15 bytes cut to 15 (at a character
/// boundary), for producers that send the whole name; `None` if it is not
/// longer.
pub(super) fn comm_prefix(comm: &str) -> Option<&str> {
    if comm.len() <= COMM_MAX_BYTES {
        return None;
    }
    let mut end = COMM_MAX_BYTES;
    while !comm.is_char_boundary(end) {
        end -= 1;
    }
    Some(&comm[..end])
}
