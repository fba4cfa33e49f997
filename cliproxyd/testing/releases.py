"""
A simulated releases API (the shape of GitHub's): C{GET
/repos/OWNER/NAME/releases/latest} answers the latest release with its
assets (name, C{browser_download_url}, C{digest} as C{sha256:HEX}), and
C{GET /download/NAME} serves an asset's bytes. Tests and the panel updater
meet it on loopback, never the internet.

Scriptable: L{publish} a new panel, L{digest} to announce another digest
than the bytes have (a tampered download), L{down} to answer 503 to every
request; L{requests} records the paths asked for.
"""

from __future__ import annotations

import hashlib
import json

from twisted.web.resource import Resource
from twisted.web.server import Request


class SimulatedReleases(Resource):
    isLeaf = True

    def __init__(self, repository: str = "router-for-me/Cli-Proxy-API-Management-Center") -> None:
        super().__init__()
        self.repository = repository
        #: asset name -> bytes
        self.assets: dict[str, bytes] = {}
        #: asset name -> the digest announced instead of the real one ("" for none)
        self.digest: dict[str, str] = {}
        self.down = False
        self.requests: list[str] = []

    def publish(self, data: bytes, name: str = "management.html") -> str:
        """Make C{data} the latest release's asset C{name}; its sha256 hex."""
        self.assets[name] = data
        self.digest.pop(name, None)
        return hashlib.sha256(data).hexdigest()

    def render_GET(self, request: Request) -> bytes:
        path = request.path.decode()
        self.requests.append(path)
        if self.down:
            request.setResponseCode(503)
            return b'{"message": "down"}'
        if path == f"/repos/{self.repository}/releases/latest":
            base = f"http://{request.getHost().host}:{request.getHost().port}"
            assets = [{
                "name": name,
                "browser_download_url": f"{base}/download/{name}",
                "digest": self.digest.get(name, "sha256:" + hashlib.sha256(data).hexdigest()),
            } for name, data in self.assets.items()]
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"tag_name": "v1", "assets": assets}).encode()
        if path.startswith("/download/") and path[len("/download/"):] in self.assets:
            return self.assets[path[len("/download/"):]]
        request.setResponseCode(404)
        return b'{"message": "Not Found"}'
