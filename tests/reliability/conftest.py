"""Reliability tier (issue 9): hostile input, hostile webhooks, crashes and restarts,
dependencies down, idempotency, secret leaks, rate limits and signals.

Every test here that uses a namespace is leak-checked when it ends: before the namespace is
deleted, the key material in its Secrets (and in the operators' own namespaces) is added to
:data:`kit.REGISTRY`, then its Events, custom resources (status, metadata, annotations),
ConfigMaps, Deployment annotations and the test's ``*.log`` files are searched for any
registered value. ``test_zz_no_secret_leaks.py`` repeats the search over the whole cluster and
every log of the session at the end.

The numbers each test measures are printed at the end of the run (and written as JSON to
``$SIGOPS_RELIABILITY_FIGURES``, default ``<pytest basetemp>/reliability-figures.json``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import kit
from tests.support import TOKEN

kit.REGISTRY.add(TOKEN)  # the alert bearer token of the shared intake helpers


@pytest.fixture
def namespace(namespace: str, api: Any, tmp_path: Path) -> Iterator[str]:
    """The suite's namespace, leak-scanned before it is deleted."""
    kit.LOG_DIRS.add(tmp_path)
    yield namespace
    kit.REGISTRY.harvest_secrets(api, namespace)
    for ons in sorted(kit.OPERATOR_NAMESPACES):
        kit.REGISTRY.harvest_secrets(api, ons)
    docs = kit.cluster_documents(api, [namespace, *sorted(kit.OPERATOR_NAMESPACES)])
    docs += kit.log_documents(tmp_path)
    n, size, found = kit.scan(docs)
    kit.bump("leak scan (per test)", documents=n, bytes=size, findings=len(found))
    assert not found, f"key material leaked: {found[:10]}"


@pytest.fixture
def operator_factory(namespace: str, operator_factory: Any) -> Any:
    """The shared factory, remembering each operator's namespace (its signing key lives there).
    Depends on ``namespace`` so that operators stop before the namespace is scanned."""

    def make(*a: Any, **kw: Any) -> Any:
        op = operator_factory(*a, **kw)
        kit.OPERATOR_NAMESPACES.add(op.operator_ns)
        return op

    return make


@pytest.fixture
def inproc_log_scan(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture sigops' own log records (reconcilers run in process) and leak-scan them."""
    caplog.set_level(logging.DEBUG, logger="sigops")
    yield
    n, size, found = kit.scan([("in-process log", caplog.text)])
    kit.bump("leak scan (per test)", documents=n, bytes=size, findings=len(found))
    assert not found, f"key material leaked into log records: {found[:10]}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not kit.FIGURES:
        return
    target = os.environ.get("SIGOPS_RELIABILITY_FIGURES")
    factory = getattr(config, "_tmp_path_factory", None)
    base = Path(str(factory.getbasetemp())) if factory else Path(tempfile.gettempdir())
    path = Path(target) if target else base / "reliability-figures.json"
    path.write_text(json.dumps(kit.FIGURES, indent=2, sort_keys=True, default=str))
    tr = terminalreporter
    tr.section("reliability figures (measured in this run)")
    for section in sorted(kit.FIGURES):
        tr.write_line(f"{section}: {json.dumps(kit.FIGURES[section], sort_keys=True, default=str)}")
    tr.write_line(f"(written to {path})")
