//! The rules as a selector for the agent's stream: the agent sends only the
//! processes the rules could match (and their exits), so it reads, encodes
//! and sends nothing for the thousands of launches that cannot matter.
//!
//! The selector is a superset of the rules, never a subset: the reclaimer
//! still evaluates its full rules on what arrives. Each part maps to the
//! agent's semantics, which are the same or wider:
//!
//! - `match_commands` → `comms`, each as the kernel keeps it (its first 15
//!   bytes, the key the rules compare with);
//! - `match_argv_substrings` → `argv_substrings` (both search argv joined
//!   with single spaces, case-sensitive);
//! - `match_exe_paths` → `exe_paths`;
//! - `match_uids` → `uids` (the agent also sends processes whose
//!   credentials it could not read, which the rules then refuse);
//! - `scope = "host"` → `outside_pods` (both let an unknown cgroup
//!   through); `"all"` → no filter.
//!
//! Inert rules fire on nothing, so they ask for no process at all
//! (`no_processes`): the stream stays open, carrying only snapshots'
//! `snapshot_complete` and `lost`, and new rules re-subscribe.

use execwatch::proto::WatchRequest;

use super::{Rules, Scope, COMM_MAX_BYTES};

/// `Process` fields the reclaimer never looks at.
const OMITTED: [&str; 2] = ["cwd", "argv_raw"];

impl Rules {
    /// The `WatchRequest` selector fields for these rules (`include_exits`
    /// and `skip_snapshot` are the link's to set).
    pub fn selector(&self) -> WatchRequest {
        let mut req = WatchRequest {
            omit_fields: OMITTED.map(String::from).to_vec(),
            no_processes: self.is_inert(),
            ..Default::default()
        };
        // A multi-byte character cut at byte 15 reads as U+FFFD, longer than
        // the 15 bytes the agent accepts: such a key cannot be sent, so the
        // stream stays unfiltered rather than miss its process.
        if self.is_inert() || self.commands.keys().any(|c| c.len() > COMM_MAX_BYTES) {
            return req;
        }
        req.comms = self.commands.keys().cloned().collect();
        req.argv_substrings = self.argv_substrings.clone();
        req.exe_paths = self.exe_paths.iter().cloned().collect();
        // (uid_t) -1 is no process's uid and the agent refuses it; without
        // it the list is the same or, left empty, wider.
        req.uids = self.uids.range(..u32::MAX).copied().collect();
        req.outside_pods = self.scope == Scope::Host;
        req
    }
}

#[cfg(test)]
mod tests {
    use super::super::matching::comm_key;
    use super::*;
    use execwatch::proto::{Cgroup, Credentials, Process};

    fn rules(toml: &str) -> Rules {
        Rules::parse(toml).expect("valid rules")
    }

    #[test]
    fn each_rule_kind_maps_to_its_selector_field() {
        let r = rules(
            r#"
match_commands = ["java", "jetbrains-toolbox"]
match_argv_substrings = ["-jar app"]
match_exe_paths = ["/opt/idea/bin/idea"]
match_uids = [1000, 0]
"#,
        );
        let s = r.selector();
        assert_eq!(s.comms, ["java".into(), comm_key("jetbrains-toolbox")]);
        assert_eq!(s.comms[1], "jetbrains-toolb");
        assert_eq!(s.argv_substrings, ["-jar app"]);
        assert_eq!(s.exe_paths, ["/opt/idea/bin/idea"]);
        assert_eq!(s.uids, [0, 1000]);
        assert!(s.outside_pods);
        assert!(!s.no_processes);
        assert_eq!(s.omit_fields, ["cwd", "argv_raw"]);
        let all = rules("match_commands = [\"java\"]\nscope = \"all\"\n");
        assert!(!all.selector().outside_pods);
    }

    #[test]
    fn the_uid_that_is_no_uid_is_left_out() {
        let s = rules("match_commands = [\"java\"]\nmatch_uids = [4294967295, 7]\n").selector();
        assert_eq!(s.uids, [7]);
    }

    #[test]
    fn inert_rules_ask_for_no_process() {
        let s = Rules::inert().selector();
        assert!(s.no_processes);
        assert!(s.comms.is_empty() && s.uids.is_empty() && !s.outside_pods);
        // Filters without a matcher are inert too.
        assert!(rules("match_uids = [1000]\n").selector().no_processes);
    }

    #[test]
    fn a_command_the_agent_cannot_take_leaves_the_stream_unfiltered() {
        // 14 bytes, then a 2-byte character cut in half.
        let s = rules("match_commands = [\"abcdefghijklmné\", \"java\"]\n").selector();
        assert!(s.comms.is_empty() && !s.outside_pods && !s.no_processes);
    }

    /// What the agent's selector would let through, restated from the
    /// contract, to check that everything the rules match passes.
    fn passes(s: &WatchRequest, p: &Process) -> bool {
        if s.no_processes {
            return false;
        }
        if s.outside_pods && p.cgroup.as_ref().is_some_and(|c| c.in_kubernetes_pod) {
            return false;
        }
        if !s.uids.is_empty()
            && p.credentials
                .as_ref()
                .is_some_and(|c| !s.uids.contains(&c.uid))
        {
            return false;
        }
        let line = p.argv.join(" ");
        (s.comms.is_empty() && s.argv_substrings.is_empty() && s.exe_paths.is_empty())
            || s.comms.contains(&p.comm)
            || s.argv_substrings.iter().any(|a| line.contains(a.as_str()))
            || p.exe.as_ref().is_some_and(|e| s.exe_paths.contains(e))
    }

    #[test]
    fn whatever_the_rules_match_passes_the_selector() {
        let documents = [
            "match_commands = [\"java\", \"jetbrains-toolbox\"]\n",
            "match_argv_substrings = [\"-jar app\"]\nmatch_uids = [1000]\n",
            "match_exe_paths = [\"/usr/bin/steam\"]\nscope = \"all\"\n",
            "match_commands = [\"abcdefghijklmné\"]\n",
            "",
        ];
        let mut processes = Vec::new();
        for comm in [
            "java",
            "jetbrains-toolb",
            "sh",
            "steam",
            "abcdefghijklmn\u{fffd}",
        ] {
            for argv in [vec![], vec!["java", "-jar", "app.jar"], vec!["x"]] {
                for exe in [None, Some("/usr/bin/steam")] {
                    for uid in [None, Some(0), Some(1000)] {
                        for pod in [None, Some(false), Some(true)] {
                            processes.push(Process {
                                comm: comm.into(),
                                argv: argv.iter().map(|a| a.to_string()).collect(),
                                exe: exe.map(Into::into),
                                credentials: uid.map(|uid| Credentials {
                                    uid,
                                    ..Default::default()
                                }),
                                cgroup: pod.map(|in_kubernetes_pod| Cgroup {
                                    in_kubernetes_pod,
                                    ..Default::default()
                                }),
                                ..Default::default()
                            });
                        }
                    }
                }
            }
        }
        for doc in documents {
            let r = rules(doc);
            let s = r.selector();
            let mut matched = 0;
            for p in &processes {
                if r.matches(p).is_some() {
                    matched += 1;
                    assert!(
                        passes(&s, p),
                        "{doc:?} matches {p:?} but its selector {s:?} drops it"
                    );
                }
            }
            assert!(doc.is_empty() || matched > 0, "{doc:?} matched nothing");
        }
    }
}
