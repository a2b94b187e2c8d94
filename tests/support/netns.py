"""Network namespaces on one bridge for the P2P tests, created and removed by the fixture.

Each host is a namespace with a veth pair: one end inside (`eth0`, 10.<net>.0.<n>/24), the
other on a bridge in the root namespace, which has 10.<net>.0.254 so the test can reach
every host. Names carry a random tag, so runs (and engineers) never collide; `close()`
deletes every namespace (its veth goes with it) and the bridge, also after a failure.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.support.live import ServerProcess


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=20)


class Bridge:
    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.net = 200 + secrets.randbelow(50)
        self.name = f"smbr{self.tag}"
        self.hosts: list[str] = []
        sh("ip", "link", "add", self.name, "type", "bridge")
        sh("ip", "addr", "add", f"10.{self.net}.0.254/24", "dev", self.name)
        sh("ip", "link", "set", self.name, "up")

    def host(self, n: int) -> tuple[str, str]:
        """A namespace with address 10.<net>.0.<n>; returns (namespace, address)."""
        ns, outside = f"sm{self.tag}h{n}", f"smv{self.tag}{n}"
        address = f"10.{self.net}.0.{n}"
        sh("ip", "netns", "add", ns)
        self.hosts.append(ns)
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", outside, "master", self.name, "up")
        for cmd in (("addr", "add", f"{address}/24", "dev", "eth0"),
                    ("link", "set", "eth0", "up"), ("link", "set", "lo", "up")):
            sh("ip", "-n", ns, *cmd)
        return ns, address

    def outside(self, n: int) -> str:
        return f"smv{self.tag}{n}"

    def sent_by(self, n: int) -> int:
        """Bytes host n sent (received by its bridge-side veth), headers included."""
        return int(Path(f"/sys/class/net/{self.outside(n)}/statistics/rx_bytes").read_text())

    def shape(self, ns: str, rate: str, burst: str = "64kb") -> None:
        """tc tbf on the host's uplink (its eth0 egress). A burst below the size of a GSO
        packet (64 KiB) makes tbf cut every one into MTU-sized packets: CPU, not shaping."""
        sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
           "rate", rate, "burst", burst, "latency", "50ms")

    def block_port(self, ns: str, port: int, on: bool = True) -> None:
        """Drop TCP and UDP (uTP) to and from `port` inside the namespace."""
        op = "-A" if on else "-D"
        for proto in ("tcp", "udp"):
            for chain, flag in (("INPUT", "--dport"), ("OUTPUT", "--dport"),
                                ("INPUT", "--sport"), ("OUTPUT", "--sport")):
                sh("ip", "netns", "exec", ns, "iptables", op, chain, "-p", proto, flag,
                   str(port), "-j", "DROP")

    def close(self) -> None:
        for ns in self.hosts:
            sh("ip", "netns", "pids", ns, check=False)
            sh("ip", "netns", "delete", ns, check=False)
        sh("ip", "link", "delete", self.name, check=False)


class NetnsServer(ServerProcess):
    """`stablemirror serve` inside a namespace, listening on its address."""

    name = "netns server"

    def __init__(self, ns: str, address: str, data_dir: Path, *args: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(data_dir, data_dir.parent / f"{ns}.log", 5000)
        self.ns = ns
        self.address = address
        self.args = list(args)

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        env = {**os.environ, "NO_PROXY": "*", "no_proxy": "*"}
        return (["ip", "netns", "exec", self.ns, sys.executable, "-m", "stablemirror",
                 "serve", "--listen", self.host, "--data-dir", str(self.data_dir),
                 "--workers", "1", *self.args], env)
