#!/usr/bin/env python3
"""Pack files into a single-layer OCI image archive, without Docker or a registry.

    oci_pack.py --out IMAGE.tar --ref NAME:TAG [--user UID:GID]
                [--entrypoint PATH ...] [--cmd ARG ...]
                --add SRC:DEST[:MODE] [--add ...]

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...)
in a tar, the format `ctr images import`, `podman load` and
`skopeo copy oci-archive:IMAGE.tar docker://...` read. It holds one image for
linux/amd64 whose one layer (gzip) contains the added files, owned by root,
with the given modes (default 0755) and every parent directory.

Everything is deterministic: timestamps are SOURCE_DATE_EPOCH (default 0), so
the same inputs give the same digests. The image's name is recorded twice in
index.json: `org.opencontainers.image.ref.name` (OCI, podman, skopeo) and
`io.containerd.image.name` (containerd, which otherwise prefixes the name).

Standard library only: an OCI image is a layer tar, a config JSON, a manifest
and an index, each addressed by its sha256.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"


def parse_add(spec):
    """SRC:DEST[:MODE] -> (src, dest, mode); DEST must be absolute."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--add {spec!r}: expected SRC:DEST[:MODE]")
    src, dest = parts[0], parts[1]
    if not dest.startswith("/") or dest.endswith("/") or "/../" in dest + "/":
        raise argparse.ArgumentTypeError(f"--add {spec!r}: DEST must be an absolute file path")
    try:
        mode = int(parts[2], 8) if len(parts) == 3 else 0o755
    except ValueError:
        raise argparse.ArgumentTypeError(f"--add {spec!r}: MODE must be octal") from None
    return src, dest.lstrip("/"), mode


def parse_user(text):
    """UID[:GID], numeric: the image has no /etc/passwd to resolve names."""
    for part in text.split(":"):
        if not part.isdigit():
            raise argparse.ArgumentTypeError(f"--user {text!r}: expected numeric UID[:GID]")
    if text.count(":") > 1:
        raise argparse.ArgumentTypeError(f"--user {text!r}: expected numeric UID[:GID]")
    return text


def json_bytes(obj):
    # Canonical enough to be reproducible: sorted keys, no whitespace.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(files, mtime):
    """The uncompressed layer: parent directories first, then the files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({os.path.dirname(dest) for _, dest, _ in files} - {""})
        wanted = set()
        for d in dirs:
            parts = d.split("/")
            wanted.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for d in sorted(wanted):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = mtime
            tar.addfile(info)
        for src, dest, mode in sorted(files, key=lambda f: f[1]):
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest)
            info.size = len(data)
            info.mode = mode
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(args):
    """Returns (blobs {digest: bytes}, index bytes, manifest digest)."""
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    dests = [dest for _, dest, _ in args.add]
    if len(set(dests)) != len(dests):
        sys.exit("oci_pack: the same DEST was given twice")
    raw = layer_tar(args.add, mtime)
    # mtime=0 and no file name: the gzip header carries no time or path.
    compressed = gzip.compress(raw, compresslevel=6, mtime=0)
    blobs = {}

    def blob(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest, len(data)

    layer_digest, layer_size = blob(compressed)
    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    image_config = {}
    if args.user:
        image_config["User"] = args.user
    if args.entrypoint:
        image_config["Entrypoint"] = args.entrypoint
    if args.cmd:
        image_config["Cmd"] = args.cmd
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
        "history": [{"created": created, "created_by": "deploy/image/oci_pack.py"}],
    }
    config_digest, config_size = blob(json_bytes(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = blob(json_bytes(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": args.ref,
                    "org.opencontainers.image.ref.name": args.ref,
                },
            }
        ],
    }
    return blobs, json_bytes(index), manifest_digest


def write_archive(path, blobs, index, mtime):
    """Writes the OCI layout tar to a temporary file, then renames it."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:

            def add(name, data, mode=0o644):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = mode
                info.mtime = mtime
                tar.addfile(info, io.BytesIO(data))

            def add_dir(name):
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                info.mtime = mtime
                tar.addfile(info)

            add("oci-layout", json_bytes({"imageLayoutVersion": "1.0.0"}))
            add("index.json", index)
            add_dir("blobs")
            add_dir("blobs/sha256")
            for digest in sorted(blobs):
                add("blobs/sha256/" + digest.split(":", 1)[1], blobs[digest])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the archive to write")
    p.add_argument("--ref", required=True, help="image name, e.g. registry.example.com/execwatch:0.1.0")
    p.add_argument("--add", required=True, action="append", type=parse_add, metavar="SRC:DEST[:MODE]")
    p.add_argument("--user", type=parse_user, help="numeric UID[:GID] the image runs as")
    p.add_argument("--entrypoint", nargs="+", help="the image's entrypoint")
    p.add_argument("--cmd", nargs="+", help="the image's default arguments")
    args = p.parse_args(argv)
    if ":" not in args.ref.rsplit("/", 1)[-1] and "@" not in args.ref:
        p.error(f"--ref {args.ref!r}: give a tag (NAME:TAG)")
    blobs, index, manifest_digest = build(args)
    write_archive(args.out, blobs, index, int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    print(manifest_digest)


if __name__ == "__main__":
    main()
