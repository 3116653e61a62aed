"""The mirror's manifest: one entry per file, with name, version, platform, path, sha256
and size. The same format describes an upstream set (entries with a ``url``)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioner.errors import ProvisionerError

FORMAT = 1


@dataclass(frozen=True)
class Artifact:
    name: str  # e.g. kube-apiserver, etcd, image:coredns
    version: str
    path: str  # relative to the mirror root (files_repo)
    sha256: str
    size: int
    os: str = "linux"
    arch: str = "amd64"
    kind: str = "binary"  # binary | image
    component: str = ""  # kubernetes, etcd, containerd, runc, cni-plugins, images
    url: str | None = None  # absolute URL for upstream sets; None = files_repo + path
    image: str | None = None  # for kind=image: the name the image is imported as

    def location(self, files_repo: str) -> str:
        return self.url or f"{files_repo.rstrip('/')}/{self.path}"


@dataclass
class Manifest:
    artifacts: list[Artifact] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def find(self, name: str, version: str | None = None) -> Artifact:
        for a in self.artifacts:
            if a.name == name and (version is None or a.version == version):
                return a
        raise KeyError(f"{name} {version or ''}".strip())

    def versions(self, name: str) -> list[str]:
        """Oldest first, numbers compared as numbers (v2.10.0 is newer than v2.9.1)."""
        return sorted({a.version for a in self.artifacts if a.name == name}, key=_version_key)

    def replace(self, new: list[Artifact]) -> None:
        """Put ``new`` in, dropping older entries with the same path."""
        paths = {a.path for a in new}
        self.artifacts = [a for a in self.artifacts if a.path not in paths] + new
        self.artifacts.sort(key=lambda a: (a.component, a.name, a.version))

    def to_json(self) -> str:
        data = {"format": FORMAT, "meta": self.meta, "artifacts": [asdict(a) for a in self.artifacts]}
        return json.dumps(data, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"manifest format {data.get('format')!r} is not {FORMAT}")
        return cls([Artifact(**a) for a in data["artifacts"]], data.get("meta", {}))

    def write(self, directory: Path) -> Path:
        path = directory / "manifest.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / "manifest.json"
        if not path.exists():
            return cls()
        return cls.from_json(path.read_text())


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    return tuple(int(n) for n in re.findall(r"\d+", version)), version


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe(root: Path, file: Path, **fields: Any) -> Artifact:
    return Artifact(path=str(file.relative_to(root)), sha256=sha256_file(file), size=file.stat().st_size, **fields)


class VerifyError(ProvisionerError):
    pass


def verify(root: Path, manifest: Manifest | None = None) -> int:
    """Re-check every file's size and sha256; raise VerifyError naming each bad file."""
    manifest = manifest or Manifest.read(root)
    if not manifest.artifacts:
        raise VerifyError(f"{root}: no manifest.json, or it lists nothing; run `provisioner mirror build`")
    bad = []
    for a in manifest.artifacts:
        path = root / a.path
        if not path.exists():
            bad.append(f"{a.path}: missing")
        elif path.stat().st_size != a.size:
            bad.append(f"{a.path}: size {path.stat().st_size}, manifest says {a.size}")
        elif sha256_file(path) != a.sha256:
            bad.append(f"{a.path}: sha256 does not match the manifest (corrupted or replaced)")
    if bad:
        raise VerifyError("\n".join(bad))
    return len(manifest.artifacts)
