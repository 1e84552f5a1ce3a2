"""``kubectl sigops report``: a post-incident report in Markdown. Pure: the incident (and what
was measured) in, text out; fetching and plotting happen elsewhere.

Times come from the incident itself: the alert's start, the incident's creation, the signed
actions' times, resolution or escalation. Durations: to detect (alert start to incident),
to act (incident to the first change), to resolve (alert start to Resolved).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .refs import ago, parse_ts
from .story import error_rate_text, incident_story

__all__ = ["Window", "incident_window", "durations", "markers", "build_markdown",
           "rate_summary", "incident_span", "PLOT_FILE", "NO_MATPLOTLIB"]

PLOT_FILE = "error-rate.png"
NO_MATPLOTLIB = ("The error-rate picture needs matplotlib: `pip install 'sigops[report]'`, then "
                 "run this report again.")
LEAD = timedelta(minutes=5)
"""Shown before the alert started and after the incident ended: the rate's rise and fall."""
_ALERT_LEAD_MAX = timedelta(hours=6)
"""An alert's startsAt further back than this before the incident is not plotted from (a
replayed or synthetic alert): the window then starts at the incident."""
_ACTED = ("applied", "undone", "restored")


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    @property
    def step(self) -> float:
        """A query step giving about 300 points (at least 1 s)."""
        return max((self.end - self.start).total_seconds() / 300.0, 1.0)


def _created(obj: Mapping[str, Any]) -> datetime | None:
    return parse_ts((obj.get("metadata") or {}).get("creationTimestamp"))


def _alert_start(obj: Mapping[str, Any]) -> datetime | None:
    return parse_ts(((obj.get("spec") or {}).get("alert") or {}).get("startsAt"))


def _end(obj: Mapping[str, Any]) -> datetime | None:
    st = obj.get("status") or {}
    return parse_ts(st.get("resolvedAt")) or parse_ts(st.get("escalatedAt"))


def incident_window(obj: Mapping[str, Any], now: datetime) -> Window:
    """From a little before the alert started (or the incident opened) to a little after it
    ended (or now, for an open incident)."""
    created = _created(obj) or now
    start = created
    alert = _alert_start(obj)
    if alert is not None and created - _ALERT_LEAD_MAX <= alert < start:
        start = alert
    times = [t for t, _ in markers(obj)]
    end = max([_end(obj) or now, *times])
    return Window(start - LEAD, min(end + LEAD, max(now, end)))


def markers(obj: Mapping[str, Any]) -> list[tuple[datetime, str]]:
    """One marker per signed action: its time and a short label."""
    out = []
    for a in (obj.get("status") or {}).get("actions") or []:
        p = a.get("payload") if isinstance(a, Mapping) else None
        if not isinstance(p, Mapping):
            continue
        t = parse_ts(p.get("detected_at"))
        if t is not None:
            out.append((t, str(p.get("action") or p.get("summary") or "action")))
    return out


def durations(obj: Mapping[str, Any]) -> dict[str, float | None]:
    """Seconds to detect, act and resolve (None when it did not happen or cannot be told)."""
    created, alert, st = _created(obj), _alert_start(obj), obj.get("status") or {}
    acted = [parse_ts(a["payload"].get("detected_at"))
             for a in st.get("actions") or []
             if isinstance(a, Mapping) and isinstance(a.get("payload"), Mapping)
             and a["payload"].get("result") in _ACTED]
    first = min((t for t in acted if t is not None), default=None)
    resolved = parse_ts(st.get("resolvedAt"))
    origin = alert if alert is not None and created is not None and \
        created - _ALERT_LEAD_MAX <= alert <= created else created

    def secs(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else max((b - a).total_seconds(), 0.0)

    return {"detect": secs(origin, created), "act": secs(created, first),
            "resolve": secs(origin, resolved)}


def _fmt(v: float | None) -> str:
    return "—" if v is None else ago(v)


def _cell(s: Any) -> str:
    return str(s if s not in (None, "") else "—").replace("|", "\\|").replace("\n", " ")


def build_markdown(obj: Mapping[str, Any], *, plot: str | None, plot_note: str | None,
                   rate_summary: Mapping[str, Any] | None, threshold: float,
                   query: str | None, verification: Mapping[str, Any] | None,
                   generated_at: str) -> str:
    """The report. ``plot``: the picture's file name next to the report (None: no picture,
    ``plot_note`` says why and how to get it). ``rate_summary``: peak and last value of the
    plotted rate. ``verification``: the result of verifying the signed records, if done."""
    s = incident_story(obj)
    d = durations(obj)
    diag = s["diagnosis"]
    lines = [f"# Post-incident report: {s['namespace']}/{s['name']}", "",
             f"Target `{s['target']}` · outcome **{s['phase']}** · cause "
             f"**{diag.get('cause') or 'unknown'}**"
             + (f" · scenario {diag['scenario']} ({diag.get('title')})"
                if diag.get("scenario") else ""),
             "", f"_Generated {generated_at} by `kubectl sigops report`._", "",
             "## Summary", "",
             "| | |", "|---|---|",
             f"| Alert | {_cell(s['alert'].get('name'))} (started "
             f"{_cell(s['alert'].get('startsAt'))}, source {_cell(s['alert'].get('source'))}) |",
             f"| Cause | {_cell(diag.get('cause'))}"
             + (f" (confidence {float(diag['confidence']):.2f})"
                if diag.get("confidence") is not None else "") + " |",
             f"| Scenario | {_cell(diag.get('scenario'))}"
             + (f" — tried {', '.join(str(x) for x in diag['tried'])}" if diag["tried"] else "")
             + " |",
             f"| Outcome | {_cell(s['outcome']['phase'])}: {_cell(s['outcome'].get('message'))} |",
             f"| Time to detect | {_fmt(d['detect'])} |",
             f"| Time to act | {_fmt(d['act'])} |",
             f"| Time to resolve | {_fmt(d['resolve'])} |",
             "", "## Signature error rate", ""]
    if plot:
        lines.append(f"![Signature error rate of {s['target']}]({plot})")
        lines.append("")
        lines.append(f"Dashed line: the alert threshold ({threshold:g} errors/s). Vertical "
                     "lines: sigops' signed actions, numbered as in the Actions table.")
    else:
        lines.append(f"_No picture: {plot_note or NO_MATPLOTLIB}_")
    if rate_summary:
        lines += ["", f"Peak {float(rate_summary['peak']):.2f}/s, last "
                      f"{float(rate_summary['last']):.2f}/s over "
                      f"{rate_summary['points']} points."]
    if query:
        lines += ["", f"Query: `{query}`"]
    lines += ["", "## Timeline", "", "| Time (UTC) | Event |", "|---|---|"]
    lines += [f"| {_cell(e['at'])} | {_cell(e['event'])} |" for e in s["timeline"]]
    lines += ["", "## Evidence", ""]
    lines += [f"- **{e['source']}**: {e['finding']}" for e in s["evidence"]] or ["- none"]
    lines += ["", "## Cause", "",
              (f"{diag['cause']}." if diag.get("cause") else "Not diagnosed.")
              + (f" Candidates in order: {', '.join(diag['candidates'])}."
                 if diag["candidates"] else "")
              + (f" The detection is signed by `{diag['signedBy']}`." if diag.get("signedBy")
                 else "")]
    lines += ["", "## Actions", "", "| # | Time (UTC) | Action | Result | By | Signed by |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {i + 1} | {_cell(a['at'])} | {_cell(a['summary'])} | {_cell(a['result'])} "
              f"| {_cell(a.get('by') or 'sigops')} | {_cell(a['signer'])} |"
              for i, a in enumerate(s["actions"])] or ["| — | | none | | | |"]
    v = s["verification"]
    lines += ["", "## Verification", "",
              f"- Error rate at the last check: {error_rate_text(v.get('errorRate'))} "
              f"(threshold {threshold:g}/s)",
              f"- Alert resolved: {v.get('alertResolvedAt') or 'no'}",
              f"- Resolved: {v.get('resolvedAt') or 'no'}"]
    if verification is not None:
        if verification.get("valid"):
            lines.append(f"- Signed records: all {verification.get('records')} verify with the "
                         "published public keys, hash chain intact")
        else:
            broken = "; ".join(f"{b.get('where')}: {b.get('reason')}"
                               for b in verification.get("broken") or [])
            lines.append(f"- Signed records: **do not verify** ({broken})")
    if s.get("waiting"):
        w = s["waiting"]
        lines += ["", "## Waiting on", "", w["on"], ""]
        lines += [f"- {c['what']}: `{c['command']}`" for c in w["commands"]]
    comm = (obj.get("status") or {}).get("communication")
    lines += ["", "## Communication", ""]
    lines += ["```", str(comm), "```"] if comm else ["_No status message was filled in._"]
    lines += ["", "## Root cause and follow-ups", "",
              "_To be written by the people who handled the incident: why the cause happened, "
              "what stops it next time._", ""]
    return "\n".join(lines)


def incident_span(obj: Mapping[str, Any], now: datetime) -> tuple[datetime, datetime]:
    """From the incident's creation to its resolution or escalation (now while open)."""
    created = _created(obj) or now
    return created, max(_end(obj) or now, created)


def rate_summary(points: Sequence[tuple[float, float]]) -> dict[str, Any] | None:
    if not points:
        return None
    return {"peak": max(v for _, v in points), "last": points[-1][1], "points": len(points)}
