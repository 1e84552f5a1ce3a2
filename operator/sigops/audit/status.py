"""A SignatureAudit's status from its Job and its indexes' partial results (pure).

Each partial is verified with the audit's public key and must name this audit and its index
(:func:`~sigops.audit.partial.verify_partial`); a partial that does not verify is never
merged, its index is ``Failed`` and the reason is shown. Totals and findings are those of the
verified partials (so they grow while the Job runs); when the Job is done, the merged result
is summarized in a record signed by the operator. The summary binds the counts it names and,
by their digest (:func:`digest_of`), every total and finding record of the status and the
spec the audit ran: a reader holding the operator's public keys can check all of it
(``kubectl sigops audit``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from ..core.audit import merge_partials
from ..core.errors import SignalRejected
from ..core.signals import canonical_payload
from ..signing.records import Signer
from .partial import verify_partial

__all__ = ["parse_indexes", "job_state", "audit_status", "digest_of"]


def _no_nulls(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _no_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list | tuple):
        return [_no_nulls(x) for x in v]
    return v


def digest_of(doc: Any) -> str:
    """SHA-256 (hex) of the RFC 8785 form of ``doc`` with null fields left out (the API
    server may drop them from a stored object): the same before and after a round trip.

    >>> digest_of({"a": 1, "b": None}) == digest_of({"a": 1})
    True
    """
    return hashlib.sha256(canonical_payload({"doc": _no_nulls(doc)})).hexdigest()


def parse_indexes(text: str | None) -> set[int]:
    """A Job's ``completedIndexes``/``failedIndexes`` (``"1,3-5"``) as a set.

    >>> sorted(parse_indexes("1,3-5"))
    [1, 3, 4, 5]
    """
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def job_state(job: Mapping[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` once the Job has finished (its condition says so), else
    None."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def audit_status(audit_ref: str, job: Mapping[str, Any], partials: Mapping[int, Any],
                 public: Mapping[str, bytes], first_n: int, signer: Signer | None = None,
                 subject: Mapping[str, str] | None = None, target: str = "") -> dict[str, Any]:
    """The status of audit ``audit_ref`` (``namespace/name``): ``partials`` maps an index to
    its partial as read from its ConfigMap (missing: not written yet). ``signer`` signs the
    summary once the Job has finished; ``subject`` (the audit's UID and namespace, and the
    digest of its spec) goes into it."""
    spec, st = job.get("spec") or {}, job.get("status") or {}
    shards = int(spec.get("completions") or 0)
    completed, failed = parse_indexes(st.get("completedIndexes")), parse_indexes(
        st.get("failedIndexes"))
    indexes: list[dict[str, Any]] = []
    good: list[dict[str, Any]] = []
    rejected: list[str] = []
    for i in range(shards):
        row: dict[str, Any] = {"index": i}
        signal = partials.get(i)
        if signal is not None:
            try:
                result = verify_partial(signal, public, audit_ref, i)
            except SignalRejected as e:
                row["state"] = "Failed"
                rejected.append(f"index {i}: partial rejected ({e.reason})")
            else:
                good.append(result)
                findings = sum(int(f.get("count", 0))
                               for f in (result.get("findings") or {}).values())
                row.update(state="Succeeded", records=int(result.get("total", 0)),
                           findings=findings, digest=str(result.get("digest", "")))
        elif i in failed:
            row["state"] = "Failed"
        else:
            row["state"] = "Running" if int(st.get("active") or 0) else "Pending"
        if i in completed and row["state"] != "Succeeded" and signal is None:
            row["state"] = "Failed"  # finished without writing its result
            rejected.append(f"index {i}: finished without a result")
        indexes.append(row)
    merged = merge_partials(good, first_n)
    done = sum(1 for r in indexes if r["state"] == "Succeeded")
    finished = job_state(job)
    all_good = done == shards and not rejected
    if finished is None:
        phase = "Running"
    else:
        phase = "Succeeded" if finished == "Complete" and all_good else "Failed"
    findings = merged["findings"]
    status: dict[str, Any] = {
        "phase": phase,
        "progress": {"summary": f"{done}/{shards}", "indexes": indexes},
        "totals": {k: merged[k] for k in ("total", "valid", "invalid", "by_verdict",
                                           "by_kid", "by_profile", "by_shard", "by_tenant",
                                           "window") if k in merged},
        "findings": findings,
        "findingsCount": sum(int(f["count"]) for f in findings.values()),
    }
    failed_rows = [r["index"] for r in indexes if r["state"] == "Failed"]
    if rejected or failed_rows:
        status["message"] = "; ".join(rejected) or \
            f"indexes failed: {', '.join(map(str, failed_rows))}"
    if finished is not None and signer is not None:
        fields: dict[str, Any] = {
            "audit": audit_ref, "phase": phase, "shards": shards, "succeeded": done,
            "total": merged["total"], "valid": merged["valid"], "invalid": merged["invalid"],
            "findings": {n: int(f["count"]) for n, f in findings.items()},
            "digests": [str(d) for d in merged["digests"]],
            "result_digest": digest_of({"totals": status["totals"], "findings": findings}),
            **dict(subject or {})}
        status["summary"] = signer.record([], "audit_summary", target, **fields)
    return status
