"""``sigops audit shard``: one index of a SignatureAudit (or a person, by hand) audits one
shard of WAL files and prints its signed partial result.

With ``--pods`` the index reads one backend pod's WAL window through its ``sigops wal serve``
sidecar, page by page, instead of files (``walSource: sidecar``).

Exit 0: nothing found; 1: something found; 2: usage or configuration; 3: a pod's WAL could
not be read through its sidecar (the Job retries the index)."""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

__all__ = ["add_audit_parser"]


def _wal_files(root: str) -> list[str]:
    """Every inbox WAL file (``inbox-*.wal*``) under ``root``, at any depth."""
    return [str(f) for f in Path(root).rglob("inbox-*.wal*") if f.is_file()]


def _shard_paths(args: argparse.Namespace) -> list[str]:
    """The WAL files of this index: INPUT…; entry ``--index`` of the ``--shards`` file (a
    JSON list, one list of paths per index), each path a file or a directory of WALs; or,
    with ``--dir`` and ``--shards-of N``, every N-th WAL file under the directory."""
    from ..core.audit import shard_of
    from . import UsageError

    if args.dir is not None:
        if args.inputs or args.shards:
            raise UsageError("give --dir, --shards or INPUT…, one of them")
        if not os.path.isdir(args.dir):
            raise UsageError(f"--dir {args.dir} is not a directory")
        index = args.index or 0
        if not 0 <= index < args.shards_of:
            raise UsageError(f"--index {index} is not one of --shards-of {args.shards_of}")
        return shard_of(_wal_files(args.dir), args.shards_of, index)
    if args.shards is None:
        if not args.inputs:
            raise UsageError("no INPUT given and no --shards file")
        paths = list(args.inputs)
    else:
        if args.inputs:
            raise UsageError("give INPUT… or --shards, not both")
        if args.index is None:
            raise UsageError("--shards needs --index (or JOB_COMPLETION_INDEX)")
        try:
            shards = json.loads(Path(args.shards).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read --shards {args.shards}: {type(e).__name__}") from None
        if not isinstance(shards, list) or not 0 <= args.index < len(shards) or \
                not isinstance(shards[args.index], list) or \
                not all(isinstance(p, str) for p in shards[args.index]):
            raise UsageError(f"--shards has no list of paths for index {args.index}")
        paths = list(shards[args.index])
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(str(f) for f in Path(p).iterdir()
                          if f.is_file() and f.name.startswith("inbox-") and ".wal" in f.name)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise UsageError(f"shard input {p} does not exist")
    return out


def _mapped(stack: ExitStack, paths: list[str], tenant: str | None) -> Iterator[Any]:
    """Each file mapped read-only (an empty one as empty bytes), opened as it is reached."""
    from ..core.audit import ShardInput

    for p in paths:
        f = stack.enter_context(open(p, "rb"))
        if os.fstat(f.fileno()).st_size == 0:
            yield ShardInput(p, b"", tenant)
            continue
        m = stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        yield ShardInput(p, m, tenant)


EXIT_UNREADABLE = 3


def _pod_source(args: argparse.Namespace, query: Any) -> tuple[Any, Any, dict[str, int], str]:
    """(the pages of this index's pod, the query with the window actually read, read
    statistics, the pod's name). A given ``--since`` is read as given (a Job's is decided at
    launch, the same for every index); without one, the window starts
    :data:`~sigops.audit.sidecar.WAL_MARGIN_SECONDS` inside ``--wal-window``. ``until``: the
    given one, at most now."""
    import dataclasses
    from datetime import UTC, datetime, timedelta

    from ..audit import sidecar
    from ..audit.sidecar import WAL_MARGIN_SECONDS, WalReadError, parse_pods, pods_digest
    from ..core.timeparse import parse_duration
    from ..settings.tokens import TokenFile
    from . import UsageError

    if args.dir is not None or args.shards or args.inputs:
        raise UsageError("give --pods, --dir, --shards or INPUT…, one of them")
    if not args.wal_token_file:
        raise UsageError("--pods needs --wal-token-file: the sidecars answer only their token")
    try:
        text = Path(args.pods).read_text()
        if args.pods_sha256 is not None and pods_digest(text) != args.pods_sha256:
            raise UsageError(f"--pods {args.pods} is not the list of --pods-sha256 (someone "
                             "changed it): no WAL reader token is sent to its pods")
        pods = parse_pods(text)
    except OSError as e:
        raise UsageError(f"cannot read --pods {args.pods}: {e.strerror}") from None
    except WalReadError as e:
        raise UsageError(f"--pods {args.pods}: {e}") from None
    index = args.index or 0
    if not 0 <= index < len(pods):
        raise UsageError(f"--index {index} is not one of the {len(pods)} pods of --pods")
    try:
        token = TokenFile(args.wal_token_file, what="WAL reader token file").first()
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read --wal-token-file: {type(e).__name__}") from None
    try:
        window = parse_duration(args.wal_window)
    except ValueError:
        raise UsageError(f"--wal-window {args.wal_window!r} is not a duration") from None
    now = datetime.now(UTC)
    until = min(query.until or now, now)
    since = query.since or now - timedelta(seconds=window - WAL_MARGIN_SECONDS)
    if until <= since:
        raise UsageError("the audit window is empty: --since is not before --until and now")
    query = dataclasses.replace(query, since=since, until=until)
    stats: dict[str, int] = {}
    pod = pods[index]
    return (sidecar.read_pages(pod, token, since, until, page_bytes=args.page_bytes,
                               stats=stats),
            query, stats, pod.name)


def cmd_audit_shard(args: argparse.Namespace) -> int:
    from ..audit.partial import sign_partial
    from ..core.audit import AuditQuery, audit_shard, closed_times, history_ring
    from ..core.errors import KeyringError
    from ..core.keys import key_from_entry, keyring_from_dict
    from . import EXIT_INVALID, EXIT_OK, UsageError, _out, _read_json_file

    try:
        doc = _read_json_file(args.keyring, "keyring")
        ring = history_ring(keyring_from_dict(doc, args.profile), closed_times(doc))
        key = key_from_entry(_read_json_file(args.key, "signing key"))
        if not key.can_sign or key.alg != "ed25519":
            raise UsageError("--key must be an ed25519 key entry with private_b64")
        query = AuditQuery(frozenset(args.key_id), frozenset(args.fingerprint),
                           args.accepted_invalid, args.all, args.since, args.until, args.first)
    except KeyringError as e:
        raise UsageError(str(e)) from None
    if args.pods is not None:
        from ..audit.sidecar import WalReadError

        pages, query, stats, pod = _pod_source(args, query)
        try:
            result = audit_shard(ring, pages, query, max_bytes=args.max_bytes)
        except WalReadError as e:
            sys.stderr.write(f"sigops: {e}\n")
            return EXIT_UNREADABLE
        read = (f"pod {pod}'s window ({stats.get('pages', 0)} page(s), "
                f"{stats.get('damaged', 0)} damaged entries)")
    else:
        paths = _shard_paths(args)
        with ExitStack() as stack:
            result = audit_shard(ring, _mapped(stack, paths, args.tenant), query,
                                 max_bytes=args.max_bytes)
        read = f"{len(paths)} file(s)"
    index = args.index if args.index is not None else 0
    signed = sign_partial(key, args.audit, index, args.target, result)
    found = any(f["count"] for f in result["findings"].values())
    sys.stderr.write(f"sigops: audited {result['total']} records in {read}: "
                     + ", ".join(f"{n} {f['count']}" for n, f in result["findings"].items())
                     + "\n")
    if args.publish_configmap:
        # In a Job: success means "partial written", whatever it found (a non-zero exit
        # would make Kubernetes retry the index).
        _publish(args.namespace, f"{args.publish_configmap}{index}", signed)
        return EXIT_OK
    if args.out:
        tmp = f"{args.out}.tmp"
        Path(tmp).write_text(json.dumps(signed, sort_keys=True) + "\n")
        os.replace(tmp, args.out)  # whole or absent: a reader never sees half a partial
    else:
        _out(signed)
    return EXIT_INVALID if found else EXIT_OK


def _publish(namespace: str | None, name: str, signed: dict[str, Any]) -> None:
    """Write the partial into its ConfigMap (created empty by the operator; the index's Role
    may get and update that one only)."""
    from ..kube.api import Kube, KubeError
    from . import UsageError

    if not namespace:
        raise UsageError("--publish-configmap needs --namespace")
    try:
        kube = Kube.connect()
        existing = kube.read_config_map(namespace, name)
        if existing is None:
            raise UsageError(f"configmap {namespace}/{name} does not exist: the operator "
                             "creates it with the Job")
        kube.replace_config_map_data(existing, {"partial.json": json.dumps(signed,
                                                                           sort_keys=True)})
    except KubeError as e:
        raise UsageError(f"cannot write the partial to configmap {namespace}/{name}: "
                         f"{e}") from None


def _index_default() -> int | None:
    v = os.environ.get("JOB_COMPLETION_INDEX")
    return int(v) if v is not None and v.isdigit() else None


def add_audit_parser(sub: Any) -> None:
    """``sigops audit shard`` on the verbs' subparsers."""
    from . import EXIT_USAGE, PROFILES, _positive_int, _time

    a = sub.add_parser("audit", help="audit WAL files with a key history (SignatureAudit)")
    asub = a.add_subparsers(dest="audit_verb", metavar="shard", parser_class=type(a))
    s = asub.add_parser(
        "shard", help="audit one shard of WAL files; print its signed partial result",
        description="Read inbox WAL files once with bounded memory, judge every record with "
                    "a key history (each key by its validity window: a revoked key's window "
                    "ends when it was revoked), and print the signed partial result: counts "
                    "by verdict, kid, profile, PCS shard and tenant, the first records of "
                    "each finding and the SHA-256 of every file read. Its totals are those "
                    "of `sigops verify` with the same key ring. Exit 1 if anything was found.",
        epilog="example: sigops audit shard --keyring history.json --key audit-key.json "
               "--fingerprint 3f2a9c01b7de --accepted-invalid /data/wal/inbox-20261130.wal")
    s.add_argument("--keyring", required=True, metavar="K.json",
                   help="the target's key history: every key, retired and revoked ones "
                        "included, with not_before/not_after windows; retired_at/revoked_at "
                        "(as the managed ring records them) end a key's window")
    s.add_argument("--profile", choices=PROFILES, help="the target's canonical profile "
                   "(default: the keyring's)")
    s.add_argument("--key", required=True, metavar="KEY.json",
                   help="the ed25519 key entry (with private_b64) that signs the result")
    s.add_argument("--key-id", action="append", default=[], metavar="KID",
                   help="look for records signed with this key id (repeatable)")
    s.add_argument("--fingerprint", action="append", default=[], metavar="FP",
                   help="look for records signed with the key of this fingerprint "
                        "(repeatable; see sigops keygen)")
    s.add_argument("--accepted-invalid", action="store_true",
                   help="look for records a backend holding the key accepted that sigops "
                        "judges invalid")
    s.add_argument("--all", action="store_true", help="list every invalid record")
    s.add_argument("--since", type=_time, metavar="TIME",
                   help="only entries received at or after this time")
    s.add_argument("--until", type=_time, metavar="TIME",
                   help="only entries received before this time")
    s.add_argument("--first", type=int, default=20, metavar="N",
                   help="records kept per finding (default 20)")
    s.add_argument("--max-bytes", type=_positive_int, default=1 << 20, metavar="N",
                   help="size limit of one record in bytes (default 1048576)")
    s.add_argument("--shards", metavar="SHARDS.json",
                   help="a JSON list with one list of paths (files or WAL directories) per "
                        "index; this index reads its own")
    s.add_argument("--dir", metavar="DIR",
                   help="a tree of WAL files (inbox-*.wal*); with --shards-of N this index "
                        "reads every N-th file of its sorted listing")
    s.add_argument("--shards-of", type=_positive_int, default=1, metavar="N",
                   help="the number of indexes sharing --dir (default 1)")
    s.add_argument("--pods-sha256", metavar="HEX",
                   help="with --pods: the list's SHA-256 (the Job's arguments carry it); "
                        "another list is refused before any pod is asked")
    s.add_argument("--pods", metavar="PODS.json",
                   help="a JSON list of backend pods ({name, ip, port}: their WAL reader "
                        "sidecars); this index reads the window of its own pod through "
                        "GET /v1/wal/range, page by page (the Job's input ConfigMap)")
    s.add_argument("--wal-token-file", metavar="FILE",
                   help="with --pods: the WAL reader token (a mounted Secret; its first line "
                        "is sent, never printed)")
    s.add_argument("--page-bytes", type=_positive_int, default=4 << 20, metavar="N",
                   help="with --pods: bytes asked per page (default 4194304; the sidecar "
                        "caps it at its --max-bytes)")
    s.add_argument("--wal-window", default="24h", metavar="DURATION",
                   help="with --pods: how far back the sidecars serve (their --max-window, "
                        "default 24h); without --since the window starts 10 minutes inside "
                        "it (a given --since is read as given: an older one is refused by "
                        "the sidecar)")
    s.add_argument("--index", type=int, default=_index_default(), metavar="I",
                   help="this index (default: env JOB_COMPLETION_INDEX, else 0)")
    s.add_argument("--audit", default="local/audit", metavar="NS/NAME",
                   help="the SignatureAudit this result belongs to (signed into it)")
    s.add_argument("--target", default="local", help="the target's name (signed into it)")
    s.add_argument("--tenant", help="the tenant whose traffic these WALs hold, if known")
    s.add_argument("--out", metavar="FILE", help="write the result here (atomically)")
    s.add_argument("--publish-configmap", metavar="PREFIX",
                   help="write the result into ConfigMap PREFIX<index> (in a Job; exit 0 "
                        "once written, whatever was found)")
    s.add_argument("--namespace", help="the namespace of --publish-configmap")
    s.add_argument("inputs", nargs="*", metavar="INPUT")
    s.set_defaults(func=cmd_audit_shard)

    def audit_help(_: argparse.Namespace) -> int:
        a.print_help(sys.stderr)
        return EXIT_USAGE

    a.set_defaults(func=audit_help)
