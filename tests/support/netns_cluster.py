"""An edge and N node caches in network namespaces, and podman run inside a namespace, for
the P2P tests that judge issue 15 (tests/functional/p2p/test_netns_podman.py,
test_netns_node_killed.py). Black-box on purpose: nothing here knows how a node gets its
pieces (web seed, edge-coordinated fetch), only processes, links, podman and bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.support.clients import Clients, require_tool
from tests.support.netns import Bridge, NetnsServer, sh
from tests.support.p2p_support import edge_config, node_config

MiB = 1 << 20
P2P_PORT = 6881


@dataclass
class Cluster:
    bridge: Bridge
    edge: NetnsServer  # host 1 on the bridge
    nodes: list[NetnsServer]  # hosts 10, 11, ...


class FreeNetBridge(Bridge):
    """A Bridge on a 10.<net>.0.0/24 that no bridge on this machine has yet, picked from
    100-199 (Bridge() picks 200-249 at random, unchecked). Two bridges with one subnet
    break each other: while writing these tests another engineer's cluster on the same
    /24 sent its pulls to this one's nodes."""

    def __init__(self, tries: int = 5) -> None:
        for _ in range(tries):
            used = set(re.findall(r" 10\.(\d+)\.0\.254/", _addresses()))
            free = [n for n in range(100, 200) if str(n) not in used]
            if not free:
                break
            self.tag = secrets.token_hex(3)
            self.net = secrets.choice(free)
            self.name = f"smbr{self.tag}"
            self.hosts = []
            sh("ip", "link", "add", self.name, "type", "bridge")
            sh("ip", "addr", "add", f"10.{self.net}.0.254/24", "dev", self.name)
            sh("ip", "link", "set", self.name, "up")
            if _addresses().count(f" 10.{self.net}.0.254/") == 1:  # nobody raced us
                return
            self.close()
        raise RuntimeError(f"no free 10.x.0.0/24 for a test bridge after {tries} tries")


def _addresses() -> str:
    return sh("ip", "-o", "-4", "addr", "show").stdout


@contextlib.contextmanager
def netns_cluster(root: Path, nodes: int, edge_rate: str, node_rate: str | None = None,
                  **node_p2p: Any) -> Iterator[Cluster]:
    """An edge (P2P metadata and tracker for cluster c1) and `nodes` node caches with P2P
    on, each a stablemirror process in its own namespace; every uplink shaped with tc tbf
    (the edge's at `edge_rate`, each node's at `node_rate` if given). Removed on exit."""
    bridge = FreeNetBridge()
    servers: list[NetnsServer] = []
    try:
        ns, address = bridge.host(1)
        bridge.shape(ns, edge_rate)
        edge = NetnsServer(ns, address, root / "edge", "--config",
                           str(edge_config(root / "edge.yml")))
        servers.append(edge)
        members = []
        for n in range(nodes):
            ns, address = bridge.host(10 + n)
            if node_rate is not None:
                bridge.shape(ns, node_rate)
            cfg = node_config(root / f"n{n}.yml", edge.url, f"n{n}",
                              f"0.0.0.0:{P2P_PORT}", **node_p2p)
            members.append(NetnsServer(ns, address, root / f"n{n}", "--config", str(cfg)))
        servers.extend(members)
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.start(60), servers))  # slow under load
        yield Cluster(bridge, edge, members)
    finally:
        with ThreadPoolExecutor(len(servers) or 1) as pool:
            list(pool.map(lambda s: s.stop(), servers))
        bridge.close()


def block_p2p(cluster: Cluster, nodes: list[NetnsServer], on: bool = True) -> None:
    """Drop all P2P traffic (TCP and uTP, both ways) of these nodes."""
    for node in nodes:
        cluster.bridge.block_port(node.ns, P2P_PORT, on=on)


def podman_in_netns(clients: Clients, ns: str, *args: str, timeout: float = 120
                    ) -> subprocess.CompletedProcess[str]:
    """podman inside namespace `ns`, with `clients`' private storage (vfs, its own --root
    and --runroot), configuration files, file events and cgroupfs: nothing global."""
    exe = require_tool("podman")
    return clients.run(["ip", "netns", "exec", ns, exe, *clients.storage_flags,
                        "--tmpdir", str(clients.libpod_tmp), "--events-backend", "file",
                        "--cgroup-manager", "cgroupfs", *args], timeout=timeout)


def podman_pull_in_netns(clients: Clients, node: NetnsServer, repo: str, tag: str,
                         timeout: float = 120) -> dict[str, Any]:
    """`podman pull` of node/repo:tag from inside the node's namespace (the node's address
    there); returns `podman image inspect` of what it pulled."""
    image = f"{node.host}/{repo}:{tag}"
    podman_in_netns(clients, node.ns, "pull", "-q", "--tls-verify=false", image,
                    timeout=timeout)
    out = podman_in_netns(clients, node.ns, "image", "inspect", image, timeout=60)
    inspected = json.loads(out.stdout)
    assert isinstance(inspected, list) and len(inspected) == 1, inspected
    return dict(inspected[0])


def read_at_least(chunks: Iterator[bytes], n: int) -> int:
    """Read from a streamed body until at least `n` bytes (or its end); returns the count."""
    got = 0
    for chunk in chunks:
        got += len(chunk)
        if got >= n:
            break
    return got


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def flip_stored_pieces(node: NetnsServer, digest: str, data: bytes,
                       stride: int = 256 * 1024) -> int:
    """Make a node serve corrupt pieces of a blob it seeds: flip 64 bytes every `stride`
    bytes of its stored blob and of every file its process has mapped for that blob
    (/proc/<pid>/map_files: a download since replaced by a link). Returns files flipped."""
    assert node.proc is not None
    stored = node.data_dir / "blobs" / "sha256" / digest[7:9] / digest[7:]
    files: dict[int, Path] = {stored.stat().st_ino: stored}
    for line in Path(f"/proc/{node.proc.pid}/maps").read_text().splitlines():
        if digest[7:] in line:
            mapped = Path(f"/proc/{node.proc.pid}/map_files/{line.split()[0]}")
            files.setdefault(mapped.stat().st_ino, mapped)
    for path in files.values():
        with open(path, "r+b") as f:
            for offset in range(1000, len(data), stride):
                f.seek(offset)
                f.write(bytes(b ^ 0xFF for b in data[offset:offset + 64]))
    return len(files)


def pull_blob_digest(node: NetnsServer, repo: str, digest: str, timeout: float = 60) -> str:
    """GET a blob from a node; the sha256 digest of the bytes it sent."""
    r = requests.get(f"{node.url}/v2/{repo}/blobs/{digest}", timeout=timeout)
    assert r.status_code == 200, (r.status_code, r.text[:200], node.log()[-2000:])
    return "sha256:" + hashlib.sha256(r.content).hexdigest()
