//! Reading what a process's cgroup says about containers and pods.
//!
//! Kubernetes puts every pod under a `kubepods` hierarchy and names the pod
//! and container in path segments, in one of two spellings depending on the
//! kubelet's cgroup driver:
//!
//! ```text
//! systemd : /kubepods.slice/kubepods-burstable.slice/
//!           kubepods-burstable-pod1b4e_..._9c.slice/cri-containerd-<64 hex>.scope
//! cgroupfs: /kubepods/burstable/pod1b4e-...-9c/<64 hex>
//! ```
//!
//! The path is relative to the *reader's* cgroup namespace: inside a pod
//! with a private cgroup namespace, other pods' paths start with `/../..` and
//! may not show `kubepods` at all. So the pod segment alone is enough to call
//! a process "in a Kubernetes pod".

use crate::proto;

/// Classifies the contents of `/proc/<pid>/cgroup`.
///
/// Every hierarchy is looked at: on a hybrid or v1 host the kubelet's pod
/// cgroups may show only in the v1 lines while the v2 line (`0::`) names a
/// systemd unit. The first line that reveals a pod wins; otherwise the v2
/// line, otherwise the first v1 line that names a path.
pub fn classify(contents: &str) -> proto::Cgroup {
    let mut unified = None;
    let mut first = None;
    for line in contents.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let class = classify_path(path);
        if class.in_kubernetes_pod {
            return class;
        }
        if id == "0" {
            unified.get_or_insert(class);
        } else if !path.is_empty() {
            first.get_or_insert(class);
        }
    }
    unified.or(first).unwrap_or_else(|| classify_path(""))
}

/// Classifies one cgroup path.
pub fn classify_path(path: &str) -> proto::Cgroup {
    let mut out = proto::Cgroup {
        path: path.to_string(),
        ..Default::default()
    };
    for segment in path.split('/') {
        if segment == "kubepods"
            || segment.starts_with("kubepods.")
            || segment.starts_with("kubepods-")
        {
            out.in_kubernetes_pod = true;
        }
        if let Some(uid) = pod_uid(segment) {
            out.in_kubernetes_pod = true;
            out.pod_uid = uid;
        }
        if let Some(id) = container_id(segment) {
            out.container_id = id.to_string();
        }
    }
    out
}

/// The pod UID named by a segment (`pod<uid>` or `kubepods-…-pod<uid_>.slice`).
fn pod_uid(segment: &str) -> Option<String> {
    let candidate = segment.strip_prefix("pod").or_else(|| {
        let slice = segment.strip_prefix("kubepods")?.strip_suffix(".slice")?;
        Some(&slice[slice.rfind("-pod")? + 4..])
    })?;
    // systemd escapes '-' in unit names, so the kubelet writes '_' instead.
    let uid = candidate.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

/// Whether `s` looks like a UUID (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The container id in a segment: 64 hex digits, bare (cgroupfs driver) or
/// as `<runtime>-<id>.scope` (systemd driver: cri-containerd, crio, docker).
fn container_id(segment: &str) -> Option<&str> {
    let id = match segment.strip_suffix(".scope") {
        Some(scope) => &scope[scope.rfind('-')? + 1..],
        None => segment,
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "4f1c2a7e9d0b3c5a6e8f1d2c3b4a5968778695a4b3c2d1e0f9e8d7c6b5a49382";

    #[test]
    fn systemd_driver_pod() {
        let c = classify(&format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b4e2f3a_0c1d_4e5f_8a9b_0c1d2e3f4a5b.slice/cri-containerd-{CID}.scope\n"
        ));
        assert!(c.in_kubernetes_pod);
        assert_eq!(c.pod_uid, "1b4e2f3a-0c1d-4e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(c.container_id, CID);
    }

    #[test]
    fn cgroupfs_driver_pod_seen_from_a_private_namespace() {
        let c = classify(&format!(
            "0::/../../besteffort/pod1b4e2f3a-0c1d-4e5f-8a9b-0c1d2e3f4a5b/{CID}\n"
        ));
        assert!(c.in_kubernetes_pod);
        assert_eq!(c.pod_uid, "1b4e2f3a-0c1d-4e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(c.container_id, CID);
    }

    #[test]
    fn desktop_session_is_not_a_pod() {
        let c = classify("0::/user.slice/user-1000.slice/session-2.scope\n");
        assert!(!c.in_kubernetes_pod);
        assert_eq!(c.pod_uid, "");
        assert_eq!(c.container_id, "");
        assert_eq!(c.path, "/user.slice/user-1000.slice/session-2.scope");
    }

    #[test]
    fn plain_docker_container_is_not_a_pod() {
        let c = classify(&format!("0::/system.slice/docker-{CID}.scope\n"));
        assert!(!c.in_kubernetes_pod);
        assert_eq!(c.container_id, CID);
    }

    #[test]
    fn cgroup_v1_uses_first_named_hierarchy() {
        let c = classify(&format!(
            "12:pids:/kubepods/pod1b4e2f3a-0c1d-4e5f-8a9b-0c1d2e3f4a5b/{CID}\n11:cpu,cpuacct:/kubepods\n"
        ));
        assert!(c.in_kubernetes_pod);
        assert_eq!(c.container_id, CID);
    }

    #[test]
    fn hybrid_host_finds_the_pod_in_a_v1_line() {
        let c = classify(&format!(
            "9:name=systemd:/system.slice/containerd.service\n8:pids:/kubepods/besteffort/pod1b4e2f3a-0c1d-4e5f-8a9b-0c1d2e3f4a5b/{CID}\n0::/system.slice/containerd.service\n"
        ));
        assert!(c.in_kubernetes_pod);
        assert_eq!(c.container_id, CID);
        let host = classify(
            "9:name=systemd:/user.slice\n8:pids:/user.slice\n0::/user.slice/session-1.scope\n",
        );
        assert_eq!(
            host.path, "/user.slice/session-1.scope",
            "the v2 line when no pod shows"
        );
    }

    #[test]
    fn near_misses_are_not_ids() {
        let c = classify_path("/podcast.slice/pod-not-a-uuid/abc.scope/kubepodsx");
        assert!(!c.in_kubernetes_pod);
        assert_eq!(c.pod_uid, "");
        assert_eq!(c.container_id, "");
        assert_eq!(classify("").path, "");
    }
}
