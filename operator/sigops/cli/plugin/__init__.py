"""``kubectl sigops``: the everyday actions on incidents and rotations, one command each.

Installed as the console script ``kubectl-sigops``, so ``kubectl sigops ...`` finds it on PATH
(krew-style). It reads the person's kubeconfig as kubectl does: the current context and its
namespace, ``--context``, ``-n``, and ``-A`` where listing makes sense.

Exit codes: 0 done (or valid), 1 invalid or refused (nothing changed), 2 usage, configuration
or API error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ...core.errors import SigopsError
from .refs import Ref, RefError, parse_ref

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
PROG = "kubectl sigops"
PUBKEYS_CONFIGMAP = "sigops-signal-pubkeys"


class PluginError(SigopsError):
    """Usage, configuration or API trouble: exit 2 with the message."""


def _err(msg: str) -> None:
    sys.stderr.write(f"kubectl-sigops: {msg}\n")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- cluster access ----------------------------------------------------------------------------


class _Session:
    """The kube connection and namespace of one invocation, made on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._kube: Any = None
        self.revoked: dict[str, str] = {}
        """Public keys revoked, and since when (read with :meth:`pubkeys`)."""

    @property
    def kube(self) -> Any:
        if self._kube is None:
            from ...kube.api import Kube, KubeError

            try:
                self._kube = Kube.for_user(self.args.context)
            except KubeError as e:
                raise PluginError(str(e)) from None
        return self._kube

    @property
    def namespace(self) -> str:
        if self.args.namespace:
            return str(self.args.namespace)
        from ...kube.api import Kube, KubeError

        try:
            return Kube.context_namespace(self.args.context)
        except KubeError as e:
            raise PluginError(str(e)) from None

    def get(self, ref: Ref) -> dict[str, Any]:
        from ...kube.api import KubeError

        ns = self.namespace
        try:
            obj = self.kube.get_cr(ns, ref.plural, ref.name)
        except KubeError as e:
            raise PluginError(str(e)) from None
        if obj is None:
            raise PluginError(f"{ref} not found in namespace {ns}")
        return dict(obj)

    def every(self, all_namespaces: bool) -> list[dict[str, Any]]:
        """Every SignatureIncident and KeyRotation here (or in every namespace)."""
        from ...kube.api import KubeError

        out: list[dict[str, Any]] = []
        try:
            for plural in ("signatureincidents", "keyrotations"):
                items = (self.kube.list_cr_all(plural) if all_namespaces
                         else self.kube.list_cr(self.namespace, plural))
                out += [dict(i) for i in items]
        except KubeError as e:
            raise PluginError(str(e)) from None
        return out

    def pubkeys(self) -> dict[str, bytes]:
        from ...core.errors import KeyringError
        from ...core.signals import load_pubkeys
        from ...kube.api import KubeError

        ns = self.args.operator_namespace
        try:
            cm = self.kube.read_config_map(ns, PUBKEYS_CONFIGMAP)
        except KubeError as e:
            raise PluginError(f"cannot read the public keys: {e}") from None
        text = ((cm.data or {}) if cm is not None else {}).get("pubkeys.json")
        if not text:
            raise PluginError(f"ConfigMap {ns}/{PUBKEYS_CONFIGMAP} not found or empty (the "
                              "operator publishes it; --operator-namespace picks another)")
        try:
            doc = json.loads(text)
            self.revoked = _revocations(doc)
            return load_pubkeys(doc)
        except (KeyringError, ValueError) as e:
            raise PluginError(f"ConfigMap {ns}/{PUBKEYS_CONFIGMAP}: {e}") from None

    def checkpoints(self) -> dict[str, dict[str, Any]] | None:
        """The operator's history checkpoints (None: not readable here, said as a note)."""
        from ...kube.api import KubeError
        from ...signing.checkpoints import CHECKPOINTS_CONFIGMAP, load_checkpoints

        try:
            cm = self.kube.read_config_map(self.args.operator_namespace, CHECKPOINTS_CONFIGMAP)
        except KubeError as e:
            _err(f"warning: cannot read the history checkpoints ({e}): a cut at the end of "
                 "a history cannot be seen")
            return None
        return load_checkpoints((cm.data or {}) if cm is not None else {})


def _revocations(doc: Any) -> dict[str, str]:
    """``{"revoked": {kid: time}}`` of a pubkeys document: keys revoked, and since when."""
    rev = doc.get("revoked") if isinstance(doc, dict) else None
    return {str(k): str(v) for k, v in rev.items()} if isinstance(rev, dict) else {}


def _load_doc(path: str) -> Any:
    """A YAML or JSON document from a file or ``-``."""
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        raise PluginError(f"cannot read {path}: {e.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PluginError(f"{path}: not YAML or JSON: {str(e).splitlines()[0]}") from None


def _objects_in(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, dict) and doc.get("kind") == "List":
        return [i for i in doc.get("items") or [] if isinstance(i, dict)]
    return [doc] if isinstance(doc, dict) else []


def _pubkeys_file(path: str) -> tuple[dict[str, bytes], dict[str, str]]:
    """A pubkeys document, or the ConfigMap itself saved with ``-o yaml``: (keys, revoked)."""
    from ...core.errors import KeyringError
    from ...core.signals import load_pubkeys

    doc = _load_doc(path)
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        try:
            doc = json.loads((doc.get("data") or {}).get("pubkeys.json") or "")
        except ValueError:
            raise PluginError(f"{path}: ConfigMap without a pubkeys.json document") from None
    try:
        return load_pubkeys(doc), _revocations(doc)
    except KeyringError as e:
        raise PluginError(f"{path}: {e}") from None


# -- verbs ------------------------------------------------------------------------------------


def _refs(args: argparse.Namespace, only: tuple[str, ...] = ("si", "kr")) -> Ref:
    try:
        return parse_ref(args.ref, only)
    except RefError as e:
        raise PluginError(str(e)) from None


def cmd_explain(args: argparse.Namespace) -> int:
    from .story import render, story

    s = _Session(args)
    obj = _load_one(args.filename) if args.filename else s.get(_refs(args))
    st = story(obj)
    if args.output == "json":
        sys.stdout.write(json.dumps(st, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render(st))
    return EXIT_OK


def _load_one(path: str) -> dict[str, Any]:
    objs = _objects_in(_load_doc(path))
    if len(objs) != 1:
        raise PluginError(f"{path}: expected one SignatureIncident, KeyRotation or "
                          f"SignatureAudit, found {len(objs)} objects")
    return objs[0]


def _request(args: argparse.Namespace, kind: str, build: Any) -> int:
    """Read, check, patch (only the object that was checked), report. A concurrent change
    makes it read and check again."""
    from ...kube.api import KubeError
    from .requests import Refused

    s = _Session(args)
    ref = _refs(args, (kind,))
    try:
        who = s.kube.whoami()
    except KubeError as e:
        raise PluginError(f"cannot learn who you are from the API server: {e}") from None
    for _ in range(3):
        obj = s.get(ref)
        try:
            ops, done = build(obj, who)
        except Refused as e:
            _err(f"refused: {e}")
            return EXIT_INVALID
        try:
            s.kube.json_patch_cr(s.namespace, ref.plural, ref.name, ops)
        except KubeError as e:
            if e.status in (409, 422):  # changed since it was read: check it again
                continue
            raise PluginError(str(e)) from None
        sys.stdout.write(f"{ref}: {done}\n")
        return EXIT_OK
    raise PluginError(f"{ref} kept changing while we tried to patch it; try again")


def cmd_decide(args: argparse.Namespace) -> int:
    from .requests import decision_patch

    decision = args.verb

    def build(obj: dict[str, Any], who: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        scen, ops = decision_patch(obj, decision, who, _iso(_now()), args.scenario)
        verb = "approved" if decision == "approve" else "denied"
        then = ("the operator runs it on its next tick" if decision == "approve" else
                "the operator tries the next candidate or escalates")
        return ops, (f"scenario {scen} {verb} by {who['user']}; {then} (follow it with "
                     f"kubectl sigops explain {args.ref})")

    return _request(args, "si", build)


def cmd_abort(args: argparse.Namespace) -> int:
    from .requests import abort_patch

    def build(obj: dict[str, Any], who: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        return abort_patch(obj, who, _iso(_now())), (
            f"abort requested by {who['user']} in phase {phase}; the operator undoes every "
            f"change and marks it Aborted (follow it with kubectl sigops explain {args.ref})")

    return _request(args, "kr", build)


def cmd_revoke(args: argparse.Namespace) -> int:
    """Mark a key of a backend's managed ring compromised, as the user: her RBAC on the ring
    Secret is the gate, and the API server's name for her is recorded with the time."""
    from ...backend.deployment import Backend
    from ...backend.keyring import REVISION_ANNOTATION, RingError, revision_of
    from ...kube.api import Conflict, KubeError

    s = _Session(args)
    ns = s.namespace
    backend = Backend(s.kube, ns, args.deployment, None)
    try:
        who = s.kube.whoami()
        for _ in range(3):
            ring, existing = backend.read_ring()
            if ring is None:
                raise PluginError(f"no key ring of sigops for {ns}/{args.deployment} (Secret "
                                  f"{backend.ring_secret}): nothing to revoke")
            entry = ring.entry(args.key) or ring.by_fingerprint(args.key)
            if entry is None:
                _err(f"refused: no key {args.key} in the ring of {ns}/{args.deployment} "
                     f"(keys: {', '.join(str(e.get('kid')) for e in ring.entries)})")
                return EXIT_INVALID
            kid = str(entry["kid"])
            fp = ring.key(kid).fingerprint  # type: ignore[union-attr]
            try:
                changed = ring.revoke(kid, _iso(_now()), who["user"], args.reason)
            except RingError as e:
                _err(f"refused: {e}")
                return EXIT_INVALID
            if not changed:
                sys.stdout.write(f"key {kid} ({fp}) was revoked already at "
                                 f"{entry.get('revoked_at')} by {entry.get('revoked_by')}\n")
                return EXIT_OK
            alg = str(entry.get("alg") or "hmac-sha256")
            try:
                backend.write_ring(ring, alg, existing)
            except Conflict:
                continue  # changed since it was read: read and revoke again
            break
        else:
            raise PluginError(f"key ring Secret {backend.ring_secret} kept changing; try again")
    except KubeError as e:
        raise PluginError(str(e)) from None
    sys.stdout.write(f"key {kid} ({fp}) revoked by {who['user']}: removed from what "
                     f"{ns}/{args.deployment} accepts, never accepted again by sigops\n")
    rev = revision_of(ring)

    def roll(dep: dict[str, Any]) -> bool:
        tmeta = dep["spec"]["template"].setdefault("metadata", {})
        ann = dict(tmeta.get("annotations") or {})
        ann[REVISION_ANNOTATION] = f"{rev}-revoked"
        tmeta["annotations"] = ann
        return True

    try:
        backend.update(roll)
    except KubeError as e:
        _err(f"the backend's pods were not rolled ({e}); they accept the key until they "
             f"restart: kubectl -n {ns} rollout restart deployment/{args.deployment}")
        return EXIT_USAGE
    sys.stdout.write(f"deployment {ns}/{args.deployment} rolls to drop it\n")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from .checks import verify_object

    s = _Session(args)
    if args.filename:
        objs = _objects_in(_load_doc(args.filename))
        if not objs:
            raise PluginError(f"{args.filename}: no object in it")
        if args.ref:
            raise PluginError("give either -f FILE or KIND/NAME, not both")
    elif args.all_namespaces or args.all:
        if args.ref:
            raise PluginError("give either KIND/NAME or -A/--all, not both")
        objs = s.every(args.all_namespaces)
        if not objs:
            where = "any namespace" if args.all_namespaces else f"namespace {s.namespace}"
            sys.stdout.write(f"no SignatureIncident or KeyRotation in {where}\n")
            return EXIT_OK
    else:
        if not args.ref:
            raise PluginError("verify takes si/NAME, kr/NAME, -A, --all or -f FILE")
        objs = [s.get(_refs(args, ("si", "kr", "sau")))]
    from ...signing.checkpoints import load_checkpoints

    if args.pubkeys:
        pubkeys, revoked = _pubkeys_file(args.pubkeys)
    else:
        pubkeys, revoked = s.pubkeys(), s.revoked
    if args.checkpoints:
        checkpoints: dict[str, dict[str, Any]] | None = load_checkpoints(
            _load_doc(args.checkpoints))
    else:
        checkpoints = None if args.filename else s.checkpoints()
    ok = True
    for obj in objs:
        if obj.get("kind") == "SignatureAudit":
            ok = _verify_audit(obj, pubkeys, revoked, args.output) and ok
            continue
        try:
            v = verify_object(obj, pubkeys, checkpoints if checkpoints is not None else {},
                              revoked)
        except RefError as e:
            raise PluginError(str(e)) from None
        ok = ok and v.valid
        if args.output == "json":
            sys.stdout.write(json.dumps(v.to_dict(), ensure_ascii=False) + "\n")
            continue
        if v.valid:
            sys.stdout.write(f"{v.ref}: valid: {len(v.findings)} signed record(s) verify with "
                             "the published keys, hash chain intact\n")
        else:
            sys.stdout.write(f"{v.ref}: INVALID\n")
            for b in v.to_dict()["broken"]:
                sys.stdout.write(f"  {b['where']}: {b['reason']}"
                                 + (f": {b['detail']}" if b.get("detail") else "") + "\n")
        for n in v.notes:
            sys.stdout.write(f"  note: {n}\n")
    return EXIT_OK if ok else EXIT_INVALID


def _verify_audit(obj: dict[str, Any], pubkeys: dict[str, bytes], revoked: dict[str, str],
                  output: str) -> bool:
    """A SignatureAudit's signed summary, checked against its status."""
    from .auditreport import SummaryRejected, check_summary

    ref = f"sau/{(obj.get('metadata') or {}).get('name')}"
    try:
        check = check_summary(obj, pubkeys, revoked)
    except SummaryRejected as e:
        if output == "json":
            sys.stdout.write(json.dumps({"object": ref, "valid": False, "reason": e.reason,
                                         "detail": str(e)}) + "\n")
        else:
            sys.stdout.write(f"{ref}: INVALID\n  summary: {e.reason}: {e}\n")
        return False
    if output == "json":
        sys.stdout.write(json.dumps({"object": ref, "valid": True, "key_id": check.key_id,
                                     "notes": check.notes}) + "\n")
    else:
        sys.stdout.write(f"{ref}: valid: its signed summary verifies with the published key "
                         f"{check.key_id} and matches its status\n")
        for n in check.notes:
            sys.stdout.write(f"  note: {n}\n")
    return True


def cmd_audit(args: argparse.Namespace) -> int:
    from .auditcmd import cmd_audit as run

    return run(args)


def cmd_report(args: argparse.Namespace) -> int:
    from ...prometheus.client import Prom
    from ...settings import load_settings
    from . import plot
    from .checks import verify_object
    from .report import (
        NO_MATPLOTLIB,
        PLOT_FILE,
        build_markdown,
        incident_span,
        incident_window,
        markers,
        rate_summary,
    )

    s = _Session(args)
    obj = _load_one(args.filename) if args.filename else s.get(_refs(args, ("si", "sau")))
    if (obj.get("kind") or "") == "SignatureAudit":
        from .auditcmd import audit_report

        return audit_report(args, s, obj)
    if (obj.get("kind") or "") != "SignatureIncident":
        raise PluginError("report takes a SignatureIncident (si/NAME) or a SignatureAudit "
                          "(sau/NAME)")
    try:
        settings = load_settings(args.config)
    except ValueError as e:
        raise PluginError(str(e)) from None
    t = (obj.get("spec") or {}).get("target") or {}
    tns = t.get("namespace") or obj["metadata"].get("namespace") or ""
    dep = t.get("deployment") or "fractal-lba-backend"
    query = args.query or settings.error_query(tns, dep)
    threshold = args.threshold if args.threshold is not None else settings.error_rate_threshold
    out = Path(args.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PluginError(f"cannot create {out}: {e.strerror}") from None
    now = _now()
    win = incident_window(obj, now)
    points: list[tuple[float, float]] | None = None
    prom_url = args.prometheus_url
    note: str | None = None
    if not prom_url:
        note = ("no Prometheus given: run again with --prometheus-url URL (or "
                "SIGOPS_PROMETHEUS_URL) for the error-rate picture")
    else:
        points = Prom(prom_url, timeout=args.timeout).range(
            query, win.start.timestamp(), win.end.timestamp(), win.step)
        if points is None:
            note = f"Prometheus at {prom_url} did not answer the range query"
        elif not points:
            note = "Prometheus has no samples of the error rate in the incident window"
    plot_name: str | None = None
    if points and not plot.available():
        note = NO_MATPLOTLIB
    elif points:
        name = obj["metadata"]["name"]
        fig = plot.figure(points, threshold, markers(obj),
                          f"{tns}/{dep}: signature error rate during {name}",
                          span=incident_span(obj, now))
        plot.save_png(fig, out / PLOT_FILE)
        plot_name = PLOT_FILE
    verification = None
    if not args.no_verify:
        try:
            keys = _pubkeys_file(args.pubkeys)[0] if args.pubkeys else s.pubkeys()
            verification = verify_object(obj, keys).to_dict()
        except PluginError as e:
            _err(f"signed records not verified: {e}")
    md = build_markdown(obj, plot=plot_name, plot_note=note,
                        rate_summary=rate_summary(points or []), threshold=threshold,
                        query=query if prom_url else None, verification=verification,
                        generated_at=_iso(now))
    (out / "report.md").write_text(md)
    sys.stdout.write(f"report: {out / 'report.md'}\n")
    if plot_name:
        sys.stdout.write(f"picture: {out / plot_name}\n")
    elif note:
        _err(note)
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    from ..completion import script

    sys.stdout.write(script(build_parser(), "kubectl-sigops", args.shell))
    return EXIT_OK


# -- parser -----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        _err(message)
        raise SystemExit(EXIT_USAGE)


EXAMPLES = """\
examples:
  kubectl sigops explain si/flk-sig-x7k2p            # the incident's story, in order
  kubectl sigops explain kr/backend-2026-11 -o json
  kubectl sigops approve si/flk-sig-x7k2p -n fractal-lba
  kubectl sigops deny si/flk-sig-x7k2p
  kubectl sigops abort kr/backend-2026-11            # stop a rotation, undo every change
  kubectl sigops revoke key-2026-11 -n fractal-lba   # a leaked key: never accepted again
  kubectl sigops verify si/flk-sig-x7k2p             # exit 0 valid, 1 invalid
  kubectl get si flk-sig-x7k2p -o yaml > si.yaml     # ... later, offline:
  kubectl sigops verify -f si.yaml --pubkeys pubkeys.json
  kubectl sigops report si/flk-sig-x7k2p -o report/ --prometheus-url http://prometheus:9090
  kubectl sigops audit --key-id key-2026-11 --since 2026-11-01T00:00:00Z \
      --until 2026-12-01T00:00:00Z --report audit/  # which records did a leaked key sign?
  kubectl sigops report sau/leak-drill -o audit/     # the report of an audit that ended
  source <(kubectl-sigops completion bash)           # `kubectl sigops <TAB>` completes
                                                    # through kubectl's own completion
"""


def _conn_flags(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("-n", "--namespace", default=default,
                   help="namespace (default: the context's)")
    p.add_argument("--context", default=default,
                   help="kubeconfig context (default: the current one)")


LISTING_VERBS = ("verify",)
"""The verbs that take ``-A`` (the others act on one object)."""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Explain, approve, deny, abort and verify sigops "
                            "SignatureIncidents (si) and KeyRotations (kr), write "
                            "post-incident reports, and run fleet audits (SignatureAudits, "
                            "sau). Uses the current kubeconfig context and namespace, like "
                            "kubectl.",
                epilog=EXAMPLES + "\nexit codes: 0 done / valid, 1 invalid or refused "
                                  "(nothing changed), 2 usage or API error")
    from ... import __version__

    p.add_argument("--version", action="version", version=f"kubectl-sigops {__version__}")
    # kubectl takes its connection flags before or after the verb: so does this. The verbs
    # repeat them with SUPPRESS defaults, so a flag given after the verb wins and one given
    # before it is not overwritten by the verb's default.
    _conn_flags(p, None)
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="every namespace (verify only)")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    def conn(sp: argparse.ArgumentParser) -> None:
        _conn_flags(sp, argparse.SUPPRESS)

    def keys(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--pubkeys", metavar="FILE",
                        help="public keys: a pubkeys.json document or the ConfigMap saved "
                             "with -o yaml (default: read ConfigMap sigops-signal-pubkeys)")
        sp.add_argument("--operator-namespace", metavar="NS",
                        default=os.environ.get("SIGOPS_OPERATOR_NAMESPACE", "sigops-system"),
                        help="where the operator publishes its public keys "
                             "(default sigops-system, or SIGOPS_OPERATOR_NAMESPACE)")

    def sub_parser(name: str, help_: str, desc: str, examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=desc,
                              epilog="examples:\n" + examples,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    e = sub_parser("explain", "the story of an incident or rotation, in order",
                   "Alert, evidence per source, cause and confidence, plan, each action with "
                   "its time and signer, verification, outcome, and what waits on a person "
                   "with the exact command.",
                   "  kubectl sigops explain si/flk-sig-x7k2p\n"
                   "  kubectl sigops explain kr/backend-2026-11 -o json\n"
                   "  kubectl sigops explain -f si.yaml\n")
    conn(e)
    e.add_argument("ref", nargs="?", metavar="si/NAME|kr/NAME")
    e.add_argument("-f", "--filename", metavar="FILE", help="a saved -o yaml/json instead")
    e.add_argument("-o", "--output", choices=("text", "json"), default="text")
    e.set_defaults(func=cmd_explain)

    for verb, what in (("approve", "let the operator run the scenario an incident waits for"),
                       ("deny", "refuse the scenario an incident waits for: the next "
                                "candidate is tried, else it escalates")):
        d = sub_parser(verb, what,
                       f"{what[0].upper()}{what[1:]}. Only for an incident AwaitingApproval "
                       "(scenarios in approval mode); anything else is refused and nothing "
                       "changes. Your user, as the API server names it, is recorded in "
                       "spec.decisions and in the incident's signed actions.",
                       f"  kubectl sigops {verb} si/flk-sig-x7k2p\n"
                       f"  kubectl sigops {verb} si/flk-sig-x7k2p --scenario E -n fractal-lba\n")
        conn(d)
        d.add_argument("ref", metavar="si/NAME")
        d.add_argument("--scenario", choices=("A", "B", "C", "D", "E"),
                       help="refuse unless the incident waits for this scenario")
        d.set_defaults(func=cmd_decide)

    a = sub_parser("abort", "stop a KeyRotation and undo every change it made",
                   "Ask the operator to undo an unfinished rotation (keyring, Deployment env and "
                   "agent Secret restored; phase Aborted). A finished rotation is refused and "
                   "nothing changes. Your user, as the API server names it, is recorded in "
                   "spec.abortRequestedBy and in the rotation's signed history.",
                   "  kubectl sigops abort kr/backend-2026-11\n")
    conn(a)
    a.add_argument("ref", metavar="kr/NAME")
    a.set_defaults(func=cmd_abort)

    rv = sub_parser("revoke", "mark a key compromised: never accepted again",
                    "Mark a key of a backend's key ring (Secret sigops-keyring-DEPLOYMENT) "
                    "revoked: it is dropped from what the backend accepts, its pods roll, and "
                    "sigops never accepts it again (scenario A escalates instead, a rotation "
                    "never re-adds it, an abort never restores it). Your user, as the API "
                    "server names it, and the time are recorded in the ring. RBAC decides who "
                    "may: update on that Secret (and patch on the Deployment to roll it). The "
                    "backend's primary key is refused: rotate first.",
                    "  kubectl sigops revoke key-2026-11 --deployment fractal-lba-backend "
                    "-n fractal-lba\n"
                    "  kubectl sigops revoke 3f9a1c2b7d4e --reason 'leaked in a CI log'\n")
    conn(rv)
    rv.add_argument("key", metavar="KID|FINGERPRINT")
    rv.add_argument("--deployment", default="fractal-lba-backend",
                    help="the backend whose key ring holds it (default fractal-lba-backend)")
    rv.add_argument("--reason", help="why (kept in the ring, at most 200 characters)")
    rv.set_defaults(func=cmd_revoke)

    v = sub_parser("verify", "verify the signed records and hash chain (exit 0 valid, 1 not)",
                   "Verify every signed record (detection, actions; rotation history) and the "
                   "hash chain against the published public keys (ConfigMap "
                   "sigops-signal-pubkeys). Works offline on a saved -o yaml with --pubkeys.",
                   "  kubectl sigops verify si/flk-sig-x7k2p\n"
                   "  kubectl sigops verify -A                 # everything, every namespace\n"
                   "  kubectl -n sigops-system get cm sigops-signal-pubkeys -o yaml > keys.yaml\n"
                   "  kubectl sigops verify -f si.yaml --pubkeys keys.yaml\n"
                   "  kubectl -n sigops-system get cm sigops-history -o yaml > history.yaml\n"
                   "  kubectl sigops verify -f si.yaml --pubkeys keys.yaml "
                   "--checkpoints history.yaml\n")
    conn(v)
    keys(v)
    v.add_argument("--checkpoints", metavar="FILE",
                   help="the operator's history checkpoints (ConfigMap sigops-history saved "
                        "with -o yaml) for an offline check; online they are read from the "
                        "operator's namespace")
    v.add_argument("ref", nargs="?", metavar="si/NAME|kr/NAME|sau/NAME")
    v.add_argument("-A", "--all-namespaces", action="store_true", default=argparse.SUPPRESS,
                   help="every incident and rotation in every namespace")
    v.add_argument("--all", action="store_true",
                   help="every incident and rotation in the namespace")
    v.add_argument("-f", "--filename", metavar="FILE",
                   help="a saved object (or List) as YAML or JSON; - for stdin")
    v.add_argument("-o", "--output", choices=("text", "json"), default="text")
    v.set_defaults(func=cmd_verify)

    r = sub_parser("report", "a post-incident report (Markdown + error-rate picture)",
                   "Write DIR/report.md (timeline, evidence, cause, actions, verification, "
                   "durations to detect/act/resolve, the filled communication template) and "
                   "DIR/error-rate.png: the target's signature error rate from Prometheus over "
                   "the incident window, the alert threshold and each action marked. The "
                   "picture needs the extra sigops[report] (matplotlib). For an audit that "
                   "ended (sau/NAME): its signed summary is verified, then DIR/audit-NAME.md, "
                   "DIR/audit-NAME-findings.csv and DIR/audit-NAME-findings.png (findings "
                   "per hour) are written; exit 0 nothing found, 1 findings.",
                   "  kubectl sigops report si/flk-sig-x7k2p -o report/ "
                   "--prometheus-url http://prometheus:9090\n"
                   "  kubectl sigops report -f si.yaml -o report/ --no-verify\n"
                   "  kubectl sigops report sau/leak-drill -o audit/\n")
    conn(r)
    keys(r)
    r.add_argument("ref", nargs="?", metavar="si/NAME|sau/NAME")
    r.add_argument("-f", "--filename", metavar="FILE", help="a saved -o yaml/json instead")
    r.add_argument("-o", "--output-dir", required=True, metavar="DIR")
    r.add_argument("--prometheus-url", default=os.environ.get("SIGOPS_PROMETHEUS_URL"),
                   help="Prometheus to read the error rate from (or SIGOPS_PROMETHEUS_URL)")
    r.add_argument("--config", default=os.environ.get("SIGOPS_CONFIG"), metavar="FILE",
                   help="the operator's config (its error-rate query and threshold)")
    r.add_argument("--query", help="PromQL of the error rate (default: from the config)")
    r.add_argument("--threshold", type=float,
                   help="alert threshold in errors/s (default: from the config, 10)")
    r.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    r.add_argument("--no-verify", action="store_true",
                   help="do not verify the signed records for the report")
    r.set_defaults(func=cmd_report)

    au = sub_parser(
        "audit", "audit a fleet's inbox WALs: create, follow, verify, report",
        "Create a SignatureAudit (the operator re-verifies the target's inbox WALs with its "
        "key history in a Kubernetes Indexed Job, one index per shard), follow it as its "
        "indexes finish, check the summary the operator signed with its published keys "
        "(ConfigMap sigops-signal-pubkeys) and print or write the answer. An audit only "
        "reads: it never changes a backend. Without NAME a new audit gets a generated name; "
        "with the NAME of an audit that exists with the same spec, that one is followed "
        "(a rerun of the same spec gives the same answer); another spec is refused and "
        "nothing changes. Ctrl-C stops following, the audit goes on.\n\n"
        "--report DIR writes DIR/audit-NAME.md, DIR/audit-NAME-findings.csv and, with "
        "the extra sigops[report] (matplotlib), DIR/audit-NAME-findings.png.\n\n"
        "exit codes: 0 nothing found, 1 findings, 2 usage or API error, the audit refused "
        "or failed, its summary not verified, or still running at --timeout",
        "  kubectl sigops audit leak-drill --key-id key-2026-11 -n fractal-lba \\\n"
        "      --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z --report audit/\n"
        "  kubectl sigops audit --accepted-invalid --since 2026-11-30T00:00:00Z \\\n"
        "      --until 2026-12-01T00:00:00Z --shards 8 --parallelism 4 --no-wait\n"
        "  kubectl sigops audit --follow leak-drill --report audit/\n"
        "  kubectl sigops report sau/leak-drill -o audit/\n"
        "  kubectl sigops verify sau/leak-drill\n")
    conn(au)
    keys(au)
    au.add_argument("name", nargs="?", metavar="NAME",
                    help="the audit's name (default: generated)")
    au.add_argument("--follow", action="store_true",
                    help="follow the existing audit NAME (create nothing)")
    au.add_argument("--deployment", default="fractal-lba-backend",
                    help="the configured target's Deployment (default fractal-lba-backend)")
    au.add_argument("--since", metavar="TIME",
                    help="WAL entries received at or after this RFC 3339 time")
    au.add_argument("--until", metavar="TIME", help="... and before this one")
    au.add_argument("--key-id", action="append", metavar="KID",
                    help="look for records signed with this key id (repeatable)")
    au.add_argument("--fingerprint", action="append", metavar="FP",
                    help="look for records signed with the key of this fingerprint "
                         "(12 hex digits; repeatable)")
    au.add_argument("--accepted-invalid", action="store_true",
                    help="look for records a backend accepted that sigops judges invalid")
    au.add_argument("--all", action="store_true",
                    help="a full re-verification: every invalid record is a finding")
    au.add_argument("--shards", type=int, metavar="N",
                    help="indexes of the Job (default 1; the config caps it)")
    au.add_argument("--parallelism", type=int, metavar="N",
                    help="indexes at once (default 1; the config caps it)")
    au.add_argument("--no-wait", action="store_true",
                    help="create it and return (follow later with --follow NAME)")
    au.add_argument("--timeout", default="30m", metavar="DURATION",
                    help="stop following after this long (default 30m); the audit goes on")
    au.add_argument("--report", metavar="DIR",
                    help="write the report (Markdown, CSV, chart) into DIR once it ends")
    au.set_defaults(func=cmd_audit)

    c = sub_parser("completion", "shell completion script (bash or zsh)",
                   "Print a completion script for kubectl-sigops.",
                   "  source <(kubectl-sigops completion bash)\n"
                   "  kubectl-sigops completion zsh > \"${fpath[1]}/_kubectl-sigops\"\n")
    c.add_argument("shell", choices=("bash", "zsh"))
    c.set_defaults(func=cmd_completion)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.all_namespaces and args.verb not in LISTING_VERBS:
        parser.error(f"-A/--all-namespaces works with {', '.join(LISTING_VERBS)} only; "
                     f"{args.verb} acts on one object")
    if args.verb in ("explain", "report") and not (args.ref or args.filename):
        parser.error(f"{args.verb} takes "
                     f"{'si/NAME, sau/NAME' if args.verb == 'report' else 'KIND/NAME'} "
                     "or -f FILE")
    try:
        rc: int = args.func(args)
        return rc
    except (PluginError, RefError) as e:
        _err(str(e))
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


def complete_main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """``kubectl_complete-sigops``: kubectl (1.26+) runs it to complete ``kubectl sigops ...``
    words; it prints one candidate per line and cobra's no-file directive."""
    from ..completion import candidates

    words = list(sys.argv[1:] if argv is None else argv)
    stream = out or sys.stdout
    for c in candidates(build_parser(), words, _names_of):
        stream.write(c + "\n")
    stream.write(":4\n")
    return EXIT_OK


def _names_of(kind: str, namespace: str | None) -> list[str]:
    """Object names for completion (best effort: nothing when the cluster does not answer)."""
    from ...kube.api import KubeError

    try:
        from ...kube.api import Kube

        kube = Kube.for_user(None)
        ns = namespace or Kube.context_namespace(None)
        return sorted(o["metadata"]["name"] for o in kube.list_cr(ns, kind))
    except (KubeError, OSError, ValueError, KeyError):
        return []
    except Exception:  # noqa: BLE001 - completion must never print a traceback
        return []
