"""``kubectl sigops audit``: what a SignatureAudit asks, its progress, the check of its signed
summary, and its report (Markdown and CSV). Pure: objects in, text out; the API and the
picture are elsewhere.

A status is trusted only through its summary, signed by the operator when the audit ended:
it must verify with a published key not revoked when it was signed, name this audit (its
``namespace/name``, UID and namespace), and agree with the status it stands for -- phase,
counts, each index's digest, and by digest every total and listed record and the spec the
audit ran. A summary that does not is :class:`SummaryRejected`, never a report.

Finding records come from WAL content that a client of the backend wrote: a ``pcs_id``, a
key id, a file name may be anything. The CSV neutralizes cells a spreadsheet would run as a
formula and keeps one line per row; the Markdown escapes what would format or link.

>>> same_spec(audit_spec(DEFAULT_DEPLOYMENT, None, None, ["k2", "k1"]),
...           {"target": {}, "lookFor": {"keyIds": ["k1", "k2"]}, "shards": 1}, "ns")
[]
>>> csv_cell("=cmd|' /C calc'!A0")
"'=cmd|' /C calc'!A0"
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ...audit.status import digest_of
from ...core.audit import FINDINGS, NONE, OTHER
from ...core.errors import SignalRejected
from ...core.signals import verify_signal
from .refs import parse_ts

__all__ = ["DEFAULT_DEPLOYMENT", "TERMINAL", "SummaryRejected", "SummaryCheck", "audit_spec",
           "same_spec", "progress_line", "check_summary", "audit_markdown", "findings_csv",
           "csv_cell", "md", "code", "hourly", "report_files", "CSV_COLUMNS"]

DEFAULT_DEPLOYMENT = "fractal-lba-backend"
TERMINAL = ("Succeeded", "Failed", "Refused")
CSV_COLUMNS = ("finding", "index", "received", "pcs_id", "verdict", "kid", "input")
_DIMS = (("by_verdict", "verdict"), ("by_kid", "key id"), ("by_profile", "profile"),
         ("by_tenant", "tenant"), ("by_shard", "PCS shard"))


class SummaryRejected(Exception):
    """The status is not vouched for by the operator: ``reason`` (a word) and what."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SummaryCheck:
    """A summary that verified: its payload, its key id, and what it could not cover."""

    payload: dict[str, Any]
    key_id: str
    notes: list[str] = field(default_factory=list)


def report_files(name: str) -> tuple[str, str, str]:
    """The Markdown, CSV and PNG file names of audit ``name``'s report."""
    return f"audit-{name}.md", f"audit-{name}-findings.csv", f"audit-{name}-findings.png"


# -- the spec ---------------------------------------------------------------------------------


def audit_spec(deployment: str, since: str | None, until: str | None,
               key_ids: Sequence[str] = (), fingerprints: Sequence[str] = (),
               accepted_invalid: bool = False, everything: bool = False,
               shards: int = 1, parallelism: int = 1) -> dict[str, Any]:
    """The spec of a SignatureAudit of Deployment ``deployment`` in the audit's namespace."""
    look: dict[str, Any] = {}
    if key_ids:
        look["keyIds"] = sorted(set(key_ids))
    if fingerprints:
        look["fingerprints"] = sorted(set(fingerprints))
    if accepted_invalid:
        look["acceptedInvalid"] = True
    if everything:
        look["all"] = True
    spec: dict[str, Any] = {"target": {"deployment": deployment}, "lookFor": look,
                            "shards": shards, "parallelism": parallelism}
    if since:
        spec["since"] = since
    if until:
        spec["until"] = until
    return spec


def _norm(spec: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """A spec with the API server's defaults filled in, times as instants, lists as sets."""
    target = spec.get("target") or {}
    look = spec.get("lookFor") or {}

    def when(v: Any) -> Any:
        return parse_ts(v) or v

    return {
        "target namespace": target.get("namespace") or namespace,
        "deployment": target.get("deployment") or DEFAULT_DEPLOYMENT,
        "since": when(spec.get("since")), "until": when(spec.get("until")),
        "key ids": sorted(set(look.get("keyIds") or [])),
        "fingerprints": sorted(set(look.get("fingerprints") or [])),
        "accepted-invalid": bool(look.get("acceptedInvalid")), "all": bool(look.get("all")),
        "shards": spec.get("shards") or 1, "parallelism": spec.get("parallelism") or 1,
    }


def same_spec(want: Mapping[str, Any], have: Mapping[str, Any], namespace: str) -> list[str]:
    """What differs between the spec asked for and an existing audit's (empty: the same)."""
    a, b = _norm(want, namespace), _norm(have, namespace)
    return [f"{k}: {_show(b[k])} there, {_show(a[k])} asked" for k in a if a[k] != b[k]]


def _show(v: Any) -> str:
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(v, list):
        return ",".join(map(str, v)) or "none"
    return "unset" if v is None else str(v)


def _asked(spec: Mapping[str, Any]) -> str:
    look = spec.get("lookFor") or {}
    parts = []
    if look.get("keyIds"):
        parts.append("records signed with key id " + ", ".join(map(str, look["keyIds"])))
    if look.get("fingerprints"):
        parts.append("records signed with the key of fingerprint "
                     + ", ".join(map(str, look["fingerprints"])))
    if look.get("acceptedInvalid"):
        parts.append("records a backend accepted that sigops judges invalid")
    if look.get("all"):
        parts.append("every invalid record (a full re-verification)")
    return "; ".join(parts) or "nothing"


# -- progress ---------------------------------------------------------------------------------


def progress_line(obj: Mapping[str, Any]) -> str:
    """One line of where an audit is: ``Running: 2/4 indexes done, 120,000 records, 3
    findings``."""
    st = obj.get("status") or {}
    phase = st.get("phase") or "Pending"
    done = (st.get("progress") or {}).get("summary")
    total = (st.get("totals") or {}).get("total")
    parts = [f"{done} indexes done" if done else "waiting for the operator"]
    if total is not None:
        parts.append(f"{int(total):,} records")
    if st.get("findingsCount") is not None:
        n = int(st["findingsCount"])
        parts.append(f"{n:,} finding{'' if n == 1 else 's'}")
    failed = [r.get("index") for r in (st.get("progress") or {}).get("indexes") or []
              if r.get("state") == "Failed"]
    if failed:
        parts.append(f"failed index(es): {', '.join(map(str, failed))}")
    return f"{phase}: {', '.join(parts)}"


# -- the signed summary -----------------------------------------------------------------------


def check_summary(obj: Mapping[str, Any], pubkeys: Mapping[str, bytes],
                  revoked: Mapping[str, str] | None = None) -> SummaryCheck:
    """The payload of the audit's signed summary, checked against the status; raises
    :class:`SummaryRejected` when the summary is missing, does not verify, is another
    audit's, or disagrees with the status."""
    meta = obj.get("metadata") or {}
    st = obj.get("status") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    signal = st.get("summary")
    if not isinstance(signal, Mapping):
        raise SummaryRejected("unsigned", f"sau/{name} has no signed summary (phase "
                                          f"{st.get('phase') or 'Pending'}): nothing vouches "
                                          "for its status")
    try:
        payload = verify_signal(signal, pubkeys)
    except SignalRejected as e:
        raise SummaryRejected(e.reason, f"the signed summary of sau/{name} does not verify: "
                                        f"{e.reason}" + (f" ({e.detail})" if e.detail else "")
                              ) from None
    kid = str(signal.get("key_id"))
    when = str(payload.get("detected_at", ""))
    if revoked and kid in revoked and when >= revoked[kid]:
        raise SummaryRejected("revoked_key", f"the summary of sau/{name} was signed at {when} "
                                             f"with key {kid}, revoked at {revoked[kid]}")

    def bad(what: str) -> SummaryRejected:
        return SummaryRejected("mismatch", f"the status of sau/{name} does not match its "
                                           f"signed summary: {what}")

    if payload.get("type") != "audit_summary":
        raise SummaryRejected("foreign_record", f"a {payload.get('type')!r} record, not an "
                                                "audit summary")
    want = {"audit": f"{ns}/{name}", "namespace": ns}
    if meta.get("uid"):
        want["uid"] = str(meta["uid"])
    for k, v in want.items():
        if payload.get(k) != v:
            raise SummaryRejected("foreign_record", f"the summary is of {k} "
                                                    f"{payload.get(k)!r}, not {v!r}")
    totals = st.get("totals") or {}
    findings = st.get("findings") or {}
    if payload.get("phase") != st.get("phase"):
        raise bad(f"phase {st.get('phase')!r}, signed {payload.get('phase')!r}")
    for k in ("total", "valid", "invalid"):
        if payload.get(k) != totals.get(k):
            raise bad(f"{k} {totals.get(k)!r}, signed {payload.get(k)!r}")
    counts = {str(n): int(f.get("count", 0)) for n, f in findings.items()
              if isinstance(f, Mapping)}
    if payload.get("findings") != counts:
        raise bad(f"finding counts {counts}, signed {payload.get('findings')}")
    digests = sorted(str(r.get("digest")) for r in (st.get("progress") or {}).get("indexes")
                     or [] if r.get("digest"))
    if sorted(payload.get("digests") or []) != digests:
        raise bad("the digests of what the indexes read")
    notes: list[str] = []
    if "result_digest" in payload:
        if payload["result_digest"] != digest_of({"totals": totals, "findings": findings}):
            raise bad("the totals or listed finding records were changed")
    else:
        notes.append("this summary predates result digests: the counts above are signed, "
                     "the breakdowns and listed records are not")
    if "spec_digest" in payload:
        if payload["spec_digest"] != digest_of(obj.get("spec") or {}):
            raise bad("the spec was changed after the audit ran")
    else:
        notes.append("this summary does not bind the spec: what was asked is shown as stored")
    return SummaryCheck(dict(payload), kid, notes)


# -- escaping ---------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#|~!])")
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _visible(v: Any) -> str:
    """Text with control characters shown as ``\\xNN`` (one line, no terminal tricks)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", "" if v is None else str(v))


def md(v: Any) -> str:
    """Text safe in Markdown prose and table cells: no emphasis, link, image, HTML or line
    break of its own.

    >>> md("*x* [a](b) | <i>")
    '\\\\*x\\\\* \\\\[a\\\\]\\\\(b\\\\) \\\\| &lt;i&gt;'
    """
    text = _visible(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(v: Any) -> str:
    """WAL content (a pcs_id, a key id, a file name) as a code span for a table cell: shown
    exactly, never formatted or linked (a code span has no autolinks); ``|`` escaped for
    the table, control characters as ``\\xNN``.

    >>> code("a`b|c")
    '``a`b\\\\|c``'
    """
    text = _visible(v).replace("|", "\\|")
    if not text:
        return "-"
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def csv_cell(v: Any) -> str:
    """A CSV cell that a spreadsheet shows as text: one that would start a formula gets a
    leading ``'``; control characters are shown as ``\\xNN``."""
    text = _visible(v) if v is not None else ""
    if text.lstrip(" ").startswith(_FORMULA) or str(v).startswith(("\t", "\r")):
        return "'" + text
    return text


# -- the report -------------------------------------------------------------------------------


def _records(findings: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    out: list[tuple[str, Mapping[str, Any]]] = []
    for name in _finding_order(findings):
        first = [r for r in (findings[name] or {}).get("first") or [] if isinstance(r, Mapping)]
        out += [(name, r) for r in sorted(first, key=lambda r: int(r.get("index", 0)))]
    return out


def _finding_order(findings: Mapping[str, Any]) -> list[str]:
    return [n for n in FINDINGS if n in findings] + sorted(n for n in findings
                                                           if n not in FINDINGS)


def findings_csv(obj: Mapping[str, Any]) -> str:
    """One row per listed finding record (each finding lists its first records only; the
    Markdown report gives the full counts)."""
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for name, r in _records((obj.get("status") or {}).get("findings") or {}):
        w.writerow([csv_cell(name), *(csv_cell(r.get(c)) for c in CSV_COLUMNS[1:])])
    return buf.getvalue()


def hourly(findings: Mapping[str, Any]) -> dict[str, list[tuple[datetime, int]]]:
    """Per finding, its count per UTC hour received (from ``by_hour``; from its listed
    records when the status has no hourly counts). Hours unknown or beyond the kept ones are
    left out."""
    out: dict[str, list[tuple[datetime, int]]] = {}
    for name in _finding_order(findings):
        f = findings[name] or {}
        counts: dict[str, int] = {}
        if isinstance(f.get("by_hour"), Mapping):
            counts = {str(h): int(c) for h, c in f["by_hour"].items()}
        else:
            for r in f.get("first") or []:
                t = parse_ts(r.get("received")) if isinstance(r, Mapping) else None
                if t is not None:
                    h = t.astimezone(UTC).strftime("%Y-%m-%dT%H")
                    counts[h] = counts.get(h, 0) + 1
        points = []
        for h, c in counts.items():
            t = parse_ts(f"{h}:00:00Z") if h not in (NONE, OTHER) else None
            if t is not None:
                points.append((t, c))
        out[name] = sorted(points)
    return out


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _counts(title: str, counts: Mapping[str, Any]) -> list[str]:
    rows = sorted(((str(k), int(v)) for k, v in (counts or {}).items()),
                  key=lambda kv: (-kv[1], kv[0]))
    if not rows:
        return []
    return ["", *_table([title, "records"], [(code(k), f"{v:,}") for k, v in rows])]


def audit_markdown(obj: Mapping[str, Any], check: SummaryCheck, generated_at: str,
                   chart: str | None = None, chart_note: str | None = None) -> str:
    """The report of a finished audit whose summary verified (``check``)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    st = obj.get("status") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    target = spec.get("target") or {}
    totals, findings = st.get("totals") or {}, st.get("findings") or {}
    job = st.get("job") or {}
    p = check.payload
    lines = [f"# Signature audit {md(ns)}/{md(name)}", "",
             f"Generated {generated_at} by `kubectl sigops audit`. Phase **{md(st.get('phase'))}**"
             + (f": {md(st.get('message'))}" if st.get("message") else "") + ".", "",
             "## What was asked", "",
             f"- Target: Deployment {md(target.get('namespace') or ns)}/"
             f"{md(target.get('deployment') or DEFAULT_DEPLOYMENT)} (its WAL source -- a "
             "volume or its pods' WAL sidecars --, key history and profile come from the "
             "operator config)",
             f"- Window: received from {md(spec.get('since') or 'the first WAL entry')} "
             f"until {md(spec.get('until') or 'the last one')}",
             *_window_read(totals.get("window")),
             f"- Looked for: {md(_asked(spec))}",
             f"- Shards: {md(job.get('shards') or spec.get('shards') or 1)} index(es), "
             f"{md(job.get('parallelism') or spec.get('parallelism') or 1)} at once"
             + (f" (Job {md(job.get('namespace'))}/{md(job.get('name'))})" if job else ""),
             *([f"- Pods not read: {md(job['podsNotRead'])} (not ready at launch; their "
                "WALs are not in this answer)"] if job.get("podsNotRead") else []),
             "", "## Trust", "",
             f"The status was checked against its summary signed by the operator: key "
             f"{code(check.key_id)}, signed at {md(p.get('detected_at'))}; it verifies with "
             "the published public keys (ConfigMap sigops-signal-pubkeys), names this audit, "
             "and binds the counts, each index's digest"
             + (", every total and listed record" if "result_digest" in p else "")
             + (" and the spec" if "spec_digest" in p else "") + "."]
    lines += [f"Note: {md(n)}." for n in check.notes]
    total, valid, invalid = (int(totals.get(k) or 0) for k in ("total", "valid", "invalid"))
    lines += ["", "## Totals", "",
              f"{total:,} records: {valid:,} valid, {invalid:,} invalid; "
              f"{int(st.get('findingsCount') or 0):,} finding(s)."]
    for key, title in _DIMS:
        lines += _counts(title, totals.get(key) or {})
    lines += ["", "## Findings"]
    if not findings:
        lines += ["", "None asked for."]
    for fname in _finding_order(findings):
        f = findings[fname] or {}
        count = int(f.get("count") or 0)
        first = sorted((r for r in f.get("first") or [] if isinstance(r, Mapping)),
                       key=lambda r: int(r.get("index", 0)))
        lines += ["", f"### {md(fname)}: {count:,}", ""]
        if fname in FINDINGS:
            lines.append(f"{md(FINDINGS[fname][0].upper() + FINDINGS[fname][1:])}.")
        if not count:
            lines += ["", "None found."]
            continue
        shown = f"first {len(first)} of {count:,}" if len(first) < count else "all"
        lines += ["", f"Records ({shown}; all listed rows are in the CSV):", ""]
        lines += _table(["index", "received", "pcs_id", "verdict", "key id", "input"],
                        [(md(r.get("index")), code(r.get("received")),
                          code(r.get("pcs_id")), code(r.get("verdict")),
                          code(r.get("kid")), code(r.get("input"))) for r in first])
    lines += ["", "## Findings over time", ""]
    if chart:
        lines.append(f"![findings per hour]({chart})")
    else:
        lines.append(f"_No chart: {md(chart_note or 'not drawn')}_")
    lines += ["", "## What each index read", ""]
    rows = [(md(r.get("index")), md(r.get("state")), f"{int(r.get('records') or 0):,}",
             f"{int(r.get('findings') or 0):,}", code(r.get("digest")))
            for r in (st.get("progress") or {}).get("indexes") or []]
    lines += _table(["index", "state", "records", "findings", "SHA-256 of its inputs"], rows)
    lines += ["", "With the volume source, a rerun with the same spec over the same WAL files "
                  "gives the same digests and the same answer. Read through the pods' WAL "
                  "sidecars, a rerun reads what the pods hold then (their WALs grow, their "
                  "last 24 hours move): its digests say what it read. An audit only reads, it "
                  "never changes a backend.", ""]
    return "\n".join(lines)


def _window_read(window: Any) -> list[str]:
    """The report line of the window the indexes read (``status.totals.window``), if told."""
    if isinstance(window, Mapping) and window:
        return [f"- Window read: from {md(window.get('since') or 'the first WAL entry')} "
                f"until {md(window.get('until') or 'the last one')}"]
    if isinstance(window, list) and window:
        return ["- Window read: the indexes read different windows: " + "; ".join(
            f"{md((w or {}).get('since'))} to {md((w or {}).get('until'))}"
            for w in window if isinstance(w, Mapping | type(None)))]
    return []
