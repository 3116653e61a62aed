"""On the first control plane: apply CoreDNS as soon as the API answers, then wait until
every node is Ready and CoreDNS answers a query; print when each happened (epoch seconds)."""

import json
import random
import socket
import struct
import subprocess
import sys
import time

nodes, dns_ip, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
KUBECTL = ["/usr/local/bin/kubectl", "--kubeconfig=/etc/kubernetes/admin.kubeconfig", "--request-timeout=2s"]
marks: dict[str, float] = {}
deadline = time.time() + 600


def ready_nodes() -> int:
    proc = subprocess.run([*KUBECTL, "get", "nodes", "-o", "json"], capture_output=True, text=True)
    if proc.returncode != 0:
        return -1
    items = json.loads(proc.stdout)["items"]
    return sum(
        1 for n in items for c in n["status"].get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"
    )


def dns_answers() -> bool:
    qid = random.randint(0, 65535)
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        try:
            s.sendto(query, (dns_ip, 53))
            data = s.recv(512)
        except OSError:
            return False
    rcode = data[3] & 0x0F
    answers = struct.unpack(">H", data[6:8])[0]
    return data[:2] == query[:2] and rcode == 0 and answers > 0


while time.time() < deadline:
    count = ready_nodes()
    if count >= 0 and "api" not in marks:
        marks["api"] = time.time()
        subprocess.run(
            [*KUBECTL, "apply", "-f", "/etc/kubernetes/addons/coredns.yaml"], capture_output=True, check=True
        )
    if count >= nodes and "nodes_ready" not in marks:
        marks["nodes_ready"] = time.time()
    if "nodes_ready" in marks and dns_answers():
        marks["dns"] = time.time()
        break
    time.sleep(0.2)
print(json.dumps(marks))
sys.exit(0 if "dns" in marks else 1)
