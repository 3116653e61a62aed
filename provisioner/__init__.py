"""provisioner: a declarative cluster file in, a running and validated Kubernetes cluster out."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("provisioner")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
