"""The audit of one shard of a fleet: inbox WALs read once, every record judged with a
target's key history, counted and sampled with bounded memory (issue 27).

A shard is one or more inbox WAL buffers (a backend pod's WAL, or files of an archive). Each
record gets the verdict ``sigops verify`` gives it with the same key ring -- the same
:class:`~sigops.core.diagnose.Diagnoser`, judged and settled in input order exactly as
:mod:`sigops.core.batch` does in one process -- so an audit's totals equal a single-process
``sigops verify`` of the same files, record for record. With the compiled reader, the records
valid by the short route come in runs (:meth:`~sigops.core.diagnose.Diagnoser.check_runs`),
remembered and counted a run at a time; every other record gets its row as in ``verify``.

The key history is a key ring whose keys carry their validity windows (``not_before`` /
``not_after``) and, in the managed ring, when each was retired or revoked (``retired_at`` /
``revoked_at``): a key's window ends then. The audit judges a key with a window by its window,
not by today's state: a retired or revoked key was valid until it was retired or revoked; a
key without a window is judged by its state (:func:`history_ring`).

What the WAL does not say is the backend's answer: it stores every body before verification.
A record whose signature verifies, under the target's profile, with a key of the history is
one a backend holding that key accepted; the audit calls such a record *accepted*, and when
sigops judges it invalid all the same (outside its key's window, or too far from its receive
time), *accepted_invalid* -- the finding a leaked key leaves behind.

Memory: counts per dimension keep at most :data:`MAX_KEYS` distinct values (the rest under
``"(other)"``), each finding keeps its first ``first_n`` records and its count by hour (at
most :data:`MAX_HOURS` hours), and the diagnoser's own memory is bounded; the WAL is only
sliced (a ``mmap`` of a file works).

Pure: no Kubernetes, no network; the caller maps the files and signs the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .diagnose import Diagnoser, Run
from .errors import KeyringError, MalformedInput
from .keys import Key, KeyRing
from .timeparse import format_time, parse_time
from .wal import Buffer, entry_at

__all__ = ["FINDINGS", "ACCEPTED_INVALID", "MAX_KEYS", "MAX_HOURS", "OTHER", "AuditQuery",
           "ShardInput", "closed_times", "history_ring", "audit_shard", "merge_partials",
           "shard_of"]

FINDINGS: Mapping[str, str] = {
    "accepted_invalid": "verifies under the target's profile with a key of the history, "
                        "yet sigops judges it invalid (outside the key's window, or skewed)",
    "searched_key": "signed with a key the audit looks for (by key id or fingerprint)",
    "invalid": "every record sigops judges invalid (a full re-verification)",
}
"""What an audit can look for: finding name -> meaning."""

ACCEPTED_INVALID = frozenset({"stale_key", "pending_key", "clock_skew"})
"""Causes whose record verifies under the target's profile with a known key: a backend that
held the key accepted it, sigops does not."""
_SIGNED_OWN = ACCEPTED_INVALID | {"valid"}
MAX_KEYS = 1000
"""Distinct values kept per count dimension (kid, profile, PCS shard, tenant)."""
OTHER = "(other)"
NONE = "-"
TALLY_BOUND = 4096
"""Distinct (verdict, kid, profile, PCS shard) combinations an audit tallies before it adds
them into its bounded counts (:func:`audit_shard`)."""
MAX_HOURS = 24 * 93
"""Distinct hours kept per finding's ``by_hour`` count (a quarter; the rest under
``"(other)"``)."""


def _received(buf: Buffer, at: int) -> str | None:
    """The time a finding record shows: that of the WAL entry at byte ``at`` of ``buf``,
    unless the entry is damaged (a damaged stretch of a file, or the stub a WAL reader
    sidecar sends for one, has no time to trust). Read again only for a finding's record."""
    entry = entry_at(buf, at)[0]
    return entry.received_at if entry is not None and entry.error is None else None


def _hour(received: str | None) -> str:
    """The UTC hour (``2026-11-30T10``) of a WAL entry's time, :data:`NONE` if unknown.

    >>> _hour("2026-11-30T10:59:59.123456789Z"), _hour("2026-11-30T12:30:00+02:00")
    ('2026-11-30T10', '2026-11-30T10')
    """
    if received is None:
        return NONE
    if received.endswith("Z") and received[13:14] == ":":  # the WAL's usual form: no parse
        return received[:13]
    try:
        return format_time(parse_time(received))[:13]
    except MalformedInput:
        return NONE


@dataclass(frozen=True)
class AuditQuery:
    """What to look for. Looking for nothing is refused, never vacuously answered."""

    key_ids: frozenset[str] = frozenset()
    fingerprints: frozenset[str] = frozenset()
    accepted_invalid: bool = False
    all: bool = False
    since: datetime | None = None
    until: datetime | None = None
    first_n: int = 20

    def __post_init__(self) -> None:
        if not (self.key_ids or self.fingerprints or self.accepted_invalid or self.all):
            raise KeyringError("an audit must look for something: key ids, fingerprints, "
                               "accepted-but-invalid records, or all")
        if self.first_n < 0:
            raise KeyringError("first_n must be >= 0")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise KeyringError("the audit window is empty: until must be after since")

    def findings(self) -> tuple[str, ...]:
        """The findings this query asks for, in :data:`FINDINGS` order."""
        asked = {"accepted_invalid": self.accepted_invalid,
                 "searched_key": bool(self.key_ids or self.fingerprints),
                 "invalid": self.all}
        return tuple(f for f in FINDINGS if asked[f])


@dataclass(frozen=True)
class ShardInput:
    """One WAL of a shard: a name to report (a file name, never its contents), the bytes."""

    name: str
    data: Buffer = field(repr=False)
    tenant: str | None = None
    """The tenant whose traffic this WAL holds, if known (the WAL body does not say)."""


def closed_times(doc: Any) -> dict[str, datetime]:
    """When each key of a keyring document stopped being valid, as its entries record it:
    the earlier of ``revoked_at`` and ``retired_at`` (the managed ring writes them; a
    keyring file may too). Entries without either are left out."""
    out: dict[str, datetime] = {}
    for e in (doc.get("keys") if isinstance(doc, Mapping) else None) or []:
        if not isinstance(e, Mapping) or not isinstance(e.get("kid"), str):
            continue
        times = []
        for name in ("revoked_at", "retired_at"):
            v = e.get(name)
            if isinstance(v, str) and v:
                try:
                    times.append(parse_time(v))
                except MalformedInput:
                    raise KeyringError(f"key {e['kid']!r}: {name} is not a time") from None
        if times:
            out[e["kid"]] = min(times)
    return out


def history_ring(ring: KeyRing, closed: Mapping[str, datetime] | None = None) -> KeyRing:
    """``ring`` judged as a history. A key whose end is known (``closed``: kid -> when it
    was revoked or retired, see :func:`closed_times`) is valid until then: its window ends
    there and it counts by its window, even if revoked today (records signed before its
    revocation were valid; after it, ``stale_key``). A key with a window counts by its
    window; any other key by its state (a revoked key with no recorded time: never)."""
    keys: list[Key] = []
    for k in ring.keys:
        end = (closed or {}).get(k.kid)
        if end is not None:
            na = end if k.not_after is None else min(k.not_after, end)
            # "revoked" is never accepted, whatever the window: judged as retired at ``end``.
            k = Key(k.kid, k.alg, "retired" if k.state == "revoked" else k.state, k.secret,
                    k.public, k.private_seed, k.not_before, na)
        keys.append(k)
    accepts = {k.kid for k in keys if k.state != "revoked" and (
        k.not_before is not None or k.not_after is not None or ring.accepts(k))}
    return KeyRing(tuple(keys), ring.profile, ring.max_skew_seconds, frozenset(accepts))


class _Counter:
    """Counts by value, at most :data:`MAX_KEYS` distinct values."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, value: str, times: int = 1) -> None:
        """``times`` records with ``value``: the same as ``times`` calls with one (a value
        first seen while there is room is kept, whatever its count)."""
        c = self.counts
        if value in c:
            c[value] += times
        elif len(c) < MAX_KEYS:
            c[value] = times
        else:
            c[OTHER] = c.get(OTHER, 0) + times


def _digest(h: Any, data: Buffer) -> str:
    """``h`` (a running SHA-256) updated with ``data``; its hex digest so far."""
    step = 1 << 22
    for i in range(0, len(data), step):  # page by page: a mapped file stays mapped
        h.update(data[i:i + step])
    return str(h.hexdigest())


def audit_shard(ring: KeyRing, inputs: Iterable[ShardInput], query: AuditQuery, *,
                max_bytes: int = 1 << 20, accelerate: bool = True) -> dict[str, Any]:
    """The partial result of one shard: totals, counts by verdict, kid, profile, PCS shard
    and tenant, per finding its count, its count by UTC hour received (``by_hour``, at most
    :data:`MAX_HOURS` hours) and its first ``query.first_n`` records (each with the WAL
    entry's time, ``received``), and the SHA-256 of every input read. ``ring`` is judged as
    given (pass :func:`history_ring` of a key history, as the audit Job does) so that
    ``sigops verify`` with the same ring agrees. Consecutive inputs of the same name (the
    pages of one pod) are one input row: their bytes, one running SHA-256 over them all.

    Records are numbered from 0 across all inputs, as ``sigops verify`` numbers them."""
    d = Diagnoser(ring, max_bytes=max_bytes, accelerate=accelerate)
    wanted_kids = set(query.key_ids)
    by_fp = {k.fingerprint: k.kid for k in ring.keys}
    wanted_kids |= {by_fp[f] for f in query.fingerprints if f in by_fp}
    asked = query.findings()
    findings: dict[str, dict[str, Any]] = {f: {"count": 0, "first": [], "by_hour": {}}
                                           for f in asked}
    dims = {n: _Counter() for n in ("by_verdict", "by_kid", "by_profile", "by_shard",
                                    "by_tenant")}
    read: list[dict[str, Any]] = []
    own = d.profile or ring.profile
    n = valid = 0
    runs, settle = d.check_runs, d.settle
    # d.remember, inline on the hot path: the first content per pcs_id, the older half
    # forgotten when the memory is full.
    seen, memory, forget = d._seen, d.content_memory, d._forget_older_half
    remember_batch = d.remember_batch
    want_invalid, want_accepted = "invalid" in findings, "accepted_invalid" in findings
    want_kids = wanted_kids if "searched_key" in findings else set()
    # Each record is counted once, by its (verdict, kid, profile, shard) -- (kid, raw
    # shard) for one valid by the short route -- and the tally is added into the five
    # bounded counts in the order its combinations were first seen: each value of a count is
    # then first seen in the same order as record by record, so the same values are kept
    # and the rest go under OTHER, exactly as when each record was added alone.
    tally: dict[tuple[Any, ...], int] = {}

    def fold() -> None:
        nonlocal valid
        verdicts, kids = dims["by_verdict"].add, dims["by_kid"].add
        profiles, shards = dims["by_profile"].add, dims["by_shard"].add
        for k, c in tally.items():
            if len(k) == 2:  # valid by the short route
                cause, kid, profile, shard = "valid", k[0], own or NONE, str(k[1])
            else:
                cause, kid, profile, shard = k
            verdicts(cause, c)
            kids(kid, c)
            profiles(profile, c)
            shards(shard, c)
            if cause == "valid":
                valid += c
        tally.clear()

    def note(name: str, index: int, pcs_id: str | None, cause: str, kid: str | None,
             src: str, received: str | None) -> None:
        f = findings[name]
        f["count"] += 1
        hour = _hour(received)
        hours = f["by_hour"]
        if hour in hours or len(hours) < MAX_HOURS:
            hours[hour] = hours.get(hour, 0) + 1
        else:
            hours[OTHER] = hours.get(OTHER, 0) + 1
        if len(f["first"]) < query.first_n:
            f["first"].append({"index": index, "pcs_id": pcs_id, "verdict": cause,
                               "kid": kid, "input": src, "received": received})

    get = tally.get
    running: Any = None
    for src in inputs:
        data = src.data
        if read and read[-1]["name"] == src.name:  # the next page of the same pod
            row = read[-1]
            row["bytes"] += len(data)
        else:
            running = hashlib.sha256()
            row = {"name": src.name, "bytes": len(data)}
            read.append(row)
        row["sha256"] = _digest(running, data)
        first = n
        # Many records per call of the compiled reader: runs of records valid by the short
        # route, counted here without a row each; the rows of check_wal for the others.
        for item in runs(data, first, query.since, query.until):
            if isinstance(item, Run):
                rkid = item.kid
                remember_batch(item.contents())
                for shard, count in item.shards:
                    key: tuple[Any, ...] = (rkid, shard)
                    tally[key] = get(key, 0) + count
                    if len(tally) > TALLY_BOUND:
                        fold()
                if rkid in want_kids:
                    for k, at in enumerate(item.starts):
                        note("searched_key", item.index + k, item.pcs_ids[k], "valid", rkid,
                             src.name, _received(data, at))
                n += len(item.starts)
                continue
            v, kid, content = item
            i = n
            n += 1
            pcs_id: str | None
            if v is None:  # valid by the short route (as batch.Settler settles it)
                assert content is not None
                pcs_id = content[0]
                if pcs_id not in seen:
                    if len(seen) >= memory:
                        forget()
                    seen[pcs_id] = content
                key = (kid, content[3])
                c = get(key)
                if c is not None:
                    tally[key] = c + 1
                    if kid not in want_kids:
                        continue
                else:
                    tally[key] = 1
                    if len(tally) > TALLY_BOUND:
                        fold()
                    if kid not in want_kids:
                        continue
                note("searched_key", i, pcs_id, "valid", kid, src.name,
                     _received(data, d.at))
                continue
            v = settle(v, content)
            cause, pcs_id, kid = v.cause, v.pcs_id, v.kid
            key = (cause, kid or NONE, v.profile or NONE,
                   str(content[3]) if content is not None else NONE)
            tally[key] = get(key, 0) + 1
            if len(tally) > TALLY_BOUND:
                fold()
            if cause != "valid" and want_invalid:
                note("invalid", i, pcs_id, cause, kid, src.name, _received(data, d.at))
            if cause in ACCEPTED_INVALID and want_accepted:
                note("accepted_invalid", i, pcs_id, cause, kid, src.name,
                     _received(data, d.at))
            # A kid is named only when a key verifies the record (any profile).
            if kid is not None and kid in want_kids:
                note("searched_key", i, pcs_id, cause, kid, src.name, _received(data, d.at))
        if n > first:
            dims["by_tenant"].add(src.tenant or NONE, n - first)
    fold()
    whole = hashlib.sha256("\n".join(f"{r['sha256']} {r['bytes']} {r['name']}"
                                     for r in read).encode()).hexdigest()
    known = {k.kid for k in ring.keys}
    return {
        "total": n,
        "valid": valid,
        "invalid": n - valid,
        **{name: c.counts for name, c in dims.items()},
        "findings": findings,
        "inputs": read,
        "digest": whole,
        "window": {"since": None if query.since is None else format_time(query.since),
                   "until": None if query.until is None else format_time(query.until)},
        "profile": own,
        "unknown_key_ids": sorted(query.key_ids - known),
        "unknown_fingerprints": sorted(query.fingerprints - set(by_fp)),
    }


def merge_partials(partials: Iterable[Mapping[str, Any]], first_n: int = 20) -> dict[str, Any]:
    """The totals of several shards' partial results (counts added, each finding's first
    records kept in shard order up to ``first_n`` and its count by hour added, at most
    :data:`MAX_HOURS` hours, the digests of the shards listed, and the ``window`` read: the
    shards' one if they agree, else the list of each shard's)."""
    out: dict[str, Any] = {"total": 0, "valid": 0, "invalid": 0, "findings": {},
                           "digests": []}
    dims = ("by_verdict", "by_kid", "by_profile", "by_shard", "by_tenant")
    for name in dims:
        out[name] = {}
    windows: list[Any] = []
    for p in partials:
        for k in ("total", "valid", "invalid"):
            out[k] += int(p.get(k, 0))
        for name in dims:
            acc = out[name]
            for value, c in (p.get(name) or {}).items():
                acc[value] = acc.get(value, 0) + int(c)
        for name, f in (p.get("findings") or {}).items():
            acc = out["findings"].setdefault(name, {"count": 0, "first": [], "by_hour": {}})
            acc["count"] += int(f.get("count", 0))
            room = first_n - len(acc["first"])
            acc["first"].extend(list(f.get("first") or [])[:max(room, 0)])
            hours = acc["by_hour"]
            for hour, c in sorted((f.get("by_hour") or {}).items()):
                if hour not in hours and len(hours) - (OTHER in hours) >= MAX_HOURS:
                    hour = OTHER
                hours[hour] = hours.get(hour, 0) + int(c)
        out["digests"].append(p.get("digest"))
        windows.append(p.get("window"))
    if windows:  # the window read: one if every shard read the same, else each shard's
        out["window"] = windows[0] if all(w == windows[0] for w in windows) else windows
    return out


def shard_of(paths: Sequence[str], shards: int, index: int) -> list[str]:
    """The files of index ``index`` of ``shards``: every ``shards``-th of the sorted
    listing, so the indexes of one audit read each file exactly once."""
    if not 0 <= index < shards:
        raise ValueError(f"index {index} is not one of {shards} shards")
    return [p for i, p in enumerate(sorted(paths)) if i % shards == index]
