//! The rendered kustomizations keep the privilege split: the agent has host
//! PID and network but no token, starts as uid 0 with exactly NET_ADMIN,
//! SETUID and SETGID and the uid and gid to switch to (the no-capabilities
//! overlay starts it as that uid with none), the reclaimer is non-root with no capability and is
//! the only one with a token, both share the socket volume, and RBAC grants
//! exactly the verbs the reclaimer needs.

mod support;

use serde_json::Value;
use support::kustomize;

const SA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container<'a>(ds: &'a Value, name: &str) -> &'a Value {
    ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn mounts(c: &Value) -> Vec<(&str, &str)> {
    c["volumeMounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap(),
                        m["mountPath"].as_str().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn base_keeps_the_privilege_split() {
    let objs = kustomize("deploy/base");
    let ds = find(&objs, "DaemonSet", "execwatch");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(ds["metadata"]["namespace"], "5spot-system");
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["nodeSelector"]["5spot.finos.org/reclaim-agent"],
        "enabled"
    );
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    let agent = container(ds, "agent");
    let sc = &agent["securityContext"];
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strings(&sc["capabilities"]["add"]),
        ["NET_ADMIN", "SETUID", "SETGID"],
        "to subscribe, then to switch uid"
    );
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["runAsNonRoot"], false);
    assert!(
        mounts(agent)
            .iter()
            .all(|(_, path)| !path.starts_with(SA_PATH)),
        "the agent has no token"
    );
    let env: Vec<(&str, &str)> = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        env,
        [
            ("EXECWATCH_RUN_AS_UID", "65534"),
            ("EXECWATCH_RUN_AS_GID", "65532")
        ],
        "the agent's env names whom it becomes, and no API server"
    );
    assert_eq!(
        pod["securityContext"]["fsGroup"], 65532,
        "the socket's group is the gid the agent switches to"
    );
    assert!(agent.get("ports").is_none(), "the agent opens no port");

    let reclaimer = container(ds, "reclaimer");
    let sc = &reclaimer["securityContext"];
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(reclaimer.get("ports").is_none());
    let token = mounts(reclaimer)
        .into_iter()
        .find(|(_, p)| *p == SA_PATH)
        .expect("reclaimer token mount");
    let volumes = pod["volumes"].as_array().unwrap();
    let vol = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap();
    let sources = vol(token.0)["projected"]["sources"].as_array().unwrap();
    assert!(sources
        .iter()
        .any(|s| s.get("serviceAccountToken").is_some()));
    assert!(sources
        .iter()
        .any(|s| s["configMap"]["name"] == "kube-root-ca.crt"));
    assert!(sources.iter().any(|s| s.get("downwardAPI").is_some()));
    let node_name = reclaimer["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .unwrap();
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let machine_id = mounts(reclaimer)
        .into_iter()
        .find(|(n, _)| *n == "machine-id")
        .unwrap();
    assert_eq!(vol(machine_id.0)["hostPath"]["path"], "/etc/machine-id");

    // One socket volume, memory-backed, mounted by both.
    fn socket_of(c: &Value) -> Option<&str> {
        mounts(c)
            .into_iter()
            .find(|(_, p)| *p == "/run/execwatch")
            .map(|(n, _)| n)
    }
    let shared = socket_of(agent).expect("agent mounts the socket dir");
    assert_eq!(socket_of(reclaimer), Some(shared));
    assert_eq!(vol(shared)["emptyDir"]["medium"], "Memory");
    assert!(strings(&agent["args"]).contains(&"--socket=/run/execwatch/agent.sock"));
    assert!(strings(&reclaimer["args"]).contains(&"--socket=/run/execwatch/agent.sock"));
    // Secrets in command lines never cross the socket (docs/security.md).
    assert!(strings(&agent["args"]).contains(&"--redact-argv-preset=common"));

    // Exec probes through each binary's own health check.
    assert_eq!(
        strings(&agent["livenessProbe"]["exec"]["command"])[..2],
        ["/agent", "health-check"]
    );
    assert_eq!(
        strings(&reclaimer["livenessProbe"]["exec"]["command"])[..2],
        ["/reclaimer", "health-check"]
    );
    // The reclaimer is ready once it streams from the agent.
    let ready = strings(&reclaimer["readinessProbe"]["exec"]["command"]);
    assert_eq!(ready[..2], ["/reclaimer", "health-check"]);
    assert!(ready.contains(&"--ready"), "{ready:?}");
}

#[test]
fn rbac_grants_exactly_the_reclaimers_verbs() {
    let objs = kustomize("deploy/base");
    let rules = |kind: &str, name: &str| -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
        find(&objs, kind, name)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |k: &str| {
                    strings(&r[k])
                        .into_iter()
                        .map(String::from)
                        .collect::<Vec<_>>()
                };
                (s("apiGroups"), s("resources"), s("verbs"))
            })
            .collect()
    };
    let core = vec![String::new()];
    let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        rules("ClusterRole", "execwatch-reclaimer"),
        [(core.clone(), v(&["nodes"]), v(&["get", "patch"]))]
    );
    assert_eq!(
        rules("Role", "execwatch-reclaimer-rules"),
        [(
            core.clone(),
            v(&["configmaps"]),
            v(&["get", "list", "watch"])
        )]
    );
    assert_eq!(
        rules("Role", "execwatch-reclaimer-events"),
        [(core, v(&["events"]), v(&["create"]))]
    );
    assert_eq!(
        find(&objs, "Role", "execwatch-reclaimer-rules")["metadata"]["namespace"],
        "5spot-system"
    );
    assert_eq!(
        find(&objs, "Role", "execwatch-reclaimer-events")["metadata"]["namespace"],
        "default"
    );
    let kinds: Vec<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| k.contains("Role") && !k.contains("Binding"))
            .count(),
        3,
        "{kinds:?}"
    );
    for (kind, name) in [
        ("ClusterRoleBinding", "execwatch-reclaimer"),
        ("RoleBinding", "execwatch-reclaimer-rules"),
        ("RoleBinding", "execwatch-reclaimer-events"),
    ] {
        let subjects = find(&objs, kind, name)["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["name"], "execwatch-reclaimer");
        assert_eq!(subjects[0]["namespace"], "5spot-system");
    }
    assert_eq!(
        find(&objs, "ServiceAccount", "execwatch-reclaimer")["automountServiceAccountToken"],
        false
    );
}

#[test]
fn the_no_capabilities_overlay_starts_the_agent_unprivileged_and_changes_nothing_else() {
    let base = kustomize("deploy/base");
    let overlay = kustomize("deploy/overlays/no-capabilities");
    assert_eq!(base.len(), overlay.len());
    for (b, o) in base.iter().zip(&overlay) {
        if b["kind"] != "DaemonSet" {
            assert_eq!(b, o, "the overlay changes only the DaemonSet");
        }
    }
    let ds = find(&overlay, "DaemonSet", "execwatch");
    let agent = container(ds, "agent");
    let sc = &agent["securityContext"];
    assert!(sc["capabilities"].get("add").is_none(), "{sc}");
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(sc["runAsUser"], 65534);
    assert_eq!(sc["runAsGroup"], 65532);
    assert_eq!(sc["runAsNonRoot"], true);
    let base_ds = find(&base, "DaemonSet", "execwatch");
    // The same uid and gid as the base switches to: the switch is a no-op.
    assert_eq!(agent["env"], container(base_ds, "agent")["env"]);
    assert_eq!(container(ds, "reclaimer"), container(base_ds, "reclaimer"));
}

#[test]
fn the_node_write_policy_overlay_adds_only_the_policy_and_its_binding() {
    let base = kustomize("deploy/base");
    let overlay = kustomize("deploy/overlays/node-write-policy");
    let (policy, rest): (Vec<&Value>, Vec<&Value>) = overlay
        .iter()
        .partition(|o| o["apiVersion"] == "admissionregistration.k8s.io/v1");
    let kinds: Vec<&str> = policy.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    assert_eq!(rest, base.iter().collect::<Vec<_>>());
    for o in policy {
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "execwatch"
        );
    }
}
