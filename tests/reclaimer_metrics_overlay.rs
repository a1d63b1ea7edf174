//! deploy/overlays/metrics: the reclaimer serves its metrics on the node's
//! address from the downward API and a PodMonitor points prometheus-operator
//! at that port; nothing else changes. The flag it adds works on the real
//! binaries.
#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const OVERLAY: &str = "deploy/overlays/metrics";

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn reclaimer(ds: &Value) -> &Value {
    &ds["spec"]["template"]["spec"]["containers"][1]
}

#[test]
fn the_overlay_adds_the_metrics_port_and_a_pod_monitor_only() {
    let base = kustomize("deploy/base");
    let overlay = kustomize(OVERLAY);
    assert_eq!(overlay.len(), base.len() + 1, "the PodMonitor");
    for b in &base {
        let o = overlay
            .iter()
            .find(|o| o["kind"] == b["kind"] && o["metadata"]["name"] == b["metadata"]["name"])
            .unwrap_or_else(|| panic!("{} missing", b["kind"]));
        if b["kind"] != "DaemonSet" {
            assert_eq!(b, o, "only the DaemonSet changes");
        }
    }

    // The reclaimer, and nothing else in the DaemonSet, gains the address.
    let (ds_base, ds) = (find(&base, "DaemonSet"), find(&overlay, "DaemonSet"));
    let mut expected = ds_base.clone();
    let r = &mut expected["spec"]["template"]["spec"]["containers"][1];
    assert_eq!(r["name"], "reclaimer");
    r["args"]
        .as_array_mut()
        .unwrap()
        .push(json!("--metrics-addr=$(HOST_IP):9477"));
    r["env"].as_array_mut().unwrap().push(json!({
        "name": "HOST_IP",
        "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}},
    }));
    r["ports"] = json!([{"name": "metrics", "containerPort": 9477, "protocol": "TCP"}]);
    assert_eq!(ds, &expected);

    // The PodMonitor selects these pods and scrapes that port's /metrics.
    let pm = find(&overlay, "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["metadata"]["namespace"], ds["metadata"]["namespace"]);
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "{k}");
    }
    let endpoints = pm["spec"]["podMetricsEndpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], "metrics");
    assert_eq!(endpoints[0]["path"], "/metrics");
}

/// The flag as the kubelet expands it (HOST_IP = the node's address, here
/// loopback) starts a reclaimer that serves /metrics there.
#[test]
fn the_overlays_flag_serves_metrics() {
    let overlay = kustomize(OVERLAY);
    let args = &reclaimer(find(&overlay, "DaemonSet"))["args"];
    let flag = args
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.starts_with("--metrics-addr="))
        .expect("--metrics-addr");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The port is the only thing changed: 9477 may be taken on this machine.
    let flag = flag
        .replace("$(HOST_IP)", "127.0.0.1")
        .replace(":9477", &format!(":{port}"));
    let agent = Agent::start(&[]);
    let dir = world_readable_tempdir();
    let rules = write_file(dir.path(), "rules.toml", "match_commands = []\n");
    let reclaimer = Reclaimer::dry_run(&agent, &rules, &[&flag]);
    reclaimer.wait_log("serving metrics", 1, Duration::from_secs(15));
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("\nexecwatch_reclaimer_up 1\n"), "{text}");
}
