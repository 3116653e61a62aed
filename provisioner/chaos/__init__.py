"""`provisioner cluster chaos`: one fault with a small blast radius, measured and undone.

The experiment model of Chaos Mesh and Litmus: check the steady state, state the hypothesis
(limits, each a setting), inject one fault, measure detection and recovery, undo it, and
check the steady state again. One job per module:

- ``experiments``: the catalogue: what each experiment targets, stops and expects to see;
- ``blast``: the blast-radius guard (pure): refuses, before anything is touched, what would
  cost etcd quorum or the last control plane, leave the canary nowhere to run, or start
  while the steady state does not hold or an earlier fault is still active;
- ``hypothesis``: the limits (defaults in provisioner/defaults.py, overrides in the cluster
  file's ``chaos.limits``) and their verdicts;
- ``timeline``: samples and the arithmetic over them (availability, longest gap, detection,
  recovery, etcd election);
- ``kube``: the Kubernetes API through the mirror's kubectl (``kubectl proxy``);
- ``probe``: the canary objects and the pollers (API and canary every 0.5 s);
- ``report``: the live timeline, the final table, the JSON and the PNG;
- ``runner``: the order of it all, and the undo that runs whatever happens.

Node-side injection and undo are Ansible (playbooks chaos-facts.yml, chaos-inject.yml,
chaos-undo.yml, role ``chaos``): every fault is armed together with a transient systemd
timer on the node that undoes it after ``--duration`` even if the controller dies.
"""
