//! deploy/image/oci_pack.py, the packer behind deploy/image/build.sh, checked
//! with tools that did not write the archive: tar and gzip read it, every
//! blob's sha256 is recomputed, and skopeo (the tool users push with) copies
//! it, verifying digests on the way. Same inputs give the same bytes.
//! containerd importing and running the real image is tests/node_pod.rs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn packer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/image/oci_pack.py")
}

fn pack(dir: &Path, out: &str, args: &[&str]) -> Output {
    Command::new("python3")
        .arg(packer())
        .arg("--out")
        .arg(dir.join(out))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run python3")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sh(dir: &Path, script: &str) -> String {
    ok(Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap())
}

fn sha256(dir: &Path, file: &str) -> String {
    let out = sh(dir, &format!("sha256sum {file}"));
    format!("sha256:{}", out.split_whitespace().next().unwrap())
}

fn json(dir: &Path, file: &str) -> Value {
    serde_json::from_slice(&fs::read(dir.join(file)).unwrap()).unwrap()
}

/// Two small files and the image the real build makes of them.
fn fixture() -> (tempfile::TempDir, Vec<&'static str>) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("agent"), b"#!/bin/true\nagent\n").unwrap();
    fs::write(dir.path().join("reclaimer"), b"reclaimer bytes").unwrap();
    fs::set_permissions(dir.path().join("agent"), fs::Permissions::from_mode(0o600)).unwrap();
    let args = vec![
        "--ref",
        "registry.example.com/execwatch:0.1.0",
        "--user",
        "65532:65532",
        "--add",
        "agent:/agent",
        "--add",
        "reclaimer:/opt/x/reclaimer:0750",
    ];
    (dir, args)
}

#[test]
fn the_archive_is_a_content_addressed_oci_layout() {
    let (dir, args) = fixture();
    let d = dir.path();
    let printed = ok(pack(d, "image.tar", &args));
    sh(d, "mkdir layout && tar -xf image.tar -C layout");
    let layout = d.join("layout");

    assert_eq!(
        json(&layout, "oci-layout"),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json(&layout, "index.json");
    assert_eq!(index["schemaVersion"], 2);
    let entry = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let name = "registry.example.com/execwatch:0.1.0";
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        name
    );
    assert_eq!(entry["annotations"]["io.containerd.image.name"], name);
    assert_eq!(entry["platform"]["os"], "linux");
    assert_eq!(entry["platform"]["architecture"], "amd64");

    // Every reference: the digest is the sha256 of the blob, sizes agree.
    let blob = |desc: &Value| -> String {
        let digest = desc["digest"].as_str().unwrap();
        let file = format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap());
        assert_eq!(sha256(&layout, &file), digest, "{file}");
        let len = fs::metadata(layout.join(&file)).unwrap().len();
        assert_eq!(desc["size"].as_u64(), Some(len), "{file} size");
        file
    };
    let manifest_file = blob(entry);
    assert_eq!(
        printed.trim(),
        entry["digest"],
        "prints the manifest digest"
    );
    let manifest = json(&layout, &manifest_file);
    assert_eq!(manifest["schemaVersion"], 2);
    let config_file = blob(&manifest["config"]);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_file = blob(&layers[0]);

    // The config: platform, user, and the uncompressed layer's digest.
    let config = json(&layout, &config_file);
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["rootfs"]["type"], "layers");
    let diff_id = sh(&layout, &format!("gzip -dc {layer_file} | sha256sum"));
    let diff_id = format!("sha256:{}", diff_id.split_whitespace().next().unwrap());
    assert_eq!(config["rootfs"]["diff_ids"][0], diff_id.as_str());

    // The layer: parents first, root-owned, the modes asked for, the bytes.
    let listing = sh(&layout, &format!("tar -tzvf {layer_file} --numeric-owner"));
    let rows: Vec<(String, String, String)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string(), f[5].to_string())
        })
        .collect();
    let row = |m: &str, p: &str| (m.to_string(), "0/0".to_string(), p.to_string());
    assert_eq!(
        rows,
        vec![
            row("drwxr-xr-x", "opt/"),
            row("drwxr-xr-x", "opt/x/"),
            row("-rwxr-xr-x", "agent"),
            row("-rwxr-x---", "opt/x/reclaimer"),
        ]
    );
    let reclaimer = sh(&layout, &format!("tar -xzOf {layer_file} opt/x/reclaimer"));
    assert_eq!(reclaimer, "reclaimer bytes");

    // Deterministic: a second run gives the same archive, byte for byte.
    ok(pack(d, "again.tar", &args));
    assert_eq!(
        fs::read(d.join("image.tar")).unwrap(),
        fs::read(d.join("again.tar")).unwrap()
    );
}

#[test]
fn skopeo_reads_and_copies_the_archive() {
    let (dir, args) = fixture();
    let d = dir.path();
    ok(pack(d, "image.tar", &args));
    let inspect = sh(d, "skopeo inspect --config oci-archive:image.tar");
    let config: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    // A copy re-reads every blob and checks it against its digest.
    sh(
        d,
        "skopeo copy --quiet oci-archive:image.tar oci:copied:execwatch",
    );
    let index = json(&d.join("copied"), "index.json");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_arguments_are_refused_and_write_nothing() {
    let (dir, _) = fixture();
    let d = dir.path();
    let cases: [&[&str]; 5] = [
        &["--ref", "execwatch", "--add", "agent:/agent"],
        &["--ref", "x/execwatch:1", "--add", "agent:agent"],
        &[
            "--ref",
            "x/execwatch:1",
            "--add",
            "agent:/a",
            "--add",
            "reclaimer:/a",
        ],
        &["--ref", "x/execwatch:1", "--add", "agent:/a:rwx"],
        &[
            "--ref",
            "x/execwatch:1",
            "--user",
            "nobody",
            "--add",
            "agent:/a",
        ],
    ];
    for args in cases {
        let out = pack(d, "bad.tar", args);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!d.join("bad.tar").exists(), "{args:?} left an archive");
    }
    let out = pack(d, "bad.tar", &["--ref", "x/e:1", "--add", "missing:/a"]);
    assert!(!out.status.success(), "a missing file accepted");
    let names: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("bad.tar")),
        "temporary left: {names:?}"
    );
}

/// The DaemonSet's container images as `kubectl kustomize <dir>` renders them.
fn rendered_images(dir: &Path) -> Vec<String> {
    let out = ok(Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl"));
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_placeholder_is_the_built_name_and_an_overlay_replaces_it() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // What deploy/image/build.sh names the archive by default.
    let built = format!(
        "registry.example.com/execwatch:{}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        rendered_images(&repo.join("deploy")),
        vec![built.clone(), built]
    );

    // The overlay docs/operating.md shows (kustomize wants a relative path).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let up = dir
        .path()
        .strip_prefix(repo)
        .unwrap()
        .components()
        .map(|_| "..")
        .collect::<Vec<_>>()
        .join("/");
    fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "resources:\n  - {up}/deploy\nimages:\n  - name: registry.example.com/execwatch\n    newName: registry.internal/execwatch\n    newTag: \"0.2.0\"\n"
        ),
    )
    .unwrap();
    let mine = "registry.internal/execwatch:0.2.0";
    assert_eq!(rendered_images(dir.path()), vec![mine, mine]);
}
