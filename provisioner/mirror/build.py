"""Fill the offline artifact mirror: Kubernetes, etcd, containerd, CoreDNS, kube-router (its
network policy controller) and the add-ons (metrics-server, local-path-provisioner) built from
their Go modules (pinned in ``provisioner/mirror/go``), runc, CNI plugins and busybox from
Debian's packages, and the pause, CoreDNS, add-on and test images as OCI tarballs.

Every component is stamped with a hash of its inputs; an unchanged component is skipped
(and reported as cached), so a second build takes seconds. Real work (a Go build, a package
download) is shown while it runs, with the elapsed time: live on a terminal, a line every
30 s otherwise (CI logs). Go's module and build caches live outside the repo.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from provisioner.defaults import LOCAL_PATH_IMAGE, METRICS_SERVER_IMAGE
from provisioner.errors import ProvisionerError
from provisioner.lab.host import CACHE_ROOT
from provisioner.mirror import oci
from provisioner.mirror.manifest import Artifact, Manifest, describe
from provisioner.paths import GO_MODULES

DEFAULT_DIR = CACHE_ROOT / "mirror"
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "ptp")
BUSYBOX_APPLETS = (
    "sh",
    "ash",
    "cat",
    "echo",
    "env",
    "hostname",
    "ip",
    "ls",
    "nc",
    "nslookup",
    "ping",
    "ps",
    "sleep",
    "wget",
    "httpd",
    "true",
    "false",
    "date",
    "grep",
    "id",
    "mkdir",
    "rm",
    "uname",
    "vi",
)
PAUSE_IMAGE = "registry.k8s.io/pause"
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns"
TEST_IMAGE = "provisioner.local/busybox"


class MirrorBuildError(ProvisionerError):
    pass


Say = Callable[[str], None]
Status = Callable[[str], None]  # replaces the text shown for the work under way
Live = Callable[[str], AbstractContextManager[Status]]  # around real work: shows it and its elapsed time

EVERY = 30.0  # seconds between progress lines when nobody watches a terminal


@contextmanager
def every_so_often(say: Say, what: str, every: float = EVERY) -> Iterator[Status]:
    """Around long work where a live display is no use (a log file, CI): a line at the start,
    one every ``every`` seconds with the elapsed time, and one at the end when it succeeded."""
    started = time.monotonic()
    text = [what]
    say(f"{what} ...")
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every):
            say(f"{text[0]} ... {time.monotonic() - started:.0f}s")

    ticker = threading.Thread(target=tick, name="mirror-progress", daemon=True)
    ticker.start()
    try:
        yield lambda new: text.__setitem__(0, new)
    finally:
        stop.set()
        ticker.join()
    say(f"{what}: done in {time.monotonic() - started:.0f}s")


class ConsoleProgress:
    """The build's progress on a rich console (the CLI gives its stderr): a line per component
    taken from the cache, and around real work a spinner with what runs and the elapsed time,
    or, when the console is not a terminal, ``every_so_often`` lines."""

    def __init__(self, console: Console | None = None, every: float = EVERY):
        self.console = console or Console(stderr=True)
        self.every = every

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False, soft_wrap=True)

    @contextmanager
    def live(self, what: str) -> Iterator[Status]:
        if not self.console.is_terminal:
            with every_so_often(self.say, what, self.every) as status:
                yield status
            return
        started = time.monotonic()
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True, refresh_per_second=2) as progress:
            task = progress.add_task(what, total=None)
            yield lambda new: progress.update(task, description=new)
        self.say(f"{what}: done in {time.monotonic() - started:.0f}s")


@dataclass
class Builder:
    mirror: Path = DEFAULT_DIR
    cache: Path = CACHE_ROOT
    say: Say = print
    live: Live | None = None  # default: every_so_often lines through ``say``

    def __post_init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.outcomes: dict[str, str] = {}  # component -> "built" (something was built or fetched) or "cached"
        self._worked = False
        self.mirror.mkdir(parents=True, exist_ok=True)

    def working(self, what: str) -> AbstractContextManager[Status]:
        """Real work starts: show it (and its elapsed time) while it runs; the component is "built"."""
        self._worked = True
        return self.live(what) if self.live else every_so_often(self.say, what)

    # -- helpers --------------------------------------------------------------------------
    def go_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GOMODCACHE": str(self.cache / "go" / "mod"),
            "GOCACHE": str(self.cache / "go" / "build"),
            "GOFLAGS": "-buildvcs=false -mod=readonly",
            "CGO_ENABLED": "0",
            "GOOS": "linux",
            "GOARCH": "amd64",
        }

    def _stamp(self, *parts: str | bytes) -> str:
        h = hashlib.sha256()
        for p in parts:
            h.update(p if isinstance(p, bytes) else p.encode())
            h.update(b"\0")
        return h.hexdigest()

    def _go_version(self) -> str:
        return subprocess.run(["go", "version"], capture_output=True, text=True, check=True).stdout.strip()

    def _fresh(self, out: Path, stamp: str, files: list[str]) -> bool:
        s = out / ".stamp"
        return s.exists() and s.read_text() == stamp and all((out / f).exists() for f in files)

    def go_build(
        self,
        module: str,
        binaries: dict[str, str],
        out: Path,
        ldflags: str = "-s -w",
        tags: tuple[str, ...] = (),
        what: str = "",
    ) -> bool:
        """Build ``{binary name: package}`` of ``provisioner/mirror/go/<module>`` into ``out``; False if
        fresh (said as "<what>: cached"); a real build is shown, binary by binary, while it runs."""
        what = what or module
        mdir = GO_MODULES / module
        names, packages = list(binaries), list(binaries.values())
        sum_file = mdir / "go.sum"
        stamp = self._stamp(
            (mdir / "go.mod").read_bytes(),
            sum_file.read_bytes() if sum_file.exists() else b"",
            " ".join(packages),
            ldflags,
            ",".join(tags),
            self._go_version(),
        )
        if self._fresh(out, stamp, names):
            self.say(f"{what}: cached")
            return False
        out.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with self.working(f"{what}: building {', '.join(names)}") as status:
            for i, (pkg, name) in enumerate(zip(packages, names, strict=True), 1):
                status(f"{what}: go build {name}" + (f" ({i}/{len(names)})" if len(names) > 1 else ""))
                cmd = ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp / name)]
                if tags:
                    cmd += ["-tags", ",".join(tags)]
                proc = subprocess.run([*cmd, pkg], cwd=mdir, env=self.go_env(), capture_output=True, text=True)
                if proc.returncode != 0:
                    raise MirrorBuildError(
                        f"go build {pkg} (provisioner/mirror/go/{module}) failed:\n{proc.stderr.strip()[-2000:]}"
                    )
        for name in names:
            (tmp / name).replace(out / name)
        shutil.rmtree(tmp)
        (out / ".stamp").write_text(stamp)
        return True

    def _timed(self, key: str, fn: Callable[[], list[Artifact]]) -> list[Artifact]:
        """Run one component's step: its time, and whether anything was built ("built") or not ("cached")."""
        self._worked = False
        started = time.monotonic()
        arts = fn()
        self.timings[key] = round(time.monotonic() - started, 1)
        self.outcomes[key] = "built" if self._worked else "cached"
        return arts

    # -- components -----------------------------------------------------------------------
    def kubernetes(self, version: str) -> list[Artifact]:
        minor = re.match(r"^v1\.(\d+)\.\d+$", version)
        if not minor:
            raise MirrorBuildError(f"--kubernetes: {version!r} is not a version like v1.37.2")
        module = f"kubernetes-1.{minor.group(1)}"
        pinned = module_requirement(GO_MODULES / module, "k8s.io/kubernetes")
        if pinned != version:
            raise MirrorBuildError(
                f"--kubernetes: {version} is not pinned; provisioner/mirror/go/{module} pins {pinned or 'nothing'}"
            )
        ld = ["-s", "-w"]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            ld += [
                f"-X {pkg}.gitVersion={version}",
                f"-X {pkg}.gitMajor=1",
                f"-X {pkg}.gitMinor={minor.group(1)}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
            ]
        out = self.mirror / "kubernetes" / version / "linux" / "amd64"
        binaries = {b: f"k8s.io/kubernetes/cmd/{b}" for b in KUBE_BINARIES}
        self.go_build(module, binaries, out, " ".join(ld), what=f"kubernetes {version}")
        return [describe(self.mirror, out / b, name=b, version=version, component="kubernetes") for b in KUBE_BINARIES]

    def etcd(self) -> list[Artifact]:
        version = module_requirement(GO_MODULES / "etcd", "go.etcd.io/etcd/server/v3")
        out = self.mirror / "etcd" / version / "linux" / "amd64"
        ld = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={version}"
        pkgs = {
            "etcd": "go.etcd.io/etcd/server/v3",
            "etcdctl": "go.etcd.io/etcd/etcdctl/v3",
            "etcdutl": "go.etcd.io/etcd/etcdutl/v3",
        }
        self.go_build("etcd", pkgs, out, ld, what=f"etcd {version}")
        return [
            describe(self.mirror, out / b, name=b, version=version, component="etcd")
            for b in ("etcd", "etcdctl", "etcdutl")
        ]

    def containerd(self) -> list[Artifact]:
        version = module_requirement(GO_MODULES / "containerd", "github.com/containerd/containerd/v2")
        out = self.mirror / "containerd" / version / "linux" / "amd64"
        names = ("containerd", "containerd-shim-runc-v2", "ctr")
        ld = f"-s -w -X github.com/containerd/containerd/v2/version.Version={version}"
        self.go_build(
            "containerd",
            {n: f"github.com/containerd/containerd/v2/cmd/{n}" for n in names},
            out,
            ld,
            tags=("no_btrfs", "no_devmapper", "no_zfs", "no_aufs"),
            what=f"containerd {version}",
        )
        return [describe(self.mirror, out / n, name=n, version=version, component="containerd") for n in names]

    def kube_router(self) -> list[Artifact]:
        """kube-router, whose network policy controller alone runs on every node (NetworkPolicy
        enforcement: --run-firewall, router and service proxy off, as k3s embeds it)."""
        version = module_requirement(GO_MODULES / "kube-router", "github.com/cloudnativelabs/kube-router/v2")
        out = self.mirror / "kube-router" / version / "linux" / "amd64"
        ld = f"-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={version}"
        self.go_build(
            "kube-router",
            {"kube-router": "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"},
            out,
            ld,
            what=f"kube-router {version}",
        )
        return [
            describe(self.mirror, out / "kube-router", name="kube-router", version=version, component="kube-router")
        ]

    def debian(self, package: str) -> tuple[Path, str]:
        """Download a Debian package (through the host's apt) and unpack it; (root, version)."""
        debs = self.cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            with self.working(f"{package}: apt-get download"):
                proc = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
            if proc.returncode != 0:
                raise MirrorBuildError(
                    f"apt-get download {package} failed ({proc.stderr.strip()[-300:]}); run `apt-get update` first"
                )
            found = sorted(debs.glob(f"{package}_*.deb"))
        deb = found[-1]
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        root = debs / (deb.stem + ".x")
        if root.exists():
            self.say(f"{package} {upstream_version(version)}: cached")
        else:
            self._worked = True
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        return root, upstream_version(version)

    def runc(self) -> list[Artifact]:
        root, version = self.debian("runc")
        out = self.mirror / "runc" / version / "linux" / "amd64"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "usr/sbin/runc", out / "runc")
        return [describe(self.mirror, out / "runc", name="runc", version=version, component="runc")]

    def cni_plugins(self) -> list[Artifact]:
        root, version = self.debian("containernetworking-plugins")
        out = self.mirror / "cni-plugins" / version / "linux" / "amd64"
        out.mkdir(parents=True, exist_ok=True)
        src = root / "usr/lib/cni"
        arts = []
        for name in CNI_PLUGINS:
            shutil.copy2(src / name, out / name)
            arts.append(describe(self.mirror, out / name, name=f"cni-{name}", version=version, component="cni-plugins"))
        return arts

    def _image(self, image: oci.Image, file_name: str, name: str, version: str) -> Artifact:
        target = self.mirror / "images" / file_name
        oci.write_tarball(image, target)
        return describe(
            self.mirror, target, name=name, version=version, kind="image", component="images", image=image.name
        )

    def pause_image(self, tag: str) -> list[Artifact]:
        out = self.cache / "build" / "pause"
        self.go_build("pause", {"pause": "."}, out, what=f"pause {tag}")
        image = oci.Image(f"{PAUSE_IMAGE}:{tag}", [oci.Entry("pause", source=out / "pause", mode=0o755)], ["/pause"])
        return [self._image(image, f"pause-{tag}.oci.tar", "image-pause", tag)]

    def coredns_image(self) -> list[Artifact]:
        version = module_requirement(GO_MODULES / "coredns", "github.com/coredns/coredns")
        out = self.cache / "build" / "coredns" / version
        self.go_build(
            "coredns",
            {"coredns": "github.com/coredns/coredns"},
            out,
            f"-s -w -X github.com/coredns/coredns/coremain.GitCommit={version}",
            what=f"coredns {version}",
        )
        image = oci.Image(
            f"{COREDNS_IMAGE}:{version}",
            [oci.Entry("coredns", source=out / "coredns", mode=0o755)],
            ["/coredns"],
            ports=["53/udp", "53/tcp", "9153/tcp"],
        )
        return [self._image(image, f"coredns-{version}.oci.tar", "image-coredns", version)]

    def metrics_server_image(self) -> list[Artifact]:
        """metrics-server, as its release image: the one static binary, run as nobody."""
        version = module_requirement(GO_MODULES / "metrics-server", "sigs.k8s.io/metrics-server")
        out = self.cache / "build" / "metrics-server" / version
        ld = " ".join(
            ["-s", "-w"]
            + [f"-X k8s.io/client-go/pkg/version.{k}={v}" for k, v in (("gitVersion", version), ("gitCommit", version))]
        )
        self.go_build(
            "metrics-server",
            {"metrics-server": "sigs.k8s.io/metrics-server/cmd/metrics-server"},
            out,
            ld,
            what=f"metrics-server {version}",
        )
        image = oci.Image(
            f"{METRICS_SERVER_IMAGE}:{version}",
            [
                oci.Entry("tmp", directory=True, mode=0o1777),
                oci.Entry("metrics-server", source=out / "metrics-server", mode=0o755),
            ],
            ["/metrics-server"],
            user="65534",
            ports=["10250/tcp"],
        )
        return [self._image(image, f"metrics-server-{version}.oci.tar", "image-metrics-server", version)]

    def local_path_image(self) -> list[Artifact]:
        """local-path-provisioner; its helper pods (which make and remove the volume
        directories) run the busybox test image."""
        version = module_requirement(GO_MODULES / "local-path", "github.com/rancher/local-path-provisioner")
        out = self.cache / "build" / "local-path" / version
        self.go_build(
            "local-path",
            {"local-path-provisioner": "github.com/rancher/local-path-provisioner"},
            out,
            f"-s -w -X main.VERSION={version}",
            what=f"local-path-provisioner {version}",
        )
        image = oci.Image(
            f"{LOCAL_PATH_IMAGE}:{version}",
            [
                oci.Entry("tmp", directory=True, mode=0o1777),
                oci.Entry("usr", directory=True, mode=0o755),
                oci.Entry("usr/bin", directory=True, mode=0o755),
                oci.Entry("usr/bin/local-path-provisioner", source=out / "local-path-provisioner", mode=0o755),
            ],
            [],
            cmd=["local-path-provisioner"],
        )
        return [self._image(image, f"local-path-provisioner-{version}.oci.tar", "image-local-path", version)]

    def test_image(self) -> list[Artifact]:
        root, version = self.debian("busybox-static")
        entries = [
            oci.Entry("bin", directory=True),
            oci.Entry("tmp", directory=True, mode=0o1777),
            oci.Entry("etc", directory=True),
            oci.Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
            oci.Entry("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n"),
            oci.Entry("bin/busybox", source=root / "bin/busybox", mode=0o755),
        ]
        entries += [oci.Entry(f"bin/{a}", link="busybox") for a in BUSYBOX_APPLETS]
        image = oci.Image(f"{TEST_IMAGE}:{version}", entries, [], cmd=["sh"])
        return [self._image(image, f"busybox-{version}.oci.tar", "image-busybox", version)]

    # -- all --------------------------------------------------------------------------------
    def build(self, kubernetes: list[str]) -> Manifest:
        from provisioner.versions import RELEASES

        manifest = Manifest.read(self.mirror)
        steps: list[tuple[str, Callable[[], list[Artifact]]]] = [
            (f"kubernetes-{v}", lambda v=v: self.kubernetes(v))
            for v in kubernetes  # type: ignore[misc]
        ]
        steps += [
            ("etcd", self.etcd),
            ("containerd", self.containerd),
            ("kube-router", self.kube_router),
            ("runc", self.runc),
            ("cni-plugins", self.cni_plugins),
            ("image-pause", lambda: self.pause_image(RELEASES[-1].pause)),
            ("image-coredns", self.coredns_image),
            ("image-busybox", self.test_image),
            ("image-metrics-server", self.metrics_server_image),
            ("image-local-path", self.local_path_image),
        ]
        for key, step in steps:
            manifest.replace(self._timed(key, step))
            manifest.write(self.mirror)
        manifest.meta = {"built_by": "provisioner mirror build", "kubernetes": sorted(kubernetes)}
        manifest.write(self.mirror)
        return manifest


def module_requirement(module_dir: Path, path: str) -> str:
    """The version that ``module_dir/go.mod`` requires of module ``path`` ('' if none)."""
    text = (module_dir / "go.mod").read_text()
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(path)}\s+(v\S+)", text, re.M)
    return m.group(1) if m else ""


def upstream_version(debian_version: str) -> str:
    """``1:1.35.0-4+b3`` -> ``1.35.0``."""
    v = debian_version.split(":", 1)[-1]
    v = v.rsplit("-", 1)[0]
    return v.split("+")[0].split("~")[0]
