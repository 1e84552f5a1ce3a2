"""The closed loop on running pods (the story of `make demo`, asserted): sigops installed by
its chart, the backend as 2 pods of the image, agents as pods, Prometheus scraping the pods,
Alertmanager posting to the operator's Service. A KeyRotation waits for real rollouts; a
forgotten agent group then fires the alert once per backend pod, and sigops opens one
incident, diagnoses it from the pods' own failed samples, runs scenario A (another real
rollout) and resolves it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster import free_port
from devtools.flk import OPERATOR_NS, RELEASE, Flk
from sigops.core.keys import HMAC, generate_key
from tests.support import BIN, REPO, wait_for

NS = "node-loop"


@pytest.fixture
def flk(node: object, tmp_path: Path) -> Iterator[Flk]:
    f = Flk(node.env, node.kubeconfig, tmp_path, NS, BIN)  # type: ignore[attr-defined]
    f.namespace()
    yield f
    f.stop()
    f.helm("uninstall", RELEASE, "-n", OPERATOR_NS, "--wait")
    f.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def phase_of(flk: Flk, kind: str, name: str) -> str | None:
    return (flk.get(kind, "-n", NS, name).get("status") or {}).get("phase")


def test_rotation_then_forgotten_agents_resolved_by_scenario_a(flk: Flk, tmp_path: Path) -> None:
    prom_port = free_port()
    flk.install(prom_port)
    old = generate_key(HMAC, kid="original", state="active")
    url = flk.backend(old)
    stack = flk.monitoring(prom_port)
    flk.agents("healthy-agents", url, rate=10, count=3)
    wait_for(lambda: stack.query("sum(rate(flk_accepted[10s])) > 0"), timeout=90, interval=1,
             what="the healthy agents' PCS accepted")

    flk.apply({"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "KeyRotation",
               "metadata": {"name": "rot"},
               "spec": {"target": {"deployment": "fractal-lba-backend",
                                   "agentSecret": {"name": "agent-key"}},
                        "algorithm": HMAC, "overlap": "10s"}})
    wait_for(lambda: phase_of(flk, "keyrotation", "rot") in ("Completed", "Aborted", "Failed"),
             timeout=180, interval=1, what="the rotation")
    assert phase_of(flk, "keyrotation", "rot") == "Completed"
    # The healthy agents followed their Secret: no signature errors after the rotation.
    wait_for(lambda: stack.query("sum(rate(flk_signature_err[10s])) == 0"), timeout=60,
             interval=1, what="no signature errors from the healthy agents")

    flk.agents("forgotten-agents", url, rate=15, count=2, old_key=old)
    firing = wait_for(lambda: [a for a in stack.alerts("FLKSignatureFailuresSpike")
                               if a["state"] == "firing"], timeout=120, interval=1,
                      what="the alert")
    assert firing

    def ended() -> list[dict[str, Any]]:
        items = flk.get("signatureincidents", "-n", NS)["items"]
        return [i for i in items if (i.get("status") or {}).get("phase")
                in ("Resolved", "Escalated")]

    done = wait_for(ended, timeout=300, interval=1, what="the incident to end")
    items = flk.get("signatureincidents", "-n", NS)["items"]
    assert len(items) == 1, [(i["metadata"]["name"], i.get("status", {}).get("phase"))
                             for i in items]
    inc = done[0]
    st = inc["status"]
    assert (st["phase"], st["cause"], st["scenario"]) == ("Resolved", "KeyRotationInProgress",
                                                          "A"), st.get("message")
    samples = st["evidence"]["samples"]
    assert samples["source"].endswith("backend pods /v1/samples/failures"), samples
    assert samples["source"].startswith("2 of 2"), samples
    # The forgotten agents' key is accepted again; nobody signs with a refused key any more.
    wait_for(lambda: stack.query("sum(rate(flk_signature_err[10s])) == 0"), timeout=60,
             interval=1, what="the error rate back to 0")
    # Anyone can verify the signed detection with the published keys.
    pub = flk.kubectl("get", "cm", "sigops-signal-pubkeys", "-n", OPERATOR_NS, "-o",
                      "jsonpath={.data.pubkeys\\.json}")
    (tmp_path / "pubkeys.json").write_text(pub)
    (tmp_path / "signal.json").write_text(json.dumps(st["signal"]))
    r = subprocess.run([str(REPO / ".venv" / "bin" / "sigops"), "signal", "verify",
                        "--pubkeys", str(tmp_path / "pubkeys.json"),
                        str(tmp_path / "signal.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
