"""Signed history that shows a cut, on the real API server: a user who may patch a rotation's
status in her namespace (``kubectl --as``) removes, reorders or swaps in records, and
``kubectl sigops verify`` fails naming ``truncated``, ``reordered`` or ``foreign_record``,
against the checkpoint the operator published where she cannot write (its own namespace)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client

from sigops.core.keys import HMAC
from tests.integration.test_plugin import sigops
from tests.support import (
    GROUP,
    VERSION,
    get_kr,
    grant_user,
    keyrotation,
    kubectl,
    make_backend,
    phase,
    rotation_target,
    wait_for,
)

pytestmark = pytest.mark.integration
EVE = "eve-status-writer"


def set_history(cluster: Any, ns: str, history: list[dict[str, Any]]) -> None:
    """Eve's write: she may patch the status of rotations in ns, nothing else."""
    r = kubectl(cluster, "--as", EVE, "patch", "kr", "rot", "-n", ns, "--subresource=status",
                "--type", "merge", "-p", json.dumps({"status": {"history": history}}),
                check=False)
    assert r.returncode == 0, r.stderr


def test_a_cut_a_reorder_and_a_foreign_chain_fail_verification(cluster, api, operator_factory,
                                                               tmp_path):
    core = client.CoreV1Api(api)
    mine, other = f"t-hist-{uuid.uuid4().hex[:8]}", f"t-hist-{uuid.uuid4().hex[:8]}"
    for ns in (mine, other):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        make_backend(api, ns, HMAC)
    grant_user(api, mine, EVE, "eve", [client.V1PolicyRule(
        api_groups=[GROUP], resources=["keyrotations", "keyrotations/status"],
        verbs=["get", "list", "patch"])])
    try:
        op = operator_factory({"targets": [rotation_target(mine), rotation_target(other)]})
        for ns in (mine, other):
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, ns, "keyrotations", keyrotation("rot", HMAC, overlap="2s"))
        for ns in (mine, other):
            wait_for(lambda n=ns: phase(api, n, "rot") == "Completed", 60,
                     what=f"the rotation in {ns}")

        def verify() -> tuple[int, str]:
            out = sigops(cluster, "verify", "kr/rot", "-n", mine, "--operator-namespace",
                         op.operator_ns)
            return out.returncode, out.stdout + out.stderr

        code, text = verify()
        assert code == 0 and "valid" in text, text
        history = get_kr(api, mine, "rot")["status"]["history"]
        assert [r["payload"]["seq"] for r in history] == list(range(len(history)))
        # She cannot rewrite the checkpoint.
        r = kubectl(cluster, "--as", EVE, "get", "cm", "sigops-history", "-n", op.operator_ns,
                    check=False)
        assert r.returncode != 0 and "forbidden" in r.stderr.lower()

        set_history(cluster, mine, history[:-1])  # the last record cut
        code, text = verify()
        assert code == 1 and "truncated" in text, text
        set_history(cluster, mine, [])  # all of them
        code, text = verify()
        assert code == 1 and "truncated" in text, text
        swapped = [*history[:-2], history[-1], history[-2]]
        set_history(cluster, mine, swapped)
        code, text = verify()
        assert code == 1 and "reordered" in text, text
        foreign = get_kr(api, other, "rot")["status"]["history"]
        set_history(cluster, mine, foreign)  # genuinely signed, by the same operator
        code, text = verify()
        assert code == 1 and "foreign_record" in text, text
        set_history(cluster, mine, history)
        code, text = verify()
        assert code == 0, text
        # Offline: the object and the checkpoints saved beside it.
        saved = tmp_path / "kr.json"
        saved.write_text(kubectl(cluster, "get", "kr", "rot", "-n", mine, "-o", "json").stdout)
        keys = tmp_path / "keys.yaml"
        keys.write_text(kubectl(cluster, "get", "cm", "sigops-signal-pubkeys", "-n",
                                op.operator_ns, "-o", "yaml").stdout)
        cps = tmp_path / "history.yaml"
        cps.write_text(kubectl(cluster, "get", "cm", "sigops-history", "-n", op.operator_ns,
                               "-o", "yaml").stdout)
        out = sigops(cluster, "verify", "-f", str(saved), "--pubkeys", str(keys),
                     "--checkpoints", str(cps))
        assert out.returncode == 0, out.stdout + out.stderr
        doc = json.loads(saved.read_text())
        doc["status"]["history"] = history[:-1]
        saved.write_text(json.dumps(doc))
        out = sigops(cluster, "verify", "-f", str(saved), "--pubkeys", str(keys),
                     "--checkpoints", str(cps))
        assert out.returncode == 1 and "truncated" in out.stdout, out.stdout + out.stderr
    finally:
        for ns in (mine, other):
            kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)
