"""The add-ons (issue 11): the manifests the addons role renders (with Ansible's own
templating, from group_vars built by provisioner.defaults), what a turned-off add-on's
removal names, the API server flags the aggregation layer needs, and `cluster plan`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.template import Templar
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from provisioner import defaults, pki, plan, spec
from provisioner.cli import app
from provisioner.versions import LOCAL_PATH_PROVISIONER, METRICS_SERVER
from tests.unit import role_templates
from tests.unit.role_templates import host_vars, templar

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventory" / "sample" / "ha.yaml"
BUSYBOX = "provisioner.local/busybox:1.36.1"
DOWNLOADS = {
    "k8s_cluster": [
        {"name": "image-pause", "image": "registry.k8s.io/pause:3.10"},
        {"name": "image-busybox", "image": BUSYBOX},
    ]
}


CLUSTER_DIR: list[Path] = []  # the cluster directory with a real PKI (the fixture below)


@pytest.fixture(autouse=True, scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cluster directory whose pki/ is made by provisioner.pki, as `cluster create` makes it:
    the addons role reads metrics-server's certificate and the CA from there."""
    root = tmp_path_factory.mktemp("state") / "ha"
    c = cluster()
    pki.ensure(c, root / "pki", defaults.service_ip(c), c.api_lb.port)
    CLUSTER_DIR.append(root)
    yield root
    CLUSTER_DIR.clear()


def cluster(**addons: Any) -> spec.ClusterSpec:
    data = spec.load(SAMPLE).model_dump(mode="json")
    data["addons"] = addons
    return spec.from_dict(data)


def variables(c: spec.ClusterSpec, role: str = "addons", **extra: Any) -> tuple[Templar, dict[str, Any]]:
    values = {
        **host_vars(c, state_dir=CLUSTER_DIR[0] if CLUSTER_DIR else None),
        "download_artifacts": DOWNLOADS,
        **extra,
    }
    t = templar(role, values)
    return t, dict(t.available_variables)


def render(c: spec.ClusterSpec, template: str, role: str = "addons", **extra: Any) -> str:
    return role_templates.render(role, template, variables(c, role, **extra)[1])


def objects(c: spec.ClusterSpec, template: str) -> dict[str, dict[str, Any]]:
    """The rendered manifest's objects by ``kind/name``."""
    docs = [d for d in yaml.safe_load_all(render(c, template)) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def role_default(c: spec.ClusterSpec, name: str) -> Any:
    templar, values = variables(c)
    return templar.template(values[name])


# -- metrics-server ------------------------------------------------------------------------------


def test_metrics_server_verifies_the_kubelets_with_the_cluster_ca() -> None:
    objs = objects(cluster(), "metrics-server.yaml.j2")
    [container] = objs["Deployment/metrics-server"]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert "--kubelet-certificate-authority=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt" in args
    assert not [a for a in args if "insecure" in a], args
    assert "--kubelet-preferred-address-types=InternalIP,Hostname" in args, "the kubelet certificate names the address"
    assert container["image"] == f"registry.k8s.io/metrics-server/metrics-server:{METRICS_SERVER}"
    assert container["imagePullPolicy"] == "Never", "from the mirror, imported on every node"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
    # the TLS settings of the hardening section
    assert "--tls-min-version=VersionTLS12" in args
    [suites] = [a.split("=", 1)[1].split(",") for a in args if a.startswith("--tls-cipher-suites=")]
    assert suites == list(cluster().hardening.tls.cipher_suites)


def test_metrics_server_ca_is_the_one_that_signs_kubelet_serving_certificates() -> None:
    """The service account's ca.crt is the controller manager's --root-ca-file: the cluster CA,
    which also signs every kubelet's serving certificate (pki.py: nodes/<n>-kubelet-server)."""
    from provisioner import pki

    c = cluster()
    unit = render(c, "kube-controller-manager.service.j2", role="control_plane")
    assert f"--root-ca-file={defaults.KUBE_PKI}/ca.crt" in unit
    serving = {r.path: r for r in pki.requests(c, defaults.service_ip(c)) if r.path.endswith("-kubelet-server")}
    assert set(serving) == {f"nodes/{n.name}-kubelet-server" for n in c.nodes}
    for n in c.nodes:
        r = serving[f"nodes/{n.name}-kubelet-server"]
        assert r.ca == "ca" and n.address in r.sans, "metrics-server reaches each kubelet at its InternalIP"


def test_metrics_api_is_aggregated_with_the_front_proxy_identity() -> None:
    objs = objects(cluster(), "metrics-server.yaml.j2")
    api = objs["APIService/v1beta1.metrics.k8s.io"]["spec"]
    assert api["group"] == "metrics.k8s.io" and api["version"] == "v1beta1"
    assert api["service"] == {"name": "metrics-server", "namespace": "kube-system"}
    # metrics-server reads the front-proxy CA from kube-system/extension-apiserver-authentication
    binding = objs["RoleBinding/metrics-server-auth-reader"]
    assert binding["metadata"]["namespace"] == "kube-system"
    assert binding["roleRef"]["name"] == "extension-apiserver-authentication-reader"
    assert objs["ClusterRoleBinding/metrics-server:system:auth-delegator"]["roleRef"]["name"] == "system:auth-delegator"
    rules = objs["ClusterRole/system:metrics-server"]["rules"]
    assert {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]} in rules
    service = objs["Service/metrics-server"]["spec"]
    assert service["selector"] == {"k8s-app": "metrics-server"} and service["ports"][0]["targetPort"] == "https"


def test_the_apiservice_verifies_metrics_server_with_the_cluster_ca(cluster_dir: Path) -> None:
    """No insecureSkipTLSVerify: metrics-server serves with a certificate for its Service name
    issued by the cluster CA (pki.py), and the APIService's caBundle is that CA."""
    objs = objects(cluster(), "metrics-server.yaml.j2")
    api = objs["APIService/v1beta1.metrics.k8s.io"]["spec"]
    assert "insecureSkipTLSVerify" not in api
    ca_pem = (cluster_dir / "pki" / "ca.crt").read_bytes()
    assert base64.b64decode(api["caBundle"]).strip() == ca_pem.strip()

    secret = objs["Secret/metrics-server-tls"]
    assert secret["metadata"]["namespace"] == "kube-system" and secret["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "metrics-server.kube-system.svc" in names, names
    key = serialization.load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]

    [container] = objs["Deployment/metrics-server"]["spec"]["template"]["spec"]["containers"]
    assert "--tls-cert-file=/etc/metrics-server/tls/tls.crt" in container["args"]
    assert "--tls-private-key-file=/etc/metrics-server/tls/tls.key" in container["args"]
    pod = objs["Deployment/metrics-server"]["spec"]["template"]["spec"]
    [tls] = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert tls["secret"] == {"secretName": "metrics-server-tls", "defaultMode": 0o440}
    assert pod["securityContext"]["fsGroup"] == container["securityContext"]["runAsUser"] == 65534


def test_the_serving_certificate_exists_only_with_metrics_server() -> None:
    c = cluster()
    assert "metrics-server" in [r.path for r in pki.requests(c, defaults.service_ip(c))]
    off = cluster(metrics_server={"enabled": False})
    assert "metrics-server" not in [r.path for r in pki.requests(off, defaults.service_ip(off))]


def test_the_api_server_has_the_aggregation_layer_flags() -> None:
    """The API server authenticates to metrics-server with the front-proxy client certificate,
    which metrics-server checks against the front-proxy CA (requestheader)."""
    c = cluster()
    unit = render(c, "kube-apiserver.service.j2", role="control_plane")
    pki = defaults.KUBE_PKI
    for flag in (
        f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
        f"--proxy-client-key-file={pki}/front-proxy-client.key",
    ):
        assert flag in unit, flag


def test_metrics_server_deployment_applies_unchanged_twice() -> None:
    """A defaulted field left out of the strategy makes every `kubectl apply` report a change
    (seen on the lab): type and both limits are given."""
    deploy = objects(cluster(), "metrics-server.yaml.j2")["Deployment/metrics-server"]
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


# -- local-path-provisioner ----------------------------------------------------------------------


def test_local_path_is_the_default_class_with_the_file_s_directory() -> None:
    objs = objects(cluster(local_path={"path": "/srv/volumes/"}), "local-path.yaml.j2")
    sc = objs["StorageClass/local-path"]
    assert sc["provisioner"] == "rancher.io/local-path" and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    config = json.loads(objs["ConfigMap/local-path-config"]["data"]["config.json"])
    assert config == {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["/srv/volumes"]}]}
    [container] = objs["Deployment/local-path-provisioner"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"docker.io/rancher/local-path-provisioner:{LOCAL_PATH_PROVISIONER}"
    assert container["imagePullPolicy"] == "Never" and container["securityContext"]["runAsNonRoot"]


def test_local_path_not_default_when_the_file_says_so() -> None:
    sc = objects(cluster(local_path={"default_class": False}), "local-path.yaml.j2")["StorageClass/local-path"]
    assert sc["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "false"}


def test_local_path_helper_pods_run_the_mirror_busybox_in_a_privileged_namespace() -> None:
    """The helper pods mount the node's directory (hostPath), which Pod Security's baseline
    (enforced cluster-wide) forbids: the add-on's namespace is privileged."""
    objs = objects(cluster(), "local-path.yaml.j2")
    labels = objs["Namespace/local-path-storage"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    helper = yaml.safe_load(objs["ConfigMap/local-path-config"]["data"]["helperPod.yaml"])
    [container] = helper["spec"]["containers"]
    assert container["image"] == BUSYBOX and container["imagePullPolicy"] == "Never"
    for script in ("setup", "teardown"):
        assert objs["ConfigMap/local-path-config"]["data"][script].startswith("#!/bin/sh\n")


# -- turned off: what create removes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "names", "namespace"),
    [
        ("metrics-server.yaml.j2", "addons_metrics_server_objects", "kube-system"),
        ("local-path.yaml.j2", "addons_local_path_objects", "local-path-storage"),
    ],
)
def test_removal_names_every_object_of_the_manifest(template: str, names: str, namespace: str) -> None:
    """`kubectl delete -n <namespace> <objects>`: every cluster-scoped object by name; the
    namespaced ones by name in kube-system, or with their namespace."""
    c = cluster()
    removed = {str(x).lower() for x in role_default(c, names)}
    for key, obj in objects(c, template).items():
        kind, name = key.split("/", 1)
        ns = obj["metadata"].get("namespace")
        named = f"{kind.lower()}/{name}" in removed
        with_namespace = ns is not None and ns != "kube-system" and f"namespace/{ns}" in removed
        assert named or with_namespace, f"{key} (namespace {ns}) is left behind when the add-on is turned off"
        assert ns in (None, namespace), f"{key}: in {ns}, the delete runs in {namespace}"


def test_the_group_vars_of_the_addons() -> None:
    on = defaults.addons_vars(cluster())
    assert on["addon_metrics_server"] is True and on["addon_local_path"] is True
    assert on["local_path_default_class"] is True and on["local_path_dir"] == "/opt/local-path-provisioner"
    off = defaults.addons_vars(cluster(metrics_server={"enabled": False}, local_path={"enabled": False}))
    assert off["addon_metrics_server"] is False and off["addon_local_path"] is False


# -- cluster plan --------------------------------------------------------------------------------


def test_plan_lists_the_addons() -> None:
    data = plan.make_plan(cluster(), {})
    assert [(a["name"], a["enabled"], a["version"]) for a in data["addons"]] == [
        ("metrics-server", True, METRICS_SERVER),
        ("local-path", True, LOCAL_PATH_PROVISIONER),
    ]
    assert "default" in data["addons"][1]["what"] and "/opt/local-path-provisioner" in data["addons"][1]["what"]


def test_plan_table_says_which_addons_are_on_and_how_to_turn_them_off(tmp_path: Path) -> None:
    runner = CliRunner()
    on = runner.invoke(app, ["cluster", "plan", "-f", str(SAMPLE), "--state-dir", str(tmp_path)])
    assert on.exit_code == 0, on.output
    text = " ".join(on.output.split())
    assert f"addon metrics-server {METRICS_SERVER}: metrics API: kubectl top, HorizontalPodAutoscalers" in text
    assert f"addon local-path {LOCAL_PATH_PROVISIONER}: StorageClass local-path (default)" in text

    data = yaml.safe_load(SAMPLE.read_text())
    data["addons"] = {"metrics_server": {"enabled": False}}
    off_file = tmp_path / "off.yaml"
    off_file.write_text(yaml.safe_dump(data))
    off = runner.invoke(app, ["cluster", "plan", "-f", str(off_file), "--state-dir", str(tmp_path)])
    text = " ".join(off.output.split())
    assert "addon metrics-server off (addons.metrics_server.enabled: false)" in text
    assert f"addon local-path {LOCAL_PATH_PROVISIONER}" in text
    as_json = runner.invoke(app, ["cluster", "plan", "-f", str(off_file), "--state-dir", str(tmp_path), "-o", "json"])
    assert [a["enabled"] for a in json.loads(as_json.stdout)["addons"]] == [False, True]
