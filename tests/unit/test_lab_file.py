"""Unit tests of provisioner.lab.cluster_file.merge: `lab up` over an existing lab's cluster
file appends the lab's new nodes and changes nothing else (comments, an edited Kubernetes
version, labels, taints, every key and byte); a file that cannot take them safely (a lab node
renamed or moved so that it clashes with a new one) is refused with one line that says what
to add by hand (issue 13, item 5)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from provisioner import spec
from provisioner.lab.cluster_file import MergeRefused, merge
from provisioner.lab.manager import node_host_number, node_layout

# As `lab up --nodes 3` writes it (yaml.safe_dump), then edited by hand: a comment, an older
# Kubernetes version, a label, a taint, a setting, a key after `nodes`.
EDITED = """\
# Cluster file for the local lab `lab`, written by `provisioner lab up`.
name: lab
kubernetes:
  proxy_mode: iptables
  version: v1.36.3   # pinned: upgrade later
network:
  pod_subnet: 10.233.64.0/18
  service_subnet: 10.233.0.0/18
  node_prefix: 24
  encapsulation: none
  nat_outgoing: false
  route_reflectors: []
artifacts:
  files_repo: http://192.168.250.1:8088
runtime:
  restrict_oom_score_adj: true
ssh:
  user: root
  private_key: /tmp/lab/ssh/id_ed25519
nodes:
- name: cp1
  address: 192.168.250.11
  roles:
  - etcd
  - control-plane
  taints: ["dedicated=infra:NoSchedule"]
# the workers
- name: w1
  address: 192.168.250.21
  roles:
  - worker
  labels: {topology.kubernetes.io/zone: rack1}  # zone
  # w1 is the slow one
- name: w2
  address: 192.168.250.22
  roles:
  - worker

# the API load balancer, by hand
api_lb: {kind: haproxy}
"""


def new_nodes(before: int, count: int, control_planes: int = 1) -> list[dict[str, Any]]:
    """The nodes `lab up --nodes COUNT` adds to a lab of BEFORE nodes, as manager.py lays them out."""
    return [
        {"name": name, "address": f"192.168.250.{node_host_number(name)}", "roles": roles}
        for name, roles in node_layout(count, control_planes)[before:]
    ]


def test_new_nodes_are_appended_and_nothing_else_changes() -> None:
    merged = merge(EDITED, new_nodes(3, 5))
    assert merged.added == ["w3", "w4"]
    head, _, tail = EDITED.partition("\n# the API load balancer")
    assert merged.text == (
        head + "- name: w3\n  address: 192.168.250.23\n  roles:\n  - worker\n"
        "- name: w4\n  address: 192.168.250.24\n  roles:\n  - worker\n" + "\n# the API load balancer" + tail
    ), "every byte of the file kept; the new nodes after the last one, in its layout"


def test_comments_version_labels_taints_and_settings_are_kept() -> None:
    text = merge(EDITED, new_nodes(3, 4)).text
    for kept in ("# pinned: upgrade later", "# the workers", "# zone", "# w1 is the slow one", "# the API load"):
        assert kept in text, kept
    data = yaml.safe_load(text)
    assert data["kubernetes"]["version"] == "v1.36.3" and data["network"]["nat_outgoing"] is False
    assert data["api_lb"] == {"kind": "haproxy"}
    nodes = {n["name"]: n for n in data["nodes"]}
    assert nodes["cp1"]["taints"] == ["dedicated=infra:NoSchedule"]
    assert nodes["w1"]["labels"] == {"topology.kubernetes.io/zone": "rack1"}
    assert nodes["w3"] == {"name": "w3", "address": "192.168.250.23", "roles": ["worker"]}
    assert [n["name"] for n in data["nodes"]] == ["cp1", "w1", "w2", "w3"]


def test_the_merged_file_is_a_valid_cluster_file(tmp_path: Any) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(merge(EDITED, new_nodes(3, 6)).text)
    assert [n.name for n in spec.load(path).workers] == ["w1", "w2", "w3", "w4", "w5"]


def test_nothing_to_add_leaves_the_text_as_it_is() -> None:
    merged = merge(EDITED, [])
    assert merged.text is EDITED and merged.added == []
    by_hand = merge(EDITED, new_nodes(2, 3))  # w2 is new to the lab, but the user listed it already
    assert by_hand.text is EDITED and by_hand.added == []


def test_a_node_the_user_deleted_stays_deleted() -> None:
    """w1 taken out of the file (remove-node, then deleted as the README says): only w3 is new."""
    start = EDITED.index("# the workers\n")
    text = EDITED[:start] + EDITED[EDITED.index("- name: w2\n") :]
    merged = merge(text, new_nodes(3, 4))
    assert [n["name"] for n in yaml.safe_load(merged.text)["nodes"]] == ["cp1", "w2", "w3"]


def test_a_file_the_lab_wrote_itself() -> None:
    """The plain yaml.safe_dump layout (nodes last, no comments) takes new nodes as well."""
    data = yaml.safe_load(EDITED)
    del data["api_lb"]
    written = "# header\n" + yaml.safe_dump(data, sort_keys=False)
    merged = merge(written, new_nodes(3, 4))
    assert merged.text == written + "- name: w3\n  address: 192.168.250.23\n  roles:\n  - worker\n"


def test_flow_style_nodes_get_flow_style_new_nodes() -> None:
    text = (
        "name: lab\n"
        "nodes:\n"
        "  - {name: cp1, address: 192.168.250.11, roles: [etcd, control-plane]}\n"
        "  - {name: w1,  address: 192.168.250.21, roles: [worker]}   # aligned by hand\n"
        "\n"
        "# the end\n"
    )
    merged = merge(text, new_nodes(2, 3))
    assert merged.text == text.replace(
        "by hand\n", "by hand\n  - {name: w2, address: 192.168.250.22, roles: [worker]}\n"
    )


def test_a_node_the_user_renamed_is_kept_under_its_new_name() -> None:
    text = EDITED.replace("- name: w2\n", "- name: big-worker\n")
    merged = merge(text, new_nodes(3, 4))
    assert merged.added == ["w3"], "w2 (now big-worker, same address) is not added again"
    assert [n["name"] for n in yaml.safe_load(merged.text)["nodes"]] == ["cp1", "w1", "big-worker", "w3"]


def test_a_node_renamed_onto_a_new_nodes_name_is_refused() -> None:
    """w2 renamed to w3 by hand; `lab up --nodes 5` brings the lab's own w3 (another address)."""
    text = EDITED.replace("- name: w2\n", "- name: w3\n")
    with pytest.raises(MergeRefused) as refused:
        merge(text, new_nodes(3, 5), "clusters/lab/cluster.yaml")
    [line] = str(refused.value).splitlines()
    assert line.startswith("lab up: clusters/lab/cluster.yaml cannot take the lab's new nodes safely (")
    assert "(its node w3 is at 192.168.250.22, the lab's new node w3 at 192.168.250.23); nothing was changed" in line
    assert line.endswith(
        "fix that, add them under `nodes:` by hand (- {name: w3, address: 192.168.250.23, roles: [worker]}; "
        "- {name: w4, address: 192.168.250.24, roles: [worker]}) and run `lab up` again"
    ), "what to add by hand"


def test_an_address_edited_onto_a_new_nodes_is_refused() -> None:
    text = EDITED.replace("address: 192.168.250.22", "address: 192.168.250.23")
    with pytest.raises(MergeRefused) as refused:
        merge(text, new_nodes(3, 4))
    [line] = str(refused.value).splitlines()
    assert "(its node w2 is at 192.168.250.23, the address of the lab's new node w3); nothing was changed" in line
    assert "add it under `nodes:` by hand (- {name: w3, address: 192.168.250.23, roles: [worker]})" in line


def test_an_edited_address_of_an_old_node_is_kept() -> None:
    """Not a clash: no new node wants that address or name."""
    text = EDITED.replace("address: 192.168.250.22", "address: 192.168.250.99")
    merged = merge(text, new_nodes(3, 4))
    assert merged.added == ["w3"] and "address: 192.168.250.99" in merged.text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: lab\nnodes: [\n", "is not valid YAML"),
        ("name: lab\nnodes: [{name: cp1, address: 192.168.250.11, roles: [etcd, control-plane]}]\n", "block list"),
        ("name: lab\n", "block list"),
    ],
    ids=["broken YAML", "flow list", "no nodes"],
)
def test_a_file_it_cannot_extend_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(MergeRefused) as refused:
        merge(text, new_nodes(1, 2))
    [line] = str(refused.value).splitlines()
    assert says in line and ("nothing was changed" in line or "delete it" in line)
