"""Signed history that shows a cut: records bound to the object (UID, namespace, sequence
number), the operator's checkpoint of the chain, and revoked signing keys."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from sigops.cli.plugin.checks import verify_object
from sigops.core.keys import ED25519, generate_key
from sigops.signing.checkpoints import checkpoint, checkpoint_key, load_checkpoints
from sigops.signing.records import Signer, subject_of

pytestmark = pytest.mark.unit
KEY = generate_key(ED25519, kid="history-signer", state="active")
SIGNER = Signer(KEY)
PUBKEYS = {KEY.kid: KEY.public or b""}


def rotation(ns: str = "payments", uid: str = "uid-1", steps: int = 5) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "KeyRotation",
                           "metadata": {"name": "rot", "namespace": ns, "uid": uid},
                           "status": {"history": []}}
    for i in range(steps):
        obj["status"]["history"] = SIGNER.append(
            obj["status"]["history"], "keyrotation.step", f"{ns}/be", subject=subject_of(obj),
            step=f"step {i}", phase="Staged", rotation=f"{ns}/rot")
    return obj


def checkpoints_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    meta = obj["metadata"]
    return {checkpoint_key("keyrotations", meta["namespace"], meta["name"]):
            checkpoint(SIGNER, "keyrotations", meta, "status.history",
                       obj["status"]["history"])}


def reasons(obj: dict[str, Any], cps: Any, revoked: Any = None) -> list[str]:
    v = verify_object(obj, PUBKEYS, cps, revoked)
    return [str(f.reason) for f in v.broken]


def test_an_intact_history_with_its_checkpoint_is_valid() -> None:
    obj = rotation()
    v = verify_object(obj, PUBKEYS, checkpoints_of(obj))
    assert v.valid and len(v.findings) == 6, v.to_dict()
    assert [r["payload"]["seq"] for r in obj["status"]["history"]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("cut", [1, 2, 5])
def test_records_cut_from_the_end_are_truncated(cut: int) -> None:
    obj = rotation()
    cps = checkpoints_of(obj)
    obj["status"]["history"] = obj["status"]["history"][:-cut]
    # Without the checkpoint the remaining chain is consistent: only the checkpoint shows it.
    assert reasons(obj, {}) == []
    assert "truncated" in reasons(obj, cps)


def test_reordered_records_are_named() -> None:
    obj = rotation()
    cps = checkpoints_of(obj)
    h = obj["status"]["history"]
    h[3], h[4] = h[4], h[3]
    assert "reordered" in reasons(obj, cps)


def test_a_chain_copied_from_a_namesake_elsewhere_is_foreign() -> None:
    """A genuinely signed history of another namespace's KeyRotation of the same name (and a
    SignatureIncident's, which used to be bound to its name only)."""
    mine = rotation("payments", "uid-1")
    theirs = rotation("mallory", "uid-2")
    forged = copy.deepcopy(mine)
    forged["status"]["history"] = theirs["status"]["history"]
    assert set(reasons(forged, checkpoints_of(mine))) >= {"foreign_record"}
    # The same name, the same namespace, a new object (another UID): foreign too.
    again = copy.deepcopy(mine)
    again["metadata"]["uid"] = "uid-3"
    assert "foreign_record" in reasons(again, {})


def test_a_lagging_checkpoint_is_not_a_cut() -> None:
    """The operator writes the checkpoint right after the status: a crash in between leaves it
    a record behind."""
    obj = rotation(steps=4)
    cps = checkpoints_of(obj)
    obj["status"]["history"] = SIGNER.append(
        obj["status"]["history"], "keyrotation.step", "payments/be", subject=subject_of(obj),
        step="step 4", phase="Staged", rotation="payments/rot")
    assert verify_object(obj, PUBKEYS, cps).valid


def test_a_checkpoint_of_another_object_or_forged_is_refused() -> None:
    obj = rotation()
    other = rotation("mallory", "uid-2")
    key = checkpoint_key("keyrotations", "payments", "rot")
    cps = {key: checkpoints_of(other)[checkpoint_key("keyrotations", "mallory", "rot")]}
    assert "foreign_record" in reasons(obj, cps)
    forged = copy.deepcopy(checkpoints_of(obj))
    forged[key]["payload"]["count"] = 1  # someone edits the ConfigMap: the signature breaks
    assert "bad_signature" in reasons(obj, forged)


def test_records_signed_with_a_revoked_key_after_its_revocation_fail() -> None:
    obj = rotation()
    times = [r["payload"]["detected_at"] for r in obj["status"]["history"]]
    assert "revoked_key" in reasons(obj, {}, {KEY.kid: times[0]})
    assert reasons(obj, {}, {KEY.kid: "2999-01-01T00:00:00Z"}) == []


def test_checkpoints_load_from_a_saved_configmap() -> None:
    obj = rotation()
    saved = {"kind": "ConfigMap", "data": {k: json.dumps(v)
                                           for k, v in checkpoints_of(obj).items()}}
    assert verify_object(obj, PUBKEYS, load_checkpoints(saved)).valid
