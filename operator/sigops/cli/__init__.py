"""The ``sigops`` command: JSON on stdout, logs on stderr.

Exit codes: 0 success (all valid), 1 something invalid or rejected, 2 usage or configuration.
Imports stay light here (argparse, json) so that ``sigops verify`` starts fast; each verb loads
what it needs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from ..core.errors import SigopsError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class UsageError(SigopsError):
    """Bad flags, unreadable files, unusable configuration: exit 2 with a message."""


def _out(obj: Any, stream: IO[str] | None = None) -> None:
    (stream or sys.stdout).write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")


def _err(msg: str) -> None:
    sys.stderr.write(f"sigops: {msg}\n")


# -- inputs ----------------------------------------------------------------------------------


def _records(inputs: Sequence[str],
             lines: Callable[[IO[bytes], bool], Iterator[Any]] | None = None,
             fmt: str = "auto", since: Any = None, until: Any = None,
             whole_wal: bool = False) -> Iterator[Any]:
    """Raw records from every input in order: JSONL lines (bytes), the elements of a
    ``.json`` document, or the entries of an inbox WAL (:class:`sigops.core.wal.WalEntry`).
    Blank lines are not records. A ``.json`` file that does not parse is one (malformed)
    record. ``lines(stream, plain)`` reads a JSONL stream (default: line by line; ``plain``:
    a regular uncompressed file). gzip-compressed inputs are read as what they hold; ``fmt``
    ``auto`` recognises a WAL by its first entry. ``whole_wal``: a WAL is one item
    (:class:`sigops.core.batch.WalBuffer`, judged in this process), not entry by entry."""
    from ..core.wal import looks_like_wal

    lines = lines or _lines
    for name in inputs:
        with _Input(name) as inp:
            f = inp.stream
            if fmt == "wal" or (fmt == "auto" and looks_like_wal(inp.head())):
                yield from _wal_entries(inp, since, until, whole_wal)
            elif name != "-" and Path(name).suffix == ".json":
                yield from _json_document(f.read())
            else:
                yield from lines(f, inp.plain)


class _Input:
    """An input as a buffered binary stream: a file or ``-`` (stdin), either of them maybe
    gzip-compressed. ``plain``: a regular file read as it is (it can be mapped or split)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> _Input:
        if self.name == "-":
            raw: Any = sys.stdin.buffer
            if not hasattr(raw, "peek"):
                raw = io.BufferedReader(raw)
        else:
            try:
                raw = open(self.name, "rb")  # noqa: SIM115 - closed in __exit__
            except OSError as e:
                raise UsageError(f"cannot read {self.name}: {e.strerror}") from None
        self.raw = raw
        self.plain = self.name != "-"
        self.stream: Any = raw
        if self.head(2) == b"\x1f\x8b":
            import gzip

            self.stream = io.BufferedReader(gzip.GzipFile(fileobj=self.stream, mode="rb"))
            self.plain = False
        return self

    def head(self, n: int = 64) -> bytes:
        """The first ``n`` bytes of the stream (fewer only at its end), left unread. A pipe
        may deliver them in pieces, so ``peek`` alone can see less than what is coming:
        then they are read and put back in front."""
        seen = bytes(self.stream.peek(n)[:n])
        if len(seen) >= n or self.plain:
            return seen
        got = b""
        while len(got) < n:
            chunk = self.stream.read1(n - len(got))
            if not chunk:
                break
            got += chunk
        self.stream = io.BufferedReader(_Prefixed(got, self.stream))
        return got

    def __exit__(self, *exc: object) -> None:
        if self.name != "-":
            self.raw.close()


class _Prefixed(io.RawIOBase):
    """``head`` first, then the rest of ``rest``: bytes read ahead, given back."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.pending, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.pending:
            k = min(len(b), len(self.pending))
            b[:k] = self.pending[:k]
            self.pending = self.pending[k:]
            return k
        data = self.rest.read1(len(b))
        b[:len(data)] = data
        return len(data)


def _wal_entries(inp: _Input, since: Any, until: Any, whole: bool = False) -> Iterator[Any]:
    """The entries of a WAL input (``whole``: the mapped WAL as one item). A regular
    uncompressed file is mapped (memory stays flat on any size); stdin and gzip are first
    copied to a temporary file, then mapped."""
    import mmap
    import os
    import shutil
    import tempfile

    from ..core.wal import read_wal

    with tempfile.TemporaryFile() as tmp:
        if inp.plain:
            fileno = inp.raw.fileno()
        else:
            shutil.copyfileobj(inp.stream, tmp, 1 << 20)
            tmp.flush()
            fileno = tmp.fileno()
        if os.fstat(fileno).st_size == 0:
            return
        with mmap.mmap(fileno, 0, access=mmap.ACCESS_READ) as m:
            if whole:
                from ..core.batch import WalBuffer

                yield WalBuffer(m, since, until)
            else:
                yield from read_wal(m, since, until)


def _json_document(data: bytes) -> Iterator[bytes]:
    stripped = data.lstrip()
    if stripped.startswith(b"[") and stripped.rstrip().endswith(b"]"):
        from ..core.errors import MalformedInput
        from ..core.strictjson import loads

        try:
            doc = loads(data, max(len(data), 1))
        except MalformedInput:
            yield data
            return
        # Each element as its own record text, so the per-record size limit and the strict
        # parse apply to it exactly as to a JSONL line.
        for x in doc:
            yield json.dumps(x, separators=(",", ":"), ensure_ascii=False).encode(
                "utf-8", "surrogatepass")
    else:
        yield data


def _lines(f: IO[bytes], plain: bool = True) -> Iterator[bytes]:
    for line in f:
        if not line.isspace():  # never empty here; same test as line.strip(), without a copy
            yield line


def _check_inputs(inputs: Sequence[str]) -> None:
    if not inputs:
        raise UsageError("no INPUT given (a .json file, a .jsonl file, or - for stdin)")
    for name in inputs:
        if name != "-" and not Path(name).is_file():
            raise UsageError(f"input {name} does not exist or is not a file")


class _Progress:
    """A progress line on stderr, only when stderr is a terminal."""

    def __init__(self, what: str, every: int = 5000) -> None:
        self.on = sys.stderr.isatty()
        self.what, self.every, self.t0, self.n = what, every, time.monotonic(), 0

    def tick(self, n: int = 1) -> None:
        self.n += n
        if self.on and self.n // self.every != (self.n - n) // self.every:
            rate = self.n / max(time.monotonic() - self.t0, 1e-9)
            sys.stderr.write(f"\r{self.what}: {self.n} records ({rate:,.0f}/s)")
            sys.stderr.flush()

    def done(self) -> None:
        if self.on and self.n >= self.every:
            sys.stderr.write("\n")


def _diagnoser(args: argparse.Namespace, max_skew: float | None = None) -> Any:
    from ..core.diagnose import Diagnoser
    from ..core.errors import KeyringError
    from ..core.keys import load_keyring

    try:
        ring = load_keyring(args.keyring, args.profile)
        return Diagnoser(ring, max_skew_seconds=max_skew, max_bytes=args.max_bytes)
    except KeyringError as e:
        raise UsageError(str(e)) from None


def _batch(d: Any, args: argparse.Namespace, what: str, mode: str) -> tuple[Any, dict[str, Any]]:
    """The input items and the engine arguments of :mod:`sigops.core.batch` for a verb:
    records line by line in one process; blocks (file ranges, stdin blocks) with ``--jobs``."""
    from ..core import batch

    jobs = getattr(args, "jobs", 1)
    parallel = jobs > 1 and batch.parallel_safe(d)
    prog = _Progress(what)
    kw: dict[str, Any] = {"progress": prog.tick}
    if parallel:
        kw["jobs"] = jobs
        kw["spec"] = batch.WorkerSpec(args.keyring, args.profile, d.max_skew_seconds,
                                      args.max_bytes)

        def blocks(f: IO[bytes], plain: bool) -> Iterator[Any]:
            return batch.file_blocks(f, seekable=plain)

        items = _records(args.inputs, blocks, args.format, args.since, args.until)
    else:
        # One process: a regular file in blocks and a WAL whole, each judged many records
        # per call of the compiled reader; a stream line by line (its records as they come).
        def lines(f: IO[bytes], plain: bool) -> Iterator[Any]:
            return batch.file_blocks(f, seekable=False) if plain else _lines(f, plain)

        items = _records(args.inputs, lines, args.format, args.since, args.until, True)
    return items, kw


# -- verbs -----------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from ..core import batch

    _check_inputs(args.inputs)
    d = _diagnoser(args)
    items, kw = _batch(d, args, "verified", "verify")
    if args.summary:
        total, by_reason = batch.count(d, items, **kw)
        valid = by_reason.pop("valid", 0)
        _out({"total": total, "valid": valid, "invalid": total - valid, "by_reason": by_reason})
        if total == 0:
            _err("no records in the input")
            return EXIT_INVALID
        return EXIT_OK if valid == total else EXIT_INVALID
    write = sys.stdout.write
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    total = valid = 0
    profile = d.profile
    for v in batch.run(d, items, "verify", **kw):
        total += 1
        if type(v) is batch.Valid:  # the short route: write its line, nothing else
            valid += 1
            write(dumps({"index": v.index, "pcs_id": v.pcs_id, "valid": True, "kid": v.kid,
                         "profile": profile, "reason": None}) + "\n")
            continue
        assert isinstance(v, batch.Verdict)
        if v.cause == "valid":
            valid += 1
        line = {"index": v.index, "pcs_id": v.pcs_id, "valid": v.cause == "valid",
                "kid": v.kid, "profile": v.profile,
                "reason": None if v.cause == "valid" else v.cause}
        if v.detail and v.cause != "valid":
            line["detail"] = v.detail
        write(dumps(line) + "\n")
    if total == 0:
        _err("no records in the input")
        return EXIT_INVALID
    return EXIT_OK if valid == total else EXIT_INVALID


def cmd_diagnose(args: argparse.Namespace) -> int:
    from ..core import batch
    from ..core.diagnose import aggregate

    _check_inputs(args.inputs)
    d = _diagnoser(args, args.max_skew)
    items, kw = _batch(d, args, "diagnosed", "diagnose")
    verdicts = [v for v in batch.run(d, items, "diagnose", **kw)
                if isinstance(v, batch.Verdict)]
    report = aggregate(verdicts, max_skew_seconds=d.max_skew_seconds,
                       recent_config_change=args.recent_config_change,
                       verifier_profile=d.profile)
    if args.per_sample:
        report["samples"] = [{"index": v.index, "cause": v.cause, "kid": v.kid,
                              "profile": v.profile} for v in verdicts]
    _out(report)
    return EXIT_OK


def cmd_golden(args: argparse.Namespace) -> int:
    from ..core.errors import KeyringError
    from ..core.golden import run_golden
    from ..core.keys import load_keyring

    try:
        ring = load_keyring(args.keyring) if args.keyring else None
        results = run_golden(args.dir, ring, args.profile)
    except KeyringError as e:
        raise UsageError(str(e)) from None
    if not results:
        raise UsageError(f"no golden vectors (*.json) in {args.dir}")
    failed = [r for r in results if not r.ok]
    _out({"total": len(results), "passed": len(results) - len(failed), "failed": len(failed),
          "vectors": [r.to_dict() for r in results]})
    for r in failed:
        _err(f"golden mismatch: {r.file}: {r.detail}")
    return EXIT_INVALID if failed else EXIT_OK


def _read_json_file(path: str, what: str) -> Any:
    from ..core.errors import MalformedInput
    from ..core.strictjson import loads

    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        return loads(data)
    except MalformedInput as e:
        raise UsageError(f"{what} {path}: {e.reason}") from None


def cmd_signal_sign(args: argparse.Namespace) -> int:
    from ..core.errors import KeyringError
    from ..core.keys import key_from_entry
    from ..core.signals import sign_signal

    entry = _read_json_file(args.key, "key file")
    payload = _read_json_file(args.payload, "payload")
    if not isinstance(payload, dict):
        raise UsageError("payload must be a JSON object")
    try:
        key = key_from_entry(entry)
        _out(sign_signal(payload, key))
    except KeyringError as e:
        raise UsageError(str(e)) from None
    return EXIT_OK


def cmd_signal_verify(args: argparse.Namespace) -> int:
    from ..core.errors import KeyringError, SignalRejected
    from ..core.signals import load_pubkeys, rejection_record, signal_hash, verify_signal

    try:
        pubkeys = load_pubkeys(_read_json_file(args.pubkeys, "pubkeys file"))
    except KeyringError as e:
        raise UsageError(str(e)) from None
    from ..core.errors import MalformedInput
    from ..core.strictjson import loads

    try:
        raw = sys.stdin.buffer.read() if args.signal == "-" else Path(args.signal).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read signal {args.signal}: {e.strerror}") from None
    try:
        signal = loads(raw)
        payload = verify_signal(signal, pubkeys)
    except (MalformedInput, SignalRejected) as e:
        reason = e.reason if isinstance(e, SignalRejected) else "malformed"
        detail = e.detail if isinstance(e, SignalRejected) else e.reason
        _out({"valid": False, "reason": reason, "detail": detail})
        sys.stderr.write(json.dumps(rejection_record(reason, args.signal)) + "\n")
        return EXIT_INVALID
    _out({"valid": True, "reason": None, "key_id": signal["key_id"],
          "hash": signal_hash(signal), "payload": payload})
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from ..core.errors import KeyringError
    from ..core.keys import generate_key

    try:
        key = generate_key(args.alg, args.kid, args.state)
    except KeyringError as e:
        raise UsageError(str(e)) from None
    entry = key.to_entry()
    entry["fingerprint"] = key.fingerprint
    _out(entry)
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    from .completion import script

    sys.stdout.write(script(build_parser(), "sigops", args.shell))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from ..runtime.operator import main as run_main

    return run_main(args)


def cmd_wal_serve(args: argparse.Namespace) -> int:
    import logging

    from ..core.timeparse import parse_duration
    from ..runtime.walreader import Limits, serve
    from ..runtime.web import parse_listen
    from ..settings.tokens import TokenFile

    try:
        host, port = parse_listen(args.listen)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not os.path.isdir(args.dir):
        raise UsageError(f"--dir {args.dir!r} is not a directory")
    if not args.token_file:
        raise UsageError("--token-file (or SIGOPS_WAL_TOKEN_FILE) is required: the WAL holds "
                         "every PCS the backend received, and only sigops may read it")
    try:
        window = parse_duration(args.max_window)
        if window <= 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--max-window {args.max_window!r} is not a positive duration "
                         "(like 24h or 90m)") from None
    try:
        token = TokenFile(args.token_file, what="WAL reader token file")
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read --token-file: {type(e).__name__}: the file must exist "
                         "and hold a token") from None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.dir, host, port, args.max_bytes, token,
          Limits(max_window=window, deadline=float(args.read_deadline)))
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 with a one-line message, no traceback
        self.print_usage(sys.stderr)
        _err(message)
        raise SystemExit(EXIT_USAGE)


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def _time(s: str) -> Any:
    from ..core.errors import MalformedInput
    from ..core.timeparse import parse_time

    try:
        return parse_time(s)
    except MalformedInput as e:
        raise argparse.ArgumentTypeError(e.reason) from None


def _non_negative(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number >= 0")
    return v


PROFILES = ("python", "go", "fixed9")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="sigops",
        description="Verify and diagnose FLK PCS signatures; rotate keys and answer "
                    "signature-failure spikes on Kubernetes.",
        epilog="examples:\n"
               "  sigops keygen --alg hmac-sha256 --kid k1 --state active > k1.json\n"
               "  sigops verify --keyring K.json --summary pcs.jsonl\n"
               "  sigops diagnose --keyring K.json --max-skew 30 inbox-20261130.wal.gz\n"
               "  sigops signal verify --pubkeys pubkeys.json signal.json\n"
               "  source <(sigops completion bash)\n"
               "  kubectl sigops --help        # incidents and rotations on a cluster\n\n"
               "Output is JSON on stdout; logs go to stderr. Exit 0 = ok/all valid, "
               "1 = something invalid or rejected, 2 = usage or configuration error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from .. import __version__

    p.add_argument("--version", action="version", version=f"sigops {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--keyring", required=True, metavar="K.json",
                        help="keyring file: {\"keys\": [...], \"profile\": ..., "
                             "\"max_skew_seconds\": ...}")
        sp.add_argument("--profile", choices=PROFILES,
                        help="canonical profile (default: the keyring's, else python)")
        sp.add_argument("--max-bytes", type=_positive_int, default=1 << 20, metavar="N",
                        help="size limit of one record in bytes (default 1048576)")
        sp.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                        help="worker processes judging records (default 1); output and its "
                             "order are the same for any N")
        sp.add_argument("--format", choices=("auto", "jsonl", "wal"), default="auto",
                        help="input format: JSONL / .json, or the backend's inbox WAL "
                             "(<time>|<length>|<body> entries); auto (default) recognises a "
                             "WAL by its first entry. gzip-compressed inputs work either way")
        sp.add_argument("--since", type=_time, metavar="TIME",
                        help="WAL: only entries received at or after this ISO-8601 time")
        sp.add_argument("--until", type=_time, metavar="TIME",
                        help="WAL: only entries received before this ISO-8601 time")

    v = sub.add_parser("verify", help="verify PCS records, one JSON line each",
                       description="Verify PCS records. INPUT is a .json PCS (or a JSON array "
                                   "of them), a .jsonl file, an inbox WAL file, or - for stdin "
                                   "(gzip-compressed too). Records are PCS objects or envelopes "
                                   "{pcs, received_at, source}; a WAL entry's time is its "
                                   "received_at.")
    common(v)
    v.add_argument("--summary", action="store_true",
                   help="print one {total, valid, invalid, by_reason} object instead")
    v.add_argument("inputs", nargs="*", metavar="INPUT")
    v.set_defaults(func=cmd_verify)

    d = sub.add_parser("diagnose", help="why do signatures fail? one JSON report",
                       description="Classify each record (malformed, valid, clock_skew, "
                                   "stale_key, pending_key, canonicalization_drift, tampered, "
                                   "unverifiable) and report the incident cause and scenario.")
    common(d)
    d.add_argument("--max-skew", type=_non_negative, metavar="S",
                   help="freshness limit in seconds (default: the keyring's max_skew_seconds)")
    d.add_argument("--per-sample", action="store_true", help="include one line per sample")
    d.add_argument("--recent-config-change", action="store_true",
                   help="the signing config changed just before the spike (favours E)")
    d.add_argument("inputs", nargs="*", metavar="INPUT")
    d.set_defaults(func=cmd_diagnose)

    g = sub.add_parser("golden", help="check golden vectors in a directory",
                       description="Check golden vectors (canonical, pcs, verdict and "
                                   "backend-accepted vectors); exit 1 on any mismatch.")
    g.add_argument("--keyring", metavar="K.json", help="keys for pcs vectors")
    g.add_argument("--profile", choices=PROFILES,
                   help="require this profile (default: any profile may match)")
    g.add_argument("dir", metavar="DIR")
    g.set_defaults(func=cmd_golden)

    s = sub.add_parser("signal", help="sign or verify sigops signals")
    ssub = s.add_subparsers(dest="signal_verb", metavar="sign|verify", parser_class=_Parser)
    ss = ssub.add_parser("sign", help="sign a payload with an Ed25519 key entry")
    ss.add_argument("--key", required=True, metavar="PRIVATE.json",
                    help="an ed25519 key entry with private_b64 (see sigops keygen)")
    ss.add_argument("payload", metavar="PAYLOAD.json")
    ss.set_defaults(func=cmd_signal_sign)
    sv = ssub.add_parser("verify", help="verify a signal (exit 0 valid, 1 rejected)")
    sv.add_argument("--pubkeys", required=True, metavar="P.json",
                    help="{\"keys\": {\"<kid>\": \"<base64 32 bytes>\"}}")
    sv.add_argument("signal", metavar="SIGNAL.json")
    sv.set_defaults(func=cmd_signal_verify)
    def signal_help(_: argparse.Namespace) -> int:
        s.print_help(sys.stderr)
        return EXIT_USAGE

    s.set_defaults(func=signal_help)

    k = sub.add_parser("keygen", help="print a new key entry for a keyring")
    k.add_argument("--alg", required=True, choices=("hmac-sha256", "ed25519"))
    k.add_argument("--kid", help="key id (default: derived from alg, time and fingerprint)")
    k.add_argument("--state", default="pending",
                   choices=("pending", "active", "retiring", "retired"))
    k.set_defaults(func=cmd_keygen)

    from .audit import add_audit_parser

    add_audit_parser(sub)

    w = sub.add_parser("wal", help="serve the backend's inbox WAL tail (a read-only sidecar)")
    wsub = w.add_subparsers(dest="wal_verb", metavar="serve", parser_class=_Parser)
    ws = wsub.add_parser(
        "serve", help="serve the tail of a WAL directory over HTTP (GET /v1/wal)",
        description="A read-only sidecar for the FLK backend pod: serves the newest intact "
                    "inbox WAL entries (GET /v1/wal?since=TIME&max_bytes=N) so sigops can "
                    "diagnose from the PCS the backend refused, and whole windows forward, "
                    "page by page (GET /v1/wal/range?since=T&until=T&cursor=C: the fleet "
                    "audit's source). Mount the backend's WAL "
                    "volume read-only, and the Secret whose token sigops presents "
                    "(Authorization: Bearer; every other request is 401).",
        epilog="example: sigops wal serve --dir /data/wal --listen 0.0.0.0:8079 "
               "--token-file /etc/sigops/wal-token/token")
    ws.add_argument("--dir", required=True, help="the backend's WAL_DIR")
    ws.add_argument("--listen", default="0.0.0.0:8079", help="host:port (default 0.0.0.0:8079)")
    ws.add_argument("--max-bytes", type=_positive_int, default=8 << 20, metavar="N",
                    help="most bytes one answer holds (default 8388608)")
    ws.add_argument("--token-file", default=os.environ.get("SIGOPS_WAL_TOKEN_FILE"),
                    metavar="FILE", help="the bearer token(s) sigops presents, one per line "
                    "(a mounted Secret; re-read when it changes); required "
                    "(env SIGOPS_WAL_TOKEN_FILE)")
    ws.add_argument("--max-window", default="24h", metavar="DURATION",
                    help="how far back since may reach (default 24h); older is 400 "
                         "(a /v1/wal/range page with a cursor: 6h more, a read under way)")
    ws.add_argument("--read-deadline", type=_positive_int, default=10, metavar="SECONDS",
                    help="seconds one read, answer sent included, may take (default 10)")
    ws.set_defaults(func=cmd_wal_serve)

    def wal_help(_: argparse.Namespace) -> int:
        w.print_help(sys.stderr)
        return EXIT_USAGE

    w.set_defaults(func=wal_help)

    r = sub.add_parser("run", help="run the operator (kopf) with its alert receiver",
                       description="Run the operator. Every flag is also an environment "
                                   "variable (shown in brackets).")
    from ..runtime.flags import add_run_flags

    add_run_flags(r)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("completion", help="print a shell completion script (bash, zsh)",
                       description="Print a completion script for sigops.",
                       epilog="examples:\n  source <(sigops completion bash)\n"
                              "  sigops completion zsh > \"${fpath[1]}/_sigops\"",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("shell", choices=("bash", "zsh"))
    c.set_defaults(func=cmd_completion)

    # Listed for --help only: main() hands `sigops testbed ...` to the testbed's own parser.
    t = sub.add_parser("testbed", help="reference backend and agent simulator for drills",
                       add_help=False)
    t.add_argument("testbed_args", nargs=argparse.REMAINDER)
    return p


RECORD_VERBS = frozenset({"cmd_verify", "cmd_diagnose", "cmd_audit_shard"})
"""Verbs that judge records by the million: :func:`_batch_gc` before they start."""


def _batch_gc() -> None:
    """The cyclic garbage collector, tuned for judging records: what is made per record (row
    tuples, the memory of contents) is freed by reference counting, never in cycles, yet a
    collection ran every 700 of them and a full one walked everything alive, the modules
    too. Now startup's objects are frozen out of collections and a young collection runs
    every 100,000 allocations, a full one every 10 million at most; cycles, if any, are still
    collected (memory stays bounded).
    About 5% less CPU per record (``make bench``)."""
    import gc

    gc.freeze()
    gc.set_threshold(100_000, 10, 10)


def main(argv: Sequence[str] | None = None) -> int:
    argv_given = argv
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["testbed"]:  # its own parser, including `sigops testbed --help`
        from ..testbed.cli import main as testbed_main

        return testbed_main(args_in[1:])
    if args_in[:1] == ["__complete"]:  # the completion script asks for candidates
        from .completion import candidates

        for c in candidates(build_parser(), args_in[1:]):
            sys.stdout.write(c + "\n")
        return EXIT_OK
    argv = args_in
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if argv_given is None and getattr(args.func, "__name__", "") in RECORD_VERBS:
        _batch_gc()  # a process of its own (a caller in process keeps its collector)
    try:
        rc: int = args.func(args)
        return rc
    except UsageError as e:
        _err(str(e))
        return EXIT_USAGE
    except (EOFError, OSError, zlib.error) as e:
        # An input that ends early or is damaged (a cut gzip file): what came before it was
        # judged and printed; say so, as a usage error, not a traceback.
        if isinstance(e, BrokenPipeError):
            return EXIT_OK
        _err(f"cannot read the input to its end: {type(e).__name__}: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
