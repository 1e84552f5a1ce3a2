"""Test tiers by folder: tests/unit (no cluster), tests/integration (the real local control
plane), tests/e2e (closed loop with Prometheus and Alertmanager). Run a tier alone with
``pytest -m unit`` (or integration, e2e, reliability)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".dev" / "bin"
SHARED = REPO.parent / "shared"

_TIERS = {"unit": "unit", "interop": "unit", "golden": "unit",
          "integration": "integration", "e2e": "e2e", "reliability": "reliability"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(REPO / "tests")
        tier = _TIERS.get(rel.parts[0]) if len(rel.parts) > 1 else None
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def cluster() -> Iterator[object]:
    """The local control plane, started once per session (or reused via SIGOPS_TEST_KUBECONFIG
    pointing at a running `make cluster`). CRDs from crds/ are applied and established."""
    from sigops.dev.cluster import LocalCluster

    reuse = os.environ.get("SIGOPS_TEST_KUBECONFIG")
    c: LocalCluster | None = None
    if reuse:
        kubeconfig = Path(reuse)
    else:
        workdir = REPO / ".dev" / f"test-cluster-{os.getpid()}"
        shutil.rmtree(workdir, ignore_errors=True)
        c = LocalCluster(workdir=workdir, bindir=BIN).start()
        kubeconfig = c.kubeconfig
        shutil.copy(kubeconfig, REPO / ".dev" / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run([str(BIN / "kubectl"), "apply", "-f", str(REPO / "crds")], env=env,
                   check=True, capture_output=True)
    subprocess.run([str(BIN / "kubectl"), "wait", "--for=condition=Established", "--timeout=60s",
                    "crd/keyrotations.sigops.fractal-lba.io",
                    "crd/signatureincidents.sigops.fractal-lba.io"],
                   env=env, check=True, capture_output=True)
    info = {"kubeconfig": kubeconfig, "env": env, "local": c}
    yield type("Cluster", (), info)()
    if c is not None:
        c.stop()
        shutil.rmtree(c.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def api(cluster: object) -> object:
    """A kubernetes ApiClient with admin credentials."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[attr-defined]


@pytest.fixture
def namespace(api: object) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def kubectl(cluster: object, *args: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "kubectl"), *args], env=cluster.env,  # type: ignore[attr-defined]
                          capture_output=True, text=True, check=check, timeout=timeout)


def wait_for(fn, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``fn`` until it returns a truthy value; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def require_tool(name: str) -> str:
    """The path of a tool ``make tools`` provides (.dev/bin first, then PATH). Missing: the
    test is skipped, which CI turns into a failure (see pytest_runtest_makereport)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} missing: run `make tools`")
    return found


class BackgroundCheck:
    """Runs :meth:`check` over and over in a thread while a ``with`` block runs: ``checks``
    counts the rounds that ran, ``violations`` collects what a round found (``check`` returns
    None when all is well). A round that raises (a read racing a write) is counted in
    ``errors`` and tried again. Leaving the block fails when no round ran at all, so "no
    violations" never passes on a check that never looked."""

    interval = 0.05

    def __init__(self) -> None:
        self.checks, self.violations = 0, []  # type: ignore[var-annotated]
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def check(self) -> object:
        raise NotImplementedError

    def __enter__(self):  # type: ignore[no-untyped-def]
        self._t.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        self._t.join(timeout=10)
        if exc_type is None and self.checks == 0:
            last = repr(self.errors[-1]) if self.errors else "none ran"
            raise AssertionError(f"{type(self).__name__}: no check completed ({last})")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                found = self.check()
            except Exception as e:  # noqa: BLE001 - a read racing a write; try again
                self.errors.append(e)
                time.sleep(self.interval)
                continue
            self.checks += 1
            if found is not None:
                self.violations.append(found)
            time.sleep(self.interval)


def kill_on_each_new_phase(phase, op, rng, until: tuple[str, ...],  # type: ignore[no-untyped-def]
                           timeout: float, jitter: float = 0.4, poll: float = 0.05,
                           skip: tuple[object, ...] = ()) -> list[str]:
    """SIGKILL and restart the operator ``op`` once in each phase ``phase()`` reports (a random
    moment after it appears, to land inside the next step now and then) until one of
    ``until``; the phases it was killed in."""
    kills: list[str] = []
    seen: set[object] = set(skip)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = phase()
        if p in until:
            break
        if p not in seen:
            seen.add(p)
            time.sleep(rng.uniform(0.0, jitter))
            op.kill()
            kills.append(str(p))
            op.start()
        time.sleep(poll)
    return kills


class OperatorProcess:
    """`sigops run` as a real process (so tests can SIGKILL and restart it)."""

    def __init__(self, cluster: object, workdir: Path, settings: dict, prometheus_url: str | None,
                 extra_env: dict[str, str] | None = None) -> None:
        import yaml

        from sigops.dev.cluster import free_port

        self.cluster, self.workdir = cluster, workdir
        self.config = workdir / "sigops.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        self.metrics_port, self.alerts_port = free_port(), free_port()
        self.operator_ns = f"sigops-{uuid.uuid4().hex[:6]}"
        self.prometheus_url = prometheus_url
        self.extra_env = extra_env or {}
        self.log = workdir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> OperatorProcess:
        argv = [str(REPO / ".venv" / "bin" / "sigops"), "run", "--config", str(self.config),
                "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                "--alerts-listen", f"127.0.0.1:{self.alerts_port}",
                "--operator-namespace", self.operator_ns]
        if self.prometheus_url:
            argv += ["--prometheus-url", self.prometheus_url]
        env = {**self.cluster.env, **self.extra_env}  # type: ignore[attr-defined]
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"\n==== start {self.starts} ====\n".encode())
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(self.healthy, timeout=30, what="operator /healthz")
        return self

    def healthy(self) -> bool:
        import urllib.request

        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited; log:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz",
                                        timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as in a crash or an OOM kill."""
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def operator_factory(cluster: object, tmp_path: Path) -> Iterator[object]:
    """Start `sigops run` processes with a given config; all stopped at teardown."""
    started: list[OperatorProcess] = []

    def make(settings: dict | None = None, prometheus_url: str | None = None,
             start: bool = True, **kw: object) -> OperatorProcess:
        base = {"reconcile_interval": 0.5, "min_overlap": "1s"}
        op = OperatorProcess(cluster, tmp_path, {**base, **(settings or {})}, prometheus_url,
                             **kw)  # type: ignore[arg-type]
        started.append(op)
        return op.start() if start else op

    yield make
    for op in started:
        op.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI a skipped test is a failure: a missing tool must not pass silently."""
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("CI") == "true" and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI, which is not allowed: {rep.longrepr}"
