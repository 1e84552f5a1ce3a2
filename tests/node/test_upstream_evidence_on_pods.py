"""Scenarios B and C diagnosed on running pods from what a real FLK backend leaves -- its pod
logs, its inbox WAL (read through the ``sigops wal serve`` sidecar) and its pods' clocks --
with the samples endpoint turned off (upstream has none)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster import free_port
from devtools.flk import BACKEND, Flk
from sigops.core.keys import HMAC, generate_key
from sigops.testbed.manifests import WAL_DIR
from tests.node.support import flk_in
from tests.support import wait_for


@pytest.fixture
def flk(node: object, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flk]:
    # one namespace per scenario
    yield from flk_in(node, tmp_path, "node-up-" + request.node.name.split("_")[1])


def ended(flk: Flk) -> list[dict[str, Any]]:
    return [i for i in flk.get("signatureincidents", "-n", flk.ns)["items"]
            if (i.get("status") or {}).get("phase") in ("Resolved", "Escalated")]


def from_logs_and_wal(st: dict[str, Any], via: str = "sidecar") -> dict[str, dict[str, Any]]:
    evidence = st["evidence"]
    sources = {s["source"]: s for s in evidence["sources"]}
    assert sources["samples"]["status"] == "unavailable", sources
    assert sources["logs"]["status"] == sources["wal"]["status"] == "ok", sources
    assert evidence["samples"]["source"].startswith("inbox WAL of the backend pods"), evidence
    # Both pods' logs were read; which pods saw rejections depends on where the agents'
    # keep-alive connections landed (all on one pod in one CI run).
    assert evidence["logs"]["rejections"] > 0 and evidence["logs"]["by_pod"], evidence["logs"]
    assert "from 2 of 2 pods" in sources["logs"]["detail"], sources["logs"]
    assert f"from 2 of 2 pods ({via})" in sources["wal"]["detail"], sources["wal"]
    return sources


def test_b_backend_clocks_off_named_per_pod(flk: Flk) -> None:
    """The backend pods' clocks run 10 minutes ahead and the backend checks freshness: every
    PCS is refused. sigops reads the skew from the WAL entry times against sent_at, finds
    the pods whose Date header is off, runs B (measure, label nodes for NTP) and, once the
    clocks are right again, resolves."""
    prom_port = free_port()
    # The backend checks freshness (30 s): the target says so, as an SRE would configure it.
    flk.install(prom_port, targets=[{"namespace": flk.ns, "deployment": BACKEND,
                                     "default": True, "maxSkewSeconds": 30}])
    key = generate_key(HMAC, kid="k")
    skewed = ("--clock-offset", "600", "--max-skew", "30")
    url = flk.backend(key, upstream=True, args=skewed)
    stack = flk.monitoring(prom_port)
    flk.agents("agents", url, rate=15, count=3)

    def measured() -> dict[str, Any] | None:
        for i in flk.get("signatureincidents", "-n", flk.ns)["items"]:
            for a in (i.get("status") or {}).get("actions") or []:
                if a["payload"].get("action") == "label-nodes-for-ntp":
                    return i
        return None

    inc = wait_for(measured, timeout=240, interval=1, what="scenario B to act")
    # NTP would now fix the clocks: the backend runs on a right clock again.
    dep = flk.get("deployment", "-n", flk.ns, BACKEND)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["args"] = [a for a in c["args"] if a not in skewed]
    flk.kubectl("replace", "-f", "-", input=json.dumps(dep))

    (inc,) = wait_for(lambda: ended(flk), timeout=240, interval=1, what="the incident to end")
    st = inc["status"]
    assert (st["phase"], st["cause"], st["scenario"]) == ("Resolved", "ClockSkew", "B"), st
    sources = from_logs_and_wal(st)
    skew = st["evidence"]["samples"]["report"]["skew"]
    assert abs(abs(skew["offset_seconds"]) - 600) < 30, skew
    off = {p["name"]: p["clockOffsetSeconds"] for p in st["evidence"]["pods"]}
    assert len(off) == 2 and all(abs(o - 600) < 5 for o in off.values()), off
    measure = next(a["payload"] for a in st["actions"]
                   if a["payload"]["action"] == "measure-skew")
    assert set(measure["measured"]["backendPodsOff"]) == set(off), measure
    assert all(name in measure["summary"] for name in off), measure["summary"]
    assert "off by more than" in sources["pods"]["detail"], sources["pods"]
    wait_for(lambda: stack.query("sum(rate(flk_signature_err[10s])) == 0"), timeout=60,
             interval=1, what="the error rate back to 0")


def test_c_agents_on_another_profile_escalate_from_logs_and_wal(flk: Flk) -> None:
    """Agents sign with the fixed9 form while the backend verifies the python form: C, which
    changes nothing and hands the incident to a person, diagnosed from logs + WAL alone. No
    sidecar here: the WAL is read through pods/exec, which the chart grants only when asked."""
    prom_port = free_port()
    flk.install(prom_port, evidence={"walExec": {"enabled": True, "dir": WAL_DIR}})
    key = generate_key(HMAC, kid="k")
    url = flk.backend(key, upstream=True, sidecar=False)
    flk.monitoring(prom_port)
    gen = flk.get("deployment", "-n", flk.ns, BACKEND)["metadata"]["generation"]
    flk.agents("agents", url, rate=15, count=3, args=("--profile", "fixed9"))
    (inc,) = wait_for(lambda: ended(flk), timeout=240, interval=1, what="the incident to end")
    st = inc["status"]
    assert (st["phase"], st["cause"], st["scenario"]) == ("Escalated", "CanonicalizationDrift",
                                                          "C"), st
    from_logs_and_wal(st, via="pods/exec")
    by_cause = st["evidence"]["samples"]["report"]["by_cause"]
    assert by_cause.get("canonicalization_drift", 0) > 0, by_cause
    assert flk.get("deployment", "-n", flk.ns, BACKEND)["metadata"]["generation"] == gen
