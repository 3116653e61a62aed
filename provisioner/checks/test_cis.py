"""CIS Kubernetes Benchmark (v1.9 numbering) items that apply to a control plane of systemd
services, checked on every node by group (see conftest.py).

A component's flags are read from the command line of the process systemd runs for it
(``systemctl show -p MainPID``, then ``/proc/PID/cmdline``): what runs, not what a file says.
The kubelet's settings are read from its configuration file (``--config``). Where the
benchmark names a pod specification file (a kubeadm static pod), the check looks at the
systemd unit that takes its place.

A check whose setting the cluster file turned off (``hardening:``) is skipped, naming the
setting; so is an item the provisioner deliberately does not apply, saying why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from provisioner.checks.conftest import Node

PKI = "/etc/kubernetes/pki"
UNITS = "/etc/systemd/system"
KUBELET_CONFIG_FLAG = "--config"
# Go's TLS 1.2 suites with ECDHE key exchange and an AEAD cipher (CIS 1.2.29 / 4.2.12).
STRONG_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}


# -- helpers ---------------------------------------------------------------------------------


class Cis:
    """What the checks read from one node, each read once per run: the flags of the running
    process of a systemd service, and YAML files."""

    def __init__(self, host: Any):
        self.host = host
        self._flags: dict[str, dict[str, str] | None] = {}
        self._yaml: dict[str, dict[str, Any]] = {}
        self._stat: dict[str, tuple[int, str, str] | None] = {}

    def flags(self, service: str) -> dict[str, str]:
        """``--name=value`` flags (a flag without a value maps to "true"); fails the check when
        the service has no running process."""
        if service not in self._flags:
            out = self.host.run(
                'pid=$(systemctl show -p MainPID --value %s) && [ "$pid" -gt 0 ] '
                "&& tr '\\0' '\\n' < /proc/$pid/cmdline",
                service,
            )
            result: dict[str, str] | None = None
            if out.rc == 0 and out.stdout.strip():
                result = {}
                for arg in out.stdout.splitlines()[1:]:
                    if arg.startswith("--"):
                        name, sep, value = arg.partition("=")
                        result[name] = value if sep else "true"
            self._flags[service] = result
        flags = self._flags[service]
        assert flags is not None, f"{service} has no running process"
        return flags

    def yaml(self, path: str) -> dict[str, Any]:
        if path not in self._yaml:
            f = self.host.file(path)
            assert f.exists, f"{path} is missing"
            self._yaml[path] = yaml.safe_load(f.content_string) or {}
        return self._yaml[path]

    def stat(self, path: str) -> tuple[int, str, str]:
        """Mode, owner and group of a file."""
        if path not in self._stat:
            out = self.host.run("stat -c '%%a %%U %%G' %s", path)
            self._stat[path] = (int(out.stdout.split()[0], 8), *out.stdout.split()[1:3]) if out.rc == 0 else None
        result = self._stat[path]
        assert result is not None, f"{path} is missing"
        return result

    def kubelet_config(self) -> dict[str, Any]:
        path = self.flags("kubelet").get(KUBELET_CONFIG_FLAG)
        assert path, "the kubelet runs without --config"
        return self.yaml(path)


@pytest.fixture(scope="module")
def cis(host: Any) -> Cis:
    """One per node; a node that cannot be reached fails every check at once (pytest keeps a
    module fixture's error) instead of each check trying again."""
    out = host.run("true")
    if out.rc != 0:
        pytest.fail(f"cannot run commands on the node: {(out.stderr or out.stdout).strip()[-200:]}")
    return Cis(host)


pytestmark = pytest.mark.usefixtures("cis")


def csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def setting(hostvars: dict[str, Any], var: str, field: str) -> None:
    """Skip the check when the cluster file turned the hardening setting off."""
    if not hostvars.get(var, True):
        pytest.skip(f"off in the cluster file ({field})")


def not_applied(why: str) -> None:
    pytest.skip(f"not applied: {why}")


def mode_at_most(cis: Cis, path: str, limit: int) -> None:
    mode = cis.stat(path)[0]
    assert mode & ~limit & 0o7777 == 0, f"{path} is {oct(mode)}, expected {oct(limit)} or more restrictive"


def owned_by_root(cis: Cis, path: str) -> None:
    _, user, group = cis.stat(path)
    assert (user, group) == ("root", "root"), f"{path} is owned by {user}:{group}, expected root:root"


def strong_ciphers(suites: list[str], what: str) -> None:
    assert suites, f"{what}: no cipher suite list (Go's defaults include CBC and RSA key exchange suites)"
    weak = sorted(set(suites) - STRONG_CIPHERS)
    assert not weak, f"{what}: weak cipher suites {', '.join(weak)}"


# -- 1.1 control plane node configuration files ----------------------------------------------


def test_1_1_1_apiserver_unit_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    mode_at_most(cis, f"{UNITS}/kube-apiserver.service", 0o600)


def test_1_1_2_apiserver_unit_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    owned_by_root(cis, f"{UNITS}/kube-apiserver.service")


def test_1_1_3_controller_manager_unit_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    mode_at_most(cis, f"{UNITS}/kube-controller-manager.service", 0o600)


def test_1_1_4_controller_manager_unit_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    owned_by_root(cis, f"{UNITS}/kube-controller-manager.service")


def test_1_1_5_scheduler_unit_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    mode_at_most(cis, f"{UNITS}/kube-scheduler.service", 0o600)


def test_1_1_6_scheduler_unit_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    owned_by_root(cis, f"{UNITS}/kube-scheduler.service")


def test_1_1_7_etcd_unit_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    mode_at_most(cis, f"{UNITS}/etcd.service", 0o600)


def test_1_1_8_etcd_unit_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    owned_by_root(cis, f"{UNITS}/etcd.service")


def test_1_1_9_cni_file_permissions(host: Any, node: Node) -> None:
    node.require("k8s_cluster")
    not_applied("Manual item; the CNI configuration holds no secret and is kept 0644")


def test_1_1_10_cni_file_ownership(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("k8s_cluster")
    owned_by_root(cis, hostvars["cni_config"])


def test_1_1_11_etcd_data_dir_permissions(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("etcd")
    data_dir = cis.flags("etcd").get("--data-dir", hostvars["etcd_data_dir"])
    mode_at_most(cis, data_dir, 0o700)


def test_1_1_12_etcd_data_dir_ownership(host: Any, node: Node) -> None:
    node.require("etcd")
    not_applied("etcd runs as root (no etcd user), so its data directory is root:root, 0700")


def test_1_1_13_admin_kubeconfig_permissions(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    mode_at_most(cis, hostvars["admin_kubeconfig"], 0o600)


def test_1_1_14_admin_kubeconfig_ownership(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    owned_by_root(cis, hostvars["admin_kubeconfig"])


def test_1_1_15_scheduler_kubeconfig_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    mode_at_most(cis, cis.flags("kube-scheduler")["--kubeconfig"], 0o600)


def test_1_1_16_scheduler_kubeconfig_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    owned_by_root(cis, cis.flags("kube-scheduler")["--kubeconfig"])


def test_1_1_17_controller_manager_kubeconfig_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    mode_at_most(cis, cis.flags("kube-controller-manager")["--kubeconfig"], 0o600)


def test_1_1_18_controller_manager_kubeconfig_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    owned_by_root(cis, cis.flags("kube-controller-manager")["--kubeconfig"])


def test_1_1_19_pki_ownership(host: Any) -> None:
    out = host.run("find %s \\! \\( -user root -group root \\)", PKI)
    assert out.rc == 0, f"find {PKI}: {out.stderr.strip()}"
    assert not out.stdout.strip(), "not owned by root:root: " + ", ".join(out.stdout.split())


def test_1_1_20_pki_certificate_permissions(host: Any) -> None:
    # The benchmark's 600 is a Manual item: certificates are public; the check holds them to 644.
    out = host.run("find %s -name '*.crt' -perm /0133", PKI)
    assert out.rc == 0, f"find {PKI}: {out.stderr.strip()}"
    assert not out.stdout.strip(), "certificates writable or executable beyond 0644: " + ", ".join(out.stdout.split())


def test_1_1_21_pki_key_permissions(host: Any) -> None:
    out = host.run("find %s -name '*.key' -perm /0177", PKI)
    assert out.rc == 0, f"find {PKI}: {out.stderr.strip()}"
    assert not out.stdout.strip(), "keys not 0600: " + ", ".join(out.stdout.split())


# -- 1.2 API server ----------------------------------------------------------------------------


def test_1_2_1_apiserver_anonymous_auth(host: Any, node: Node) -> None:
    node.require("kube_control_plane")
    not_applied(
        "Manual item; anonymous requests stay allowed for /healthz, /readyz and /livez (RBAC grants nothing else)"
    )


def test_1_2_2_apiserver_no_token_auth_file(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert "--token-auth-file" not in cis.flags("kube-apiserver")


def test_1_2_4_apiserver_kubelet_client_certificate(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    f = cis.flags("kube-apiserver")
    assert f.get("--kubelet-client-certificate") and f.get("--kubelet-client-key")


def test_1_2_5_apiserver_kubelet_certificate_authority(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-apiserver").get("--kubelet-certificate-authority")


def test_1_2_6_apiserver_authorization_not_always_allow(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    modes = csv(cis.flags("kube-apiserver").get("--authorization-mode"))
    assert modes and "AlwaysAllow" not in modes, f"--authorization-mode={','.join(modes)}"


def test_1_2_7_apiserver_authorization_node(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert "Node" in csv(cis.flags("kube-apiserver").get("--authorization-mode"))


def test_1_2_8_apiserver_authorization_rbac(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert "RBAC" in csv(cis.flags("kube-apiserver").get("--authorization-mode"))


def test_1_2_9_apiserver_event_rate_limit(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    setting(hostvars, "event_rate_limit_enabled", "hardening.event_rate_limit.enabled")
    f = cis.flags("kube-apiserver")
    assert "EventRateLimit" in csv(f.get("--enable-admission-plugins"))
    path = f.get("--admission-control-config-file")
    assert path, "no --admission-control-config-file"
    config = cis.yaml(path)
    assert "EventRateLimit" in [p.get("name") for p in config.get("plugins") or []], (
        f"{path} configures no EventRateLimit"
    )


def test_1_2_10_apiserver_no_always_admit(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert "AlwaysAdmit" not in csv(cis.flags("kube-apiserver").get("--enable-admission-plugins"))


def test_1_2_12_apiserver_service_account_plugin(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert "ServiceAccount" not in csv(cis.flags("kube-apiserver").get("--disable-admission-plugins"))


def test_1_2_13_apiserver_namespace_lifecycle_plugin(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert "NamespaceLifecycle" not in csv(cis.flags("kube-apiserver").get("--disable-admission-plugins"))


def test_1_2_14_apiserver_node_restriction_plugin(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert "NodeRestriction" in csv(cis.flags("kube-apiserver").get("--enable-admission-plugins"))


def test_1_2_15_apiserver_profiling_off(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-apiserver").get("--profiling") == "false"


def test_1_2_16_apiserver_audit_log_path(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    setting(hostvars, "kube_audit_log_enabled", "hardening.audit_log.enabled")
    path = cis.flags("kube-apiserver").get("--audit-log-path")
    assert path and path != "-", f"--audit-log-path={path}"
    log = host.file(path)
    assert log.exists and log.size > 0, f"the audit log {path} is missing or empty"
    assert log.mode & 0o077 == 0, f"the audit log {path} is {oct(log.mode)}, readable by others"


def _audit_number(cis: Cis, hostvars: dict[str, Any], flag: str, minimum: int) -> None:
    setting(hostvars, "kube_audit_log_enabled", "hardening.audit_log.enabled")
    value = cis.flags("kube-apiserver").get(flag, "0")
    assert value.isdigit() and int(value) >= minimum, f"{flag}={value}, expected {minimum} or more"


def test_1_2_17_apiserver_audit_log_maxage(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    _audit_number(cis, hostvars, "--audit-log-maxage", 30)


def test_1_2_18_apiserver_audit_log_maxbackup(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    _audit_number(cis, hostvars, "--audit-log-maxbackup", 10)


def test_1_2_19_apiserver_audit_log_maxsize(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    _audit_number(cis, hostvars, "--audit-log-maxsize", 100)


def test_1_2_21_apiserver_service_account_lookup(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-apiserver").get("--service-account-lookup", "true") == "true"


def test_1_2_22_apiserver_service_account_key_file(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-apiserver").get("--service-account-key-file")


def test_1_2_23_apiserver_etcd_client_certificate(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    f = cis.flags("kube-apiserver")
    assert f.get("--etcd-certfile") and f.get("--etcd-keyfile")


def test_1_2_24_apiserver_tls_certificate(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    f = cis.flags("kube-apiserver")
    assert f.get("--tls-cert-file") and f.get("--tls-private-key-file")


def test_1_2_25_apiserver_client_ca_file(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-apiserver").get("--client-ca-file")


def test_1_2_26_apiserver_etcd_ca_file(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-apiserver").get("--etcd-cafile")


def test_1_2_27_apiserver_encryption_provider_config(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    path = cis.flags("kube-apiserver").get("--encryption-provider-config")
    assert path and host.file(path).exists, f"--encryption-provider-config={path}"


def test_1_2_28_apiserver_encryption_providers(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    path = cis.flags("kube-apiserver")["--encryption-provider-config"]
    config = cis.yaml(path)
    for resource in config.get("resources") or []:
        if "secrets" in resource.get("resources", []):
            first = next(iter(resource.get("providers") or [{}]))
            assert set(first) & {"aescbc", "aesgcm", "secretbox", "kms"}, f"secrets are written with {list(first)}"
            return
    pytest.fail(f"{path} does not encrypt secrets")


def test_1_2_29_apiserver_strong_ciphers(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    f = cis.flags("kube-apiserver")
    if f.get("--tls-min-version") == "VersionTLS13":
        return  # TLS 1.3 suites are all strong and not configurable
    strong_ciphers(csv(f.get("--tls-cipher-suites")), "kube-apiserver")


def test_hardening_apiserver_tls_min_version(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    version = cis.flags("kube-apiserver").get("--tls-min-version")
    assert version in ("VersionTLS12", "VersionTLS13"), f"--tls-min-version={version}"


# -- 1.3 controller manager, 1.4 scheduler -------------------------------------------------------


def test_1_3_2_controller_manager_profiling_off(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-controller-manager").get("--profiling") == "false"


def test_1_3_3_controller_manager_service_account_credentials(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-controller-manager").get("--use-service-account-credentials") == "true"


def test_1_3_4_controller_manager_service_account_private_key(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-controller-manager").get("--service-account-private-key-file")


def test_1_3_5_controller_manager_root_ca_file(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-controller-manager").get("--root-ca-file")


def test_1_3_6_controller_manager_rotate_kubelet_server_certificate(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    gates = csv(cis.flags("kube-controller-manager").get("--feature-gates"))
    assert "RotateKubeletServerCertificate=false" not in gates


def test_1_3_7_controller_manager_bind_address(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    setting(hostvars, "kube_components_local_bind", "hardening.local_bind")
    assert cis.flags("kube-controller-manager").get("--bind-address") == "127.0.0.1"


def test_1_4_1_scheduler_profiling_off(host: Any, cis: Cis, node: Node) -> None:
    node.require("kube_control_plane")
    assert cis.flags("kube-scheduler").get("--profiling") == "false"


def test_1_4_2_scheduler_bind_address(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    setting(hostvars, "kube_components_local_bind", "hardening.local_bind")
    assert cis.flags("kube-scheduler").get("--bind-address") == "127.0.0.1"


# -- 2 etcd --------------------------------------------------------------------------------------


def test_2_1_etcd_cert_file(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    f = cis.flags("etcd")
    assert f.get("--cert-file") and f.get("--key-file")


def test_2_2_etcd_client_cert_auth(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    assert cis.flags("etcd").get("--client-cert-auth") == "true"


def test_2_3_etcd_no_auto_tls(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    assert cis.flags("etcd").get("--auto-tls", "false") != "true"


def test_2_4_etcd_peer_cert_file(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    f = cis.flags("etcd")
    assert f.get("--peer-cert-file") and f.get("--peer-key-file")


def test_2_5_etcd_peer_client_cert_auth(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    assert cis.flags("etcd").get("--peer-client-cert-auth") == "true"


def test_2_6_etcd_no_peer_auto_tls(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    assert cis.flags("etcd").get("--peer-auto-tls", "false") != "true"


def test_2_7_etcd_unique_ca(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    etcd_ca = host.file(cis.flags("etcd")["--trusted-ca-file"])
    kube_ca = host.file(f"{PKI}/ca.crt")
    if not kube_ca.exists:  # an etcd-only node holds no Kubernetes CA
        return
    assert etcd_ca.content != kube_ca.content, "etcd trusts the Kubernetes CA"


def test_hardening_etcd_tls(host: Any, cis: Cis, node: Node) -> None:
    node.require("etcd")
    f = cis.flags("etcd")
    version = f.get("--tls-min-version")
    assert version in ("TLS1.2", "TLS1.3"), f"--tls-min-version={version}"
    if version == "TLS1.2":
        strong_ciphers(csv(f.get("--cipher-suites")), "etcd")


# -- 3.2 logging ---------------------------------------------------------------------------------


def _audit_policy(cis: Cis, hostvars: dict[str, Any]) -> dict[str, Any]:
    setting(hostvars, "kube_audit_log_enabled", "hardening.audit_log.enabled")
    path = cis.flags("kube-apiserver").get("--audit-policy-file")
    assert path, "no --audit-policy-file"
    return cis.yaml(path)


def test_3_2_1_minimal_audit_policy(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("kube_control_plane")
    policy = _audit_policy(cis, hostvars)
    assert policy.get("kind") == "Policy" and policy.get("rules"), "the audit policy has no rules"
    assert any(r.get("level") != "None" for r in policy["rules"]), "the audit policy logs nothing"


def test_3_2_2_audit_policy_covers_secrets(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    """The first rule that matches Secrets, ConfigMaps or TokenReviews logs at most Metadata:
    their bodies hold credentials."""
    node.require("kube_control_plane")
    policy = _audit_policy(cis, hostvars)
    wanted = {("", "secrets"), ("", "configmaps"), ("authentication.k8s.io", "tokenreviews")}
    for rule in policy["rules"]:
        if rule.get("users") or rule.get("userGroups") or rule.get("verbs") or rule.get("nonResourceURLs"):
            continue  # a narrower rule; the catch-all decides for everyone else
        kinds = rule.get("resources")
        covered = (
            wanted
            if kinds is None
            else {
                (g.get("group", ""), r)
                for g in kinds
                for r in g.get("resources", [])
                if (g.get("group", ""), r) in wanted
            }
        )
        for item in covered:
            assert rule.get("level") in ("None", "Metadata"), f"{item[1]} logged at {rule.get('level')}"
        wanted -= covered
        if not wanted:
            return
    pytest.fail(f"not covered by the audit policy: {sorted(wanted)}")


# -- 4.1 worker node configuration files ---------------------------------------------------------


def test_4_1_1_kubelet_unit_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    mode_at_most(cis, f"{UNITS}/kubelet.service", 0o600)


def test_4_1_2_kubelet_unit_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    owned_by_root(cis, f"{UNITS}/kubelet.service")


def _proxy_kubeconfig(cis: Cis) -> str:
    path = cis.flags("kube-proxy").get("--config")
    assert path, "kube-proxy runs without --config"
    config = cis.yaml(path)
    return str(config.get("clientConnection", {}).get("kubeconfig", ""))


def test_4_1_3_proxy_kubeconfig_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    mode_at_most(cis, _proxy_kubeconfig(cis), 0o600)


def test_4_1_4_proxy_kubeconfig_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    owned_by_root(cis, _proxy_kubeconfig(cis))


def test_4_1_5_kubelet_kubeconfig_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    mode_at_most(cis, cis.flags("kubelet")["--kubeconfig"], 0o600)


def test_4_1_6_kubelet_kubeconfig_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    owned_by_root(cis, cis.flags("kubelet")["--kubeconfig"])


def test_4_1_7_client_ca_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    # The benchmark's 600 is a Manual item: a CA certificate is public; held to 644 here.
    ca = cis.kubelet_config()["authentication"]["x509"]["clientCAFile"]
    mode_at_most(cis, ca, 0o644)


def test_4_1_8_client_ca_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    owned_by_root(cis, cis.kubelet_config()["authentication"]["x509"]["clientCAFile"])


def test_4_1_9_kubelet_config_permissions(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    mode_at_most(cis, cis.flags("kubelet")[KUBELET_CONFIG_FLAG], 0o600)


def test_4_1_10_kubelet_config_ownership(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    owned_by_root(cis, cis.flags("kubelet")[KUBELET_CONFIG_FLAG])


# -- 4.2 kubelet ---------------------------------------------------------------------------------


def test_4_2_1_kubelet_anonymous_auth_off(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    assert cis.kubelet_config().get("authentication", {}).get("anonymous", {}).get("enabled") is False


def test_4_2_2_kubelet_authorization_not_always_allow(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    assert cis.kubelet_config().get("authorization", {}).get("mode") == "Webhook"


def test_4_2_3_kubelet_client_ca_file(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    assert cis.kubelet_config().get("authentication", {}).get("x509", {}).get("clientCAFile")


def test_4_2_4_kubelet_read_only_port_off(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    assert cis.kubelet_config().get("readOnlyPort", 0) == 0
    assert cis.flags("kubelet").get("--read-only-port", "0") == "0"


def test_4_2_5_kubelet_streaming_idle_timeout(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    assert str(cis.kubelet_config().get("streamingConnectionIdleTimeout", "4h")) not in ("0", "0s")


def test_4_2_6_kubelet_iptables_util_chains(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    assert cis.kubelet_config().get("makeIPTablesUtilChains", True) is True


def test_4_2_7_kubelet_hostname_override(host: Any, node: Node) -> None:
    node.require("k8s_cluster")
    not_applied("Manual item; the Node is named as in the cluster file, which need not be the host name")


def test_4_2_8_kubelet_event_record_qps(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    assert int(cis.kubelet_config().get("eventRecordQPS", 50)) >= 0


def test_4_2_9_kubelet_tls_certificate(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    config = cis.kubelet_config()
    assert config.get("tlsCertFile") and config.get("tlsPrivateKeyFile")


def test_4_2_10_kubelet_rotate_certificates(host: Any, node: Node) -> None:
    node.require("k8s_cluster")
    not_applied("kubelet certificates are issued and renewed by `provisioner cluster certs renew`, not by CSRs")


def test_4_2_11_kubelet_rotate_server_certificate_gate(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    gates = cis.kubelet_config().get("featureGates") or {}
    assert gates.get("RotateKubeletServerCertificate", True) is not False


def test_4_2_12_kubelet_strong_ciphers(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    config = cis.kubelet_config()
    if config.get("tlsMinVersion") == "VersionTLS13":
        return
    strong_ciphers(list(config.get("tlsCipherSuites") or []), "kubelet")


def test_4_2_13_kubelet_pod_pids_limit(host: Any, node: Node) -> None:
    node.require("k8s_cluster")
    not_applied("Manual item; no per-pod PID limit is set (the node's own limits apply)")


def test_4_3_1_proxy_metrics_localhost(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    config = cis.yaml(cis.flags("kube-proxy")["--config"])
    address = str(config.get("metricsBindAddress", "127.0.0.1:10249"))
    assert address.startswith("127.0.0.1:"), f"metricsBindAddress: {address}"


def test_hardening_kubelet_tls_min_version(host: Any, cis: Cis, node: Node) -> None:
    node.require("k8s_cluster")
    version = cis.kubelet_config().get("tlsMinVersion")
    assert version in ("VersionTLS12", "VersionTLS13"), f"tlsMinVersion: {version}"


def test_hardening_kubelet_seccomp_default(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("k8s_cluster")
    setting(hostvars, "kubelet_seccomp_default", "hardening.seccomp_default")
    assert cis.kubelet_config().get("seccompDefault") is True


def test_hardening_kubelet_protect_kernel_defaults(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("k8s_cluster")
    setting(hostvars, "kubelet_protect_kernel_defaults", "hardening.protect_kernel_defaults")
    assert cis.kubelet_config().get("protectKernelDefaults") is True


# -- 5.2 policies --------------------------------------------------------------------------------


def test_5_2_1_pod_security_admission(host: Any, cis: Cis, node: Node, hostvars: dict[str, Any]) -> None:
    """At least one active policy control mechanism: Pod Security admission with cluster-wide
    defaults from the AdmissionConfiguration file."""
    node.require("kube_control_plane")
    setting(hostvars, "pod_security_enabled", "hardening.pod_security.enabled")
    f = cis.flags("kube-apiserver")
    assert "PodSecurity" not in csv(f.get("--disable-admission-plugins")), "PodSecurity is disabled"
    path = f.get("--admission-control-config-file")
    assert path, "no --admission-control-config-file"
    config = cis.yaml(path)
    plugins = {p.get("name"): p for p in config.get("plugins") or []}
    assert "PodSecurity" in plugins, f"{path} configures no PodSecurity"
    defaults = plugins["PodSecurity"].get("configuration", {}).get("defaults", {})
    assert defaults.get("enforce") == hostvars["pod_security_enforce"], f"enforce: {defaults.get('enforce')}"
