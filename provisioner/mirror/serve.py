"""Serve the artifact mirror directory over HTTP (what kubespray calls a files_repo)."""

from __future__ import annotations

import argparse
import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(address: str, directory: Path) -> None:
    host, _, port = address.rpartition(":")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    with ThreadingHTTPServer((host or "127.0.0.1", int(port)), handler) as httpd:
        httpd.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="127.0.0.1:8088")
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    serve(args.address, args.dir)


if __name__ == "__main__":
    main()
