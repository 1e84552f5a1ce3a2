"""A SignatureAudit's status from its Job and its indexes' signed partials (issue 27)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pcskit import ed_key
from test_audit_shard import AUDIT_KEY, RING, history_ring, pod_wal

from sigops.audit.partial import sign_partial
from sigops.audit.status import audit_status, digest_of, parse_indexes
from sigops.core.audit import AuditQuery, ShardInput, audit_shard
from sigops.core.signals import load_pubkeys, pubkeys_document, verify_signal
from sigops.signing.records import Signer

pytestmark = pytest.mark.unit

REF = "sre/leak-drill"
PUBLIC = {AUDIT_KEY.kid: AUDIT_KEY.public or b""}
OPERATOR = ed_key("sigops-op", seed_byte=9)
QUERY = AuditQuery(key_ids=frozenset({"leaked-ed"}), accepted_invalid=True)


def partial(i: int, key: Any = AUDIT_KEY, ref: str = REF, index: int | None = None) -> Any:
    result = audit_shard(history_ring(RING), [ShardInput(f"pod-{i}", pod_wal(10_000 * i)[0])],
                         QUERY)
    return sign_partial(key, ref, i if index is None else index, "fractal-lba/backend", result)


def job(completions: int, completed: str = "", failed: str = "", active: int = 0,
        finished: str | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"completedIndexes": completed, "failedIndexes": failed,
                          "active": active}
    if finished:
        st["conditions"] = [{"type": finished, "status": "True"}]
    return {"spec": {"completions": completions}, "status": st}


def test_progress_per_index_while_it_runs() -> None:
    st = audit_status(REF, job(3, completed="0", active=2), {0: partial(0)}, PUBLIC, 20)
    assert st["phase"] == "Running" and st["progress"]["summary"] == "1/3"
    assert [r["state"] for r in st["progress"]["indexes"]] == ["Succeeded", "Running",
                                                                "Running"]
    assert st["totals"]["total"] == st["progress"]["indexes"][0]["records"] > 0
    assert "summary" not in st


def test_done_the_totals_are_merged_and_the_summary_is_signed_by_the_operator() -> None:
    parts = {i: partial(i) for i in range(3)}
    st = audit_status(REF, job(3, completed="0-2", finished="Complete"), parts, PUBLIC, 20,
                      Signer(OPERATOR), {"uid": "u-1", "namespace": "sre"}, "fractal-lba/be")
    assert st["phase"] == "Succeeded" and st["progress"]["summary"] == "3/3"
    one = [audit_shard(history_ring(RING), [ShardInput("p", pod_wal(10_000 * i)[0])], QUERY)
           for i in range(3)]
    assert st["totals"]["total"] == sum(p["total"] for p in one)
    assert st["findingsCount"] == sum(f["count"] for p in one for f in p["findings"].values())
    payload = verify_signal(st["summary"], load_pubkeys(pubkeys_document([OPERATOR])))
    assert payload["type"] == "audit_summary" and payload["uid"] == "u-1"
    assert payload["total"] == st["totals"]["total"] and payload["succeeded"] == 3
    # Every total and listed record is bound by its digest, nulls or not (the API server
    # may drop them), and an edit shows.
    assert payload["result_digest"] == digest_of({"totals": st["totals"],
                                                  "findings": st["findings"]})
    stored = json.loads(json.dumps(st["findings"]), object_hook=lambda d: {
        k: v for k, v in d.items() if v is not None})
    assert digest_of({"totals": st["totals"], "findings": stored}) == payload["result_digest"]
    first = st["findings"]["accepted_invalid"]["first"][0]
    first["pcs_id"] = "=HYPERLINK(1)"
    assert digest_of({"totals": st["totals"], "findings": st["findings"]}) != \
        payload["result_digest"]


@pytest.mark.parametrize("forged", ["other_key", "other_audit", "other_index", "edited"])
def test_a_partial_that_does_not_verify_is_never_merged(forged: str) -> None:
    bad = {"other_key": lambda: partial(1, key=ed_key("mallory", seed_byte=3)),
           "other_audit": lambda: partial(1, ref="sre/another"),
           "other_index": lambda: partial(0, index=0),
           "edited": lambda: partial(1)}[forged]()
    if forged == "edited":
        bad["payload"]["result"]["findings"]["accepted_invalid"]["count"] = 0
    st = audit_status(REF, job(2, completed="0-1", finished="Complete"),
                      {0: partial(0), 1: bad}, PUBLIC, 20)
    assert st["phase"] == "Failed"
    assert st["progress"]["indexes"][1]["state"] == "Failed"
    assert "index 1: partial rejected" in st["message"]
    assert st["totals"]["total"] == st["progress"]["indexes"][0]["records"]


def test_a_failed_index_fails_the_audit_and_is_named() -> None:
    st = audit_status(REF, job(3, completed="0,2", failed="1", finished="Failed"),
                      {0: partial(0), 2: partial(2)}, PUBLIC, 20)
    assert st["phase"] == "Failed" and st["message"] == "indexes failed: 1"
    assert st["progress"]["summary"] == "2/3"


def test_job_index_lists() -> None:
    assert parse_indexes("") == set() and parse_indexes(None) == set()
    assert parse_indexes("0,2-4,7") == {0, 2, 3, 4, 7}


# -- the reconciler's refusals, on the in-memory door ---------------------------------------


@pytest.mark.parametrize(("spec", "reason"), [
    ({"target": {"namespace": "payments"}, "lookFor": {"all": True}}, "NamespaceNotAllowed"),
    ({"target": {}, "lookFor": {}}, "NothingToLookFor"),
    ({"target": {}, "lookFor": {"all": True}, "shards": 500}, "TooManyShards"),
])
def test_an_audit_the_operator_will_not_run_is_refused_and_starts_nothing(
        spec: dict[str, Any], reason: str) -> None:
    from tests.memkube import MemoryKube

    from sigops.audit.reconciler import AuditReconciler
    from sigops.settings import Settings

    kube = MemoryKube()
    settings = Settings.model_validate({
        "targets": [{"namespace": "sre", "walClaim": "wal"},
                    {"namespace": "payments", "walClaim": "wal"}],
        "audit": {"image": "sigops:0.test"}})
    kube.add_cr("sre", "signatureaudits", {"metadata": {"name": "a", "namespace": "sre",
                                                        "uid": "u-1"}, "spec": spec})
    rec = AuditReconciler(kube, settings, Signer(OPERATOR))  # type: ignore[arg-type]
    assert rec.tick(kube.get_cr("sre", "signatureaudits", "a") or {}) == "Refused"
    st = (kube.get_cr("sre", "signatureaudits", "a") or {})["status"]
    (ready,) = st["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert "job" not in st
    # Refused is final: a later tick changes nothing.
    assert rec.tick(kube.get_cr("sre", "signatureaudits", "a") or {}) == "Refused"


def test_doctests() -> None:
    import doctest

    import sigops.audit.status as status_module

    assert doctest.testmod(status_module).failed == 0


def test_the_status_and_its_signed_totals_show_the_window_read() -> None:
    from datetime import UTC, datetime

    q = AuditQuery(all=True, since=datetime(2025, 1, 19, 11, tzinfo=UTC),
                   until=datetime(2025, 1, 20, tzinfo=UTC))
    parts = {i: sign_partial(AUDIT_KEY, REF, i, "fractal-lba/backend", audit_shard(
        history_ring(RING), [ShardInput(f"pod-{i}", pod_wal(10_000 * i)[0])], q))
        for i in range(2)}
    st = audit_status(REF, job(2, completed="0-1", finished="Complete"), parts, PUBLIC, 20,
                      Signer(OPERATOR), {"uid": "u-1", "namespace": "sre"}, "fractal-lba/be")
    assert st["totals"]["window"] == {"since": "2025-01-19T11:00:00Z",
                                      "until": "2025-01-20T00:00:00Z"}
    payload = verify_signal(st["summary"], load_pubkeys(pubkeys_document([OPERATOR])))
    assert payload["result_digest"] == digest_of({"totals": st["totals"],
                                                  "findings": st["findings"]})
