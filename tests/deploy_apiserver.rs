//! The rendered manifests are valid for a real API server: server-side
//! dry-run of the base, of the no-capabilities overlay and of the
//! node-write-policy overlay less its policy objects (1.20 has no admission
//! policies) against kube-apiserver 1.20.2 (admission and schema validation
//! included), and the base as applied creates the DaemonSet the way it was
//! written.
#![cfg(target_os = "linux")]

mod support;

use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Api;
use support::apiserver::{cluster, NAMESPACE};

fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster().kubeconfig())
        .args(args)
        .output()
        .expect("run kubectl")
}

#[test]
fn base_and_overlay_pass_server_side_dry_run() {
    for dir in ["deploy/base", "deploy/overlays/no-capabilities"] {
        assert_dry_run_creates_the_daemonset(&["-k", dir], dir);
    }
}

/// `kubectl apply --dry-run=server <what>` succeeds and would create the
/// DaemonSet.
fn assert_dry_run_creates_the_daemonset(what: &[&str], name: &str) {
    let args: Vec<&str> = ["apply", "--dry-run=server"]
        .iter()
        .chain(what)
        .copied()
        .collect();
    let out = kubectl(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("daemonset.apps/execwatch"), "{name}: {text}");
    assert!(text.contains("server dry run"), "{name}: {text}");
}

/// The 1.20 API server knows no admission policy: the node-write-policy
/// overlay is dry-run without its two policy objects, which only
/// tests/node_write_policy.rs checks (offline).
#[test]
fn node_write_policy_overlay_passes_server_side_dry_run_but_its_policy() {
    let objs = support::kustomize("deploy/overlays/node-write-policy");
    let (policy, rest): (Vec<_>, Vec<_>) = objs
        .into_iter()
        .partition(|o| o["apiVersion"] == "admissionregistration.k8s.io/v1");
    assert_eq!(policy.len(), 2, "the policy and its binding");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": rest});
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), list.to_string()).unwrap();
    let path = file.path().to_str().unwrap();
    assert_dry_run_creates_the_daemonset(&["-f", path], "node-write-policy without its policy");
    // And the policy objects are indeed unknown there.
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": policy});
    std::fs::write(file.path(), list.to_string()).unwrap();
    let out = kubectl(&["apply", "--dry-run=server", "-f", path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no matches for kind \"ValidatingAdmissionPolicy\""),
        "{err}"
    );
}

#[tokio::test]
async fn the_applied_daemonset_is_stored_as_written() {
    // cluster() applies deploy/base for real on first use.
    let client = cluster().client().await;
    let ds = Api::<DaemonSet>::namespaced(client, NAMESPACE)
        .get("execwatch")
        .await
        .unwrap();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_pid, Some(true));
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let agent = pod.containers.iter().find(|c| c.name == "agent").unwrap();
    let sc = agent.security_context.as_ref().unwrap();
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added = ["NET_ADMIN", "SETUID", "SETGID"].map(String::from);
    assert_eq!(caps.add.as_deref(), Some(&added[..]));
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let env: Vec<_> = agent
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        env,
        [
            ("EXECWATCH_RUN_AS_UID", "65534"),
            ("EXECWATCH_RUN_AS_GID", "65532")
        ]
    );
}
