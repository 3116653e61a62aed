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
AGNHOST_IMAGE = "registry.k8s.io/e2e-test-images/agnhost"


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
        tests: bool = False,
    ) -> bool:
        """Build ``{binary name: package}`` of ``provisioner/mirror/go/<module>`` into ``out``; False if
        fresh (said as "<what>: cached"); a real build is shown, binary by binary, while it runs.
        ``tests``: each package's test binary (``go test -c``) instead of its command."""
        what = what or module
        mdir = GO_MODULES / module
        names, packages = list(binaries), list(binaries.values())
        sum_file = mdir / "go.sum"
        tools = mdir / "tools.go"
        stamp = self._stamp(
            (mdir / "go.mod").read_bytes(),
            sum_file.read_bytes() if sum_file.exists() else b"",
            " ".join(packages),
            ldflags,
            ",".join(tags),
            self._go_version(),
            *(["go test -c", tools.read_bytes() if tools.exists() else b""] if tests else []),
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
                go = ["go", "test", "-c"] if tests else ["go", "build"]
                status(f"{what}: {' '.join(go)} {name}" + (f" ({i}/{len(names)})" if len(names) > 1 else ""))
                cmd = [*go, "-trimpath", "-ldflags", ldflags, "-o", str(tmp / name)]
                if tags:
                    cmd += ["-tags", ",".join(tags)]
                proc = subprocess.run([*cmd, pkg], cwd=mdir, env=self.go_env(), capture_output=True, text=True)
                if proc.returncode != 0:
                    raise MirrorBuildError(
                        f"{' '.join(go)} {pkg} (provisioner/mirror/go/{module}) failed:\n{proc.stderr.strip()[-2000:]}"
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
        module = kube_module(version)
        out = self.mirror / "kubernetes" / version / "linux" / "amd64"
        binaries = {b: f"k8s.io/kubernetes/cmd/{b}" for b in KUBE_BINARIES}
        self.go_build(module, binaries, out, kube_ldflags(version), what=f"kubernetes {version}")
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

    def debian(self, package: str, quiet: bool = False) -> tuple[Path, str]:
        """Download a Debian package (through the host's apt) and unpack it; (root, version).
        ``quiet``: say nothing when it is cached (one of many a step needs)."""
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
            if not quiet:
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

    # -- upstream tests -----------------------------------------------------------------------
    def e2e_test(self, version: str) -> list[Artifact]:
        """Kubernetes' own end-to-end test binary (``go test -c k8s.io/kubernetes/test/e2e``), from the
        release's pinned module (its test-only imports are kept in the module by tools.go)."""
        module = kube_module(version)
        out = self.mirror / "kubernetes-test" / version / "linux" / "amd64"
        self.go_build(
            module,
            {"e2e.test": "k8s.io/kubernetes/test/e2e"},
            out,
            kube_ldflags(version),
            what=f"e2e.test {version}",
            tests=True,
        )
        return [describe(self.mirror, out / "e2e.test", name="e2e.test", version=version, component="kubernetes-test")]

    def agnhost_image(self, version: str) -> list[Artifact]:
        """agnhost, the e2e tests' workload image, built from the release's module and packed under
        the name and tag its e2e framework asks for (test/utils/image/manifest.go), with what the
        tests run in it as upstream's image has: a shell (dash as sh, and bash), core tools
        (busybox), curl and nc (OpenBSD netcat: UDP, timeouts) with their libraries, from Debian's
        packages."""
        module = kube_module(version)
        source = self.module_dir(module, "k8s.io/kubernetes")
        tag = agnhost_tag(source)
        out = self.cache / "build" / "agnhost" / tag
        ld = f"-s -w -X main.Version={tag}"
        self.go_build(module, {"agnhost": "k8s.io/kubernetes/test/images/agnhost"}, out, ld, what=f"agnhost {tag}")
        busybox, _ = self.debian("busybox-static")
        entries = [
            oci.Entry("bin", directory=True),
            oci.Entry("tmp", directory=True, mode=0o1777),
            oci.Entry("uploads", directory=True),  # netexec's upload directory
            oci.Entry("etc", directory=True),
            oci.Entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
            oci.Entry("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n"),
            oci.Entry("etc/nsswitch.conf", data=b"hosts: files dns\n"),
            oci.Entry("bin/busybox", source=busybox / "bin/busybox", mode=0o755),
            oci.Entry("agnhost", source=out / "agnhost", mode=0o755),
            oci.Entry("agnhost-2", link="agnhost"),  # the entrypoint tests run it under this name
        ]
        # every applet of busybox, as upstream's image has, but its shell: busybox's own shell runs
        # its applets before PATH (nc without -u), so the shell is dash
        listed = subprocess.run([busybox / "bin/busybox", "--list"], capture_output=True, text=True, check=True)
        applets = sorted(set(listed.stdout.split()) - {"busybox", "sh", "ash", "hush", "nc", "bash"})
        entries += [oci.Entry(f"bin/{a}", link="busybox") for a in applets]
        entries.append(oci.Entry("bin/sh", link="dash"))
        entries += self.debian_executables(
            {"bin/dash": "dash", "bin/bash": "bash", "usr/bin/curl": "curl", "bin/nc": "netcat-openbsd"}
        )
        image = oci.Image(
            f"{AGNHOST_IMAGE}:{tag}",
            entries,
            ["/agnhost"],
            cmd=["pause"],
            ports=["80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"],
        )
        return [self._image(image, f"agnhost-{tag}.oci.tar", "image-agnhost", tag)]

    def module_dir(self, module: str, path: str) -> Path:
        """Where the Go module cache holds ``path`` as ``provisioner/mirror/go/<module>`` requires it."""
        proc = subprocess.run(
            ["go", "list", "-m", "-f", "{{.Dir}}", path],
            cwd=GO_MODULES / module,
            env=self.go_env(),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            raise MirrorBuildError(f"go list -m {path} (provisioner/mirror/go/{module}) failed: {proc.stderr.strip()}")
        return Path(proc.stdout.strip())

    def debian_executables(self, wanted: dict[str, str]) -> list[oci.Entry]:
        """Dynamically linked programs of Debian packages, ``{path in the image: package}``, with
        every shared library they load (their DT_NEEDED closure, read from the ELF files) and the
        dynamic loader, all taken from Debian's packages (the programs' dependencies, downloaded
        through apt like the mirror's other Debian parts)."""
        packages = apt_dependencies(sorted(set(wanted.values())))
        roots = [self.debian(p, quiet=True)[0] for p in packages]
        libraries: dict[str, Path] = {}  # soname -> the file (symbolic links followed inside its package)
        for root in roots:
            for libdir in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"):
                for f in sorted((root / libdir).glob("*.so*")) if (root / libdir).is_dir() else []:
                    libraries.setdefault(f.name, resolve_in(root, f))
        entries: list[oci.Entry] = [
            oci.Entry("lib", directory=True),
            oci.Entry("lib/x86_64-linux-gnu", directory=True),
            oci.Entry("lib64", directory=True),
            oci.Entry("usr", directory=True),
            oci.Entry("usr/bin", directory=True),
        ]
        todo: list[Path] = []
        for target, package in wanted.items():
            root = self.debian(package, quiet=True)[0]
            name = Path(target).name
            found = [p for d in ("usr/bin", "bin") for p in (root / d).glob(f"{name}*") if p.is_file()]
            program = next((p for p in found if p.name == name), None) or next(
                (p for p in found if not p.is_symlink()), None
            )
            if program is None:
                raise MirrorBuildError(f"Debian package {package} has no program {name}")
            program = resolve_in(root, program)
            entries.append(oci.Entry(target, source=program, mode=0o755))
            todo.append(program)
        done: set[str] = set()
        while todo:
            for soname in elf_needed(todo.pop().read_bytes()):
                if soname in done:
                    continue
                done.add(soname)
                lib = libraries.get(soname)
                if lib is None:
                    raise MirrorBuildError(f"{soname} (needed by {', '.join(wanted)}) is in none of {packages}")
                entries.append(oci.Entry(f"lib/x86_64-linux-gnu/{soname}", source=lib, mode=0o755))
                todo.append(lib)
        if "ld-linux-x86-64.so.2" not in done:  # libc.so.6 needs it: always there
            raise MirrorBuildError("no dynamic loader (ld-linux-x86-64.so.2) among the libraries of libc6")
        # the programs' ELF interpreter
        entries.append(oci.Entry("lib64/ld-linux-x86-64.so.2", link="/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
        return entries

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
        if kubernetes:  # the upstream tests of the newest release: its e2e test binary and agnhost
            newest = max(kubernetes, key=lambda v: tuple(int(x) for x in v.lstrip("v").split(".")))
            steps += [
                ("e2e.test", lambda: self.e2e_test(newest)),
                ("image-agnhost", lambda: self.agnhost_image(newest)),
            ]
        for key, step in steps:
            manifest.replace(self._timed(key, step))
            manifest.write(self.mirror)
        manifest.meta = {"built_by": "provisioner mirror build", "kubernetes": sorted(kubernetes)}
        manifest.write(self.mirror)
        return manifest


def kube_module(version: str) -> str:
    """``v1.37.2`` -> ``kubernetes-1.37``, the module in ``provisioner/mirror/go`` that must pin it."""
    minor = re.match(r"^v1\.(\d+)\.\d+$", version)
    if not minor:
        raise MirrorBuildError(f"--kubernetes: {version!r} is not a version like v1.37.2")
    module = f"kubernetes-1.{minor.group(1)}"
    pinned = module_requirement(GO_MODULES / module, "k8s.io/kubernetes")
    if pinned != version:
        raise MirrorBuildError(
            f"--kubernetes: {version} is not pinned; provisioner/mirror/go/{module} pins {pinned or 'nothing'}"
        )
    return module


def kube_ldflags(version: str) -> str:
    """The version stamped into Kubernetes' binaries (and the e2e test binary), as its release does."""
    minor = version.split(".")[1]
    ld = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        ld += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor=1",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(ld)


def agnhost_tag(kubernetes_source: Path) -> str:
    """The agnhost tag this release's e2e framework asks for (test/utils/image/manifest.go)."""
    manifest = kubernetes_source / "test/utils/image/manifest.go"
    m = re.search(r'configs\[Agnhost\]\s*=\s*Config\{[^,]+,\s*"agnhost",\s*"([^"]+)"\}', manifest.read_text())
    if not m:
        raise MirrorBuildError(f"{manifest}: no agnhost image (configs[Agnhost]) found")
    return m.group(1)


def apt_dependencies(packages: list[str]) -> list[str]:
    """``packages`` and everything they depend on (Depends and Pre-Depends, recursively), by apt."""
    proc = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *packages],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise MirrorBuildError(f"apt-cache depends {' '.join(packages)}: {proc.stderr.strip()[-300:]}")
    names = [line.strip() for line in proc.stdout.splitlines() if line and not line[0].isspace()]
    return sorted({n for n in names if not n.startswith("<") and ":" not in n})


def resolve_in(root: Path, path: Path) -> Path:
    """``path`` inside an unpacked package ``root``, its symbolic links followed inside ``root``."""
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
    raise MirrorBuildError(f"{path}: too many symbolic links")


def elf_needed(data: bytes) -> list[str]:
    """The shared libraries (DT_NEEDED) a 64-bit little-endian ELF file names."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise MirrorBuildError("not a 64-bit little-endian ELF file")
    shoff, shentsize, shnum = (
        int.from_bytes(data[0x28:0x30], "little"),
        int.from_bytes(data[0x3A:0x3C], "little"),
        int.from_bytes(data[0x3C:0x3E], "little"),
    )
    sections = []
    for i in range(shnum):
        h = data[shoff + i * shentsize : shoff + (i + 1) * shentsize]
        sections.append(
            (
                int.from_bytes(h[4:8], "little"),  # sh_type
                int.from_bytes(h[24:32], "little"),  # sh_offset
                int.from_bytes(h[32:40], "little"),  # sh_size
                int.from_bytes(h[40:44], "little"),  # sh_link
            )
        )
    needed = []
    for kind, offset, size, link in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][1]
        for at in range(offset, offset + size, 16):
            tag, value = int.from_bytes(data[at : at + 8], "little"), int.from_bytes(data[at + 8 : at + 16], "little")
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab + value)
                needed.append(data[strtab + value : end].decode())
    return needed


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
