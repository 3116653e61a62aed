#!/usr/bin/python
"""Ansible module of the reset role: kill every process left in the pods' cgroups.

The kubelet puts every pod under one cgroup, ``kubepods`` (cgroupfs driver) or
``kubepods.slice`` (systemd driver), in every hierarchy: its ``cgroup.procs`` files name
every process of every container and pod sandbox, whether or not containerd, its shims or
runc still know of them (a reset interrupted after the runtime's binaries were removed, a
shim killed before its containers). Each process found is sent SIGKILL, and the module
waits until the cgroups are empty; then the cgroupfs driver's empty directories are
removed, deepest first (systemd removes its slices itself).

Check mode reports the processes and changes nothing; a node without any reports
``changed: false``.
"""

from __future__ import annotations

import os
import signal
import time

DOCUMENTATION = r"""
module: reset_pod_processes
short_description: Kill every process in the kubelet's pod cgroups
options:
  cgroup_root:
    description: Where the cgroup hierarchies are mounted.
    type: path
    default: /sys/fs/cgroup
  names:
    description: The pods' parent cgroups, in any hierarchy.
    type: list
    elements: str
    default: [kubepods, kubepods.slice]
  timeout:
    description: Seconds to wait for the killed processes to be gone.
    type: int
    default: 30
"""

RETURN = r"""
killed:
  description: The processes killed (or in check mode that would be), as "PID NAME".
  type: list
  elements: str
"""


def pod_cgroups(cgroup_root: str, names: list[str]) -> list[str]:
    """The pods' parent cgroup in each hierarchy: ``<root>/<name>`` (cgroup v2) and
    ``<root>/<controller>/<name>`` (v1)."""
    found: list[str] = []
    candidates = [cgroup_root]
    if os.path.isdir(cgroup_root):
        candidates += sorted(os.path.join(cgroup_root, d) for d in os.listdir(cgroup_root))
    for base in candidates:
        for name in names:
            path = os.path.join(base, name)
            # (v1 hierarchies may be reached through links too, e.g. cpu -> cpu,cpuacct)
            if os.path.isdir(path) and not any(os.path.samefile(path, f) for f in found):
                found.append(path)
    return found


def pids_in(trees: list[str]) -> set[int]:
    pids: set[int] = set()
    for tree in trees:
        for here, _dirs, files in os.walk(tree):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(here, "cgroup.procs")) as f:
                        pids.update(int(p) for p in f.read().split())
                except OSError:
                    continue  # removed meanwhile
    return pids


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def remove_empty(trees: list[str]) -> int:
    """rmdir every cgroup of the cgroupfs driver's trees, deepest first; a cgroup that still
    has a process (or a systemd slice) is left."""
    removed = 0
    for tree in trees:
        if tree.endswith(".slice"):
            continue
        for here, _dirs, _files in os.walk(tree, topdown=False):
            try:
                os.rmdir(here)
                removed += 1
            except OSError:
                pass
    return removed


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "cgroup_root": {"type": "path", "default": "/sys/fs/cgroup"},
            "names": {"type": "list", "elements": "str", "default": ["kubepods", "kubepods.slice"]},
            "timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    trees = pod_cgroups(module.params["cgroup_root"], module.params["names"])
    pids = pids_in(trees)
    killed = [f"{pid} {comm(pid)}" for pid in sorted(pids)]
    if module.check_mode or not trees:
        module.exit_json(changed=bool(pids), killed=killed)
    deadline = time.monotonic() + module.params["timeout"]
    while pids:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            module.fail_json(
                msg=f"{len(pids)} processes in the pods' cgroups survived SIGKILL for "
                f"{module.params['timeout']} s: {', '.join(f'{p} {comm(p)}' for p in sorted(pids)[:10])}",
                killed=killed,
            )
        time.sleep(0.2)
        pids = pids_in(trees)
    removed = remove_empty(trees)
    module.exit_json(changed=bool(killed) or removed > 0, killed=killed, cgroups_removed=removed)


if __name__ == "__main__":
    main()
