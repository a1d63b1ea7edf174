//! Tests of the rules sources: blank documents, the rules kept when a source
//! loses its document, and the size cap on rules files.

use super::*;
use crate::rules::RulesError;

#[test]
fn blank_documents() {
    for blank in ["", "\n\n", "  \t\n", "# nothing\n  # at all\n"] {
        assert!(is_blank(blank), "{blank:?}");
    }
    for not_blank in ["match_commands = []", "# c\nscope = \"all\"", "x"] {
        assert!(!is_blank(not_blank), "{not_blank:?}");
    }
}

/// Without a document the rules in force stay (nothing is sent) and
/// the gauge says so; before any rules, no document means inert.
#[tokio::test]
async fn no_document_keeps_the_rules_in_force() {
    let (tx, mut rx) = mpsc::channel(8);
    let metrics = Arc::new(Metrics::default());
    let mut feed = Feed {
        tx,
        metrics: metrics.clone(),
        in_force: None,
        key: Some(DATA_KEY),
    };
    let what = "ConfigMap ns/reclaim-agent-n";
    let missing = || metrics.rules_missing.load(Relaxed);
    feed.missing(what, "is absent").await;
    assert!(rx.try_recv().unwrap().is_inert(), "at start: inert");
    assert_eq!(missing(), 0);
    feed.document(what, None).await;
    assert!(rx.try_recv().unwrap().is_inert(), "still no rules: inert");

    let good = "match_commands = [\"java\"]".to_owned();
    feed.document(what, Some(&good)).await;
    assert!(!rx.try_recv().unwrap().is_inert());
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
    assert_eq!((missing(), metrics.rules_invalid.load(Relaxed)), (0, 1));
    feed.missing(what, "was deleted").await;
    assert_eq!((missing(), metrics.rules_invalid.load(Relaxed)), (1, 0));

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
    let err = load_file(&path).unwrap_err();
    assert!(
        matches!(
            &err,
            SourceError::Parse {
                source: RulesError::DocumentTooLarge { bytes, .. },
                ..
            } if *bytes == MAX_DOCUMENT_BYTES + 1
        ),
        "{err}"
    );
    assert!(err.to_string().contains("huge.toml"), "{err}");
}
