//! Tests of argv redaction: a table of command lines, what each pattern set
//! leaves of them, and the consistency of `argv` with `argv_raw`.

use super::*;
use crate::procfs::redaction::patterns::{parse, Preset};

/// A record with this argv, built as `procfs` builds it (lossy strings plus
/// the raw bytes when an argument is not UTF-8).
fn process(args: &[&[u8]]) -> Process {
    let mut p = Process {
        argv: args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        ..Default::default()
    };
    if args.iter().any(|a| std::str::from_utf8(a).is_err()) {
        p.argv_lossy = true;
        p.argv_raw = args.iter().map(|a| a.to_vec()).collect();
    }
    p
}

fn redactor(inside: &[&str], next: &[&str]) -> Redactor {
    let compile = |list: &[&str]| -> Vec<Regex> {
        list.iter()
            .flat_map(|p| parse(p).unwrap().0)
            .collect::<Vec<_>>()
    };
    Redactor::new(compile(inside), compile(next)).expect("some pattern")
}

struct Case {
    name: &'static str,
    inside: &'static [&'static str],
    next: &'static [&'static str],
    argv: &'static [&'static [u8]],
    /// The redacted argv, as raw bytes; `None`: unchanged.
    want: Option<&'static [&'static [u8]]>,
}

const CASES: &[Case] = &[
    Case {
        name: "= form: only the captured value goes",
        inside: &["^--password=(.+)"],
        next: &[],
        argv: &[b"db", b"--password=hunter2", b"--user=bob"],
        want: Some(&[b"db", b"--password=<redacted>", b"--user=bob"]),
    },
    Case {
        name: "no capture group: the whole argument goes",
        inside: &["hunter"],
        next: &[],
        argv: &[b"db", b"xhunter2x"],
        want: Some(&[b"db", b"<redacted>"]),
    },
    Case {
        name: "next-argument form",
        inside: &[],
        next: &["^--password$"],
        argv: &[b"db", b"--password", b"hunter2", b"--user", b"bob"],
        want: Some(&[b"db", b"--password", b"<redacted>", b"--user", b"bob"]),
    },
    Case {
        name: "next-argument flag as the last argument: nothing to redact",
        inside: &[],
        next: &["^--password$"],
        argv: &[b"db", b"--password"],
        want: None,
    },
    Case {
        name: "no match: untouched",
        inside: &["^--password=(.+)"],
        next: &["^--password$"],
        argv: &[b"db", b"--passwordless", b"--user=bob"],
        want: None,
    },
    Case {
        name: "several patterns: the union of what they select",
        inside: &["^--password=(.+)", "^--token=(.+)", "://[^:/]*:([^@/]+)@"],
        next: &["^-k$"],
        argv: &[
            b"tool",
            b"--token=abc",
            b"-k",
            b"key",
            b"pg://u:pw@h/db",
            b"--password=x",
        ],
        want: Some(&[
            b"tool",
            b"--token=<redacted>",
            b"-k",
            b"<redacted>",
            b"pg://u:<redacted>@h/db",
            b"--password=<redacted>",
        ]),
    },
    Case {
        name: "every match in an argument, overlapping groups merged",
        inside: &["((a)b)"],
        next: &[],
        argv: &[b"xabyab"],
        want: Some(&[b"x<redacted>y<redacted>"]),
    },
    Case {
        name: "non-UTF-8 secret: bytes and text both redacted",
        inside: &["^--password=(.+)"],
        next: &[],
        argv: &[b"db", b"--password=hun\xffter2", b"caf\xe9"],
        want: Some(&[b"db", b"--password=<redacted>", b"caf\xe9"]),
    },
    Case {
        name: "non-UTF-8 bytes around a captured secret stay exact",
        inside: &["--password=([a-z0-9]+)"],
        next: &[],
        argv: &[b"\xfe--password=hunter2\xff\xc3"],
        want: Some(&[b"\xfe--password=<redacted>\xff\xc3"]),
    },
    Case {
        name: "non-UTF-8 argument after a next-argument flag",
        inside: &[],
        next: &["^--password$"],
        argv: &[b"db", b"--password", b"\xffhunter2"],
        want: Some(&[b"db", b"--password", b"<redacted>"]),
    },
    Case {
        name: "a redacted value does not hide the next flag's match",
        inside: &["^--password=(.+)"],
        next: &["^--password"],
        argv: &[b"db", b"--password=a", b"b", b"c"],
        want: Some(&[b"db", b"--password=<redacted>", b"<redacted>", b"c"]),
    },
];

#[test]
fn redaction_table() {
    for case in CASES {
        let r = redactor(case.inside, case.next);
        let mut p = process(case.argv);
        let changed = r.redact(&mut p);
        let want = case.want.unwrap_or(case.argv);
        assert_eq!(changed, case.want.is_some(), "{}", case.name);
        assert_eq!(p.argv_redacted, changed, "{}", case.name);
        assert_eq!(p, redacted(process(want), changed), "{}", case.name);
    }
}

/// `p` as it looks after a redaction that changed something.
fn redacted(mut p: Process, changed: bool) -> Process {
    p.argv_redacted = changed;
    p
}

#[test]
fn a_secret_that_held_the_only_invalid_bytes_leaves_an_exact_argv() {
    let r = redactor(&["^--password=(.+)"], &[]);
    let mut p = process(&[b"db", b"--password=\xffhunter2"]);
    assert!(p.argv_lossy);
    assert!(r.redact(&mut p));
    assert_eq!(p.argv, ["db", "--password=<redacted>"]);
    assert!(!p.argv_lossy, "every argument is UTF-8 now");
    assert!(p.argv_raw.is_empty());
}

#[test]
fn raw_bytes_that_do_not_line_up_with_argv_are_dropped_not_leaked() {
    let r = redactor(&["^--password=(.+)"], &[]);
    let mut p = process(&[b"db", b"--password=\xffhunter2", b"caf\xe9"]);
    p.argv_raw.pop();
    assert!(r.redact(&mut p));
    assert_eq!(p.argv[1], "--password=<redacted>");
    assert!(p.argv_raw.is_empty());
    assert!(p.argv_lossy, "argv[2] is still lossy text");
}

#[test]
fn lossy_offsets_map_to_raw_offsets() {
    // "a" 0xFF "b": text "a\u{FFFD}b" is 5 bytes.
    assert_eq!(lossy_to_raw(b"a\xffb"), [0, 1, 1, 1, 2, 3]);
    // An incomplete 3-byte sequence is one replacement character.
    assert_eq!(lossy_to_raw(b"\xe2\x82x"), [0, 0, 0, 2, 3]);
    assert_eq!(lossy_to_raw(b""), [0]);
}

#[test]
fn no_pattern_means_no_redactor() {
    assert!(Redactor::new(Vec::new(), Vec::new()).is_none());
}

#[test]
fn the_common_preset() {
    let (inside, next) = Preset::Common.patterns();
    let r = Redactor::new(inside, next).unwrap();
    let cases: &[(&str, &str)] = &[
        ("--password=hunter2", "--password=<redacted>"),
        ("--db-password=hunter2", "--db-password=<redacted>"),
        (
            "-Djavax.net.ssl.keyStorePassword=changeit",
            "-Djavax.net.ssl.keyStorePassword=<redacted>",
        ),
        ("API_TOKEN=abc", "API_TOKEN=<redacted>"),
        ("--client-secret=s3", "--client-secret=<redacted>"),
        ("--api-key=k", "--api-key=<redacted>"),
        (
            "postgres://bob:pw@db:5432/x",
            "postgres://bob:<redacted>@db:5432/x",
        ),
        ("Authorization: Bearer abc", "Authorization: <redacted>"),
        ("--user=bob", "--user=bob"),
        ("--password", "--password"),
        ("https://example.com/a:b@c", "https://example.com/a:b@c"),
    ];
    for (arg, want) in cases {
        let mut p = process(&[b"x", arg.as_bytes()]);
        r.redact(&mut p);
        assert_eq!(p.argv[1], *want, "{arg}");
    }
    let mut p = process(&[b"x", b"--password", b"hunter2", b"--token", b"t", b"-v"]);
    r.redact(&mut p);
    assert_eq!(
        p.argv,
        [
            "x",
            "--password",
            "<redacted>",
            "--token",
            "<redacted>",
            "-v"
        ]
    );
}

#[test]
fn pattern_values_split_at_top_level_commas() {
    let n = |v: &str| parse(v).map(|p| p.0.len()).map_err(|e| e.to_string());
    assert_eq!(n("^--password=(.+),^--token=(.+)"), Ok(2));
    assert_eq!(n("^-p(.{1,64})$"), Ok(1), "a comma in a repetition");
    assert_eq!(n("^--x=([^,]+)"), Ok(1), "a comma in a class");
    assert_eq!(n(r"^a\,b$"), Ok(1), "an escaped comma");
    assert_eq!(n("^a$, ^b$"), Ok(2), "spaces around a comma");
    let p = parse(r"^a\,b$").unwrap();
    assert!(p.0[0].is_match("a,b"));
}

#[test]
fn bad_patterns_are_refused_with_the_pattern_named() {
    let err = |v: &str| parse(v).unwrap_err().to_string();
    let e = err("^--password=(");
    assert!(
        e.contains("pattern `^--password=(` is not a valid regular expression"),
        "{e}"
    );
    let e = err("^ok$,x*");
    assert!(e.contains("pattern `x*` matches the empty string"), "{e}");
    assert!(err("").contains("empty pattern"));
    assert!(err(" , ").contains("empty pattern"));
}
