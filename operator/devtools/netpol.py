"""NetworkPolicy enforcement on the local node (dev only, one node test).

The node's bridge CNI does not enforce NetworkPolicy. kube-router's network policy controller
does, with iptables (filter table) and ipsets; it runs here as a host process with the admin
kubeconfig and only its firewall (no routing, no service proxy: kube-proxy stays the node's
proxy). ``make tools-netpol`` builds it from its Go module into the tool cache.

Not kube-network-policies: it hands new connections to user space with nftables' ``queue``
statement, and this machine's kernel has no nft_queue (CONFIG_NFT_QUEUE unset, no loadable
modules): its rules are refused ("No such file or directory") and it enforces nothing.

What kube-router adds is removed by :meth:`PolicyEnforcer.stop`: its chains (KUBE-ROUTER-*,
KUBE-POD-FW-*, KUBE-NWPLCY-*), the rules that jump to them, and the ipsets it created. Not its
``--cleanup-config``: that also flushes every IPVS service on the machine.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

from .cluster import DEFAULT_BIN, _alive, _kill
from .node import NODE_NAME, SERVICE_CIDR

__all__ = ["PolicyEnforcer", "available"]

CHAIN_PREFIXES = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")


def available(bindir: Path = DEFAULT_BIN) -> bool:
    """kube-router built (``make tools-netpol``) and the ipset tool it calls installed."""
    return (bindir / "kube-router").exists() and shutil.which("ipset") is not None


def _run(argv: list[str], check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def _ipsets() -> set[str]:
    return set(_run(["ipset", "list", "-n"]).stdout.split())


def filter_rules() -> list[str]:
    """``iptables-save -t filter`` without comments and counters."""
    return [ln for ln in _run(["iptables-save", "-t", "filter"]).stdout.splitlines()
            if ln and not ln.startswith(("#", "*", "COMMIT"))]


def _ours(chain: str) -> bool:
    return chain.startswith(CHAIN_PREFIXES)


class PolicyEnforcer:
    """kube-router's firewall against the node's API server, for the life of a ``with``."""

    def __init__(self, kubeconfig: Path, workdir: Path, bindir: Path = DEFAULT_BIN) -> None:
        self.kubeconfig, self.workdir, self.bindir = kubeconfig, workdir, bindir
        self.pid: int | None = None
        self.log = workdir / "kube-router.log"
        self._sets_before: set[str] = set()

    def __enter__(self) -> PolicyEnforcer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> PolicyEnforcer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._sets_before = _ipsets()
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [str(self.bindir / "kube-router"), "--kubeconfig", str(self.kubeconfig),
             "--hostname-override", NODE_NAME, "--run-firewall=true", "--run-router=false",
             "--run-service-proxy=false", "--service-cluster-ip-range", SERVICE_CIDR,
             # No listeners: its health and metrics servers would bind every address.
             "--health-port=0", "--metrics-port=0", "--v=1"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        self.pid = proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(proc.pid):
                raise RuntimeError(f"kube-router exited: {self.log.read_text()[-2000:]}")
            if any(ln.startswith(":KUBE-ROUTER-FORWARD") for ln in filter_rules()):
                return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"kube-router set up no chains in {timeout:.0f}s; see {self.log}")

    def stop(self) -> list[str]:
        """Stop it and remove what it added; returns what is left of it (nothing, normally)."""
        if self.pid is not None:
            _kill(self.pid)
            self.pid = None
        rules = filter_rules()
        chains = [ln.split()[0][1:] for ln in rules if ln.startswith(":")]
        for ln in rules:  # rules in other chains that jump to its chains
            if ln.startswith("-A ") and not _ours(ln.split()[1]):
                args = shlex.split(ln)
                if "-j" in args and _ours(args[args.index("-j") + 1]):
                    _run(["iptables", "-D", *args[1:]])
        ours = [c for c in chains if _ours(c)]
        for c in ours:
            _run(["iptables", "-F", c])
        for c in ours:
            _run(["iptables", "-X", c])
        for s in sorted(_ipsets() - self._sets_before):
            _run(["ipset", "destroy", s])
        return self.leftovers()

    def leftovers(self) -> list[str]:
        left = [ln for ln in filter_rules() if any(p in ln for p in CHAIN_PREFIXES)]
        left += [f"ipset {s}" for s in sorted(_ipsets() - self._sets_before)]
        return left
