"""The Kubernetes API for `cluster chaos`, through the mirror's kubectl.

kubectl is the cluster's own client (the same version, the admin kubeconfig as a person
uses it), so no client library is added. The pollers do not start a kubectl per request
(two per second on a 2-core controller, each paying process start-up and a TLS handshake,
would skew the very timings they measure): one ``kubectl proxy`` per API endpoint keeps
an authenticated, kept-alive connection to it, as a controller built on client-go does,
and the pollers ask it over HTTP with their own short timeouts. The proxy listens on a
unix socket in a private (0700) directory, never on a TCP port another local user could
reach with the admin's credentials.
Objects are created with ``kubectl apply`` (server-side apply).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from provisioner import yamlio
from provisioner.artifacts import fetch_manifest
from provisioner.errors import ProvisionerError
from provisioner.spec import ClusterSpec
from provisioner.state import ClusterDir
from provisioner.versions import release


class KubeError(ProvisionerError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def kubectl_binary(spec: ClusterSpec, cdir: ClusterDir) -> Path:
    """The cluster version's kubectl from files_repo (the mirror), checked against its sha256
    and kept in the cluster directory's bin/."""
    version = release(spec.kubernetes.version).kubernetes
    manifest = fetch_manifest(spec.artifacts.files_repo)
    try:
        art = manifest.find("kubectl", version)
    except KeyError:
        raise KubeError(f"the mirror has no kubectl {version}; run `provisioner mirror build`") from None
    target = cdir.root / "bin" / f"kubectl-{version}"
    if target.is_file() and _sha256(target) == art.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    url = art.location(spec.artifacts.files_repo)
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(partial, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        raise KubeError(f"cannot download kubectl from {url}: {exc}") from None
    if _sha256(partial) != art.sha256:
        partial.unlink()
        raise KubeError(f"kubectl from {url} does not match the manifest's sha256; rebuild the mirror")
    partial.chmod(0o755)
    partial.rename(target)
    return target


def contexts(kubeconfig: Path) -> tuple[str, dict[str, str]]:
    """The current context and each context's API server URL."""
    data = yamlio.load(kubeconfig.read_text()) or {}
    servers = {c["name"]: c["cluster"]["server"] for c in data.get("clusters", [])}
    out = {c["name"]: servers.get(c["context"]["cluster"], "") for c in data.get("contexts", [])}
    return str(data.get("current-context", "")), out


def host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or ""


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: Path):
        self.binary = binary
        self.kubeconfig = kubeconfig

    def argv(self, *args: str, context: str | None = None) -> list[str]:
        ctx = [f"--context={context}"] if context else []
        return [str(self.binary), f"--kubeconfig={self.kubeconfig}", *ctx, *args]

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60, context: str | None = None) -> str:
        try:
            proc = subprocess.run(
                self.argv(*args, context=context), input=stdin, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise KubeError(f"kubectl {' '.join(args)}: no answer within {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise KubeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()[-400:]}")
        return proc.stdout

    def apply(self, manifest: str, context: str | None = None) -> None:
        self.run("apply", "--server-side", "--force-conflicts", "--field-manager=provisioner-chaos", "-f", "-",
                 stdin=manifest, context=context)  # fmt: skip

    def proxy(self, context: str | None = None) -> Proxy:
        return Proxy(self, context)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class Proxy:
    """``kubectl proxy`` on a private unix socket; ``get``/``json``/``delete`` through it."""

    def __init__(self, kubectl: Kubectl, context: str | None):
        self.kubectl = kubectl
        self.context = context
        self.dir = ""
        self.socket = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Proxy:
        self.dir = tempfile.mkdtemp(prefix="provisioner-chaos-")  # 0700
        self.socket = str(Path(self.dir) / "api.sock")
        argv = self.kubectl.argv("proxy", f"--unix-socket={self.socket}", context=self.context)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not Path(self.socket).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = (self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else b"").decode()
                self.close()
                raise KubeError(f"kubectl proxy did not start: {why.strip()[-300:] or 'no socket within 15 s'}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = ""

    def request(self, method: str, path: str, timeout: float, body: bytes | None = None) -> tuple[int, bytes]:
        """(HTTP status, body); status 0 when there was no answer within ``timeout``."""
        conn = _UnixConnection(self.socket, timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            return 0, b""
        finally:
            conn.close()

    def get(self, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
        return self.request("GET", path, timeout)

    def json(self, path: str, timeout: float = 2.0) -> dict[str, Any] | None:
        status, body = self.get(path, timeout)
        if status != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def delete(self, path: str, body: dict[str, Any], timeout: float = 5.0) -> int:
        status, _ = self.request("DELETE", path, timeout, json.dumps(body).encode())
        return status
