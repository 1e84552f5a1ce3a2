"""A real local Kubernetes control plane for tests and the demo, started like envtest.

etcd, kube-apiserver (RBAC, token auth, a service-account signing key so TokenRequest and
``kubectl create token`` work) and kube-controller-manager (deployments, replicasets, garbage
collector, namespaces, service accounts) on free loopback ports. No scheduler and no kubelet:
pods never run, but Deployments still get ReplicaSets and revisions.

``python -m devtools.cluster up|down|status`` drives it by hand (``make cluster``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

__all__ = ["LocalCluster", "free_port", "main"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / ".dev" / "bin"
DEFAULT_DIR = REPO / ".dev" / "cluster"
CONTROLLERS = "deployment,replicaset,garbagecollector,namespace,serviceaccount,serviceaccount-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _log(msg: str) -> None:
    sys.stderr.write(f"[cluster] {msg}\n")
    sys.stderr.flush()


def _write_pki(d: Path, ips: tuple[str, ...] = ("127.0.0.1", "10.0.0.1")) -> None:
    """A CA, the API server's serving cert (for ``ips``), its client cert for kubelets
    (system:masters) and the service-account key pair."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=30)

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sigops-dev-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    srv_key = ec.generate_private_key(ec.SECP256R1())
    names = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    srv = (x509.CertificateBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
           .issuer_name(ca_name).public_key(srv_key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(start).not_valid_after(end)
           .add_extension(x509.SubjectAlternativeName(sans), critical=False)
           .sign(ca_key, hashes.SHA256()))
    kc_key = ec.generate_private_key(ec.SECP256R1())
    kc = (x509.CertificateBuilder()
          .subject_name(x509.Name([
              x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client"),
              x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")]))
          .issuer_name(ca_name).public_key(kc_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .sign(ca_key, hashes.SHA256()))
    sa_key = ec.generate_private_key(ec.SECP256R1())
    (d / "kubelet-client.crt").write_bytes(kc.public_bytes(serialization.Encoding.PEM))
    (d / "kubelet-client.key").write_bytes(pem_key(kc_key))
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "ca.key").write_bytes(pem_key(ca_key))
    (d / "apiserver.crt").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    (d / "apiserver.key").write_bytes(pem_key(srv_key))
    (d / "sa.key").write_bytes(pem_key(sa_key))
    (d / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for f in ("ca.key", "apiserver.key", "sa.key", "kubelet-client.key"):
        os.chmod(d / f, 0o600)


@dataclass
class LocalCluster:
    """The control plane's processes, ports and credentials."""

    workdir: Path = DEFAULT_DIR
    bindir: Path = DEFAULT_BIN
    host: str = "127.0.0.1"
    service_cidr: str = "10.0.0.0/24"
    api_port: int = 0
    etcd_port: int = 0
    token: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    # What a node-running subclass changes: admission, authorization, controllers, extra
    # tokens and certificate addresses.
    controllers = CONTROLLERS

    def _apiserver_args(self, pki: Path) -> list[str]:
        return ["--authorization-mode", "RBAC",
                "--allow-privileged=true", "--disable-admission-plugins", "ServiceAccount"]

    def _controller_manager_args(self) -> list[str]:
        return ["--use-service-account-credentials=false"]

    def _extra_tokens(self) -> str:
        return ""

    def _service_ip(self) -> str:
        import ipaddress

        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    def _bin(self, name: str) -> str:
        p = self.bindir / name
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing: run `make tools` (scripts/tools.sh) first")
        return str(p)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.pids[name] = proc.pid

    def start(self, timeout: float = 120.0) -> LocalCluster:
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = self.workdir / "pki"
        _write_pki(pki, tuple(dict.fromkeys(("127.0.0.1", self.host, self._service_ip()))))
        self.etcd_port, peer = free_port(), free_port()
        self.api_port = free_port()
        self.token = secrets.token_hex(24)
        tokens = f'{self.token},sigops-admin,sigops-admin,"system:masters"\n'
        tokens += self._extra_tokens()
        (pki / "tokens.csv").write_text(tokens)
        os.chmod(pki / "tokens.csv", 0o600)
        _log(f"starting etcd on 127.0.0.1:{self.etcd_port}")
        self._spawn("etcd", [
            self._bin("etcd"), "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--quota-backend-bytes", str(2 << 30), "--log-level", "warn",
        ])
        _log(f"starting kube-apiserver on {self.server}")
        self._spawn("kube-apiserver", [
            self._bin("kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{self.etcd_port}",
            "--bind-address", self.host, "--advertise-address", self.host,
            "--secure-port", str(self.api_port),
            "--tls-cert-file", str(pki / "apiserver.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            *self._apiserver_args(pki),
            "--token-auth-file", str(pki / "tokens.csv"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", self.service_cidr,
            "--enable-priority-and-fairness=false", "--profiling=false",
            "--v", "1",
        ])
        self._write_kubeconfig()
        self._wait_ready(timeout - (time.monotonic() - t0))
        _log("starting kube-controller-manager")
        self._spawn("kube-controller-manager", [
            self._bin("kube-controller-manager"),
            "--kubeconfig", str(self.kubeconfig),
            "--authentication-kubeconfig", str(self.kubeconfig),
            "--authorization-kubeconfig", str(self.kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            "--controllers", self.controllers,
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            *self._controller_manager_args(), "--leader-elect=false",
            "--concurrent-deployment-syncs", "5", "--v", "1",
        ])
        self._start_more(time.monotonic() - t0, timeout)
        self._save_state()
        _log(f"ready in {time.monotonic() - t0:.1f}s; KUBECONFIG={self.kubeconfig}")
        return self

    def _start_more(self, elapsed: float, timeout: float) -> None:
        """Hook for the node: more processes after the control plane."""

    def _write_kubeconfig(self) -> None:
        ca = (self.workdir / "pki" / "ca.crt").read_text()
        import base64

        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "sigops-dev",
            "clusters": [{"name": "sigops-dev", "cluster": {
                "server": self.server,
                "certificate-authority-data": base64.b64encode(ca.encode()).decode()}}],
            "users": [{"name": "sigops-admin", "user": {"token": self.token}}],
            "contexts": [{"name": "sigops-dev", "context": {"cluster": "sigops-dev",
                                                            "user": "sigops-admin"}}],
        }
        self.kubeconfig.write_text(json.dumps(cfg, indent=2))
        os.chmod(self.kubeconfig, 0o600)

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.workdir / "pki" / "ca.crt"))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 5.0)
        ctx = self._ssl()
        last = ""
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if not _alive(pid):
                    raise RuntimeError(f"{name} exited during start-up; see "
                                       f"{self.workdir / (name + '.log')}")
            req = urllib.request.Request(f"{self.server}/readyz",
                                         headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready after {timeout:.0f}s ({last})")

    def _save_state(self) -> None:
        (self.workdir / "state.json").write_text(json.dumps({
            "pids": self.pids, "api_port": self.api_port, "etcd_port": self.etcd_port,
            "host": self.host, "kubeconfig": str(self.kubeconfig)}))

    @classmethod
    def load(cls, workdir: Path = DEFAULT_DIR) -> Self | None:
        try:
            st = json.loads((workdir / "state.json").read_text())
        except (OSError, ValueError):
            return None
        c = cls(workdir=workdir, api_port=st["api_port"], etcd_port=st["etcd_port"],
                host=st.get("host", "127.0.0.1"), pids=st["pids"])
        return c

    def running(self) -> bool:
        return bool(self.pids) and all(_alive(p) for p in self.pids.values())

    def stop(self) -> None:
        """Stop every process by pid (controller manager first, etcd last)."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            pid = self.pids.get(name)
            if pid:
                _kill(pid)
        self.pids.clear()
        try:
            (self.workdir / "state.json").unlink()
        except OSError:
            pass

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of each process in MiB (from /proc)."""
        out = {}
        for name, pid in self.pids.items():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1]) / 1024
            except OSError:
                pass
        return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _kill(pid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.cluster")
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--bin", type=Path, default=DEFAULT_BIN)
    a = p.parse_args(argv)
    existing = LocalCluster.load(a.dir)
    if a.action == "up":
        if existing and existing.running():
            _log(f"already running; KUBECONFIG={existing.kubeconfig}")
            return 0
        if existing:
            existing.stop()
        import shutil

        shutil.rmtree(a.dir, ignore_errors=True)
        c = LocalCluster(workdir=a.dir, bindir=a.bin).start()
        print(f"export KUBECONFIG={c.kubeconfig}")
        return 0
    if a.action == "down":
        if existing:
            existing.stop()
            _log("stopped")
        else:
            _log("not running")
        return 0
    return print_status(existing)


def print_status(existing: LocalCluster | None) -> int:
    """``status``: whether it runs, its kubeconfig and the processes' memory; exit 1 if not."""
    if existing and existing.running():
        print(json.dumps({"running": True, "kubeconfig": str(existing.kubeconfig),
                          "rss_mb": existing.rss_mb()}))
        return 0
    print(json.dumps({"running": False}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
