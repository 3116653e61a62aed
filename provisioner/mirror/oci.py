"""Write single-layer container images as OCI image-layout tarballs.

The result is what ``ctr -n k8s.io images import`` accepts: ``oci-layout``,
``index.json`` (with the image name in ``io.containerd.image.name``) and ``blobs/sha256``.
Everything is deterministic: same inputs, same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class Entry:
    path: str  # inside the image, without leading /
    data: bytes | None = None
    source: Path | None = None
    mode: int = 0o644
    link: str | None = None  # symlink target
    directory: bool = False


@dataclass
class Image:
    name: str  # e.g. registry.k8s.io/pause:3.10
    entries: list[Entry]
    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)
    user: str = ""
    env: list[str] = field(
        default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    )
    ports: list[str] = field(default_factory=list)


def _tarinfo(name: str, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def layer_tar(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e.path):
            if e.directory:
                tar.addfile(_tarinfo(e.path, type=tarfile.DIRTYPE, mode=e.mode or 0o755))
            elif e.link is not None:
                tar.addfile(_tarinfo(e.path, type=tarfile.SYMTYPE, linkname=e.link, mode=0o777))
            else:
                data = e.data if e.data is not None else e.source.read_bytes()  # type: ignore[union-attr]
                tar.addfile(_tarinfo(e.path, size=len(data), mode=e.mode), io.BytesIO(data))
    return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest, len(data)


def build_layout(image: Image) -> dict[str, bytes]:
    """The files of the OCI layout, by path."""
    blobs: dict[str, bytes] = {}
    layer = layer_tar(image.entries)
    layer_digest, layer_size = _blob(blobs, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": image.entrypoint,
            "Cmd": image.cmd or None,
            "Env": image.env,
            "User": image.user,
            "ExposedPorts": {p: {} for p in image.ports} or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "provisioner mirror build"}],
    }
    config["config"] = {k: v for k, v in config["config"].items() if v not in (None, "")}  # type: ignore[union-attr]
    config_digest, config_size = _blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    tag = image.name.rpartition(":")[2]
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": image.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode()}
    files["index.json"] = json.dumps(index, sort_keys=True).encode()
    for digest, data in blobs.items():
        files["blobs/sha256/" + digest.split(":", 1)[1]] = data
    return files


def write_tarball(image: Image, target: Path) -> Path:
    files = build_layout(image)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo("blobs", type=tarfile.DIRTYPE, mode=0o755))
        tar.addfile(_tarinfo("blobs/sha256", type=tarfile.DIRTYPE, mode=0o755))
        for path in sorted(files):
            data = files[path]
            tar.addfile(_tarinfo(path, size=len(data), mode=0o644), io.BytesIO(data))
    tmp.replace(target)
    return target
