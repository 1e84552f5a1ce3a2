"""``kubectl sigops explain``: the story of an incident or a rotation, in order, from what is
stored in the object. Pure: an object in, a JSON-able story out, and a terminal rendering.

The story is built from status as the operator wrote it; ``verify`` is what checks that the
signed parts of it are genuine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

from ...core.scenarios import SCENARIOS
from ...rotation.model import TERMINAL as ROTATION_TERMINAL
from .refs import parse_ts, ref_of

__all__ = ["error_rate_text", "story", "incident_story", "rotation_story", "render",
           "commands_for", "ROTATION_TERMINAL"]

_INCIDENT_DONE = frozenset({"Resolved", "Escalated", "RateLimited", "Refused"})


def story(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The story of a SignatureIncident or a KeyRotation."""
    ref = ref_of(dict(obj))
    return incident_story(obj) if ref.short == "si" else rotation_story(obj)


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return str(m.get("name") or ""), str(m.get("namespace") or "")


def _ready(st: Mapping[str, Any]) -> dict[str, Any]:
    for c in st.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            return dict(c)
    return {}


def commands_for(obj: Mapping[str, Any]) -> list[dict[str, str]]:
    """What a person may do next, with the exact command."""
    ref = ref_of(dict(obj))
    name, ns = _meta(obj)
    st = obj.get("status") or {}
    phase = st.get("phase") or ("Detected" if ref.short == "si" else "Pending")
    flag = f" -n {ns}" if ns else ""
    if ref.short == "si":
        reason = _ready(st).get("reason")
        if phase == "AwaitingApproval" and reason != "DryRun":
            scen = st.get("scenario")
            return [{"what": f"approve scenario {scen}",
                     "command": f"kubectl sigops approve si/{name}{flag}"},
                    {"what": f"deny scenario {scen} (the next candidate is tried, else the "
                             "incident escalates)",
                     "command": f"kubectl sigops deny si/{name}{flag}"}]
        return []
    if phase not in ROTATION_TERMINAL and not (obj.get("spec") or {}).get("abort"):
        return [{"what": "stop the rotation and undo every change it made",
                 "command": f"kubectl sigops abort kr/{name}{flag}"}]
    return []


def _signed(records: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for r in records or []:
        if not isinstance(r, Mapping):
            continue
        p = r.get("payload") if isinstance(r.get("payload"), Mapping) else {}
        out.append({"payload": dict(p or {}), "signer": r.get("key_id")})
    return out


def _evidence(ev: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One line of evidence per source the operator looked at."""
    out: list[dict[str, Any]] = []
    samples = ev.get("samples") or {}
    rep = samples.get("report") or {}
    if samples.get("source") or rep:
        by = rep.get("by_cause") or {}
        out.append({"source": f"failed samples ({samples.get('source') or 'no source'})",
                    "finding": (f"{rep.get('total', 0)} samples: "
                                + ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
                                + (f"; dominant {rep['dominant_cause']}"
                                   if rep.get("dominant_cause") else ""))
                    if rep else "none read"})
        skew = rep.get("skew")
        if isinstance(skew, Mapping) and skew.get("offset_seconds") is not None:
            out.append({"source": "sample clocks",
                        "finding": f"offset {skew.get('offset_seconds')}s "
                                   f"({skew.get('scope', 'scope unknown')})"})
        drift = rep.get("drift")
        if isinstance(drift, Mapping) and drift.get("summary"):
            out.append({"source": "canonical forms", "finding": str(drift["summary"])})
    if ev.get("errorRate") is not None:
        out.append({"source": "Prometheus", "finding": f"signature error rate "
                                                      f"{float(ev['errorRate']):.2f}/s"})
    if ev.get("skewMetricSeconds") is not None:
        out.append({"source": "Prometheus skew metric",
                    "finding": f"max |offset| {ev['skewMetricSeconds']}s"})
    revs = ev.get("revisions") or []
    if revs or "recentSigningChange" in ev:
        out.append({"source": "Deployment revisions",
                    "finding": f"{len(revs)} recent revision(s); "
                               + ("a signing-config change by someone other than sigops just "
                                  "before the spike" if ev.get("recentSigningChange")
                                  else "no recent signing-config change")})
    rots = ev.get("keyRotations") or []
    if rots:
        out.append({"source": "KeyRotations",
                    "finding": ", ".join(f"{r.get('name')} {r.get('phase')}" for r in rots)})
    probe = ev.get("goldenProbe") or []
    if probe:
        out.append({"source": "golden probe",
                    "finding": ", ".join(f"{p.get('kid')} "
                                         f"{'accepted' if p.get('accepted') else 'refused'}"
                                         for p in probe)})
    for note in ev.get("notes") or []:
        out.append({"source": "note", "finding": str(note)})
    return out


def incident_story(obj: Mapping[str, Any]) -> dict[str, Any]:
    name, ns = _meta(obj)
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    meta = obj.get("metadata") or {}
    t = spec.get("target") or {}
    alert = spec.get("alert") or {}
    phase = st.get("phase") or "Detected"
    scen = st.get("scenario")
    ready = _ready(st)
    signal = _signed([st["signal"]])[0] if isinstance(st.get("signal"), Mapping) else None
    actions = []
    for r in _signed(st.get("actions") or []):
        p = r["payload"]
        a = {"at": p.get("detected_at"), "action": p.get("action"),
             "summary": p.get("summary") or p.get("action"), "result": p.get("result"),
             "scenario": p.get("scenario"), "signer": r["signer"]}
        if isinstance(p.get("by"), Mapping):
            a["by"] = p["by"].get("user")
        actions.append(a)
    pending = st.get("pendingActions") or {}
    plan = [str(s.get("summary") or s.get("action")) for s in pending.get("steps") or []
            if isinstance(s, Mapping)]
    timeline: list[dict[str, Any]] = []

    def at(when: Any, what: str) -> None:
        if when:
            timeline.append({"at": str(when), "event": what})

    at(alert.get("startsAt"), f"alert {alert.get('name') or 'FLKSignatureFailuresSpike'} "
                              "started firing")
    at(meta.get("creationTimestamp"), f"incident opened (source {spec.get('source') or '?'})")
    if signal:
        p = signal["payload"]
        at(p.get("detected_at"), f"diagnosed: cause {p.get('cause')}, scenario "
                                 f"{p.get('scenario')} (signed by {signal['signer']})")
    for a in actions:
        at(a["at"], f"{a['summary']} [{a['result']}]"
                    + (f" (signed by {a['signer']})" if a["signer"] else ""))
    at(st.get("alertResolvedAt"), "alert resolved")
    at(st.get("resolvedAt"), "incident Resolved")
    at(st.get("escalatedAt"), f"incident Escalated: {ready.get('message', '')}")
    timeline.sort(key=lambda e: (parse_ts(e["at"]) is None, parse_ts(e["at"]) or e["at"]))
    waiting = None
    cmds = commands_for(obj)
    if cmds:
        waiting = {"on": f"a person to approve or deny scenario {scen} "
                         f"({SCENARIOS[str(scen)].title if scen in SCENARIOS else '?'})",
                   "commands": cmds}
    elif phase == "AwaitingApproval" and ready.get("reason") == "DryRun":
        waiting = {"on": "nobody: a dry run shows its plan and changes nothing", "commands": []}
    return {
        "kind": "SignatureIncident", "name": name, "namespace": ns,
        "target": f"{t.get('namespace') or ns}/{t.get('deployment') or 'fractal-lba-backend'}",
        "phase": phase, "mode": spec.get("mode"),
        "alert": {"name": alert.get("name"), "fingerprint": alert.get("fingerprint"),
                  "startsAt": alert.get("startsAt"), "value": alert.get("value"),
                  "labels": alert.get("labels") or {}, "source": spec.get("source")},
        "evidence": _evidence(st.get("evidence") or {}),
        "diagnosis": {"cause": st.get("cause"), "confidence": st.get("confidence"),
                      "scenario": scen,
                      "title": SCENARIOS[str(scen)].title if scen in SCENARIOS else None,
                      "candidates": st.get("candidates") or [], "tried": st.get("tried") or [],
                      "signedBy": signal["signer"] if signal else None},
        "plan": plan,
        "actions": actions,
        "verification": {"errorRate": st.get("errorRate"),
                         "verifyStartedAt": st.get("verifyStartedAt"),
                         "alertResolvedAt": st.get("alertResolvedAt"),
                         "resolvedAt": st.get("resolvedAt")},
        "outcome": {"phase": phase, "reason": ready.get("reason"),
                    "message": ready.get("message")},
        "waiting": waiting,
        "timeline": timeline,
    }


def rotation_story(obj: Mapping[str, Any]) -> dict[str, Any]:
    name, ns = _meta(obj)
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    meta = obj.get("metadata") or {}
    t = spec.get("target") or {}
    phase = st.get("phase") or "Pending"
    ready = _ready(st)
    steps = []
    for r in _signed(st.get("history") or []):
        p = r["payload"]
        s = {"at": p.get("detected_at"), "phase": p.get("phase"), "step": p.get("step"),
             "signer": r["signer"]}
        if isinstance(p.get("requested_by"), Mapping):
            s["by"] = p["requested_by"].get("user")
        steps.append(s)
    timeline = [{"at": meta.get("creationTimestamp"), "event": "KeyRotation created"}] \
        if meta.get("creationTimestamp") else []
    timeline += [{"at": s["at"], "event": f"{s['phase']}: {s['step']}"
                  + (f" (signed by {s['signer']})" if s["signer"] else "")}
                 for s in steps if s["at"]]
    cmds = commands_for(obj)
    waiting = None
    if cmds:
        waiting = {"on": (f"the overlap window (old key accepted until {st['overlapUntil']})"
                          if phase in ("Promoted", "Retiring") and st.get("overlapUntil")
                          else "the operator's next step"), "commands": cmds}
    elif spec.get("abort") and phase not in ROTATION_TERMINAL:
        waiting = {"on": "the operator to undo it (abort requested)", "commands": []}
    return {
        "kind": "KeyRotation", "name": name, "namespace": ns,
        "target": f"{t.get('namespace') or ns}/{t.get('deployment') or 'fractal-lba-backend'}",
        "phase": phase, "algorithm": spec.get("algorithm"), "overlap": spec.get("overlap"),
        "dryRun": bool(spec.get("dryRun")),
        "keys": {"new": st.get("newKeyId"), "newFingerprint": st.get("newKeyFingerprint"),
                 "previous": st.get("previousKeyId"), "overlapUntil": st.get("overlapUntil")},
        "plan": [str(p) for p in st.get("plan") or []],
        "steps": steps,
        "outcome": {"phase": phase, "reason": ready.get("reason"),
                    "message": ready.get("message") or st.get("message")},
        "waiting": waiting,
        "timeline": timeline,
    }


# -- terminal rendering ----------------------------------------------------------------------


def error_rate_text(rate: Any) -> str:
    """The error rate as a person reads it; the status says ``n/a`` when Prometheus gave no
    answer (or none is configured), which is no rate at all.

    >>> error_rate_text("0.25")
    '0.25/s'
    >>> error_rate_text("n/a") == error_rate_text(None)
    True
    >>> error_rate_text(None)
    'not measured (no answer from Prometheus)'
    """
    if rate is None or str(rate).strip() in ("", "n/a"):
        return "not measured (no answer from Prometheus)"
    return f"{rate}/s"


def _when(s: Any) -> str:
    t = parse_ts(s)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else str(s or "-")


def render(s: Mapping[str, Any]) -> str:
    """The story as a terminal reads it: headed sections, one line per item."""
    short = "si" if s["kind"] == "SignatureIncident" else "kr"
    lines = [f"{s['kind']} {s['namespace']}/{s['name']}  target {s['target']}  "
             f"phase {s['phase']}"]

    def section(title: str, body: Sequence[str]) -> None:
        lines.append("")
        lines.append(title)
        lines.extend(f"  {b}" for b in (body or ["-"]))

    if short == "si":
        a = s["alert"]
        section("Alert", [f"{a.get('name') or '-'} from {a.get('source') or '?'}, started "
                          f"{_when(a.get('startsAt'))}"
                          + (f", value {a['value']}" if a.get("value") else "")
                          + (f", fingerprint {a['fingerprint']}" if a.get("fingerprint")
                             else "")])
        section("Evidence", [f"{e['source']}: {e['finding']}" for e in s["evidence"]])
        d = s["diagnosis"]
        conf = d.get("confidence")
        section("Cause", [f"{d.get('cause') or 'not diagnosed yet'}"
                          + (f" (confidence {float(conf):.2f})" if conf is not None else "")
                          + (f"; scenario {d['scenario']} {d.get('title') or ''}".rstrip()
                             if d.get("scenario") else "")
                          + (f"; candidates {', '.join(d['candidates'])}" if d["candidates"]
                             else "")
                          + (f"; tried {', '.join(str(x) for x in d['tried'])}" if d["tried"]
                             else "")
                          + (f"; detection signed by {d['signedBy']}" if d.get("signedBy")
                             else "")])
        section("Plan", s["plan"] or ["(nothing pending" + ("; what ran is under Actions)"
                                                            if s["actions"] else ")")])
        section("Actions", [f"{_when(x['at'])}  {x['summary']}  [{x['result']}]"
                            + (f"  by {x['by']}" if x.get("by") else "")
                            + f"  signed by {x['signer'] or '-'}" for x in s["actions"]])
        v = s["verification"]
        section("Verification", [f"error rate {error_rate_text(v.get('errorRate'))}"
                                 + (f"; verifying since {_when(v['verifyStartedAt'])}"
                                    if v.get("verifyStartedAt") else "")
                                 + (f"; alert resolved {_when(v['alertResolvedAt'])}"
                                    if v.get("alertResolvedAt") else "")
                                 + (f"; resolved {_when(v['resolvedAt'])}"
                                    if v.get("resolvedAt") else "")])
    else:
        k = s["keys"]
        section("Rotation", [f"{s.get('algorithm')}, overlap {s.get('overlap') or '336h'}"
                             + (" (dry run)" if s.get("dryRun") else ""),
                             f"new key {k.get('new') or '-'}"
                             + (f" ({k['newFingerprint']})" if k.get("newFingerprint") else "")
                             + f", previous {k.get('previous') or '-'}"
                             + (f", old key accepted until {_when(k['overlapUntil'])}"
                                if k.get("overlapUntil") else "")])
        if s["plan"]:
            section("Plan", s["plan"])
        section("Steps", [f"{_when(x['at'])}  {x['phase']}: {x['step']}"
                          + (f"  by {x['by']}" if x.get("by") else "")
                          + f"  signed by {x['signer'] or '-'}" for x in s["steps"]])
    o = s["outcome"]
    section("Outcome", [f"{o['phase']}" + (f" ({o['reason']})" if o.get("reason")
                                           and o["reason"] != o["phase"] else "")
                        + (f": {o['message']}" if o.get("message") else "")])
    w = s.get("waiting")
    if w:
        section("Waiting on", [w["on"], *(f"{c['what']}:  {c['command']}"
                                          for c in w["commands"])])
    return "\n".join(lines) + "\n"
