"""Choose, from the mirror's manifest, the files each group of nodes downloads.

The result is the ``download_artifacts`` variable of the download role:
group -> [{name, component, version, url, sha256, dir, file, link, kind, image}].
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import PurePosixPath
from typing import Any

from provisioner.errors import ProvisionerError
from provisioner.mirror.manifest import Artifact, Manifest
from provisioner.spec import Addons, ClusterSpec
from provisioner.versions import LOCAL_PATH_PROVISIONER, METRICS_SERVER, Release, release


class ArtifactError(ProvisionerError):
    pass


# group -> (manifest name, version key of the release or the component's only version)
NEEDS: dict[str, list[tuple[str, str]]] = {
    "k8s_cluster": [
        ("kubelet", "kubernetes"),
        ("kube-proxy", "kubernetes"),
        ("kubectl", "kubernetes"),
        ("containerd", "*"),
        ("containerd-shim-runc-v2", "*"),
        ("ctr", "*"),
        ("runc", "*"),
        ("cni-bridge", "*"),
        ("cni-host-local", "*"),
        ("cni-loopback", "*"),
        ("cni-portmap", "*"),
        ("kube-router", "*"),
        ("image-pause", "pause"),
        ("image-coredns", "coredns"),
        ("image-busybox", "*"),
        ("image-metrics-server", "metrics-server"),
        ("image-local-path", "local-path"),
        ("image-agnhost", "*"),
    ],
    "kube_control_plane": [
        ("kube-apiserver", "kubernetes"),
        ("kube-controller-manager", "kubernetes"),
        ("kube-scheduler", "kubernetes"),
    ],
    "etcd": [("etcd", "etcd"), ("etcdctl", "etcd"), ("etcdutl", "etcd")],
}


# Test artifacts: fetched only for a cluster file with `artifacts.test_images: true`, so that
# Kubernetes' own e2e tests find their image offline; every other cluster is spared 83 MB a
# node to download, verify and import.
TEST_IMAGES = {"image-agnhost"}


def fetch_manifest(files_repo: str, timeout: float = 10.0) -> Manifest:
    url = f"{files_repo.rstrip('/')}/manifest.json"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return Manifest.from_json(resp.read().decode())
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            f"artifacts.files_repo: cannot read {url} ({exc}); build and serve the mirror "
            "(`provisioner mirror build`, `provisioner lab up` serves it) or fix the URL"
        ) from None


def _link(a: Artifact) -> str | None:
    if a.kind == "image":
        return None
    if a.component == "cni-plugins":
        return f"/opt/cni/bin/{a.name.removeprefix('cni-')}"
    return f"/usr/local/bin/{a.name}"


def _pick(manifest: Manifest, name: str, want: str | None) -> Artifact:
    """The entry for ``want``, or the newest version when the release does not pin one."""
    if want is None:
        versions = manifest.versions(name)
        if not versions:
            raise ArtifactError(f"the mirror has no {name}; run `provisioner mirror build`")
        want = versions[-1]
    try:
        return manifest.find(name, want)
    except KeyError:
        raise ArtifactError(f"the mirror has no {name} {want}; run `provisioner mirror build` for it") from None


def addon_images(addons: Addons) -> dict[str, bool]:
    """The add-on images of the mirror, and whether the cluster file wants each."""
    return {"image-metrics-server": addons.metrics_server.enabled, "image-local-path": addons.local_path.enabled}


def downloads(
    manifest: Manifest,
    release: Release,
    files_repo: str,
    addons: Addons | None = None,
    network_policy: bool = True,
    test_images: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """The download list; an add-on turned off in the cluster file (``addons``; default: all on)
    is left out, so its image is neither fetched nor needed in the mirror; so is kube-router
    without ``network_policy`` (the cluster file's network.policy), and the e2e tests' images
    without ``test_images`` (artifacts.test_images)."""
    wanted = {
        "kubernetes": release.kubernetes,
        "etcd": release.etcd,
        "coredns": release.coredns,
        "pause": release.pause,
        "metrics-server": METRICS_SERVER,
        "local-path": LOCAL_PATH_PROVISIONER,
        "*": None,
    }
    unwanted = {name for name, on in addon_images(addons or Addons()).items() if not on}
    if not network_policy:
        unwanted.add("kube-router")
    if not test_images:
        unwanted |= TEST_IMAGES
    elif missing := sorted(name for name in TEST_IMAGES if not manifest.versions(name)):
        raise ArtifactError(
            f"artifacts.test_images: the mirror has no {', '.join(missing)}; run `provisioner mirror build` "
            "(it builds them beside e2e.test) or set test_images: false"
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for group, needs in NEEDS.items():
        items = []
        for name, key in needs:
            if name in unwanted:
                continue
            a = _pick(manifest, name, wanted[key])
            path = PurePosixPath(a.path)
            items.append(
                {
                    "name": a.name,
                    "component": a.component,
                    "version": a.version,
                    "kind": a.kind,
                    "url": a.location(files_repo),
                    "sha256": a.sha256,
                    "size": a.size,
                    "file": path.name,
                    "dir": f"{a.component}/{a.version}",
                    "link": _link(a),
                    "image": a.image,
                }
            )
        out[group] = items
    return out


def for_cluster(manifest: Manifest, spec: ClusterSpec) -> dict[str, list[dict[str, Any]]]:
    """The download list of a cluster file: its release, files_repo, add-ons, network.policy and
    artifacts.test_images."""
    return downloads(
        manifest,
        release(spec.kubernetes.version),
        spec.artifacts.files_repo,
        spec.addons,
        spec.network.policy,
        spec.artifacts.test_images,
    )
