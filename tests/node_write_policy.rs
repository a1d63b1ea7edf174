//! The Node write policy (`deploy/components/node-write-policy`) as
//! `kubectl kustomize deploy/overlays/node-write-policy` renders it: its CEL
//! expressions evaluated against admission requests for the reclaimer's
//! ServiceAccount and for other users.
//!
//! The test API server (1.20) predates admission policies, so the
//! expressions run offline in the `cel` crate, a CEL interpreter that is not
//! Kubernetes' (cel-go). What differs, and so what this does not prove
//! (docs/security.md#what-the-tests-prove):
//! - Kubernetes type-checks every expression against the Node and
//!   AdmissionRequest schemas when the policy is created; the crate checks
//!   nothing before it runs. A type error Kubernetes would report is found
//!   here only if a fixture reaches it.
//! - Kubernetes evaluates `variables` lazily, on first use; this evaluates
//!   them all first, in order. Both give the same answer while no variable
//!   fails, and none can: each guards its field with `has()`.
//! - Objects here are plain JSON maps. Kubernetes converts the typed objects
//!   with their JSON tags, so empty `omitempty` fields (an empty
//!   `request.subResource`, absent labels) are absent there too; the fixtures
//!   are written the same way, and every such field is read behind `has()`.
//! - No cost limits, no `authorizer`, no `params`: the policy uses neither.
//!
//! The expressions use only what both support: `has()`, `in`, `all()` on
//! lists and on maps (over keys), `==` on maps and lists, `?:`, string `+`.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use cel::{Context, Program, Value};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde_json::{json, Value as Json};
use support::kustomize;

const OVERLAY: &str = "deploy/overlays/node-write-policy";
const RECLAIMER: &str = "system:serviceaccount:5spot-system:execwatch-reclaimer";
/// The reclaimer's three annotations (reclaimer/node/reclaim_request.rs).
const REQUESTED: &str = "5spot.finos.org/reclaim-requested";
const REQUESTED_AT: &str = "5spot.finos.org/reclaim-requested-at";
const REASON: &str = "5spot.finos.org/reclaim-reason";
const OWN: &str = "worker-1";
const OTHER: &str = "worker-2";

fn find<'a>(objs: &'a [Json], kind: &str) -> &'a Json {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("{OVERLAY} renders no {kind}"))
}

/// One named expression of the policy, compiled.
struct Expr {
    name: String,
    source: String,
    program: Program,
}

impl Expr {
    fn new(name: &str, source: &str) -> Expr {
        let program = Program::compile(source)
            .unwrap_or_else(|e| panic!("{name}: {source:?} does not parse: {e}"));
        Expr {
            name: name.to_string(),
            source: source.to_string(),
            program,
        }
    }
}

struct Validation {
    expr: Expr,
    message: Option<String>,
    message_expression: Option<Expr>,
}

/// The policy's matchConditions, variables and validations, compiled.
struct Policy {
    conditions: Vec<Expr>,
    variables: Vec<Expr>,
    validations: Vec<Validation>,
}

/// What the API server would do with a request that matched the policy's
/// matchConstraints.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A matchCondition is false: the policy does not apply.
    NotMatched,
    Allowed,
    /// Refused, with the message of every validation that failed (an
    /// evaluation error refuses too: failurePolicy Fail).
    Denied(Vec<String>),
}

fn policy() -> Policy {
    let objs = kustomize(OVERLAY);
    let spec = &find(&objs, "ValidatingAdmissionPolicy")["spec"];
    let list = |key: &str| spec[key].as_array().cloned().unwrap_or_default();
    let expr = |item: &Json, what: String| Expr::new(&what, item["expression"].as_str().unwrap());
    Policy {
        conditions: list("matchConditions")
            .iter()
            .map(|c| expr(c, c["name"].as_str().unwrap().to_string()))
            .collect(),
        variables: list("variables")
            .iter()
            .map(|v| expr(v, v["name"].as_str().unwrap().to_string()))
            .collect(),
        validations: list("validations")
            .iter()
            .enumerate()
            .map(|(i, v)| Validation {
                expr: expr(v, format!("validations[{i}]")),
                message: v["message"].as_str().map(String::from),
                message_expression: v["messageExpression"]
                    .as_str()
                    .map(|m| Expr::new(&format!("validations[{i}].messageExpression"), m)),
            })
            .collect(),
    }
}

/// JSON as CEL values: objects become maps with string keys, integers
/// `int` (as Kubernetes' schemas declare them).
fn cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap())),
        Json::String(s) => Value::from(s.clone()),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(cel).collect())),
        Json::Object(m) => Value::from(
            m.iter()
                .map(|(k, v)| (k.clone(), cel(v)))
                .collect::<HashMap<String, Value>>(),
        ),
    }
}

impl Policy {
    fn evaluate(&self, request: &Json, object: &Json, old_object: &Json) -> Outcome {
        let mut ctx = Context::default();
        ctx.add_variable_from_value("request", cel(request));
        ctx.add_variable_from_value("object", cel(object));
        ctx.add_variable_from_value("oldObject", cel(old_object));
        for c in &self.conditions {
            match c.program.execute(&ctx) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => return Outcome::NotMatched,
                other => {
                    return Outcome::Denied(vec![format!(
                        "matchCondition {} ({:?}): {other:?}",
                        c.name, c.source
                    )])
                }
            }
        }
        let mut variables = HashMap::new();
        for v in &self.variables {
            let value = v
                .program
                .execute(&ctx)
                .unwrap_or_else(|e| panic!("variable {}: {e:?}", v.name));
            variables.insert(v.name.clone(), value.clone());
            ctx.add_variable_from_value("variables", Value::from(variables.clone()));
        }
        let mut denied = Vec::new();
        for v in &self.validations {
            match v.expr.program.execute(&ctx) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => denied.push(self.message(v, &ctx)),
                other => denied.push(format!("{} ({:?}): {other:?}", v.expr.name, v.expr.source)),
            }
        }
        if denied.is_empty() {
            Outcome::Allowed
        } else {
            Outcome::Denied(denied)
        }
    }

    /// The messageExpression's string, else the message (as Kubernetes falls
    /// back when the expression fails).
    fn message(&self, v: &Validation, ctx: &Context) -> String {
        if let Some(m) = &v.message_expression {
            match m.program.execute(ctx) {
                Ok(Value::String(s)) => return s.to_string(),
                other => assert!(
                    v.message.is_some(),
                    "{}: {other:?} and no message to fall back on",
                    m.name
                ),
            }
        }
        v.message.clone().unwrap_or_else(|| v.expr.source.clone())
    }
}

/// An UPDATE of Node `name` by `user`; `node_name`, when given, is the node
/// name a pod-bound token carries (Kubernetes 1.30+).
fn request(user: &str, name: &str, node_name: Option<&str>, sub_resource: &str) -> Json {
    let mut user_info = json!({
        "username": user,
        "uid": "0b6e5f3c-5a8e-4d8b-9f0e-2f1f6c1d7a10",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:5spot-system", "system:authenticated"],
    });
    if let Some(node) = node_name {
        user_info["extra"] = json!({
            "authentication.kubernetes.io/credential-id": ["JTI=6d1a0c4e-8f0b-4a6f-9d55-3f0e1d2c3b4a"],
            "authentication.kubernetes.io/node-name": [node],
            "authentication.kubernetes.io/node-uid": ["4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8"],
            "authentication.kubernetes.io/pod-name": ["execwatch-x7k2p"],
            "authentication.kubernetes.io/pod-uid": ["9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"],
        });
    }
    let mut req = json!({
        "uid": "c1f0e2d3-4b5a-6978-8a9b-0c1d2e3f4a5b",
        "kind": {"group": "", "version": "v1", "kind": "Node"},
        "resource": {"group": "", "version": "v1", "resource": "nodes"},
        "name": name,
        "operation": "UPDATE",
        "userInfo": user_info,
        "options": {"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "execwatch-reclaimer"},
        "dryRun": false,
    });
    // Kubernetes omits an empty subResource, as its JSON tag says.
    if !sub_resource.is_empty() {
        req["subResource"] = json!(sub_resource);
    }
    req
}

/// A Node as the API server stores it, with the fields it manages itself.
fn node(name: &str) -> Json {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": "4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8",
            "resourceVersion": "81234",
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "5spot.finos.org/reclaim-agent": "enabled",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1"}],
        },
        "spec": {
            "podCIDR": "10.244.1.0/24",
            "podCIDRs": ["10.244.1.0/24"],
            "taints": [{"key": "example.com/workstation", "value": "true", "effect": "NoSchedule"}],
        },
        "status": {"nodeInfo": {"machineID": "0123456789abcdef0123456789abcdef"}},
    })
}

/// `old` after a write: the API server bumps resourceVersion and records the
/// field manager whatever was patched; `change` does the rest.
fn written(old: &Json, change: impl FnOnce(&mut Json)) -> Json {
    let mut new = old.clone();
    new["metadata"]["resourceVersion"] = json!("81301");
    new["metadata"]["managedFields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"manager": "execwatch-reclaimer", "operation": "Update", "apiVersion": "v1"}));
    change(&mut new);
    new
}

/// The reclaimer's merge patch: its three annotations.
fn reclaim(node: &mut Json) {
    let a = &mut node["metadata"]["annotations"];
    a[REQUESTED] = json!("true");
    a[REQUESTED_AT] = json!("2026-03-04T05:06:07Z");
    a[REASON] = json!("process-match: steam");
}

fn requested(name: &str) -> Json {
    let mut n = node(name);
    reclaim(&mut n);
    n
}

/// The reclaimer's own token on its own node.
fn own(name: &str) -> Json {
    request(RECLAIMER, name, Some(OWN), "")
}

#[test]
fn the_policy_decides_each_write_as_documented() {
    let p = policy();
    let allowed = || Outcome::Allowed;
    // (case, request, object, oldObject, expected, a fragment of the message)
    type Case = (&'static str, Json, Json, Json, Outcome, &'static str);
    let base = node(OWN);
    let mut bare = base.clone();
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let cases: Vec<Case> = vec![
        (
            "own node, the three annotations added",
            own(OWN),
            written(&base, reclaim),
            base.clone(),
            allowed(),
            "",
        ),
        (
            "own node, the three annotations changed",
            own(OWN),
            written(&requested(OWN), |n| {
                n["metadata"]["annotations"][REASON] = json!("process-match: java");
                n["metadata"]["annotations"][REQUESTED_AT] = json!("2026-03-04T06:00:00Z");
            }),
            requested(OWN),
            allowed(),
            "",
        ),
        (
            "own node, a Node with no annotation at all before",
            own(OWN),
            written(&bare, reclaim),
            bare.clone(),
            allowed(),
            "",
        ),
        (
            "another node",
            own(OTHER),
            written(&node(OTHER), reclaim),
            node(OTHER),
            Outcome::Denied(vec![]),
            "only the Node its pod runs on",
        ),
        (
            "a token with no node name (not pod-bound, or before 1.30)",
            request(RECLAIMER, OWN, None, ""),
            written(&base, reclaim),
            base.clone(),
            Outcome::Denied(vec![]),
            "only the Node its pod runs on",
        ),
        (
            "a label added",
            own(OWN),
            written(&base, |n| {
                reclaim(n);
                n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = json!("");
            }),
            base.clone(),
            Outcome::Denied(vec![]),
            "labels",
        ),
        (
            "a label changed",
            own(OWN),
            written(&base, |n| {
                n["metadata"]["labels"]["5spot.finos.org/reclaim-agent"] = json!("disabled")
            }),
            base.clone(),
            Outcome::Denied(vec![]),
            "labels",
        ),
        (
            "a taint added",
            own(OWN),
            written(&base, |n| {
                n["spec"]["taints"].as_array_mut().unwrap().push(
                    json!({"key": "example.com/evict", "value": "true", "effect": "NoExecute"}),
                )
            }),
            base.clone(),
            Outcome::Denied(vec![]),
            "spec",
        ),
        (
            "spec.unschedulable set (cordon)",
            own(OWN),
            written(&base, |n| n["spec"]["unschedulable"] = json!(true)),
            base.clone(),
            Outcome::Denied(vec![]),
            "spec",
        ),
        (
            "an owner reference added",
            own(OWN),
            written(&base, |n| {
                n["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
                    "name": "gone", "uid": "00000000-0000-0000-0000-000000000000"}])
            }),
            base.clone(),
            Outcome::Denied(vec![]),
            "ownerReferences",
        ),
        (
            "a finalizer added",
            own(OWN),
            written(&base, |n| {
                n["metadata"]["finalizers"] = json!(["example.com/hold"])
            }),
            base.clone(),
            Outcome::Denied(vec![]),
            "finalizers",
        ),
        (
            "a fourth annotation added",
            own(OWN),
            written(&base, |n| {
                reclaim(n);
                n["metadata"]["annotations"]["5spot.finos.org/reclaim-other"] = json!("x");
            }),
            base.clone(),
            Outcome::Denied(vec![]),
            "may change only",
        ),
        (
            "another annotation changed",
            own(OWN),
            written(&base, |n| {
                n["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] = json!("30")
            }),
            base.clone(),
            Outcome::Denied(vec![]),
            "may change only",
        ),
        (
            "another annotation removed",
            own(OWN),
            written(&base, |n| {
                n["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove("node.alpha.kubernetes.io/ttl");
            }),
            base.clone(),
            Outcome::Denied(vec![]),
            "may change only",
        ),
        (
            "the three annotations removed",
            own(OWN),
            written(&requested(OWN), |n| {
                let a = n["metadata"]["annotations"].as_object_mut().unwrap();
                for k in [REQUESTED, REQUESTED_AT, REASON] {
                    a.remove(k);
                }
            }),
            requested(OWN),
            Outcome::Denied(vec![]),
            "may not remove",
        ),
        (
            "nodes/status",
            request(RECLAIMER, OWN, Some(OWN), "status"),
            written(&base, |n| n["status"]["nodeInfo"]["machineID"] = json!("x")),
            base.clone(),
            Outcome::Denied(vec![]),
            "may not write nodes/status",
        ),
        (
            "the 5-Spot controller clears the annotations (another user)",
            request(
                "system:serviceaccount:5spot-system:5spot-controller",
                OWN,
                None,
                "",
            ),
            base.clone(),
            requested(OWN),
            Outcome::NotMatched,
            "",
        ),
        (
            "the kubelet taints another node (another user)",
            request("system:node:worker-1", OTHER, None, ""),
            written(&node(OTHER), |n| n["spec"]["unschedulable"] = json!(true)),
            node(OTHER),
            Outcome::NotMatched,
            "",
        ),
    ];
    let mut failures = Vec::new();
    for (name, req, object, old, expected, fragment) in cases {
        let got = p.evaluate(&req, &object, &old);
        let ok = match (&expected, &got) {
            (Outcome::Denied(_), Outcome::Denied(messages)) => {
                messages.iter().any(|m| m.contains(fragment))
            }
            _ => expected == got,
        };
        if !ok {
            failures.push(format!(
                "{name}: expected {expected:?} (message with {fragment:?}), got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each denial names the Node and the rule in its message, and a request
/// that breaks several rules gets each one's message.
#[test]
fn denials_say_what_was_refused() {
    let p = policy();
    let old = node(OTHER);
    let object = written(&old, |n| {
        n["metadata"]["labels"]["x"] = json!("y");
        n["spec"]["unschedulable"] = json!(true);
    });
    let Outcome::Denied(messages) = p.evaluate(&own(OTHER), &object, &old) else {
        panic!("allowed");
    };
    assert_eq!(
        messages,
        [
            "execwatch-reclaimer may write only the Node its pod runs on (its token's node name), not Node worker-2",
            "execwatch-reclaimer may not change a Node's labels",
            "execwatch-reclaimer may not change a Node's spec (taints, unschedulable, ...)",
        ]
    );
}

/// The policy is what the component says it is: Fail, Deny, Node updates,
/// the base's reclaimer ServiceAccount, the reclaimer's own annotation names,
/// and fields Kubernetes' v1 schema knows (a misspelt field would be dropped
/// by the round trip through k8s-openapi's types).
#[test]
fn the_policy_matches_node_updates_by_the_reclaimer_and_is_enforced() {
    let objs = kustomize(OVERLAY);
    let vap = find(&objs, "ValidatingAdmissionPolicy");
    let binding = find(&objs, "ValidatingAdmissionPolicyBinding");
    for (obj, round_trip) in [
        (
            vap,
            serde_json::to_value(
                serde_json::from_value::<ValidatingAdmissionPolicy>(vap.clone()).unwrap(),
            )
            .unwrap(),
        ),
        (
            binding,
            serde_json::to_value(
                serde_json::from_value::<ValidatingAdmissionPolicyBinding>(binding.clone())
                    .unwrap(),
            )
            .unwrap(),
        ),
    ] {
        assert_eq!(&round_trip, obj, "a field the v1 schema does not have");
    }
    assert_eq!(vap["apiVersion"], "admissionregistration.k8s.io/v1");
    let spec = &vap["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    assert_eq!(
        spec["matchConstraints"]["resourceRules"],
        json!([{"apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE"],
            "resources": ["nodes", "nodes/*"]}])
    );
    assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert!(binding["spec"].get("paramRef").is_none());
    assert!(binding["spec"].get("matchResources").is_none());

    // The ServiceAccount the base deploys, by its username.
    let sa = objs.iter().find(|o| o["kind"] == "ServiceAccount").unwrap();
    let username = format!(
        "system:serviceaccount:{}:{}",
        sa["metadata"]["namespace"].as_str().unwrap(),
        sa["metadata"]["name"].as_str().unwrap()
    );
    assert_eq!(username, RECLAIMER);
    assert_eq!(
        spec["matchConditions"][0]["expression"],
        format!("request.userInfo.username == '{RECLAIMER}'")
    );
    assert_eq!(spec["matchConditions"].as_array().unwrap().len(), 1);

    // The annotation names are the reclaimer's.
    let client = std::fs::read_to_string("reclaimer/node/reclaim_request.rs").unwrap();
    for (constant, value) in [
        ("REQUESTED", REQUESTED),
        ("REQUESTED_AT", REQUESTED_AT),
        ("REASON", REASON),
    ] {
        assert!(
            client.contains(&format!("pub const {constant}: &str = \"{value}\";")),
            "reclaimer/node/reclaim_request.rs no longer names {value}"
        );
    }
    let names = spec["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "reclaimAnnotations")
        .unwrap()["expression"]
        .as_str()
        .unwrap();
    assert_eq!(
        names,
        format!("['{REQUESTED}', '{REQUESTED_AT}', '{REASON}']")
    );
}
