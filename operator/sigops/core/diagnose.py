"""Why does a signature fail? One cause per sample, first match wins, and an aggregate report.

The causes and what they mean for an incident are a table (:data:`CAUSES`), not if-chains.
Diagnosis stays cheap: each sample tries the (key, profile) pairs that matched recently first,
canonical bytes are computed at most once per profile per sample, and repeated records (a replay
flood) reuse the earlier outcome.
"""

from __future__ import annotations

import hashlib
import statistics
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from hmac import compare_digest
from typing import Any

from . import accel
from .canonical import PROFILES, Profile, canonical_bytes, canonical_bytes_of
from .errors import MalformedInput
from .keys import ED25519, HMAC, Key, KeyRing, b64decode_strict
from .pcs import PCS, Sample, content_of, parse_record, signing_message, typed_values
from .scenarios import SCENARIOS
from .strictjson import DEFAULT_MAX_BYTES, loads
from .timeparse import parse_time
from .wal import Buffer, WalEntry, entry_at, read_wal

__all__ = [
    "Cause",
    "CAUSES",
    "CAUSE_NAMES",
    "Verdict",
    "ContentBatch",
    "Diagnoser",
    "aggregate",
    "drift_summary",
    "short_fields",
    "jsonl_records",
    "Row",
    "Run",
    "BATCH_RECORDS",
]

BATCH_RECORDS = 512
"""Records the compiled reader reads per call in :meth:`Diagnoser.check_buffer` and
:meth:`Diagnoser.check_runs`."""
FRESH_SHARE = 8
"""A batch of contents is remembered whole only if at least one record in this many is
new (:meth:`Diagnoser.remember_batch`)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _micros(t: datetime | None) -> int | None:
    """An aware time as whole microseconds since the epoch (a datetime has no finer part);
    a naive one raises TypeError, as comparing it with an aware one does."""
    return None if t is None else (t - _EPOCH) // _US


def jsonl_records(data: Buffer) -> Iterator[bytes]:
    """The records of JSONL bytes as a line reader gives them: lines ending in ``\\n`` (the
    last one maybe not), blank ones dropped."""
    parts = bytes(data).split(b"\n")
    last = parts.pop()
    for part in parts:
        line = part + b"\n"
        if not line.isspace():
            yield line
    if last and not last.isspace():
        yield last


@dataclass(frozen=True, slots=True)
class Cause:
    """A row of the cause table: what a per-sample cause means for an incident."""

    name: str
    scenario: str | None
    """The runbook scenario that answers it (a letter of :data:`SCENARIOS`)."""
    meaning: str

    @property
    def incident_cause(self) -> str | None:
        return SCENARIOS[self.scenario].incident_cause if self.scenario else None


CAUSES: Mapping[str, Cause] = {
    c.name: c
    for c in (
        Cause("malformed", "D",
              "not a well-formed PCS (parse, type, duplicate key, base64, size)"),
        Cause("valid", None, "verifies with an accepted key under the ring's profile"),
        Cause("clock_skew", "B",
              "signature valid but sent_at is too far from received_at"),
        Cause("stale_key", "A", "verifies only with a retired (or revoked) key"),
        Cause("pending_key", "A",
              "verifies only with a pending key or one the backend does not accept"),
        Cause("canonicalization_drift", "C",
              "verifies with a known key only under another profile"),
        Cause("tampered", "D",
              "pcs_id rule broken, or one pcs_id with two signed contents"),
        Cause("unverifiable", "E",
              "well-formed, but no known key and profile verifies it"),
    )
}
CAUSE_NAMES = tuple(CAUSES)
_ORDER = {name: i for i, name in enumerate(CAUSE_NAMES)}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of one sample."""

    index: int
    cause: str
    pcs_id: str | None = None
    kid: str | None = None
    profile: str | None = None
    detail: str | None = None
    source: str | None = None
    version: str | None = None
    skew_seconds: float | None = None

    @property
    def valid(self) -> bool:
        return self.cause == "valid"


Row = tuple[Verdict | None, str | None, tuple[Any, ...] | None]
"""What :meth:`Diagnoser.check_line` / :meth:`~Diagnoser.check_wal` give for one record."""


_PACKED = struct.Struct("<HHq4d")
"""A record's values in a run's ``packed`` (see ``read_batch`` in ``accel/src/lib.rs``):
merkle_root's and shard_id's lengths, epoch, D_hat, coh_star, r, budget; then merkle_root and
shard_id, ASCII."""


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive WAL records valid by the short route under key ``kid``, numbered from
    ``index`` (:meth:`Diagnoser.check_runs`): per record its entry's start in the buffer and
    its pcs_id; how many records of each shard_id, in the order each was first seen; and the
    rest of their values packed, read back only when asked (:meth:`values`)."""

    kid: str
    index: int
    starts: list[int]
    pcs_ids: list[str]
    shards: list[tuple[str, int]]
    packed: bytes = field(repr=False)
    skip: int = 0
    """Records at the head of ``packed`` that are not the run's (they took the per-record
    route: another key had taken the front)."""

    def values(self) -> list[tuple[Any, ...]]:
        """Each record's signed values (pcs_id, merkle_root, epoch, shard_id, D_hat,
        coh_star, r, budget), as the compiled reader's rows give them."""
        return _unpacked(self.pcs_ids, self.packed, self.skip)

    def contents(self) -> ContentBatch:
        """The records' contents, as :meth:`Diagnoser.remember_batch` takes them (read back
        only if one is wanted; the batch keeps the pcs_ids and the packed values, no more)."""
        ids, packed, skip = self.pcs_ids, self.packed, self.skip
        return ContentBatch(ids, lambda: [content_of(v) for v in _unpacked(ids, packed, skip)])


def _unpacked(pcs_ids: list[str], packed: bytes, skip: int) -> list[tuple[Any, ...]]:
    """:meth:`Run.values`."""
    unpack, size = _PACKED.unpack_from, _PACKED.size
    rest: list[tuple[Any, ...]] = []
    off = 0
    while off < len(packed):
        n_root, n_shard, epoch, d, c, r, b = unpack(packed, off)
        off += size
        root = packed[off:off + n_root].decode("ascii")
        shard = packed[off + n_root:off + n_root + n_shard].decode("ascii")
        off += n_root + n_shard
        rest.append((root, epoch, shard, d, c, r, b))
    return [(pid, *v) for pid, v in zip(pcs_ids, rest[skip:], strict=True)]


def _entry(buf: Buffer, pos: int) -> WalEntry:
    """The WAL entry the compiled reader framed at ``pos`` (Python's reader reads it)."""
    entry = entry_at(buf, pos)[0]
    assert entry is not None
    return entry


class ContentBatch:
    """The signed contents of many verified records, in input order, read only when needed.

    ``sigops verify --jobs`` hands the contents its workers found to one process, which must
    remember them in input order; almost always nothing asks for them again. A batch is
    remembered as one shared value per pcs_id (:meth:`Diagnoser.remember_batch`), and
    ``load`` runs the first time a content is wanted."""

    __slots__ = ("pcs_ids", "_load", "_items")

    def __init__(self, pcs_ids: Sequence[str], load: Callable[[], Sequence[tuple[Any, ...]]]
                 ) -> None:
        self.pcs_ids = pcs_ids
        self._load: Callable[[], Sequence[tuple[Any, ...]]] | None = load
        self._items: Sequence[tuple[Any, ...]] = ()

    def content_at(self, k: int) -> tuple[Any, ...]:
        if self._load is not None:
            self._items, self._load = self._load(), None
        return self._items[k]

    def content_for(self, pcs_id: str) -> tuple[Any, ...]:
        """The content of the batch's first record with this pcs_id: the one remembered when
        the whole batch was (see :meth:`Diagnoser.remember_batch`)."""
        return self.content_at(list(self.pcs_ids).index(pcs_id))


def short_fields(obj: Any) -> tuple[tuple[Any, ...], bytes, Any] | None:
    """``(values, sig, sent_at)`` of a decoded bare PCS that the short route can go on with:
    well-typed signed values (:func:`typed_values`), a signature in strict base64; None for
    anything else (an envelope, a problem: the full route decides and gives the reason)."""
    if type(obj) is not dict or "pcs" in obj:
        return None
    values = typed_values(obj)
    if values is None:
        return None
    try:
        sig = b64decode_strict(obj.get("sig"), "sig")
    except MalformedInput:
        return None
    return values, sig, obj.get("sent_at")


@dataclass
class _Match:
    key: Key
    profile: str


@dataclass
class Diagnoser:
    """Judges samples against one key ring; keeps a small cache of what matched.

    >>> from sigops.core.keys import Key
    >>> ring = KeyRing((Key("k1", "hmac-sha256", secret=b"testsecret"),))
    >>> d = Diagnoser(ring)
    >>> d.classify_obj({"pcs_id": "x"}, 0).cause
    'malformed'
    """

    ring: KeyRing
    profile: str | None = None
    max_skew_seconds: float | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    content_memory: int = 65536
    accelerate: bool = True
    """Use the compiled reader (:mod:`sigops.core.accel`) for the short route when it is
    built; False: the pure-Python route only (the reference)."""
    compiled_mac: bool = True
    """With the compiled reader: let it check the HMAC of the short route's records under the
    key that matched last (:data:`sigops.core.accel.batch_mac`); False: Python computes every
    MAC (the same rows and :attr:`tried` either way)."""
    # First content per pcs_id (a tuple, or a ContentBatch holding it), oldest first; when
    # full, the older half is forgotten. An OrderedDict: dropping the oldest with
    # del d[next(iter(d))] rescans the deleted slots of a plain dict on every call.
    _seen: OrderedDict[str, Any] = field(default_factory=OrderedDict, repr=False)
    _replay: dict[tuple[bytes, tuple[Any, ...]], _Match | None] = field(
        default_factory=dict, repr=False)
    _mru: dict[str, list[_Match]] = field(default_factory=dict, repr=False)
    _short_route: bool = field(default=False, repr=False)
    _own: Profile | None = field(default=None, repr=False)
    _read: Callable[[bytes, int], Any] | None = field(default=None, repr=False)
    _code: int = field(default=0, repr=False)
    _windows: dict[int, tuple[int | None, int | None, bool]] | None = field(default=None,
                                                                            repr=False)
    tried: int = 0
    at: int = field(default=-1, repr=False)
    """Where the record :meth:`check_buffer` (or :meth:`check_runs`) gave last starts in its
    WAL buffer (byte offset of the entry; of a run's last record): a caller reads that entry's
    time there when it needs it."""

    def __post_init__(self) -> None:
        prof = self.profile or self.ring.profile
        if prof not in PROFILES:
            from .errors import KeyringError

            raise KeyringError(f"unknown profile {prof!r}; known: {', '.join(PROFILES)}")
        self.profile = prof
        self._own = PROFILES[prof]
        if self.max_skew_seconds is None:
            self.max_skew_seconds = self.ring.max_skew_seconds
        # Candidate (key, profile) pairs per alg: the ring's profile first, then the others.
        for alg in ("hmac-sha256", "ed25519"):
            keys = [k for k in self.ring.keys if k.alg == alg]
            pairs = [_Match(k, prof) for k in keys]
            pairs += [_Match(k, p) for p in PROFILES if p != prof for k in keys]
            self._mru[alg] = pairs
        # The short route of check_line() needs each signature to have one possible signer.
        material = [(k.alg, k.secret or k.public) for k in self.ring.keys]
        self._short_route = len(set(material)) == len(material)
        # The compiled reader (when built) for the short route, if it writes this profile.
        if self.accelerate and self._short_route and accel.read_pcs is not None and \
                PROFILES.get(prof) is self._own and prof in accel.PROFILE_CODES:
            self._read, self._code = accel.read_pcs, accel.PROFILE_CODES[prof]

    # -- per sample ---------------------------------------------------------------------

    def classify_line(self, line: bytes | str, index: int) -> Verdict:
        """Judge one raw JSONL line (or JSON document)."""
        return self.settle(*self.judge_line(line, index))

    def classify_obj(self, obj: Any, index: int) -> Verdict:
        """Judge one decoded record (a PCS or an envelope)."""
        return self.settle(*self.judge_obj(obj, index))

    def classify(self, sample: Sample, index: int) -> Verdict:
        return self.settle(*self.judge(sample, index))

    # The two halves of classify: judge() looks at one sample alone, settle() applies what
    # earlier samples taught (one pcs_id, two contents). Records can be judged in any order
    # or process, as long as settle() sees them in input order (``sigops verify --jobs``).

    def check_line(self, line: bytes | str, index: int
                   ) -> tuple[Verdict | None, str | None, tuple[Any, ...] | None]:
        """:meth:`judge_line` for ``sigops verify``, without building a Verdict for a valid
        record that takes the short route: then ``(None, kid, content)`` (the pcs_id is
        ``content[0]``, the profile the ring's), else ``(verdict, None, content)`` as
        :meth:`judge_line` gives them. Either way the caller settles: remember a valid one."""
        short = True
        read = self._read
        if read is not None and type(line) is bytes and len(line) <= self.max_bytes:
            got = read(line, self._code)  # the compiled reader: None when it is unsure
            if got is not None:
                values, canon, sig, sent = got
                hit = self._short_tail(values, canon, sig, sent)
                if hit is not None:
                    return None, hit[0], hit[1]
                short = False  # the short route said no: the full route decides
        try:
            obj = loads(line, self.max_bytes)
        except MalformedInput as e:
            return Verdict(index, "malformed", detail=e.reason), None, None
        hit = self._short(obj) if short else None
        if hit is not None:
            return None, hit[0], hit[1]
        verdict, content = self.judge_obj(obj, index)
        return verdict, None, content

    def check_wal(self, entry: WalEntry, index: int
                  ) -> tuple[Verdict | None, str | None, tuple[Any, ...] | None]:
        """:meth:`check_line` for an inbox WAL entry: the short route when its body is valid
        by it, with the entry's time as ``received_at`` (key window and skew)."""
        if entry.error is not None or entry.body is None or entry.received_at is None:
            verdict, content = self.judge_wal(entry, index)
            return verdict, None, content
        try:
            received: datetime | None = parse_time(entry.received_at)
        except MalformedInput:
            received = None
        short = received is not None
        read, body = self._read, entry.body
        if short and read is not None and len(body) <= self.max_bytes:
            got = read(body, self._code)  # the compiled reader, as in check_line
            if got is not None:
                values, canon, sig, sent = got
                hit = self._short_tail(values, canon, sig, sent, received)
                if hit is not None:
                    return None, hit[0], hit[1]
                short = False
        try:
            obj = loads(body, self.max_bytes)
        except MalformedInput as e:
            return Verdict(index, "malformed", detail=e.reason), None, None
        if short and type(obj) is dict:
            hit = self._short(obj, received)
            if hit is not None:
                return None, hit[0], hit[1]
        verdict, content = self._judge_wal_obj(obj, entry.received_at, index)
        return verdict, None, content

    def check_buffer(self, buf: Buffer, wal: bool, index: int = 0,
                     since: datetime | None = None, until: datetime | None = None
                     ) -> Iterator[Row]:
        """The rows of every record of ``buf``, numbered from ``index``: with ``wal``,
        :meth:`check_wal` of each inbox WAL entry :func:`~sigops.core.wal.read_wal` gives
        (those received in ``[since, until)``, damaged ones always); else :meth:`check_line`
        of each JSONL line (:func:`jsonl_records`). The same rows in the same order as those
        calls give (the pure-Python route is exactly that loop).

        With the compiled reader, ``read_batch`` reads :data:`BATCH_RECORDS` records per call
        and the short route's last steps (MAC, key window, skew) run here in one loop; a
        record it is unsure of, or one the short route refuses, takes the per-record route
        (the full one decides). With :attr:`compiled_mac`, each call also gets the secret of
        the HMAC key the short route tries (the key that matched last, under the ring's
        profile) and checks each 32-byte signature under it: a row signed by that key needs
        no MAC here; when the key that matched last changes mid-call, the rows after that
        are MAC'd here under the new key, as without it."""
        batch = accel.read_batch if self._read is not None else None
        bounds = None if batch is None else self._batch_bounds(since, until)
        if batch is None or bounds is None:
            records: Iterable[Any] = read_wal(buf, since, until) if wal else jsonl_records(buf)
            check: Callable[[Any, int], Row] = self.check_wal if wal else self.check_line
            for rec in records:
                if wal:
                    self.at = rec.offset
                yield check(rec, index)
                index += 1
            return
        lo, hi, windows = bounds
        own = self._own
        assert own is not None
        name, limit, code, max_bytes = own.name, self.max_skew_seconds, self._code, self.max_bytes
        hmac_pairs, ed_pairs = self._mru[HMAC], self._mru[ED25519]
        sha256 = hashlib.sha256
        pos, size = 0, len(buf)
        last: Key | None = None
        window: tuple[int | None, int | None, bool] = (None, None, False)
        compiled_mac = self.compiled_mac and accel.batch_mac
        while pos < size:
            # The key the short route would try first for an HMAC record: the compiled reader
            # checks each row under it (the secret crosses for this call only).
            mkey: Key | None = None
            if compiled_mac and hmac_pairs and hmac_pairs[0].profile == name and \
                    hmac_pairs[0].key.secret is not None:
                mkey = hmac_pairs[0].key
            pos, rows, stopped = batch(buf, pos, code, wal, max_bytes, lo, hi, BATCH_RECORDS,
                                       mac_key=None if mkey is None else mkey.secret)
            for start, end, canon, sig, when, received, values, mac_ok in rows:
                if canon is not None:
                    # _short_tail, inline: the key that matched last, under the ring's profile.
                    pairs = hmac_pairs if len(sig) == 32 else ed_pairs
                    if pairs and pairs[0].profile == name:
                        key = pairs[0].key
                        if key is not last:
                            last, window = key, windows.get(id(key), (None, None, False))
                        nb, na, accepted = window
                        if received is not None:
                            if limit is not None and when is not None and \
                                    abs(received - when) / 1_000_000 > limit:
                                accepted = False  # clock_skew: the full route says so
                            when = received
                        if accepted and (when is None or (
                                (nb is None or when >= nb) and (na is None or when <= na))) and (
                                (mac_ok if key is mkey else compare_digest(key.mac(canon), sig))
                                if len(sig) == 32
                                else key.verify(sha256(canon).digest(), sig)):
                            self.tried += 1
                            self.at = start
                            # content_of, inline: four non-zero floats are their own key.
                            fd, fc, fr, fb = values[4:]
                            yield None, key.kid, values if (
                                type(fd) is float and type(fc) is float and type(fr) is float
                                and type(fb) is float and fd and fc and fr and fb
                            ) else content_of(values)
                            index += 1
                            continue
                # The per-record route (it tries the short route once more, then the full one).
                self.at = start
                if wal:
                    yield self.check_wal(_entry(buf, start), index)
                else:
                    yield self.check_line(bytes(buf[start:end]), index)
                index += 1
            if stopped:  # a WAL entry the compiled reader does not frame: Python's reader does
                row, pos = self._unframed(buf, pos, index, since, until)
                if row is not None:
                    yield row
                    index += 1

    def _unframed(self, buf: Buffer, pos: int, index: int, since: datetime | None,
                  until: datetime | None) -> tuple[Row | None, int]:
        """The row of the WAL entry at ``pos`` that the compiled reader does not frame, read
        by Python's reader (None: a blank line, or outside ``[since, until)``), and where
        reading goes on."""
        entry, t, pos = entry_at(buf, pos)
        if entry is None or (t is not None and (
                (since is not None and t < since) or (until is not None and t >= until))):
            return None, pos
        self.at = entry.offset
        return self.check_wal(entry, index), pos

    def check_runs(self, buf: Buffer, index: int = 0, since: datetime | None = None,
                   until: datetime | None = None) -> Iterator[Row | Run]:
        """:meth:`check_buffer` of an inbox WAL for a reader that wants only counts of the
        valid ones (the fleet audit): the same records, numbered and judged the same, but
        consecutive records valid by the short route under one HMAC key come as one
        :class:`Run` (no row, no canonical bytes, no signature of their own); the caller
        remembers their contents as :meth:`remember` would.

        The compiled reader decides those records whole (``read_batch(short=)``: MAC, key
        window, skew) under the key the short route tries first; a run is given only while
        that key is still the one it tries (a record before it may have moved another to the
        front: each record then takes the per-record route). Every other record takes the
        per-record route (:meth:`check_wal`: read again, its MAC computed in Python), which
        decides as :meth:`check_buffer` does, at a few microseconds more per record than
        :meth:`check_buffer`'s inline checks (for an Ed25519 record, a few percent). Without
        the compiled reader's ``short``, or with no HMAC key, this is :meth:`check_buffer`."""
        hmac_pairs = self._mru[HMAC]
        lean = self._read is not None and self.compiled_mac and accel.batch_short and \
            bool(hmac_pairs)
        bounds = self._batch_bounds(since, until) if lean else None
        if bounds is None or accel.read_batch is None:
            yield from self.check_buffer(buf, True, index, since, until)
            return
        lo, hi, windows = bounds
        batch = accel.read_batch
        own = self._own
        assert own is not None
        name, code, max_bytes, skew = own.name, self._code, self.max_bytes, self.max_skew_seconds
        pos, size = 0, len(buf)
        while pos < size:
            front = hmac_pairs[0]
            key = front.key
            nb, na, accepted = windows.get(id(key), (None, None, False))
            # (A skew limit that is no exact float: the per-record route compares it.)
            usable = front.profile == name and key.secret is not None and accepted and (
                skew is None or type(skew) is float or abs(skew) <= 2 ** 53)
            pos, rows, stopped = batch(
                buf, pos, code, True, max_bytes, lo, hi, BATCH_RECORDS,
                mac_key=key.secret if usable else None,
                short=(nb, na, skew) if usable else None)
            for row in rows:
                if len(row) == 4:  # a run: valid under ``key`` while it is still the front
                    starts, ids, packed, shards = row
                    k = 0
                    while k < len(starts) and hmac_pairs[0] is not front:
                        self.at = starts[k]
                        yield self.check_wal(_entry(buf, starts[k]), index)
                        index += 1
                        k += 1
                    if k < len(starts):
                        run = Run(key.kid, index, starts[k:], ids[k:], shards, packed, k)
                        if k:  # the rest, counted again
                            run = replace(run, shards=list(Counter(
                                v[3] for v in run.values()).items()))
                        self.tried += len(run.starts)
                        self.at = run.starts[-1]
                        yield run
                        index += len(run.starts)
                    continue
                self.at = row[0]
                yield self.check_wal(_entry(buf, row[0]), index)
                index += 1
            if stopped:
                got, pos = self._unframed(buf, pos, index, since, until)
                if got is not None:
                    yield got
                    index += 1

    def _batch_bounds(self, since: datetime | None, until: datetime | None
                      ) -> tuple[int | None, int | None,
                                 dict[int, tuple[int | None, int | None, bool]]] | None:
        """For the compiled reader's batch calls: ``[since, until)`` in microseconds and
        :meth:`_key_windows`; None when a time is naive (the per-record route says what it
        means)."""
        try:
            return _micros(since), _micros(until), self._key_windows()
        except TypeError:
            return None

    def _key_windows(self) -> dict[int, tuple[int | None, int | None, bool]]:
        """Per key (by identity): its window in microseconds and whether the backend
        accepts it, for the short route of :meth:`check_buffer`."""
        if self._windows is None:
            self._windows = {id(k): (_micros(k.not_before), _micros(k.not_after),
                                     self.ring.accepts(k)) for k in self.ring.keys}
        return self._windows

    def _short(self, obj: Any, received: datetime | None = None
               ) -> tuple[str, tuple[Any, ...]] | None:
        """``(kid, content)`` when ``obj`` is a bare PCS that is valid by the short route:
        well-typed, signed under the ring's profile by the key that matched last, that key
        accepted by the backend and inside its window (at ``received``, else at its
        ``sent_at``), and with ``received`` not further from ``sent_at`` than the skew limit.
        None: :meth:`judge_obj` decides.

        The full route decides such a record the same way: with one possible signer per
        signature, the first (key, profile) pair that verifies is the only one, the replay
        memo can only hold that answer, and its key window and skew use the same times."""
        if not self._short_route:
            return None
        fields = short_fields(obj)
        if fields is None:
            return None
        values, sig, sent = fields
        return self._short_tail(values, None, sig, sent, received)

    def _short_tail(self, values: tuple[Any, ...], canon: bytes | None, sig: bytes, sent: Any,
                    received: datetime | None = None) -> tuple[str, tuple[Any, ...]] | None:
        """:meth:`_short` of a record read as far as its typed ``values``, its decoded
        ``sig`` and its ``sent_at``; ``canon``: its canonical bytes under the ring's profile
        when already known (the compiled reader writes them)."""
        try:
            when = None if sent is None else parse_time(sent)
        except MalformedInput:
            return None
        n = len(sig)
        if n != 32 and n != 64:
            return None
        alg = HMAC if n == 32 else ED25519
        pairs = self._mru[alg]
        own = self._own
        if not pairs or own is None or pairs[0].profile != own.name:
            return None
        key = pairs[0].key
        self.tried += 1
        if canon is None:
            canon = canonical_bytes_of(values, own)
        if not key.verify(signing_message(canon, alg), sig):
            return None
        if received is not None:
            limit = self.max_skew_seconds
            if limit is not None and when is not None and \
                    abs((received - when).total_seconds()) > limit:
                return None  # clock_skew: the full route says so, with its numbers
            when = received
        if key.valid_at(when) != 0 or not self.ring.accepts(key):
            return None
        return key.kid, content_of(values)

    def judge_line(self, line: bytes | str, index: int) -> tuple[Verdict, tuple[Any, ...] | None]:
        """:meth:`judge` of a raw JSONL line (or JSON document)."""
        try:
            obj = loads(line, self.max_bytes)
        except MalformedInput as e:
            return Verdict(index, "malformed", detail=e.reason), None
        return self.judge_obj(obj, index)

    def judge_wal(self, entry: WalEntry, index: int) -> tuple[Verdict, tuple[Any, ...] | None]:
        """:meth:`judge` of an inbox WAL entry: its body is the PCS as posted, its time the
        ``received_at``; a damaged entry is ``malformed`` with the reader's reason."""
        if entry.error is not None or entry.body is None:
            return Verdict(index, "malformed", detail=f"wal: {entry.error}"), None
        try:
            obj = loads(entry.body, self.max_bytes)
        except MalformedInput as e:
            return Verdict(index, "malformed", detail=e.reason), None
        return self._judge_wal_obj(obj, entry.received_at, index)

    def _judge_wal_obj(self, obj: Any, received_at: str | None, index: int
                       ) -> tuple[Verdict, tuple[Any, ...] | None]:
        if type(obj) is not dict:
            return Verdict(index, "malformed", detail="a WAL entry's body must be a PCS object"
                           ), None
        return self.judge_obj({"pcs": obj, "received_at": received_at}, index)

    def judge_obj(self, obj: Any, index: int) -> tuple[Verdict, tuple[Any, ...] | None]:
        """:meth:`judge` of a decoded record (a PCS or an envelope)."""
        try:
            sample = parse_record(obj)
        except MalformedInput as e:
            pid = obj.get("pcs_id") if isinstance(obj, dict) else None
            if pid is None and isinstance(obj, dict) and isinstance(obj.get("pcs"), dict):
                pid = obj["pcs"].get("pcs_id")
            return Verdict(index, "malformed", pid if isinstance(pid, str) else None,
                           detail=e.reason), None
        return self.judge(sample, index)

    def judge(self, sample: Sample, index: int) -> tuple[Verdict, tuple[Any, ...] | None]:
        """The verdict as far as this sample alone decides it, and the signed content that
        :meth:`settle` needs (None when the verdict is final)."""
        pcs = sample.pcs
        when = sample.received_at or pcs.sent_at
        version = pcs.agent_version or pcs.version
        content = pcs.content_key()  # once per sample: the replay memo and _seen both use it

        def verdict(cause: str, kid: str | None = None, profile: str | None = None,
                    detail: str | None = None, skew: float | None = None) -> Verdict:
            return Verdict(index, cause, pcs.pcs_id, kid, profile, detail, sample.source,
                           version, skew)

        kind, kid, prof = self._match(pcs, when, content)
        if kind == "accepted":
            skew = self._skew(sample)
            limit = self.max_skew_seconds
            if skew is not None and limit is not None and abs(skew) > limit:
                # Still validly signed content: remembered like a valid record's.
                return verdict("clock_skew", kid, prof, f"sent_at is {skew:+.1f}s from "
                               f"received_at (limit {limit:g}s)", skew), content
            return verdict("valid", kid, prof, skew=skew), content
        if kind in ("stale_key", "pending_key"):
            return verdict(kind, kid, prof), content
        if kind == "drift":
            return verdict("canonicalization_drift", kid, prof,
                           f"verifies only under profile {prof!r}, not {self.profile!r}"
                           ), content
        if not pcs.pcs_id_ok():
            return verdict("tampered",
                           detail="pcs_id is not sha256(merkle_root|epoch|shard_id)"), None
        return verdict("unverifiable", detail="no known key and profile verifies it"), content

    def settle(self, verdict: Verdict, content: tuple[Any, ...] | None) -> Verdict:
        """Finish a :meth:`judge` verdict with the memory of earlier samples (call in input
        order): a sample that verified is remembered; an unverifiable one whose pcs_id was
        seen with other signed content is tampered."""
        pid = verdict.pcs_id
        if content is None or pid is None:
            return verdict
        if verdict.cause != "unverifiable":
            self.remember(pid, content)
            return verdict
        prev = self._seen.get(pid)
        if type(prev) is ContentBatch:
            prev = prev.content_for(pid)
        if prev is not None and prev != content:
            return Verdict(verdict.index, "tampered", pid,
                           detail="pcs_id seen before with other signed content",
                           source=verdict.source, version=verdict.version)
        return verdict

    @staticmethod
    def _skew(sample: Sample) -> float | None:
        if sample.received_at is None or sample.pcs.sent_at is None:
            return None
        return (sample.received_at - sample.pcs.sent_at).total_seconds()

    def remember(self, pcs_id: str, content: tuple[Any, ...] | ContentBatch) -> None:
        """Note the signed content of a verified pcs_id (what :meth:`settle` does for one):
        the first one seen is kept, for as long as the memory holds it."""
        seen = self._seen
        if pcs_id not in seen:
            if len(seen) >= self.content_memory:
                self._forget_older_half()
            seen[pcs_id] = content

    def remember_batch(self, batch: ContentBatch, start: int = 0, stop: int | None = None
                       ) -> None:
        """:meth:`remember` records ``start:stop`` of ``batch``, in order. The whole batch
        at once, with room for it, costs one dict entry per new pcs_id and no content: each
        maps to the batch, whose first record with that pcs_id is the one remembered. Else
        (part of a batch, the memory fills up on the way, or fewer than one record in
        :data:`FRESH_SHARE` is new) one by one. So a batch is held whole only for at least
        one new pcs_id per that many of its records: a flood of replays cannot make the memory
        hold a whole batch for one new pcs_id each (forgetting the older half may still leave
        a batch held for fewer of its pcs_ids, until they are forgotten too)."""
        seen, ids = self._seen, batch.pcs_ids
        stop = len(ids) if stop is None else stop
        if start == 0 and stop == len(ids):
            fresh = dict.fromkeys([p for p in ids if p not in seen], batch)
            if not fresh:
                return
            if len(seen) + len(fresh) <= self.content_memory and \
                    len(fresh) * FRESH_SHARE >= len(ids):
                seen.update(fresh)
                return
        for k in range(start, stop):
            if ids[k] not in seen:  # (loading the contents only for one to keep)
                self.remember(ids[k], batch.content_at(k))

    def _forget_older_half(self) -> None:
        seen = self._seen
        for _ in range(len(seen) - self.content_memory // 2):
            seen.popitem(last=False)

    def _find(self, pcs: PCS, content: tuple[Any, ...]) -> _Match | None:
        """The (key, profile) that verifies, trying the pairs that matched most recently first
        (one move-to-front list over every key and profile); a replayed record reuses the last
        answer.

        A signature verifies for one (key, message) pair only, so the first hit is the answer;
        a hit under another profile whose bytes equal the ring profile's counts as the ring's.
        """
        sig = pcs.sig
        memo = (sig, content)
        replay = self._replay
        if memo in replay:
            return replay[memo]
        own, alg = self.profile or self.ring.profile, pcs.alg
        pairs = self._mru[alg]
        subset = pcs.subset
        canon: dict[str, bytes] = {}

        def message(profile: str) -> bytes:
            msg = canon.get(profile)
            if msg is None:
                msg = canon[profile] = signing_message(canonical_bytes(subset, profile), alg)
            return msg

        found: _Match | None = None
        for i, m in enumerate(pairs):
            self.tried += 1
            if m.key.verify(message(m.profile), sig):
                if i:  # move to front: the next sample from the same agents tries it first
                    pairs.insert(0, pairs.pop(i))
                found = m
                if m.profile != own and message(own) == message(m.profile):
                    found = _Match(m.key, own)
                break
        if len(replay) >= 4096:
            replay.clear()
        replay[memo] = found
        return found

    def _match(self, pcs: PCS, when: datetime | None, content: tuple[Any, ...]
               ) -> tuple[str, str | None, str | None]:
        """(kind, kid, profile): kind is accepted, stale_key, pending_key, drift or none."""
        m = self._find(pcs, content)
        if m is None:
            return "none", None, None
        k = m.key
        if m.profile != self.profile:
            return "drift", k.kid, m.profile
        window = k.valid_at(when)
        if window == 0 and self.ring.accepts(k):
            return "accepted", k.kid, m.profile
        if window > 0 or k.state in ("retired", "retiring", "revoked"):
            return "stale_key", k.kid, m.profile
        return "pending_key", k.kid, m.profile

    def run(self, records: Iterable[bytes | str], start: int = 0) -> list[Verdict]:
        return [self.classify_line(r, i) for i, r in enumerate(records, start)]


# -- aggregate -------------------------------------------------------------------------------


def _confidence(dominant: int, failing: int) -> float:
    # Share of the dominant cause among failures, discounted when there are few samples.
    if failing == 0:
        return 0.0
    return round(dominant / failing * failing / (failing + 1), 3)


def _skew_report(verdicts: Sequence[Verdict], limit: float | None) -> dict[str, Any] | None:
    skewed = [v for v in verdicts if v.cause == "clock_skew" and v.skew_seconds is not None]
    if not skewed:
        return None
    timed = [v for v in verdicts if v.skew_seconds is not None]
    by_src: dict[str, list[float]] = {}
    for v in skewed:
        by_src.setdefault(v.source or "unknown", []).append(v.skew_seconds or 0.0)
    all_sources = {v.source or "unknown" for v in timed}
    affected = sorted(by_src)
    if len(all_sources) <= 1:
        scope = "single_source" if len(skewed) < len(timed) else "all_sources"
        if len(all_sources) == 1 and len(skewed) == len(timed):
            scope = "all_sources" if affected == ["unknown"] else "single_source"
    elif len(affected) == len(all_sources):
        scope = "all_sources"
    elif len(affected) == 1:
        scope = "single_source"
    else:
        scope = "some_sources"
    # Every source off by the same amount points at the one clock they share: the backend's.
    suspect = "backend_clock" if scope == "all_sources" and len(all_sources) > 1 else "agent_clock"
    offsets = [v.skew_seconds or 0.0 for v in skewed]
    return {
        "offset_seconds": round(statistics.median(offsets), 3),
        "max_abs_seconds": round(max(abs(o) for o in offsets), 3),
        "limit_seconds": limit,
        "scope": scope,
        "suspect": suspect,
        "affected_sources": len(affected),
        "total_sources": len(all_sources),
        "sources": {s: round(statistics.median(o), 3) for s, o in sorted(by_src.items())},
    }


def _drift_follows_version(verdicts: Sequence[Verdict]) -> list[str] | None:
    """Versions that explain the drift, when drifting samples carry versions others do not."""
    drift = {v.version for v in verdicts if v.cause == "canonicalization_drift"}
    ok = {v.version for v in verdicts if v.cause in ("valid", "clock_skew", "stale_key",
                                                      "pending_key")}
    if None in drift or not drift or not ok or drift & ok:
        return None
    return sorted(d for d in drift if d is not None)


def aggregate(verdicts: Sequence[Verdict], *, max_skew_seconds: float | None = None,
              recent_config_change: bool = False,
              verifier_profile: str | None = None) -> dict[str, Any]:
    """The aggregate report of the ``diagnose`` contract (without per-sample lines).

    ``verifier_profile`` is the form the verifying side checks (the key ring's profile); with
    it, a drift report says which side signs which form."""
    counts = Counter(v.cause for v in verdicts)
    by_cause = {c: counts[c] for c in CAUSE_NAMES if counts[c]}
    failing = {c: n for c, n in by_cause.items() if c != "valid"}
    n_fail = sum(failing.values())
    report: dict[str, Any] = {"total": len(verdicts), "by_cause": by_cause}
    if not verdicts:
        dominant: str | None = None
    elif not failing:
        dominant = "valid"
    else:
        dominant = max(failing, key=lambda c: (failing[c], -_ORDER[c]))
    report["dominant_cause"] = dominant
    incident, scenario = "Unknown", None
    drift_versions = None
    if dominant and dominant != "valid":
        row = CAUSES[dominant]
        incident, scenario = row.incident_cause or "Unknown", row.scenario
        if dominant == "canonicalization_drift":
            drift_versions = _drift_follows_version(verdicts)
            if drift_versions:
                incident = "LibraryVersionMismatch"
        elif dominant == "unverifiable" and not recent_config_change and counts["valid"]:
            # Some records verify, so the backend's key is right: the ones that do not are
            # forgeries or tampering (D). Nothing verifying points at the configuration (E).
            incident, scenario = "MaliciousActivity", "D"
    report["incident_cause"] = incident
    report["confidence"] = _confidence(failing.get(dominant or "", 0), n_fail)
    report["scenario"] = scenario
    report["skew"] = _skew_report(verdicts, max_skew_seconds)
    drift = [v for v in verdicts if v.cause == "canonicalization_drift"]
    if drift:
        report["drift"] = {
            "profiles": dict(Counter(v.profile or "" for v in drift)),
            "versions": drift_versions or sorted({v.version for v in drift if v.version}),
        }
        if verifier_profile is not None:
            report["drift"]["verifier_profile"] = verifier_profile
            report["drift"]["summary"] = drift_summary(report["drift"]["profiles"],
                                                       verifier_profile)
    sources = Counter(v.source for v in verdicts if not v.valid and v.source)
    if sources:
        report["top_failing_sources"] = [{"source": s, "failures": n}
                                         for s, n in sources.most_common(10)]
    return report


def drift_summary(signed: Mapping[str, int], verifier: str) -> str:
    """Which side signs which form, in words: "12 records are signed in the python form
    (upstream Python agent: ...); the verifier checks the go form (upstream Go backend: ...)"."""
    def form(name: str) -> str:
        row = PROFILES.get(name)
        return f"the {name} form" + (f" ({row.description})" if row else "")

    parts = [f"{n} record{'s are' if n != 1 else ' is'} signed in {form(p)}"
             for p, n in sorted(signed.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "; ".join(parts) + f"; the verifier checks {form(verifier)}"
