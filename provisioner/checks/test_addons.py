"""The add-ons, checked once, from the first control plane (they are cluster objects): the
metrics API that metrics-server serves, and local-path-provisioner's StorageClass. An add-on
the cluster file turns off must be absent (create removes it)."""

from __future__ import annotations

import json
import shlex
import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from provisioner.checks.conftest import Node

METRICS_API = "v1beta1.metrics.k8s.io"
LOCAL_PATH_CLASS = "local-path"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
METRICS_CATCH_UP_S = 45  # three metric resolutions


def _first_control_plane(node: Node, groups: dict[str, list[str]]) -> None:
    node.require("kube_control_plane")
    if node.name != groups["kube_control_plane"][0]:
        pytest.skip("cluster objects: checked on the first control plane")


def _kubectl(host: Any, hostvars: dict[str, Any], *args: str) -> Any:
    return host.run(shlex.join([*hostvars["kubectl_argv"], *args]))


def _get(host: Any, hostvars: dict[str, Any], *args: str) -> dict[str, Any] | None:
    """The object as JSON, or None when it does not exist."""
    out = _kubectl(host, hostvars, "get", *args, "-o", "json", "--ignore-not-found")
    assert out.rc == 0, f"kubectl get {' '.join(args)}: {out.stderr.strip()[-300:]}"
    return json.loads(out.stdout) if out.stdout.strip() else None


def test_metrics_api_available(host: Any, node: Node, hostvars: dict[str, Any], groups: dict[str, list[str]]) -> None:
    """addons.metrics_server: the APIService is Available and the metrics API has every node."""
    _first_control_plane(node, groups)
    service = _get(host, hostvars, "apiservice", METRICS_API)
    if not hostvars["addon_metrics_server"]:
        assert service is None, f"addons.metrics_server is off but APIService {METRICS_API} exists"
        return
    assert service is not None, f"no APIService {METRICS_API}: run `cluster create`"
    conditions = {c["type"]: c for c in service.get("status", {}).get("conditions", [])}
    available = conditions.get("Available", {})
    assert available.get("status") == "True", (
        f"APIService {METRICS_API} not Available: {available.get('reason')}: {available.get('message')}"
    )
    # metrics-server reports a node once two scrapes of it (one resolution, 15 s, apart)
    # succeeded in a row: a kubelet that just restarted, or a node just back from a network
    # cut, is missing for up to two resolutions. Wait that long before calling it unreadable.
    deadline = time.monotonic() + METRICS_CATCH_UP_S
    while True:
        out = _kubectl(host, hostvars, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes")
        assert out.rc == 0, f"the metrics API does not answer: {out.stderr.strip()[-300:]}"
        measured = {item["metadata"]["name"] for item in json.loads(out.stdout)["items"]}
        missing = set(groups["k8s_cluster"]) - measured
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert not missing, (
        f"no metrics for {', '.join(sorted(missing))} after {METRICS_CATCH_UP_S} s "
        "(metrics-server cannot read their kubelets: see its log)"
    )


def test_local_path_storage_class(
    host: Any, node: Node, hostvars: dict[str, Any], groups: dict[str, list[str]]
) -> None:
    """addons.local_path: StorageClass local-path exists (the default one when
    local_path.default_class) and its provisioner is available."""
    _first_control_plane(node, groups)
    sc = _get(host, hostvars, "storageclass", LOCAL_PATH_CLASS)
    if not hostvars["addon_local_path"]:
        assert sc is None, f"addons.local_path is off but StorageClass {LOCAL_PATH_CLASS} exists"
        return
    assert sc is not None, f"no StorageClass {LOCAL_PATH_CLASS}: run `cluster create`"
    assert sc["provisioner"] == "rancher.io/local-path", sc["provisioner"]
    is_default = sc["metadata"].get("annotations", {}).get(DEFAULT_CLASS) == "true"
    assert is_default == bool(hostvars["local_path_default_class"]), (
        f"StorageClass {LOCAL_PATH_CLASS}: default {is_default}, the cluster file says "
        f"{bool(hostvars['local_path_default_class'])}"
    )
    deploy = _get(host, hostvars, "-n", "local-path-storage", "deployment", "local-path-provisioner")
    assert deploy is not None, "no Deployment local-path-storage/local-path-provisioner"
    ready = deploy.get("status", {}).get("availableReplicas", 0)
    assert ready >= 1, "local-path-provisioner has no available replica"
