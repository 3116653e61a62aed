"""NetworkPolicy enforcement (``network.policy``, kube-router's network policy controller): the
setting and its rule against ``kubernetes.proxy_mode``, what it puts in group_vars, the
download list, the certificate and kubeconfig, `cluster plan`, the mirror's build step (with
a fake ``go``), and what the network_policy role renders and runs: its unit, its RBAC and
the script that removes its rules (run here on a saved filter table)."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from provisioner import artifacts, defaults, pki, plan, spec
from provisioner.mirror import build
from provisioner.mirror.manifest import Artifact, Manifest
from provisioner.paths import GO_MODULES
from provisioner.versions import KUBE_ROUTER, RELEASES
from tests.unit.role_templates import ROLES
from tests.unit.test_hardening import render, unit_flags
from tests.unit.test_mirror_build import FAKE_GO, Log, Recorder

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventory" / "sample" / "ha.yaml"


def cluster(network: dict[str, Any] | None = None, proxy_mode: str = "iptables") -> spec.ClusterSpec:
    data = spec.load(SAMPLE).model_dump(mode="json")
    data["network"].update(network or {})
    data["kubernetes"]["proxy_mode"] = proxy_mode
    return spec.from_dict(data)


# -- the cluster file ----------------------------------------------------------------------------


def test_policy_is_on_by_default() -> None:
    assert spec.Network().policy is True
    assert cluster().network.policy is True


@pytest.mark.parametrize("proxy_mode", ["iptables", "nftables"])
@pytest.mark.parametrize("policy", [True, False])
def test_policy_goes_with_iptables_and_nftables_proxies(proxy_mode: str, policy: bool) -> None:
    c = cluster({"policy": policy}, proxy_mode=proxy_mode)
    assert (c.network.policy, c.kubernetes.proxy_mode) == (policy, proxy_mode)


def test_policy_with_the_ipvs_proxy_is_refused_naming_both_fields() -> None:
    """kube-router v2.1.0 writes back every ipset of the node; kube-proxy's ipvs mode keeps its
    Services in ipsets: the two would undo each other's changes."""
    with pytest.raises(spec.SpecError) as err:
        cluster({"policy": True}, proxy_mode="ipvs")
    (line,) = [p for p in err.value.problems if p.startswith("network.policy:")]
    assert "ipvs" in line and "kubernetes.proxy_mode iptables or nftables" in line
    assert "network.policy: false" in line
    assert cluster({"policy": False}, proxy_mode="ipvs").kubernetes.proxy_mode == "ipvs"


def test_policy_must_be_a_boolean() -> None:
    with pytest.raises(spec.SpecError) as err:
        cluster({"policy": "sometimes"})
    assert any(p.startswith("network.policy:") for p in err.value.problems), err.value.problems


# -- group_vars, downloads, certificates, plan -----------------------------------------------------


def test_group_vars() -> None:
    gv = defaults.group_vars(cluster(), Path("/state/x"))
    assert gv["network_policy"] is True
    assert gv["kube_router_kubeconfig"] == "/etc/kubernetes/kube-router.kubeconfig"
    assert gv["kube_router_user"] == "system:kube-router"
    assert defaults.group_vars(cluster({"policy": False}), Path("/state/x"))["network_policy"] is False


def _manifest() -> Manifest:
    names = {name for needs in artifacts.NEEDS.values() for name, _ in needs}
    rel = RELEASES[-1]
    versions = {
        "kubernetes": rel.kubernetes,
        "etcd": rel.etcd,
        "coredns": rel.coredns,
        "pause": rel.pause,
    }
    keys = {name: key for needs in artifacts.NEEDS.values() for name, key in needs}
    out = []
    for n in sorted(names):
        version = versions.get(keys[n], "1.0")
        if n.startswith("image-") and keys[n] not in versions and keys[n] != "*":
            version = {"metrics-server": "v0.9.0", "local-path": "v0.0.30"}.get(keys[n], version)
        out.append(Artifact(n, version, f"{n}/{version}/{n}", "0" * 64, 1, component=n))
    return Manifest(out)


def test_kube_router_is_downloaded_to_every_node_only_with_policy() -> None:
    rel = RELEASES[-1]
    on = artifacts.downloads(_manifest(), rel, "http://m")
    assert [d["link"] for d in on["k8s_cluster"] if d["name"] == "kube-router"] == ["/usr/local/bin/kube-router"]
    assert not any(d["name"] == "kube-router" for g in ("kube_control_plane", "etcd") for d in on[g])
    off = artifacts.downloads(_manifest(), rel, "http://m", network_policy=False)
    assert not any(d["name"] == "kube-router" for items in off.values() for d in items)


def test_its_client_certificate_and_kubeconfig(tmp_path: Path) -> None:
    c = cluster()
    made = pki.ensure(c, tmp_path, defaults.service_ip(c), c.api_lb.port)
    assert "kube-router.crt" in made and "kubeconfigs/kube-router.kubeconfig" in made
    cert = x509.load_pem_x509_certificate((tmp_path / "kube-router.crt").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=system:kube-router", "no group: only its ClusterRoleBinding applies"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u._name for u in usages] == ["clientAuth"]
    kc = yaml.safe_load((tmp_path / "kubeconfigs" / "kube-router.kubeconfig").read_text())
    assert kc["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{c.api_lb.port}", "the node's API LB"
    assert kc["users"][0]["name"] == "system:kube-router"
    embedded = base64.b64decode(kc["users"][0]["user"]["client-certificate-data"])
    assert embedded == (tmp_path / "kube-router.crt").read_bytes()
    assert (tmp_path / "kubeconfigs" / "kube-router.kubeconfig").stat().st_mode & 0o777 == 0o600
    assert pki.ensure(c, tmp_path, defaults.service_ip(c), c.api_lb.port) == [], "made once"


def test_without_policy_no_certificate_is_issued(tmp_path: Path) -> None:
    c = cluster({"policy": False})
    made = pki.ensure(c, tmp_path, defaults.service_ip(c), c.api_lb.port)
    assert not any("kube-router" in m for m in made)


def test_cluster_plan_lists_it() -> None:
    on = plan.make_plan(cluster(), {})
    assert on["network"]["policy"] == "kube-router" and on["versions"]["kube-router"] == KUBE_ROUTER
    assert any(p["hosts"] == "k8s_cluster" and "NetworkPolicy" in p["name"] for p in on["plays"])
    off = plan.make_plan(cluster({"policy": False}), {})
    assert off["network"]["policy"] == "off" and "kube-router" not in off["versions"]


def test_the_version_table_and_the_go_module_agree() -> None:
    assert build.module_requirement(GO_MODULES / "kube-router", "github.com/cloudnativelabs/kube-router/v2") == (
        KUBE_ROUTER
    )


# -- the mirror's build step -------------------------------------------------------------------------


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Log:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    # the fake go also records the environment a real build would see
    go.write_text(
        FAKE_GO.replace('echo "$*" >> "$FAKE_GO_LOG"', 'echo "$* CGO_ENABLED=$CGO_ENABLED" >> "$FAKE_GO_LOG"')
    )
    go.chmod(0o755)
    log = tmp_path / "go.log"
    monkeypatch.setenv("FAKE_GO_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    modules = tmp_path / "modules"
    (modules / "kube-router").mkdir(parents=True)
    (modules / "kube-router" / "go.mod").write_text(
        "module provisioner.local/mirror/kube-router\n\ngo 1.26.0\n\n"
        "require github.com/cloudnativelabs/kube-router/v2 v2.1.0 // indirect\n"
    )
    monkeypatch.setattr(build, "GO_MODULES", modules)
    return Log(log)


def test_the_build_step_makes_a_static_binary_artifact(tmp_path: Path, fake_go: Log) -> None:
    rec = Recorder()
    b = build.Builder(mirror=tmp_path / "mirror", cache=tmp_path / "cache", say=rec.say, live=rec.live)
    (art,) = b._timed("kube-router", b.kube_router)
    assert b.outcomes["kube-router"] == "built"
    (line,) = fake_go.builds()
    assert line.endswith("github.com/cloudnativelabs/kube-router/v2/cmd/kube-router CGO_ENABLED=0")
    assert "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v2.1.0" in line
    assert (art.name, art.version, art.component, art.kind) == ("kube-router", "v2.1.0", "kube-router", "binary")
    assert art.path == "kube-router/v2.1.0/linux/amd64/kube-router"
    assert (tmp_path / "mirror" / art.path).exists()
    again = build.Builder(mirror=tmp_path / "mirror", cache=tmp_path / "cache", say=rec.say, live=rec.live)
    again._timed("kube-router", again.kube_router)
    assert again.outcomes["kube-router"] == "cached" and len(fake_go.builds()) == 1


def test_the_mirror_build_has_the_step() -> None:
    source = Path(build.__file__).read_text()
    assert '("kube-router", self.kube_router)' in source


# -- the role ----------------------------------------------------------------------------------------


def test_the_unit_runs_the_policy_controller_alone() -> None:
    c = cluster()
    text = render("network_policy", "kube-router.service.j2", c, inventory_hostname="w1")
    flags = unit_flags(text)
    assert flags["--run-firewall"] == "true"
    assert flags["--run-router"] == flags["--run-service-proxy"] == flags["--run-loadbalancer"] == "false"
    assert flags["--kubeconfig"] == "/etc/kubernetes/kube-router.kubeconfig"
    assert flags["--hostname-override"] == "w1", "the Node's name: kube-router finds its pods by the Node's address"
    assert flags["--service-cluster-ip-range"] == c.network.service_subnet
    assert flags["--health-port"] == "0", "its health server would also serve Go's pprof on every address"
    assert flags["--metrics-port"] == "0" and flags["--enable-ipv6"] == "false"
    assert "Restart=always" in text


def test_the_rbac_reads_only_what_the_controller_watches() -> None:
    docs = list(yaml.safe_load_all(render("network_policy", "network-policy-rbac.yaml.j2", cluster())))
    role, binding = docs
    assert role["kind"] == "ClusterRole" and binding["kind"] == "ClusterRoleBinding"
    granted = {
        (g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert granted == {
        ("", "pods"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
        ("networking.k8s.io", "networkpolicies"): {"list", "watch"},
        ("", "nodes"): {"get", "list", "watch"},
        # kube-router's command syncs these informers whichever controllers run
        ("", "services"): {"list", "watch"},
        ("", "endpoints"): {"list", "watch"},
        ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
    }
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-router"}
    ]


def test_the_source_starts_exactly_the_informers_the_rbac_grants() -> None:
    """The pinned kube-router's command, read from the Go module cache (skipped without it)."""
    src = build.CACHE_ROOT / "go" / "mod" / "github.com" / "cloudnativelabs" / f"kube-router/v2@{KUBE_ROUTER}"
    cmd = src / "pkg" / "cmd" / "kube-router.go"
    if not cmd.exists():
        pytest.skip(f"{cmd} is not in the Go module cache (run `provisioner mirror build`)")
    started = set(re.findall(r"informerFactory\.\w+\(\)\.\w+\(\)\.(\w+)\(\)\.Informer\(\)", cmd.read_text()))
    assert started == {"Services", "Endpoints", "EndpointSlices", "Pods", "Nodes", "Namespaces", "NetworkPolicies"}


SAVED_FILTER = """\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NWPLCY-DEFAULT - [0:0]
:KUBE-NWPLCY-6ZMMUJSBQBV5LVAO - [0:0]
:KUBE-POD-FW-4BGYBRHVQBQCT3NL - [0:0]
:KUBE-ROUTER-FORWARD - [0:0]
:KUBE-ROUTER-INPUT - [0:0]
:KUBE-ROUTER-OUTPUT - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A OUTPUT -m comment --comment "kube-router netpol - VEAAIY32XVBHCSCY" -j KUBE-ROUTER-OUTPUT
-A KUBE-NWPLCY-DEFAULT -m comment --comment "mark" -j MARK --set-xmark 0x10000/0x10000
-A KUBE-POD-FW-4BGYBRHVQBQCT3NL -m comment --comment "run through nw policy deny" -j KUBE-NWPLCY-6ZMMUJSBQBV5LVAO
-A KUBE-ROUTER-FORWARD -m comment --comment "to POD web" -d 10.233.65.4/32 -j KUBE-POD-FW-4BGYBRHVQBQCT3NL
COMMIT
"""


def test_the_removal_deletes_only_kube_routers_jumps_and_chains(tmp_path: Path) -> None:
    tasks = yaml.safe_load((ROLES / "network_policy" / "tasks" / "remove.yml").read_text())
    (task,) = [t for t in tasks if "chains" in t["name"] and "ansible.builtin.command" in t]
    script = task["ansible.builtin.command"]["argv"][2]
    producer, _, consumer = script.partition(" | iptables-restore")
    assert producer.startswith("iptables-save -t filter | awk") and consumer.strip() == "-w --noflush"
    saved = tmp_path / "filter.save"
    saved.write_text(SAVED_FILTER)
    restore = subprocess.run(
        ["sh", "-c", producer.replace("iptables-save -t filter", f"cat {saved}", 1)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert restore[0] == "*filter" and restore[-1] == "COMMIT"
    deletes = [line for line in restore if line.startswith("-D ")]
    assert deletes == [
        '-D INPUT -m comment --comment "kube-router netpol - 4IA2OSFRMVNDXBVV" -j KUBE-ROUTER-INPUT',
        '-D FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD',
        '-D OUTPUT -m comment --comment "kube-router netpol - VEAAIY32XVBHCSCY" -j KUBE-ROUTER-OUTPUT',
    ]
    mine = {"KUBE-NWPLCY-DEFAULT", "KUBE-NWPLCY-6ZMMUJSBQBV5LVAO", "KUBE-POD-FW-4BGYBRHVQBQCT3NL"} | {
        f"KUBE-ROUTER-{c}" for c in ("FORWARD", "INPUT", "OUTPUT")
    }
    assert {line[1:].split()[0] for line in restore if line.startswith(":")} == mine, "flushed: kube-router's only"
    assert {line.split()[1] for line in restore if line.startswith("-X ")} == mine
    assert not any("KUBE-SERVICES" in line or "KUBE-FORWARD " in line for line in restore), "kube-proxy's stay"
    assert task["when"] == "network_policy_filter.stdout is search(':KUBE-(ROUTER|NWPLCY|POD-FW)-')", "idempotent"


def test_the_ipsets_destroyed_are_kube_routers_only() -> None:
    tasks = yaml.safe_load((ROLES / "network_policy" / "tasks" / "remove.yml").read_text())
    (task,) = [t for t in tasks if t["name"].endswith("destroy kube-router's ipsets")]
    assert "select('match', '^KUBE-(SRC|DST)-')" in task["loop"]


def test_the_playbooks_run_the_role_on_every_node_and_reset_removes_it() -> None:
    playbooks = ROOT / "provisioner" / "playbooks"
    create = yaml.safe_load((playbooks / "cluster.yml").read_text())
    names = [p["name"] for p in create]
    (mine,) = [p for p in create if p.get("roles") == ["network_policy"]]
    assert mine["hosts"] == "k8s_cluster"
    assert names.index(mine["name"]) > names.index("Kubelet and kube-proxy"), "the Node exists first"
    scale = yaml.safe_load((playbooks / "scale.yml").read_text())
    assert any(p.get("roles") == ["network_policy"] and "scale_new_nodes" in p["hosts"] for p in scale)
    reset = yaml.safe_load((ROLES / "reset" / "tasks" / "main.yml").read_text())
    assert any(
        t.get("ansible.builtin.include_role", {}) == {"name": "network_policy", "tasks_from": "remove.yml"}
        for t in reset
    )
