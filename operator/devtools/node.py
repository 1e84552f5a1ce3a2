"""A local single-node Kubernetes cluster whose pods run (``make cluster``, the node tests,
``make demo``).

The control plane of :mod:`devtools.cluster` plus kube-scheduler, containerd + runc, CNI
(bridge + host-local + portmap), kubelet and kube-proxy: the parts and the lines that matter are
the ones recorded as verified facts for this kind of machine (cgroup v1, no systemd, no
registry). Everything lives under the work directory except what these programs insist on
changing machine-wide; that is recorded before start-up (:class:`MachineState`) and put back
by :meth:`NodeCluster.stop`:

- sysctls (kubelet sets vm.overcommit_memory, kernel.panic, kernel.panic_on_oops; the bridge
  plugin net.ipv4.ip_forward);
- iptables chains and rules (kube-proxy's KUBE-*, kubelet's canaries, portmap's CNI-*), nft
  tables, nfacct objects and ipsets (the NetworkPolicy enforcer's, devtools.netpol);
- fixed host paths (/var/lib/kubelet/device-plugins, /var/log/containers, /var/lib/cni,
  /run/containerd/s ...);
- cgroups (/kubepods under each v1 hierarchy);
- the bridge ``sigops0`` that holds the pod range and, routed from it, the service range.

Pods reach only addresses on this machine: their one route is to the service range, and
their resolv.conf is empty (no DNS lookups leave the machine). Images are never pulled: they
are imported from the archives ``make image`` writes (``.dev/image/*.tar``).

``python -m devtools.node up|down|status|load`` drives it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devtools.cluster import (
    DEFAULT_BIN,
    REPO,
    LocalCluster,
    _alive,
    _kill,
    free_port,
    print_status,
)

__all__ = ["MachineState", "NodeCluster", "main"]

DEFAULT_DIR = REPO / ".dev" / "cluster"
IMAGES = REPO / ".dev" / "image"
BRIDGE = "sigops0"
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/24"
NODE_NAME = "sigops-node"
RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"
NODE_CONTROLLERS = ",".join((
    "deployment", "replicaset", "garbagecollector", "namespace", "serviceaccount",
    "serviceaccount-token", "endpoint", "endpointslice", "endpointslicemirroring",
    "nodelifecycle", "podgc", "daemonset", "statefulset", "job", "disruption",
    "root-ca-cert-publisher", "ttl",
    # what PersistentVolumes and finished Jobs need (hostPath volumes bound to claims; the
    # TTL of a finished Job)
    "persistentvolume-binder-controller", "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller", "ttl-after-finished-controller"))

# Host paths the node's programs create outside their configured directories.
HOST_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni",
              "/run/containerd", "/etc/cni", "/opt/cni", "/usr/libexec/kubernetes",
              "/etc/kubernetes", "/var/lib/containerd", "/run/netns", "/var/run/netns",
              "/var/lib/kube-proxy", "/run/xtables.lock")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
# Sysctls that change by themselves; never compared or written back.
VOLATILE_SYSCTLS = ("kernel.random.", "kernel.ns_last_pid", "kernel.pty.nr", "fs.dentry-state",
                    "fs.file-nr", "fs.inode-", "fs.quota.", "net.netfilter.nf_conntrack_count",
                    "kernel.sched_domain", "vm.stat_", "dev.", "fs.aio-nr", "kernel.tainted",
                    "net.ipv4.route.", "net.ipv6.route.")
SYSCTL_ROOTS = ("kernel.", "vm.", "net.ipv4.", "net.ipv6.", "net.bridge.", "net.netfilter.",
                "net.core.", "fs.")


def _log(msg: str) -> None:
    sys.stderr.write(f"[node] {msg}\n")
    sys.stderr.flush()


def _run(argv: list[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


# --- machine-wide state: recorded before, restored after -------------------------------------


def _sysctls() -> dict[str, str]:
    out: dict[str, str] = {}
    root = Path("/proc/sys")
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            key = str(p.relative_to(root)).replace("/", ".")
            if not key.startswith(SYSCTL_ROOTS) or key.startswith(VOLATILE_SYSCTLS):
                continue
            if not os.access(p, os.W_OK):
                continue
            try:
                out[key] = p.read_text().strip()
            except OSError:
                continue
    return out


def _iptables(tool: str) -> dict[str, list[str]]:
    """table -> its lines of ``<tool>-save`` without counters (empty when the tool is absent)."""
    out: dict[str, list[str]] = {}
    if shutil.which(f"{tool}-save") is None:
        return out
    for table in IPTABLES_TABLES:
        r = _run([f"{tool}-save", "-t", table], check=False)
        lines = [ln for ln in r.stdout.splitlines()
                 if ln and not ln.startswith(("#", "*", "COMMIT"))]
        # Counters ([0:0]) change by themselves; the chain and its policy are what matter.
        lines = [ln.split(" [")[0] if ln.startswith(":") else ln for ln in lines]
        if lines:
            out[table] = lines
    return out


def _nft_tables() -> list[str]:
    if shutil.which("nft") is None:
        return []
    r = _run(["nft", "list", "tables"], check=False)
    return sorted(ln.strip() for ln in r.stdout.splitlines() if ln.startswith("table "))


def _nfacct() -> list[str]:
    if shutil.which("nfacct") is None:
        return []
    r = _run(["nfacct", "list"], check=False)
    # One object per line: "{ pkts = ..., bytes = ... } = NAME;"
    names = [ln.rsplit("=", 1)[1].strip().rstrip(";") for ln in r.stdout.splitlines()
             if "=" in ln]
    return sorted(n for n in names if n)


def _ipsets() -> list[str]:
    if shutil.which("ipset") is None:
        return []
    return sorted(_run(["ipset", "list", "-n"], check=False).stdout.split())


def _cgroups() -> list[str]:
    base = Path("/sys/fs/cgroup")
    found = []
    if base.is_dir():
        for hier in sorted(base.iterdir()):
            if (hier / "kubepods").is_dir():
                found.append(str(hier / "kubepods"))
    return found


@dataclass
class MachineState:
    """What the node may change machine-wide, as it was."""

    sysctls: dict[str, str]
    iptables: dict[str, list[str]]
    ip6tables: dict[str, list[str]]
    nft: list[str]
    nfacct: list[str]
    paths: dict[str, bool]
    cgroups: list[str]
    links: list[str]
    ipsets: list[str] = field(default_factory=list)

    @classmethod
    def capture(cls) -> MachineState:
        return cls(sysctls=_sysctls(), iptables=_iptables("iptables"),
                   ip6tables=_iptables("ip6tables"), nft=_nft_tables(), nfacct=_nfacct(),
                   paths={p: os.path.lexists(p) for p in HOST_PATHS}, cgroups=_cgroups(),
                   links=_links(), ipsets=_ipsets())

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> MachineState:
        return cls(**json.loads(path.read_text()))

    def differences(self, other: MachineState) -> list[str]:
        """What differs between this state and ``other`` (readable, one item per change)."""
        out = []
        for k in sorted(set(self.sysctls) | set(other.sysctls)):
            a, b = self.sysctls.get(k), other.sysctls.get(k)
            if a is not None and b is not None and a != b:
                out.append(f"sysctl {k}: {a} -> {b}")
        for name, mine, theirs in (("iptables", self.iptables, other.iptables),
                                   ("ip6tables", self.ip6tables, other.ip6tables)):
            for t in sorted(set(mine) | set(theirs)):
                before, after = set(mine.get(t, [])), set(theirs.get(t, []))
                out += [f"{name} -t {t}: added {ln}" for ln in sorted(after - before)]
                out += [f"{name} -t {t}: removed {ln}" for ln in sorted(before - after)]
        out += [f"nft: added {t}" for t in sorted(set(other.nft) - set(self.nft))]
        out += [f"nfacct: added {n}" for n in sorted(set(other.nfacct) - set(self.nfacct))]
        out += [f"ipset: added {n}" for n in sorted(set(other.ipsets) - set(self.ipsets))]
        out += [f"path {p}: {'created' if other.paths.get(p) else 'removed'}"
                for p in sorted(self.paths) if self.paths[p] != other.paths.get(p)]
        out += [f"cgroup added: {c}" for c in sorted(set(other.cgroups) - set(self.cgroups))]
        out += [f"link added: {ln}" for ln in sorted(set(other.links) - set(self.links))]
        return out

    def restore(self) -> list[str]:
        """Put back what differs now; returns what could not be restored."""
        now = MachineState.capture()
        problems: list[str] = []
        for tool, before, after in (("iptables", self.iptables, now.iptables),
                                    ("ip6tables", self.ip6tables, now.ip6tables)):
            for table in sorted(set(after)):
                if set(after[table]) != set(before.get(table, [])):
                    problems += _restore_table(tool, table, before.get(table, []),
                                               after[table])
        for t in sorted(set(now.nft) - set(self.nft)):
            parts = t.split()  # "table ip kube-proxy"
            r = _run(["nft", "delete", *parts], check=False)
            if r.returncode:
                problems.append(f"nft delete {t}: {r.stderr.strip()}")
        for n in sorted(set(now.ipsets) - set(self.ipsets)):  # after the rules using them
            r = _run(["ipset", "destroy", n], check=False)
            if r.returncode:
                problems.append(f"ipset destroy {n}: {r.stderr.strip()}")
        for n in sorted(set(now.nfacct) - set(self.nfacct)):
            r = _run(["nfacct", "del", n], check=False)
            if r.returncode:
                problems.append(f"nfacct del {n}: {r.stderr.strip()}")
        for c in sorted(set(now.cgroups) - set(self.cgroups)):
            problems += _remove_cgroup(Path(c))
        for p, existed in self.paths.items():
            if not existed and os.path.lexists(p):
                try:
                    if os.path.isdir(p) and not os.path.islink(p):
                        shutil.rmtree(p)
                    else:
                        os.unlink(p)
                except OSError as e:
                    problems.append(f"remove {p}: {e}")
        for k, v in self.sysctls.items():
            if now.sysctls.get(k, v) != v:
                try:
                    Path("/proc/sys", k.replace(".", "/")).write_text(v + "\n")
                except OSError as e:
                    problems.append(f"sysctl {k}={v}: {e}")
        return problems


def _links() -> list[str]:
    r = _run(["ip", "-o", "link", "show"], check=False)
    names = []
    for ln in r.stdout.splitlines():
        parts = ln.split(":", 2)
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return sorted(n for n in names if not n.startswith("veth"))


def _restore_table(tool: str, table: str, before: list[str], after: list[str]) -> list[str]:
    """Drop from ``table`` every chain that was not there before and every rule that was not,
    keeping whatever else is there now (others' rules stay)."""
    old_chains = {ln.split()[0][1:] for ln in before if ln.startswith(":")}
    old_rules = set(ln for ln in before if ln.startswith("-A "))
    lines = [f"*{table}"]
    for ln in after:
        if ln.startswith(":"):
            if ln.split()[0][1:] in old_chains:
                lines.append(ln + " [0:0]" if " " in ln else ln)
        elif ln.startswith("-A ") and ln in old_rules:
            lines.append(ln)
    lines.append("COMMIT")
    r = _run([f"{tool}-restore"], check=False, input="\n".join(lines) + "\n")
    return [f"{tool}-restore -t {table}: {r.stderr.strip()}"] if r.returncode else []


def _remove_cgroup(root: Path) -> list[str]:
    """rmdir a cgroup tree bottom-up (after killing what is left in it)."""
    dirs = sorted((Path(d) for d, _s, _f in os.walk(root)), key=lambda p: len(p.parts),
                  reverse=True)
    for d in dirs:
        try:
            for pid in (d / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), 9)
                except OSError:
                    pass
        except OSError:
            pass
    deadline = time.monotonic() + 10
    left: list[Path] = dirs
    while left and time.monotonic() < deadline:
        nxt = []
        for d in left:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                nxt.append(d)
        left = nxt
        if left:
            time.sleep(0.2)
    return [f"cgroup {d} still busy" for d in left]


# --- the node --------------------------------------------------------------------------------


@dataclass
class NodeCluster(LocalCluster):
    """The control plane on the bridge address plus a node whose pods run."""

    workdir: Path = DEFAULT_DIR
    bindir: Path = DEFAULT_BIN
    host: str = GATEWAY
    service_cidr: str = SERVICE_CIDR
    node_token: str = ""
    controllers = NODE_CONTROLLERS

    @property
    def sock(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def before_file(self) -> Path:
        # Outside the work directory's lifetime: a crashed node's "before" must survive until a
        # later `down` restores it, even if the work directory is recreated.
        return self.workdir.parent / f"{self.workdir.name}.machine-before.json"

    def _apiserver_args(self, pki: Path) -> list[str]:
        return ["--authorization-mode", "Node,RBAC",
                "--enable-admission-plugins", "NodeRestriction",
                "--allow-privileged=true",
                "--kubelet-client-certificate", str(pki / "kubelet-client.crt"),
                "--kubelet-client-key", str(pki / "kubelet-client.key"),
                "--kubelet-preferred-address-types", "InternalIP"]

    def _controller_manager_args(self) -> list[str]:
        return ["--use-service-account-credentials=true",
                "--flex-volume-plugin-dir", str(self.workdir / "flexvolume")]

    def _extra_tokens(self) -> str:
        import secrets

        self.node_token = secrets.token_hex(24)
        return f'{self.node_token},system:node:{NODE_NAME},node-{NODE_NAME},"system:nodes"\n'

    # -- start ---------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> NodeCluster:
        if os.geteuid() != 0:
            raise RuntimeError("a node needs root (containerd, kubelet, iptables)")
        for tool in (RUNC, "/usr/bin/containerd", f"{CNI_BIN}/bridge", "/usr/sbin/iptables"):
            if not os.path.exists(tool):
                raise FileNotFoundError(f"{tool} is missing: run `make tools` first")
        if BRIDGE in _links():
            raise RuntimeError(f"link {BRIDGE} exists: another node is running on this machine "
                               "(one at a time); `make cluster-down` stops it")
        pause = self._image_archive("pause")
        if pause is None:
            raise FileNotFoundError(f"no pause image in {IMAGES}: run `make image` first")
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.before_file.exists():
            MachineState.capture().save(self.before_file)
        try:
            self._bridge()
            self._containerd()
            self.load_images()
            _log(f"containerd ready, images imported ({time.monotonic() - t0:.1f}s)")
            super().start(timeout - (time.monotonic() - t0))
        except BaseException:
            _log("start-up failed; undoing")
            self.stop()
            raise
        return self

    def _start_more(self, elapsed: float, timeout: float) -> None:
        t0 = time.monotonic() - elapsed
        try:
            self._scheduler()
            self._kubelet()
            self._wait_node_ready(timeout - (time.monotonic() - t0))
            _log(f"node Ready ({time.monotonic() - t0:.1f}s)")
            self._kube_proxy(timeout - (time.monotonic() - t0))
            _log(f"kube-proxy healthy ({time.monotonic() - t0:.1f}s)")
        except BaseException:
            self._save_state()
            raise

    def _bridge(self) -> None:
        prefix = POD_CIDR.split("/")[1]
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])

    def _containerd(self) -> None:
        d = self.workdir / "containerd"
        (d / "cni").mkdir(parents=True, exist_ok=True)
        (d / "ipam").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0", "name": "sigops",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(d / "ipam"),
                          "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                          # The only route: the service range. Without it pods have no route
                          # at all; with only it they reach nothing off this machine.
                          "routes": [{"dst": SERVICE_CIDR}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ]}
        (d / "cni" / "10-sigops.conflist").write_text(json.dumps(conflist, indent=1))
        pause_ref = (IMAGES / "pause.ref").read_text().strip()
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (d / "config.toml").write_text(f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[{cri}]
  sandbox_image = "{pause_ref}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
[{cri}.containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
  Root = "{d / 'state' / 'runc'}"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{d / 'cni'}"
""")
        self._spawn("containerd", ["/usr/bin/containerd", "--config", str(d / "config.toml")])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.sock.exists() and _run(self._ctr("version"), check=False).returncode == 0:
                return
            if not _alive(self.pids["containerd"]):
                break
            time.sleep(0.2)
        raise RuntimeError(f"containerd did not start; see {self.workdir / 'containerd.log'}")

    def _ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.sock), "--namespace", "k8s.io", *args]

    @staticmethod
    def _image_archive(name: str) -> Path | None:
        tar, ref = IMAGES / f"{name}.tar", IMAGES / f"{name}.ref"
        return tar if tar.exists() and ref.exists() else None

    def load_images(self) -> list[str]:
        """Import the archives of ``make image`` (pause, sigops) into the node's containerd."""
        loaded = []
        for name in ("pause", "sigops"):
            tar = self._image_archive(name)
            if tar is None:
                continue
            ref = (IMAGES / f"{name}.ref").read_text().strip()
            r = _run(self._ctr("images", "import", str(tar)), check=False)
            if r.returncode:
                raise RuntimeError(f"importing {tar.name}: {r.stderr.strip()}")
            loaded.append(ref)
        return loaded

    def _scheduler(self) -> None:
        self._spawn("kube-scheduler", [
            self._bin("kube-scheduler"), "--kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig),
            "--authorization-kubeconfig", str(self.kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            "--leader-elect=false", "--v", "1"])

    def _node_kubeconfig(self) -> Path:
        cfg = json.loads(self.kubeconfig.read_text())
        cfg["users"] = [{"name": "node", "user": {"token": self.node_token}}]
        cfg["contexts"][0]["context"]["user"] = "node"
        p = self.workdir / "kubelet.kubeconfig"
        p.write_text(json.dumps(cfg))
        os.chmod(p, 0o600)
        return p

    def _kubelet(self) -> None:
        d = self.workdir / "kubelet"
        for sub in ("root", "pod-logs", "volume-plugins"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "resolv.conf").write_text("")  # no nameserver: pods resolve nothing off-machine
        self.kubelet_port = free_port()
        cfg = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "address": GATEWAY, "port": self.kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "authentication": {"x509": {"clientCAFile": str(self.workdir / "pki" / "ca.crt")},
                               "webhook": {"enabled": True},
                               "anonymous": {"enabled": False}},
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(d / "pod-logs"), "volumePluginDir": str(d / "volume-plugins"),
            "resolvConf": str(d / "resolv.conf"), "clusterDomain": "cluster.local",
            # Images cannot be pulled again here: never collect them; evict only when full.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "maxPods": 60, "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
        }
        (d / "config.json").write_text(json.dumps(cfg, indent=1))
        self._spawn("kubelet", [
            self._bin("kubelet"), "--config", str(d / "config.json"),
            "--kubeconfig", str(self._node_kubeconfig()),
            "--root-dir", str(d / "root"), "--cert-dir", str(d / "pki"),
            "--hostname-override", NODE_NAME, "--node-ip", GATEWAY, "--v", "1"])

    def _wait_node_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 10.0)
        last = "not registered"
        while time.monotonic() < deadline:
            for name in ("kubelet", "containerd"):
                if not _alive(self.pids[name]):
                    raise RuntimeError(f"{name} exited; see {self.workdir / (name + '.log')}")
            r = _run(["kubectl", "--kubeconfig", str(self.kubeconfig), "get", "node",
                      NODE_NAME, "-o", "json"], check=False,
                     env={**os.environ, "PATH": f"{self.bindir}:{os.environ['PATH']}"})
            if r.returncode == 0:
                conds = {c["type"]: c for c in json.loads(r.stdout)["status"].get(
                    "conditions", [])}
                ready = conds.get("Ready", {})
                if ready.get("status") == "True":
                    return
                last = ready.get("message", "no Ready condition")
            time.sleep(0.5)
        raise TimeoutError(f"node {NODE_NAME} not Ready: {last}")

    def _kube_proxy(self, timeout: float) -> None:
        d = self.workdir / "kube-proxy"
        d.mkdir(parents=True, exist_ok=True)
        health = free_port()
        cfg = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "mode": "iptables", "clusterCIDR": POD_CIDR, "hostnameOverride": NODE_NAME,
            "healthzBindAddress": f"127.0.0.1:{health}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Leave conntrack and route_localnet sysctls alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False},
        }
        (d / "config.json").write_text(json.dumps(cfg, indent=1))
        self._spawn("kube-proxy", [self._bin("kube-proxy"), "--config", str(d / "config.json"),
                                   "--v", "1"])
        deadline = time.monotonic() + max(timeout, 10.0)
        while time.monotonic() < deadline:
            if not _alive(self.pids["kube-proxy"]):
                raise RuntimeError(f"kube-proxy exited; see {self.workdir / 'kube-proxy.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz",
                                            timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise TimeoutError("kube-proxy not healthy")

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process, remove every pod's leftovers and restore the machine."""
        for name in ("kube-proxy", "kubelet", "kube-scheduler"):
            pid = self.pids.pop(name, None)
            if pid:
                _kill(pid)
        containerd = self.pids.pop("containerd", None)
        super().stop()  # controller manager, API server, etcd
        self._stop_containers()
        if containerd:
            _kill(containerd)
        self._unmount_all()
        _run(["ip", "link", "delete", BRIDGE], check=False)
        if self._bin_exists("kube-proxy"):
            _run([str(self.bindir / "kube-proxy"), "--cleanup"], check=False)
        problems: list[str] = []
        if self.before_file.exists():
            before = MachineState.load(self.before_file)
            problems = before.restore()
            left = before.differences(MachineState.capture())
            if problems or left:
                _log("could not restore everything: " + "; ".join(problems + left))
            else:
                self.before_file.unlink()
        try:
            (self.workdir / "state.json").unlink()
        except OSError:
            pass

    def _bin_exists(self, name: str) -> bool:
        return (self.bindir / name).exists()

    def _stop_containers(self) -> None:
        """Kill every container of the node (kubelet is gone, so nobody restarts them)."""
        state = self.workdir / "containerd" / "state" / "runc"
        if state.is_dir():
            for ns in state.iterdir():
                r = _run([RUNC, "--root", str(ns), "list", "-q"], check=False)
                for cid in r.stdout.split():
                    _run([RUNC, "--root", str(ns), "kill", cid, "KILL"], check=False)
                    _run([RUNC, "--root", str(ns), "delete", "--force", cid], check=False)
        # The shims of this containerd (they outlive it otherwise).
        marker = str(self.sock)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and \
                    marker.encode() in b" ".join(cmd):
                try:
                    os.kill(int(proc.name), 9)
                except OSError:
                    pass

    def _unmount_all(self) -> None:
        """Unmount what the node left mounted under its work directory (netns, shm, rootfs,
        volumes), deepest first."""
        root = str(self.workdir.resolve())
        for _ in range(3):
            mounts = []
            for ln in Path("/proc/self/mounts").read_text().splitlines():
                target = ln.split()[1].replace("\\040", " ")
                if target == root or target.startswith(root + "/"):
                    mounts.append(target)
            if not mounts:
                return
            for m in sorted(set(mounts), key=len, reverse=True):
                _run(["umount", "-l", m], check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.node")
    p.add_argument("action", choices=("up", "down", "status", "load"))
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--bin", type=Path, default=DEFAULT_BIN)
    a = p.parse_args(argv)
    existing = NodeCluster.load(a.dir)
    if a.action == "up":
        if existing is not None and existing.running():
            _log(f"already running; KUBECONFIG={existing.kubeconfig}")
            return 0
        if existing is not None:
            existing.stop()
        shutil.rmtree(a.dir, ignore_errors=True)
        c = NodeCluster(workdir=a.dir, bindir=a.bin).start()
        print(f"export KUBECONFIG={c.kubeconfig}")
        return 0
    if a.action == "down":
        c = existing if existing is not None else NodeCluster(workdir=a.dir, bindir=a.bin)
        c.stop()
        _log("stopped; machine state restored")
        return 0
    if a.action == "load":
        if existing is None or not existing.running():
            _log("no node running: the images load when it starts")
            return 0
        for ref in existing.load_images():
            _log(f"loaded {ref}")
        return 0
    return print_status(existing)


if __name__ == "__main__":
    sys.exit(main())
