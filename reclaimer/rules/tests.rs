//! Table-driven tests of the reclaim rules: documents → errors, and rule sets
//! × process fixtures → matches.

use super::matching::{comm_key, comm_prefix};
use super::parse::{key_at, position, RulesError};
use super::*;
use execwatch::proto::{Cgroup, Credentials, Process};

// ---- process fixtures ------------------------------------------------------

/// A host process of uid 1000 (a desktop session's cgroup).
fn process(comm: &str, argv: &[&str]) -> Process {
    Process {
        pid: 4242,
        tgid: 4242,
        comm: comm.to_owned(),
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        credentials: Some(Credentials {
            uid: 1000,
            euid: 1000,
            gid: 1000,
            egid: 1000,
        }),
        cgroup: Some(Cgroup {
            path: "/user.slice/user-1000.slice/session-2.scope".to_owned(),
            ..Cgroup::default()
        }),
        ..Process::default()
    }
}

/// The same process inside a Kubernetes pod.
fn in_pod(mut p: Process) -> Process {
    p.cgroup = Some(Cgroup {
        path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b4e.slice"
            .to_owned(),
        in_kubernetes_pod: true,
        pod_uid: "1b4e".to_owned(),
        container_id: String::new(),
    });
    p
}

/// The same process with its cgroup unknown.
fn no_cgroup(mut p: Process) -> Process {
    p.cgroup = None;
    p
}

/// The same process with real uid `uid` and effective uid `euid`.
fn uids(mut p: Process, uid: u32, euid: u32) -> Process {
    p.credentials = Some(Credentials {
        uid,
        euid,
        gid: uid,
        egid: euid,
    });
    p
}

/// The same process with its credentials unknown.
fn no_credentials(mut p: Process) -> Process {
    p.credentials = None;
    p
}

/// The same process with a known executable path.
fn exe(mut p: Process, path: &str) -> Process {
    p.exe = Some(path.to_owned());
    p
}

/// The same process with a command line that was not valid UTF-8.
fn lossy(mut p: Process, raw: &[&[u8]]) -> Process {
    p.argv_lossy = true;
    p.argv_raw = raw.iter().map(|a| a.to_vec()).collect();
    p
}

fn java_jar() -> Process {
    process("java", &["java", "-jar", "app.jar"])
}

/// A command line the agent cut, having found `past_cut` in the rest.
fn cut(mut p: Process, past_cut: &[&str]) -> Process {
    p.argv_truncated = true;
    p.argv_matches = past_cut.iter().map(|s| s.to_string()).collect();
    p
}

// ---- matching --------------------------------------------------------------

struct MatchCase {
    name: &'static str,
    rules: &'static str,
    process: Process,
    want: Option<(&'static str, MatcherKind)>,
}

use MatcherKind::{ArgvSubstring, Command, ExePath};

fn match_cases() -> Vec<MatchCase> {
    let case = |name, rules, process, want| MatchCase {
        name,
        rules,
        process,
        want,
    };
    vec![
        // match_commands: exact, case-sensitive.
        case(
            "comm exact",
            r#"match_commands = ["java"]"#,
            java_jar(),
            Some(("java", Command)),
        ),
        case(
            "comm is case-sensitive",
            r#"match_commands = ["Java"]"#,
            java_jar(),
            None,
        ),
        case(
            "comm pattern is not a prefix",
            r#"match_commands = ["jav"]"#,
            java_jar(),
            None,
        ),
        case(
            "comm is not a substring",
            r#"match_commands = ["java"]"#,
            process("javac", &["javac", "Main.java"]),
            None,
        ),
        case(
            "comm ignores argv[0]",
            r#"match_commands = ["execwatch-demo"]"#,
            process("sleep", &["execwatch-demo", "30"]),
            None,
        ),
        case(
            "second of several commands",
            r#"match_commands = ["idea", "steam", "java"]"#,
            java_jar(),
            Some(("java", Command)),
        ),
        // The kernel keeps 15 bytes of comm.
        case(
            "15-byte command equals 15-byte comm",
            r#"match_commands = ["abcdefghijklmno"]"#,
            process("abcdefghijklmno", &["abcdefghijklmno"]),
            Some(("abcdefghijklmno", Command)),
        ),
        case(
            "17-byte command matches its 15-byte comm, reports the whole pattern",
            r#"match_commands = ["jetbrains-toolbox"]"#,
            process("jetbrains-toolb", &["/opt/jetbrains-toolbox"]),
            Some(("jetbrains-toolbox", Command)),
        ),
        case(
            "17-byte command does not match a 14-byte comm",
            r#"match_commands = ["jetbrains-toolbox"]"#,
            process("jetbrains-tool", &["jetbrains-tool"]),
            None,
        ),
        case(
            "17-byte command matches an untruncated comm from another producer",
            r#"match_commands = ["jetbrains-toolbox"]"#,
            process("jetbrains-toolbox", &[]),
            Some(("jetbrains-toolbox", Command)),
        ),
        case(
            // 9 × 'é' is 18 bytes; the kernel keeps 7 'é' and half of the
            // 8th, which the agent's lossy conversion turns into U+FFFD.
            "long multibyte command cut mid-character",
            r#"match_commands = ["ééééééééé"]"#,
            process("ééééééé\u{FFFD}", &[]),
            Some(("ééééééééé", Command)),
        ),
        case(
            "two long commands sharing 15 bytes: the first written is reported",
            r#"match_commands = ["jetbrains-toolbox", "jetbrains-toolbelt"]"#,
            process("jetbrains-toolb", &[]),
            Some(("jetbrains-toolbox", Command)),
        ),
        case(
            "unknown comm (empty) matches no command",
            r#"match_commands = ["java"]"#,
            process("", &[]),
            None,
        ),
        // match_argv_substrings: argv joined with single spaces.
        case(
            "substring across an argument boundary",
            r#"match_argv_substrings = ["-jar app"]"#,
            java_jar(),
            Some(("-jar app", ArgvSubstring)),
        ),
        case(
            "substring inside one argument",
            r#"match_argv_substrings = ["app.j"]"#,
            java_jar(),
            Some(("app.j", ArgvSubstring)),
        ),
        case(
            "arguments are joined by exactly one space",
            r#"match_argv_substrings = ["-jar  app"]"#,
            java_jar(),
            None,
        ),
        case(
            "substring is case-sensitive",
            r#"match_argv_substrings = ["-JAR"]"#,
            java_jar(),
            None,
        ),
        case(
            "single argument",
            r#"match_argv_substrings = ["demo"]"#,
            process("sleep", &["execwatch-demo"]),
            Some(("demo", ArgvSubstring)),
        ),
        case(
            "exec -a: argv[0] differs from comm",
            r#"match_argv_substrings = ["execwatch-demo"]"#,
            process("sleep", &["execwatch-demo", "30"]),
            Some(("execwatch-demo", ArgvSubstring)),
        ),
        case(
            "no argv (exited before inspection)",
            r#"match_argv_substrings = ["java"]"#,
            process("", &[]),
            None,
        ),
        case(
            "lossy argv: the lossy strings are searched",
            "match_argv_substrings = [\"caf\u{FFFD} --x\"]",
            lossy(
                process("tool", &["tool", "caf\u{FFFD}", "--x"]),
                &[b"tool", b"caf\xe9", b"--x"],
            ),
            Some(("caf\u{FFFD} --x", ArgvSubstring)),
        ),
        case(
            "lossy argv: the intended spelling does not match",
            r#"match_argv_substrings = ["café"]"#,
            lossy(
                process("tool", &["tool", "caf\u{FFFD}"]),
                &[b"tool", b"caf\xe9"],
            ),
            None,
        ),
        case(
            "a substring the agent found past the cut",
            r#"match_argv_substrings = ["com.vendor.Main"]"#,
            cut(java_jar(), &["com.vendor.Main"]),
            Some(("com.vendor.Main", ArgvSubstring)),
        ),
        case(
            "document order across the carried part and past the cut",
            r#"match_argv_substrings = ["com.vendor.Main", "-jar"]"#,
            cut(java_jar(), &["com.vendor.Main"]),
            Some(("com.vendor.Main", ArgvSubstring)),
        ),
        case(
            "argv_matches counts only on a cut record",
            r#"match_argv_substrings = ["com.vendor.Main"]"#,
            {
                let mut p = cut(java_jar(), &["com.vendor.Main"]);
                p.argv_truncated = false;
                p
            },
            None,
        ),
        case(
            "first substring in document order wins",
            r#"match_argv_substrings = ["app.jar", "-jar"]"#,
            java_jar(),
            Some(("app.jar", ArgvSubstring)),
        ),
        // match_exe_paths: exact absolute path.
        case(
            "exe path exact",
            r#"match_exe_paths = ["/usr/lib/jvm/bin/java"]"#,
            exe(java_jar(), "/usr/lib/jvm/bin/java"),
            Some(("/usr/lib/jvm/bin/java", ExePath)),
        ),
        case(
            "exe path unavailable cannot match",
            r#"match_exe_paths = ["/usr/lib/jvm/bin/java"]"#,
            java_jar(),
            None,
        ),
        case(
            "exe path is exact, not a prefix",
            r#"match_exe_paths = ["/usr/lib/jvm/bin"]"#,
            exe(java_jar(), "/usr/lib/jvm/bin/java"),
            None,
        ),
        case(
            "exe replaced on disk reads as (deleted)",
            r#"match_exe_paths = ["/usr/bin/steam"]"#,
            exe(process("steam", &[]), "/usr/bin/steam (deleted)"),
            None,
        ),
        case(
            "exe unavailable, another matcher still matches",
            "match_exe_paths = [\"/usr/bin/java\"]\nmatch_argv_substrings = [\"-jar\"]",
            java_jar(),
            Some(("-jar", ArgvSubstring)),
        ),
        // Evaluation order: commands, argv substrings, exe paths.
        case(
            "command before argv substring before exe path",
            "match_exe_paths = [\"/usr/bin/java\"]\nmatch_argv_substrings = [\"-jar\"]\nmatch_commands = [\"java\"]",
            exe(java_jar(), "/usr/bin/java"),
            Some(("java", Command)),
        ),
        case(
            "argv substring before exe path",
            "match_exe_paths = [\"/usr/bin/java\"]\nmatch_argv_substrings = [\"-jar\"]",
            exe(java_jar(), "/usr/bin/java"),
            Some(("-jar", ArgvSubstring)),
        ),
        // scope.
        case(
            "default scope (host) ignores a pod process",
            r#"match_commands = ["java"]"#,
            in_pod(java_jar()),
            None,
        ),
        case(
            "scope host ignores a pod process",
            "match_commands = [\"java\"]\nscope = \"host\"",
            in_pod(java_jar()),
            None,
        ),
        case(
            "scope all matches a pod process",
            "match_commands = [\"java\"]\nscope = \"all\"",
            in_pod(java_jar()),
            Some(("java", Command)),
        ),
        case(
            "scope host: unknown cgroup counts as host",
            r#"match_commands = ["java"]"#,
            no_cgroup(java_jar()),
            Some(("java", Command)),
        ),
        case(
            "scope all: unknown cgroup matches",
            "match_commands = [\"java\"]\nscope = \"all\"",
            no_cgroup(java_jar()),
            Some(("java", Command)),
        ),
        // match_uids: a filter ANDed with the matchers.
        case(
            "uid in the list",
            "match_commands = [\"java\"]\nmatch_uids = [0, 1000]",
            java_jar(),
            Some(("java", Command)),
        ),
        case(
            "uid not in the list",
            "match_commands = [\"java\"]\nmatch_uids = [1001]",
            java_jar(),
            None,
        ),
        case(
            "the real uid counts, not the effective uid",
            "match_commands = [\"java\"]\nmatch_uids = [1000]",
            uids(java_jar(), 0, 1000),
            None,
        ),
        case(
            "real uid in the list, other effective uid",
            "match_commands = [\"java\"]\nmatch_uids = [1000]",
            uids(java_jar(), 1000, 0),
            Some(("java", Command)),
        ),
        case(
            "unknown credentials do not pass a uid list",
            "match_commands = [\"java\"]\nmatch_uids = [1000]",
            no_credentials(java_jar()),
            None,
        ),
        case(
            "unknown credentials without a uid list",
            r#"match_commands = ["java"]"#,
            no_credentials(java_jar()),
            Some(("java", Command)),
        ),
        case(
            "empty uid list means any uid",
            "match_commands = [\"java\"]\nmatch_uids = []",
            uids(java_jar(), 0, 0),
            Some(("java", Command)),
        ),
        case(
            "uid filter also restricts argv and exe matchers",
            "match_argv_substrings = [\"-jar\"]\nmatch_exe_paths = [\"/usr/bin/java\"]\nmatch_uids = [1]",
            exe(java_jar(), "/usr/bin/java"),
            None,
        ),
        case(
            "uid filter and pod scope both apply",
            "match_commands = [\"java\"]\nmatch_uids = [1000]",
            in_pod(java_jar()),
            None,
        ),
        // poll_interval_ms changes nothing.
        case(
            "poll_interval_ms is ignored",
            "poll_interval_ms = 0\nmatch_commands = [\"java\"]",
            java_jar(),
            Some(("java", Command)),
        ),
        // Inert rule sets never fire.
        case("empty document", "", java_jar(), None),
        case(
            "comments only",
            "# nothing here\n\n",
            java_jar(),
            None,
        ),
        case(
            "empty lists",
            "match_commands = []\nmatch_argv_substrings = []\nmatch_exe_paths = []",
            java_jar(),
            None,
        ),
        case(
            "match_argv_substrings missing, commands empty",
            "match_commands = []",
            java_jar(),
            None,
        ),
        case(
            "filters alone never fire",
            "match_uids = [1000]\nscope = \"all\"\npoll_interval_ms = 500",
            java_jar(),
            None,
        ),
    ]
}

#[test]
fn matches_table() {
    for case in match_cases() {
        let rules = Rules::parse(case.rules)
            .unwrap_or_else(|e| panic!("{}: rules did not parse: {e}", case.name));
        let got = rules.matches(&case.process);
        let want = case.want.map(|(pattern, matcher)| Match {
            pattern: pattern.to_owned(),
            matcher,
        });
        assert_eq!(got, want, "{}", case.name);
        // Deterministic: asking again gives the same answer.
        assert_eq!(rules.matches(&case.process), want, "{} (again)", case.name);
    }
}

#[test]
fn argv_buffer_is_reset_between_calls() {
    let rules = Rules::parse(r#"match_argv_substrings = ["-jar app"]"#).unwrap();
    let long = process("java", &["java", "-Xmx1g", "-jar", "app.jar", "--verbose"]);
    let short = process("java", &["java", "-jar"]);
    assert!(rules.matches(&long).is_some());
    assert_eq!(rules.matches(&short), None);
    assert!(rules.matches(&long).is_some());
}

#[test]
fn matches_from_many_threads() {
    let rules = Rules::parse(r#"match_argv_substrings = ["-jar app"]"#).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..100 {
                    assert!(rules.matches(&java_jar()).is_some());
                    assert!(rules
                        .matches(&process("ls", &["ls", "-l", "app"]))
                        .is_none());
                }
            });
        }
    });
}

// ---- inert rules -----------------------------------------------------------

#[test]
fn inert_documents() {
    let inert = [
        "",
        "\n\n# just a comment\n",
        "match_commands = []",
        "match_argv_substrings = []",
        "match_commands = []\nmatch_argv_substrings = []",
        "poll_interval_ms = 1000",
        "match_exe_paths = []",
        "match_uids = [1000]",
        "scope = \"all\"",
    ];
    for doc in inert {
        let rules = Rules::parse(doc).unwrap_or_else(|e| panic!("{doc:?}: {e}"));
        assert!(rules.is_inert(), "{doc:?} should be inert");
        assert!(rules.summary().starts_with("inert"), "{doc:?}");
    }
    assert!(Rules::inert().is_inert());
    assert_eq!(Rules::parse("").unwrap(), Rules::inert());
    assert_eq!(Rules::default(), Rules::inert());
    assert_eq!(Rules::inert().scope(), Scope::Host);
    let everything = in_pod(exe(java_jar(), "/usr/bin/java"));
    assert_eq!(Rules::inert().matches(&everything), None);
}

#[test]
fn not_inert_with_any_matcher() {
    for doc in [
        r#"match_commands = ["java"]"#,
        r#"match_argv_substrings = ["java"]"#,
        r#"match_exe_paths = ["/usr/bin/java"]"#,
    ] {
        assert!(!Rules::parse(doc).unwrap().is_inert(), "{doc}");
    }
}

// ---- poll_interval_ms ------------------------------------------------------

#[test]
fn poll_interval_ms_is_accepted_and_ignored() {
    let without = Rules::parse(r#"match_commands = ["java"]"#).unwrap();
    for value in ["0", "1000", "9223372036854775807"] {
        let doc = format!("match_commands = [\"java\"]\npoll_interval_ms = {value}");
        assert_eq!(Rules::parse(&doc).unwrap(), without, "{value}");
    }
}

// ---- errors ----------------------------------------------------------------

struct ErrorCase {
    name: &'static str,
    doc: String,
    line: usize,
    /// Each must appear in the error's Display.
    says: &'static [&'static str],
    variant: fn(&RulesError) -> bool,
}

fn error_cases() -> Vec<ErrorCase> {
    let case = |name, doc: &str, line, says, variant| ErrorCase {
        name,
        doc: doc.to_owned(),
        line,
        says,
        variant,
    };
    let parse: fn(&RulesError) -> bool = |e| matches!(e, RulesError::Parse { .. });
    let many_commands = (0..=MAX_PATTERNS)
        .map(|i| format!("\"cmd{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let many_uids = (0..=MAX_PATTERNS)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let long = "x".repeat(MAX_PATTERN_BYTES + 1);
    vec![
        case(
            "unknown key names the key and its line",
            "match_commands = [\"java\"]\nmatch_comands = [\"idea\"]\n",
            2,
            &["line 2", "unknown field `match_comands`"],
            parse,
        ),
        case(
            "a table is an unknown key",
            "match_commands = [\"java\"]\n\n[rules]\nmatch_commands = [\"idea\"]\n",
            3,
            &["line 3", "unknown field `rules`"],
            parse,
        ),
        case(
            "wrong type: string for a list",
            "match_commands = [\"java\"]\n\nmatch_argv_substrings = \"-jar\"\n",
            3,
            &["line 3", "`match_argv_substrings`", "invalid type"],
            parse,
        ),
        case(
            "wrong type: number in a list, on a later line of a multi-line array",
            "match_commands = [\n  \"java\",\n  \"idea\",\n  42,\n]\n",
            4,
            &[
                "line 4, column 3",
                "`match_commands`",
                "invalid type: integer `42`",
            ],
            parse,
        ),
        case(
            "wrong type: poll_interval_ms as a string",
            "poll_interval_ms = \"1000\"",
            1,
            &["line 1", "`poll_interval_ms`", "invalid type"],
            parse,
        ),
        case(
            "wrong type: poll_interval_ms as a float",
            "# rules\npoll_interval_ms = 1.5",
            2,
            &["line 2", "`poll_interval_ms`", "floating point"],
            parse,
        ),
        case(
            "negative poll_interval_ms",
            "match_commands = [\"java\"]\npoll_interval_ms = -1",
            2,
            &[
                "line 2, column 20",
                "`poll_interval_ms` is -1",
                "non-negative",
            ],
            |e| matches!(e, RulesError::NegativePollInterval { value: -1, .. }),
        ),
        case(
            "unknown scope",
            "scope = \"pods\"",
            1,
            &[
                "line 1",
                "`scope`",
                "unknown variant `pods`",
                "`host` or `all`",
            ],
            parse,
        ),
        case(
            "negative uid",
            "match_uids = [1000, -1]",
            1,
            &["line 1", "`match_uids`", "-1"],
            parse,
        ),
        case(
            "empty argv substring",
            "match_commands = [\"java\"]\nmatch_argv_substrings = [\"-jar\", \"\"]",
            2,
            &[
                "line 2, column 34",
                "`match_argv_substrings` contains an empty string",
            ],
            |e| {
                matches!(
                    e,
                    RulesError::EmptyPattern {
                        key: "match_argv_substrings",
                        ..
                    }
                )
            },
        ),
        case(
            "empty command",
            "match_commands = [\"\"]",
            1,
            &["`match_commands` contains an empty string"],
            |e| {
                matches!(
                    e,
                    RulesError::EmptyPattern {
                        key: "match_commands",
                        ..
                    }
                )
            },
        ),
        case(
            "empty exe path",
            "match_exe_paths = [\"\"]",
            1,
            &["`match_exe_paths` contains an empty string"],
            |e| {
                matches!(
                    e,
                    RulesError::EmptyPattern {
                        key: "match_exe_paths",
                        ..
                    }
                )
            },
        ),
        case(
            "relative exe path",
            "match_exe_paths = [\"/usr/bin/java\", \"bin/idea\"]",
            1,
            &["\"bin/idea\"", "not an absolute path"],
            |e| matches!(e, RulesError::RelativeExePath { path, .. } if path == "bin/idea"),
        ),
        case(
            "too many commands",
            &format!("# many\nmatch_commands = [{many_commands}]"),
            2,
            &["line 2", "`match_commands` has 1001 entries, at most 1000"],
            |e| {
                matches!(
                    e,
                    RulesError::TooManyPatterns {
                        key: "match_commands",
                        count: 1001,
                        max: 1000,
                        ..
                    }
                )
            },
        ),
        case(
            "too many uids",
            &format!("match_uids = [{many_uids}]"),
            1,
            &["`match_uids` has 1001 entries"],
            |e| {
                matches!(
                    e,
                    RulesError::TooManyPatterns {
                        key: "match_uids",
                        ..
                    }
                )
            },
        ),
        case(
            "pattern too long",
            &format!("match_argv_substrings = [\"ok\",\n  \"{long}\"]"),
            2,
            &["line 2, column 3", "4097 bytes long, at most 4096"],
            |e| {
                matches!(
                    e,
                    RulesError::PatternTooLong {
                        key: "match_argv_substrings",
                        bytes: 4097,
                        ..
                    }
                )
            },
        ),
        case(
            "syntax error",
            "match_commands = [\"java\"\nscope = \"all\"",
            2,
            &["line 2"],
            parse,
        ),
        case(
            "duplicate key",
            "match_commands = [\"java\"]\nmatch_commands = [\"idea\"]",
            2,
            &["line 2", "duplicate key"],
            parse,
        ),
        case(
            "huge number: poll_interval_ms beyond i64",
            "poll_interval_ms = 99999999999999999999",
            1,
            &["line 1, column 20", "`poll_interval_ms`", "expected i64"],
            parse,
        ),
        case(
            "huge number: a uid beyond u32",
            "match_uids = [4294967296]",
            1,
            &["`match_uids`", "4294967296", "expected u32"],
            parse,
        ),
        case(
            "deep nesting is refused, not a stack overflow",
            &format!(
                "match_commands = {}{}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            1,
            &["line 1", "recursion"],
            parse,
        ),
        case(
            "column counts characters, not bytes",
            "match_argv_substrings = [\"é\", \"\"]",
            1,
            &["line 1, column 31"],
            |e| matches!(e, RulesError::EmptyPattern { column: 31, .. }),
        ),
    ]
}

#[test]
fn errors_table() {
    for case in error_cases() {
        let err = match Rules::parse(&case.doc) {
            Ok(rules) => panic!("{}: parsed: {}", case.name, rules.summary()),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(
            (case.variant)(&err),
            "{}: wrong variant: {err:?}",
            case.name
        );
        assert_eq!(err.line(), Some(case.line), "{}: {text}", case.name);
        for says in case.says {
            assert!(
                text.contains(says),
                "{}: {text:?} lacks {says:?}",
                case.name
            );
        }
        assert!(!text.contains('\n'), "{}: multi-line: {text:?}", case.name);
    }
}

#[test]
fn a_syntax_error_is_not_blamed_on_the_key_before_it() {
    let err = Rules::parse("scope = \"host\"\nmatch_commands\n").unwrap_err();
    let text = err.to_string();
    assert_eq!(err.line(), Some(2), "{text}");
    assert!(!text.contains("`scope`"), "{text}");
}

#[test]
fn a_huge_document_is_refused_before_it_is_parsed() {
    // At the limit: a valid (blank) document.
    let comment = format!("#{}\n", "x".repeat(MAX_DOCUMENT_BYTES - 2));
    assert_eq!(comment.len(), MAX_DOCUMENT_BYTES);
    assert!(Rules::parse(&comment).unwrap().is_inert());
    // One byte more: refused without a line, with both sizes.
    let err = Rules::parse(&format!("{comment} ")).unwrap_err();
    assert_eq!(
        err,
        RulesError::DocumentTooLarge {
            bytes: MAX_DOCUMENT_BYTES + 1,
            max: MAX_DOCUMENT_BYTES
        }
    );
    assert_eq!(err.line(), None);
    assert_eq!(
        err.to_string(),
        "reclaim rules: the document is 1048577 bytes long, at most 1048576 are allowed"
    );
}

#[test]
fn limits_are_inclusive() {
    let commands = (0..MAX_PATTERNS)
        .map(|i| format!("\"cmd{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let rules = Rules::parse(&format!("match_commands = [{commands}]")).unwrap();
    assert!(rules.summary().contains("commands=1000"));

    let longest = "y".repeat(MAX_PATTERN_BYTES);
    let rules = Rules::parse(&format!("match_argv_substrings = [\"{longest}\"]")).unwrap();
    assert_eq!(
        rules.matches(&process("x", &[&longest])),
        Some(Match {
            pattern: longest.clone(),
            matcher: ArgvSubstring,
        })
    );
}

// ---- DEFAULT_RULES ---------------------------------------------------------

#[test]
fn default_rules_parse_and_match_the_demo() {
    let rules = Rules::parse(DEFAULT_RULES).expect("DEFAULT_RULES must parse");
    assert!(!rules.is_inert());
    assert_eq!(rules.scope(), Scope::Host);

    // bash -c 'exec -a execwatch-demo sleep 30': the shell, then sleep.
    let shell = process("bash", &["bash", "-c", "exec -a execwatch-demo sleep 30"]);
    let sleep = process("sleep", &["execwatch-demo", "30"]);
    for p in [&shell, &sleep] {
        assert_eq!(
            rules.matches(p),
            Some(Match {
                pattern: "execwatch-demo".to_owned(),
                matcher: ArgvSubstring,
            }),
            "{:?}",
            p.argv
        );
    }
    for comm in ["java", "idea", "steam"] {
        assert_eq!(
            rules.matches(&process(comm, &[comm])).map(|m| m.pattern),
            Some(comm.to_owned())
        );
    }
    // An ordinary sleep, and a JVM in a pod, do not.
    assert_eq!(rules.matches(&process("sleep", &["sleep", "30"])), None);
    assert_eq!(rules.matches(&in_pod(java_jar())), None);
}

// ---- summary, reason, helpers ----------------------------------------------

#[test]
fn summary_counts_distinct_patterns() {
    let rules = Rules::parse(
        "match_commands = [\"java\", \"idea\", \"java\"]\n\
         match_argv_substrings = [\"a\", \"b\", \"a\"]\n\
         match_uids = [1000, 1001]\n\
         scope = \"all\"",
    )
    .unwrap();
    assert_eq!(
        rules.summary(),
        "commands=2 argv_substrings=2 exe_paths=0 uids=2 scope=all"
    );
    assert_eq!(
        Rules::inert().summary(),
        "inert (no matcher configured; never fires) \
         commands=0 argv_substrings=0 exe_paths=0 uids=any scope=host"
    );
}

#[test]
fn match_reason_is_the_annotation_value() {
    let m = Match {
        pattern: "java".to_owned(),
        matcher: Command,
    };
    assert_eq!(m.reason(), "process-match: java");
    assert_eq!(Command.to_string(), "match_commands");
    assert_eq!(ArgvSubstring.to_string(), "match_argv_substrings");
    assert_eq!(ExePath.to_string(), "match_exe_paths");
    assert_eq!(Scope::Host.to_string(), "host");
    assert_eq!(Scope::All.to_string(), "all");
}

#[test]
fn position_table() {
    let src = "ab\ncdé\n\nx";
    for (offset, want) in [
        (0, (1, 1)),
        (2, (1, 3)),
        (3, (2, 1)),
        (5, (2, 3)),
        (7, (2, 4)),
        (8, (3, 1)),
        (9, (4, 1)),
        (10, (4, 2)),
        (99, (4, 2)),
    ] {
        assert_eq!(position(src, offset), want, "offset {offset}");
    }
}

#[test]
fn key_at_table() {
    let src = "a = 1\nmatch_commands = [\n  \"x\",\n  3,\n]\n  scope=\"host\"\n";
    for (offset, want) in [
        (0, Some("a")),
        (4, Some("a")),
        (6, Some("match_commands")),
        (30, Some("match_commands")),
        (src.find("host").unwrap(), Some("scope")),
    ] {
        assert_eq!(key_at(src, offset), want, "offset {offset}");
    }
    assert_eq!(key_at("[table]", 1), None);
}

#[test]
fn comm_key_keeps_15_bytes() {
    assert_eq!(comm_key("java"), "java");
    assert_eq!(comm_key("abcdefghijklmno"), "abcdefghijklmno");
    assert_eq!(comm_key("jetbrains-toolbox"), "jetbrains-toolb");
    assert_eq!(comm_key("ééééééééé"), "ééééééé\u{FFFD}");
    assert_eq!(comm_prefix("jetbrains-toolbox"), Some("jetbrains-toolb"));
    assert_eq!(comm_prefix("ééééééééé"), Some("ééééééé"));
    assert_eq!(comm_prefix("abcdefghijklmno"), None);
    assert_eq!(comm_prefix("java"), None);
}
