"""``kubectl sigops audit``: create a SignatureAudit (or find the same one), follow it to its
end, check its signed summary, write its report. ``kubectl sigops report sau/NAME`` writes
the report of an audit that has ended.

Following reads the audit with a watch (polling when the user may not watch); Ctrl-C stops
following and leaves the audit running. The audit itself only reads WALs: nothing here, nor
in the operator's Job, changes a backend.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ...core.errors import MalformedInput
from ...core.timeparse import parse_duration, parse_time
from . import EXIT_INVALID, EXIT_OK, EXIT_USAGE, PluginError, _err, _iso, _now, _Session
from .auditreport import (
    TERMINAL,
    SummaryCheck,
    SummaryRejected,
    audit_markdown,
    audit_spec,
    check_summary,
    findings_csv,
    hourly,
    progress_line,
    report_files,
    same_spec,
)

__all__ = ["cmd_audit", "audit_report"]

PLURAL = "signatureaudits"
POLL_SECONDS = 2.0
"""Between two reads when the user may not watch SignatureAudits."""
WATCH_SECONDS = 60.0
"""One watch request at most (then the audit is read again and a new watch starts)."""


def _time(flag: str, text: str | None) -> str | None:
    if text is None:
        return None
    try:
        t = parse_time(text)
    except MalformedInput:
        raise PluginError(f"{flag} {text!r}: not an RFC 3339 time (e.g. "
                          "2026-11-30T10:00:00Z)") from None
    return t.isoformat().replace("+00:00", "Z")


def _creating(args: argparse.Namespace) -> bool:
    return bool(args.key_id or args.fingerprint or args.accepted_invalid or args.all
                or args.since or args.until or args.shards or args.parallelism)


def cmd_audit(args: argparse.Namespace) -> int:
    try:
        timeout = parse_duration(args.timeout)
    except ValueError as e:
        raise PluginError(f"--timeout: {e}") from None
    s = _Session(args)
    ns = s.namespace
    if args.follow:
        if not args.name:
            raise PluginError("--follow takes the NAME of an audit")
        if _creating(args):
            raise PluginError("--follow follows an existing audit: give its NAME only, "
                              "without what to look for")
        obj = _get(s, ns, args.name)
        sys.stdout.write(f"following sau/{args.name} in {ns}\n")
    else:
        obj = _create_or_find(s, ns, args)
    name = obj["metadata"]["name"]
    if args.no_wait:
        sys.stdout.write(f"follow it with: kubectl sigops audit --follow {name} -n {ns}\n")
        return EXIT_OK
    try:
        ended = _follow(s, ns, name, obj, timeout)
    except KeyboardInterrupt:
        _err(f"stopped following sau/{name}; the audit goes on (nothing was deleted). "
             f"Follow it again with: kubectl sigops audit --follow {name} -n {ns}")
        return 130
    if ended is None:
        _err(f"sau/{name} has not ended after {args.timeout}; it goes on. Follow it again "
             f"with: kubectl sigops audit --follow {name} -n {ns}")
        return EXIT_USAGE
    return _conclude(s, args, ended)


def _get(s: _Session, ns: str, name: str) -> dict[str, Any]:
    from ...kube.api import KubeError

    try:
        obj = s.kube.get_cr(ns, PLURAL, name)
    except KubeError as e:
        raise PluginError(f"cannot read sau/{name} in {ns}: {e}") from None
    if obj is None:
        raise PluginError(f"sau/{name} not found in namespace {ns}")
    return dict(obj)


def _create_or_find(s: _Session, ns: str, args: argparse.Namespace) -> dict[str, Any]:
    from ...kube.api import Conflict, Forbidden, KubeError

    if not (args.key_id or args.fingerprint or args.accepted_invalid or args.all):
        raise PluginError("say what to look for: --key-id K, --fingerprint F, "
                          "--accepted-invalid or --all")
    if not (args.since and args.until):
        raise PluginError("give the window: --since T --until T (RFC 3339; a closed window "
                          "makes a rerun give the same answer)")
    for flag, v in (("--shards", args.shards), ("--parallelism", args.parallelism)):
        if v is not None and v < 1:
            raise PluginError(f"{flag} must be at least 1")
    since, until = _time("--since", args.since), _time("--until", args.until)
    if since and until and parse_time(until) <= parse_time(since):
        raise PluginError("the window is empty: --until must be after --since")
    spec = audit_spec(args.deployment, since, until, args.key_id or (), args.fingerprint or (),
                      args.accepted_invalid, args.all, args.shards or 1, args.parallelism or 1)
    meta: dict[str, Any] = ({"name": args.name} if args.name else
                            {"generateName": f"{args.deployment[:40].rstrip('-.')}-audit-"})
    body = {"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "SignatureAudit",
            "metadata": meta, "spec": spec}
    try:
        obj = dict(s.kube.create_cr(ns, PLURAL, body))
    except Conflict:
        obj = _get(s, ns, args.name)
        diff = same_spec(spec, obj.get("spec") or {}, ns)
        if diff:
            raise PluginError(f"sau/{args.name} exists in {ns} with another spec ("
                              + "; ".join(diff) + "); nothing was changed. Pick another NAME, "
                              "or omit it for a new audit") from None
        sys.stdout.write(f"sau/{args.name} exists with the same spec: following it\n")
        return obj
    except Forbidden as e:
        raise PluginError(f"you may not create SignatureAudits in namespace {ns} ({e}); "
                          "ask for create on signatureaudits.sigops.fractal-lba.io there"
                          ) from None
    except KubeError as e:
        raise PluginError(f"the API server refused the audit: {e}") from None
    sys.stdout.write(f"sau/{obj['metadata']['name']} created in {ns}: "
                     f"{args.deployment}, {since} to {until}\n")
    return obj


def _follow(s: _Session, ns: str, name: str, obj: dict[str, Any], timeout: float
            ) -> dict[str, Any] | None:
    """The audit once it has ended (None: still going after ``timeout`` seconds); prints a
    line each time its progress changes."""
    from ...kube.api import Forbidden, KubeError, NotFound

    deadline = time.monotonic() + timeout
    shown = ""
    can_watch = True

    def show(o: dict[str, Any]) -> bool:
        nonlocal shown
        line = progress_line(o)
        if line != shown:
            sys.stdout.write(f"sau/{name}: {line}\n")
            sys.stdout.flush()
            shown = line
        return (o.get("status") or {}).get("phase") in TERMINAL

    while True:
        if show(obj):
            return obj
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if can_watch:
            try:
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                for o in s.kube.watch_cr(ns, PLURAL, name, min(left, WATCH_SECONDS), rv):
                    obj = dict(o)
                    if show(obj):
                        return obj
                    if time.monotonic() >= deadline:
                        return None
            except NotFound:
                raise PluginError(f"sau/{name} was deleted while it was followed") from None
            except Forbidden:
                can_watch = False  # she may get but not watch: poll
            except KubeError:
                time.sleep(min(POLL_SECONDS, max(left, 0)))  # a broken watch: read, watch again
        else:
            time.sleep(min(POLL_SECONDS, max(left, 0)))
        obj = _get(s, ns, name)


def _conclude(s: _Session, args: argparse.Namespace, obj: dict[str, Any]) -> int:
    """What an ended audit says: refused or failed (exit 2), else its checked answer (exit 0
    nothing found, 1 findings), and its report with ``--report DIR``."""
    st = obj.get("status") or {}
    name = obj["metadata"]["name"]
    phase = st.get("phase")
    if phase == "Refused":
        _err(f"sau/{name} was refused by the operator: {_condition(st)}")
        return EXIT_USAGE
    if phase == "Failed":
        _err(f"sau/{name} failed: {_condition(st)}")
        if args.report and st.get("summary"):  # what did finish, vouched for as Failed
            _write_report(obj, _checked(s, args, obj), Path(args.report))
        return EXIT_USAGE
    check = _checked(s, args, obj)
    if args.report:
        _write_report(obj, check, Path(args.report))
    count = int(st.get("findingsCount") or 0)
    for fname, f in (st.get("findings") or {}).items():
        sys.stdout.write(f"  {fname}: {int((f or {}).get('count') or 0):,}\n")
    sys.stdout.write(f"sau/{name}: {count:,} finding(s) in "
                     f"{int((st.get('totals') or {}).get('total') or 0):,} records\n")
    return EXIT_INVALID if count else EXIT_OK


def _condition(st: dict[str, Any]) -> str:
    ready: dict[str, Any] = next((c for c in st.get("conditions") or []
                                  if c.get("type") == "Ready"), {})
    reason = ready.get("reason") or "no reason given"
    message = ready.get("message") or st.get("message") or ""
    return f"{reason}: {message}" if message else reason


def _checked(s: _Session, args: argparse.Namespace, obj: dict[str, Any]) -> SummaryCheck:
    """The verified summary, said so on stdout; a summary that does not verify is an error
    (exit 2), never a report."""
    from . import _pubkeys_file

    if args.pubkeys:
        keys, revoked = _pubkeys_file(args.pubkeys)
    else:
        keys, revoked = s.pubkeys(), s.revoked
    try:
        check = check_summary(obj, keys, revoked)
    except SummaryRejected as e:
        raise PluginError(f"not trusted: {e}; no report is written from this status") from None
    name = obj["metadata"]["name"]
    sys.stdout.write(f"sau/{name}: signed summary verifies (operator key {check.key_id}, "
                     f"signed {check.payload.get('detected_at')}): the status below is the "
                     "operator's\n")
    for n in check.notes:
        sys.stdout.write(f"  note: {n}\n")
    return check


def _write_report(obj: dict[str, Any], check: SummaryCheck, out: Path) -> None:
    from . import plot

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PluginError(f"cannot create {out}: {e.strerror}") from None
    meta = obj["metadata"]
    md_name, csv_name, png_name = report_files(meta["name"])
    findings = (obj.get("status") or {}).get("findings") or {}
    series = hourly(findings)
    chart: str | None = None
    note: str | None = None
    if not any(series.values()):
        note = "no finding has a known receive time to plot"
    elif not plot.available():
        note = ("the chart of findings over time needs matplotlib: `pip install "
                "'sigops[report]'`, then run `kubectl sigops report sau/NAME -o DIR` again")
    else:
        fig = plot.findings_figure(series, f"{meta.get('namespace')}/{meta['name']}: "
                                           "findings per hour received")
        plot.save_png(fig, out / png_name)
        chart = png_name
    try:
        (out / csv_name).write_text(findings_csv(obj), newline="")
        (out / md_name).write_text(audit_markdown(obj, check, _iso(_now()), chart, note))
    except OSError as e:
        raise PluginError(f"cannot write the report in {out}: {e.strerror}") from None
    sys.stdout.write(f"report: {out / md_name}\nfindings: {out / csv_name}\n")
    if chart:
        sys.stdout.write(f"chart: {out / chart}\n")
    else:
        _err(f"chart skipped: {note}")


def audit_report(args: argparse.Namespace, s: _Session, obj: dict[str, Any]) -> int:
    """``kubectl sigops report sau/NAME -o DIR`` (or ``-f sau.yaml``): the report of an audit
    that has ended, from its checked summary."""
    st = obj.get("status") or {}
    name = (obj.get("metadata") or {}).get("name")
    if st.get("phase") not in TERMINAL:
        raise PluginError(f"sau/{name} has not ended ({progress_line(obj)}); follow it with "
                          f"kubectl sigops audit --follow {name}")
    if st.get("phase") == "Refused":
        _err(f"sau/{name} was refused by the operator: {_condition(st)}")
        return EXIT_USAGE
    args.report = args.output_dir
    check = _checked(s, args, obj)
    _write_report(obj, check, Path(args.output_dir))
    if st.get("phase") == "Failed":
        _err(f"sau/{name} failed: {_condition(st)}")
        return EXIT_USAGE
    return EXIT_INVALID if int(st.get("findingsCount") or 0) else EXIT_OK
