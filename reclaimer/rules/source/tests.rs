//! Tests of the rules sources: blank documents, what happens when a source
//! loses its document (disarm, or keep with the opt-in), and the size cap on
//! rules files.

use super::*;

#[test]
fn blank_documents() {
    for blank in ["", "\n\n", "  \t\n", "# nothing\n  # at all\n"] {
        assert!(is_blank(blank), "{blank:?}");
    }
    for not_blank in ["match_commands = []", "# c\nscope = \"all\"", "x"] {
        assert!(!is_blank(not_blank), "{not_blank:?}");
    }
}

/// `--keep-rules-when-missing` off (5-Spot's contract) and on.
const DISARM: bool = false;
const KEEP: bool = true;

fn feed(keep_rules_when_missing: bool) -> (Feed, mpsc::Receiver<Rules>, Arc<Metrics>) {
    let (tx, rx) = mpsc::channel(8);
    let metrics = Arc::new(Metrics::new());
    let feed = Feed {
        tx,
        selector: watch::channel(WatchRequest::default()).0,
        metrics: metrics.clone(),
        keep_rules_when_missing,
        in_force: None,
        warned: HashSet::new(),
        key: Some(DATA_KEY),
    };
    (feed, rx, metrics)
}

const WHAT: &str = "ConfigMap ns/reclaim-agent-n";

/// Entries that are links on most systems (merged /usr, alternatives) are
/// told from their path, each once however often the rules reload; the
/// others are not.
#[tokio::test]
async fn exe_paths_through_links_are_warned_about_once_each() {
    let (mut feed, _rx, metrics) = feed(DISARM);
    let paths = r#"["/bin/sleep", "/usr/bin/java", "/etc/alternatives/java", "/lib64/ld-linux-x86-64.so.2", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "/opt/idea/bin/idea", "/usr/bin/sleep"]"#;
    let doc = format!("match_exe_paths = {paths}");
    feed.document(WHAT, Some(&doc)).await;
    assert_eq!(metrics.exe_path_warnings.get(), 4);
    feed.document(WHAT, Some(&doc)).await;
    assert_eq!(
        metrics.exe_path_warnings.get(),
        4,
        "a reload warns again of nothing"
    );
    let doc = r#"match_exe_paths = ["/sbin/steam", "/bin/sleep"]"#.to_owned();
    feed.document(WHAT, Some(&doc)).await;
    assert_eq!(metrics.exe_path_warnings.get(), 5, "only the new entry");
}

/// By default no document disarms: a deletion (5-Spot's disarm), a missing
/// key and a blank document each replace the rules with inert ones, once;
/// the next good document arms again. Before any rules, no document leaves
/// the node as it is: inert.
#[tokio::test]
async fn no_document_disarms() {
    let (mut feed, mut rx, metrics) = feed(DISARM);
    let missing = || metrics.rules_missing.get();
    let inert = || metrics.rules_inert.get();
    feed.missing(WHAT, "is absent").await;
    assert!(
        rx.try_recv().is_err(),
        "at start: inert already, nothing sent"
    );
    assert_eq!(missing(), 1);

    let good = "match_commands = [\"java\"]".to_owned();
    let (empty, comments) = (String::new(), "# off for now\n".to_owned());
    for text in [None, Some(&empty), Some(&comments)] {
        feed.document(WHAT, Some(&good)).await;
        assert!(!rx.try_recv().unwrap().is_inert());
        assert_eq!((missing(), inert()), (0, 0));
        feed.document(WHAT, text).await;
        assert!(rx.try_recv().unwrap().is_inert(), "{text:?} disarms");
        assert_eq!((missing(), inert()), (1, 1), "{text:?}");
        // Losing it again changes nothing more.
        feed.missing(WHAT, "was deleted").await;
        assert!(rx.try_recv().is_err(), "{text:?}: disarmed twice");
    }
    feed.document(WHAT, Some(&good)).await;
    assert!(!rx.try_recv().unwrap().is_inert());
    feed.missing(WHAT, "was deleted").await;
    assert!(rx.try_recv().unwrap().is_inert(), "a deletion disarms");

    // A malformed document after the disarm arms nothing.
    feed.document(WHAT, Some(&"match_comands = []".to_owned()))
        .await;
    assert!(rx.try_recv().is_err());
    assert_eq!((missing(), metrics.rules_invalid.get()), (0, 1));
}

/// A missing document is not a rule set loaded: `rule_reloads` counts
/// documents that were applied, nothing else.
#[tokio::test]
async fn no_document_is_not_counted_as_a_reload() {
    for keep in [DISARM, KEEP] {
        let (mut feed, _rx, metrics) = feed(keep);
        let reloads = || metrics.rule_reloads.get();
        feed.missing(WHAT, "is absent").await;
        feed.document(WHAT, None).await;
        assert_eq!(reloads(), 0, "keep={keep}: nothing was loaded");
        feed.document(WHAT, Some(&"match_commands = []".to_owned()))
            .await;
        assert_eq!(reloads(), 1, "keep={keep}: inert rules are rules");
        feed.missing(WHAT, "was deleted").await;
        assert_eq!(reloads(), 1, "keep={keep}");
    }
}

/// With `--keep-rules-when-missing`, without a document the rules in force
/// stay (nothing is sent) and the gauge says so; before any rules, no
/// document means inert.
#[tokio::test]
async fn no_document_keeps_the_rules_in_force_when_asked() {
    let (mut feed, mut rx, metrics) = feed(KEEP);
    let what = WHAT;
    let missing = || metrics.rules_missing.get();
    feed.missing(what, "is absent").await;
    assert!(rx.try_recv().is_err(), "at start: inert already");
    assert_eq!(missing(), 1);
    feed.document(what, None).await;
    assert!(rx.try_recv().is_err(), "still no rules: inert");

    let good = "match_commands = [\"java\"]".to_owned();
    feed.document(what, Some(&good)).await;
    assert!(!rx.try_recv().unwrap().is_inert());
    assert_eq!(missing(), 0);
    let (empty, comments) = (String::new(), "# off for now\n".to_owned());
    for text in [None, Some(&empty), Some(&comments)] {
        feed.document(what, text).await;
        assert!(rx.try_recv().is_err(), "{text:?} replaced the rules");
        assert_eq!(missing(), 1, "{text:?}");
    }
    feed.missing(what, "was deleted").await;
    assert!(rx.try_recv().is_err(), "a deletion replaced the rules");

    // An invalid document is a document: invalid, not missing; losing it
    // again is missing, not invalid.
    feed.document(what, Some(&"match_comands = []".to_owned()))
        .await;
    assert!(rx.try_recv().is_err());
    assert_eq!((missing(), metrics.rules_invalid.get()), (0, 1));
    feed.missing(what, "was deleted").await;
    assert_eq!((missing(), metrics.rules_invalid.get()), (1, 0));

    // Explicitly inert rules are a decision, and apply.
    feed.document(what, Some(&"match_commands = []".to_owned()))
        .await;
    assert!(rx.try_recv().unwrap().is_inert());
    assert_eq!(missing(), 0);
}

#[test]
fn a_huge_rules_file_is_refused_without_being_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    std::fs::write(&path, "#".repeat(3 * MAX_DOCUMENT_BYTES)).unwrap();
    let err = read_capped(&path).unwrap_err();
    // Refused by its size before a byte is read: the real size is named.
    assert!(
        matches!(&err, ReadError::TooLarge(bytes) if *bytes == 3 * MAX_DOCUMENT_BYTES as u64),
        "{err}"
    );
    // The reclaimer names the file too: tests/bad_configuration.rs,
    // a_huge_rules_file_stops_the_reclaimer_at_start_with_the_path_named.
}
