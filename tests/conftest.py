"""Test tiers by folder: tests/unit (no cluster), tests/integration (the real local control
plane), tests/e2e (closed loop with Prometheus and Alertmanager). Run a tier alone with
``pytest -m unit`` (or integration, e2e, reliability)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import BIN, REPO, OperatorProcess

_TIERS = {"unit": "unit", "interop": "unit", "golden": "unit",
          "integration": "integration", "e2e": "e2e", "reliability": "reliability",
          "node": "node"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(REPO / "tests")
        tier = _TIERS.get(rel.parts[0]) if len(rel.parts) > 1 else None
        if tier:
            item.add_marker(getattr(pytest.mark, tier))
    # NetworkPolicy enforcement on the node needs kube-router, which `make tools` (and so
    # `make test`) builds. Outside CI, a run without it (pytest by hand after `make venv`)
    # deselects those tests and the header says so; in CI they are kept, and fail without it.
    from devtools.netpol import available

    if not available(BIN) and os.environ.get("CI") != "true":
        keep = [i for i in items if i.get_closest_marker("netpol") is None]
        if len(keep) != len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in keep])
            items[:] = keep


def pytest_report_header(config: pytest.Config) -> str:
    from devtools.netpol import available

    return ("netpol: kube-router built, NetworkPolicy enforced in the node test"
            if available(BIN) else
            "netpol: kube-router not built (make tools): its node tests are deselected")


@pytest.fixture(scope="session")
def cluster() -> Iterator[object]:
    """The local control plane, started once per session (or reused via SIGOPS_TEST_KUBECONFIG
    pointing at a running `make cluster`). CRDs from crds/ are applied and established."""
    from devtools.cluster import LocalCluster

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
                    "crd/signatureincidents.sigops.fractal-lba.io",
                    "crd/signatureaudits.sigops.fractal-lba.io"],
                   env=env, check=True, capture_output=True)
    info = {"kubeconfig": kubeconfig, "env": env, "local": c}
    yield type("Cluster", (), info)()
    if c is not None:
        c.stop()
        shutil.rmtree(c.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def node() -> Iterator[object]:
    """The local node whose pods run (devtools.node), started once per session, with the
    image of `make image` loaded. One node per machine: a running `make cluster` is reused
    and left running. A node started here is stopped at the end, and the machine must then be
    as it was before (sysctls, iptables, nft, nfacct, host paths, cgroups, links): otherwise
    the session fails at teardown with what is left."""
    from devtools.node import DEFAULT_DIR, MachineState, NodeCluster

    running = NodeCluster.load(DEFAULT_DIR)
    own: NodeCluster | None = None
    before: MachineState | None = None
    if running is not None and running.running():
        c = running
    else:
        workdir = REPO / ".dev" / "test-node"
        leftover = NodeCluster.load(workdir)
        if leftover is not None:  # an earlier session died: restore first
            leftover.stop()
        before = MachineState.capture()
        shutil.rmtree(workdir, ignore_errors=True)
        c = own = NodeCluster(workdir=workdir, bindir=BIN).start()
    env = {**os.environ, "KUBECONFIG": str(c.kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}
    yield type("Node", (), {"kubeconfig": c.kubeconfig, "env": env, "local": c})()
    if own is not None and before is not None:
        own.stop()
        shutil.rmtree(own.workdir, ignore_errors=True)
        left = before.differences(MachineState.capture())
        assert left == [], "the node left machine-wide changes: " + "; ".join(left)


@pytest.fixture(scope="session")
def node_api(node: object) -> object:
    """A kubernetes ApiClient for the node cluster (admin)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(node.kubeconfig))  # type: ignore[attr-defined]


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


@pytest.fixture
def operator_factory(cluster: object, tmp_path: Path) -> Iterator[object]:
    """Start `sigops run` processes with a given config; all stopped at teardown."""
    started: list[OperatorProcess] = []

    def make(settings: dict | None = None, prometheus_url: str | None = None,
             start: bool = True, **kw: object) -> OperatorProcess:
        base = {"reconcile_interval": 0.5, "min_overlap": "1s", "last_known_good_after": "0s"}
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
