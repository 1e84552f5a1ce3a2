"""Batch verification: judge blocks of records, settle them in input order, count.

One path for ``sigops verify`` / ``diagnose``, in one process or in N worker processes:

- :func:`judge_block` looks at each record of a block alone (``Diagnoser.check_line`` for
  ``verify``, ``judge_line`` for ``diagnose``) -- what a worker does, or this process;
- :class:`Settler` applies, in input order, what earlier records taught (one pcs_id with two
  signed contents is tampered) and yields the final outcome of each record, or counts them.

With ``jobs > 1`` blocks are judged in a process pool and settled here as they come back, in
order, so outcomes, their order and the counts are those of one process. Pure: no Kubernetes
or network; file blocks are read by the worker itself (:class:`FileRange`).
"""

from __future__ import annotations

import os
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import islice
from typing import IO, Any, Literal

from .diagnose import ContentBatch, Diagnoser, Row, Verdict, jsonl_records
from .keys import load_keyring
from .wal import Buffer, WalEntry, read_wal

__all__ = ["Mode", "Valid", "Verdict", "Outcome", "WorkerSpec", "parallel_safe", "LineBlock",
           "FileRange", "WalBuffer", "Item", "file_blocks", "judge_block", "judge_blocks",
           "Settler", "run", "count", "BLOCK_BYTES", "CHUNK_RECORDS", "BLOCK_RECORDS"]

Mode = Literal["verify", "diagnose", "count"]
"""``verify``: outcomes, the short route for valid records; ``diagnose``: full verdicts;
``count``: one total and the count of each final cause."""

BLOCK_BYTES = 1 << 21
"""Bytes of JSONL per task (about 3,700 upstream PCS)."""
CHUNK_RECORDS = 1024
"""Records per task otherwise."""
BLOCK_RECORDS = 8192
"""At most this many records per judged block in one process (a whole WAL is one item)."""


@dataclass(frozen=True, slots=True)
class Valid:
    """A record found valid by the short route: no Verdict was built for it."""

    index: int
    pcs_id: str
    kid: str


Outcome = Verdict | Valid
"""What ``verify`` gives per record: a :class:`Verdict`, or :class:`Valid` for the short
route (``diagnose`` always gives verdicts)."""


class LineBlock:
    """Many JSONL lines read at once; split into the records a line reader would give."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def records(self) -> Iterator[bytes]:
        """Lines ending in ``\\n`` (the last one maybe not), blank ones dropped."""
        return jsonl_records(self.data)


class FileRange:
    """Lines ``[start, end)`` of a regular file (``end`` None: to its end); whoever judges
    them reads them, so they never pass through a pipe."""

    __slots__ = ("path", "start", "end")

    def __init__(self, path: str, start: int, end: int | None) -> None:
        self.path, self.start, self.end = path, start, end

    @property
    def data(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read() if self.end is None else f.read(self.end - self.start)

    def records(self) -> Iterator[bytes]:
        return jsonl_records(self.data)


class WalBuffer:
    """A whole inbox WAL (bytes, or a ``mmap`` of its file) and the window of entries to
    keep; judged in this process (a mapped file does not cross to a worker)."""

    __slots__ = ("data", "since", "until")

    def __init__(self, data: Buffer, since: datetime | None = None,
                 until: datetime | None = None) -> None:
        self.data, self.since, self.until = data, since, until

    def records(self) -> Iterator[WalEntry]:
        return read_wal(self.data, self.since, self.until)


Item = bytes | WalEntry | LineBlock | FileRange | WalBuffer
"""One record (a JSON text or an inbox WAL entry), or a block of them."""


def file_blocks(f: IO[bytes], seekable: bool = True) -> Iterator[LineBlock | FileRange]:
    """A JSONL stream in pieces that end at line ends: ranges of a regular file, else blocks
    of its bytes."""
    if seekable and f.seekable():
        size, start = os.fstat(f.fileno()).st_size, 0
        while start + BLOCK_BYTES < size:
            f.seek(start + BLOCK_BYTES)
            tail = f.readline()  # to the end of the line the cut falls in
            if not tail.endswith(b"\n"):
                break
            end = start + BLOCK_BYTES + len(tail)
            yield FileRange(f.name, start, end)
            start = end
        yield FileRange(f.name, start, None)
        return
    rest = b""
    while data := f.read(BLOCK_BYTES):
        if rest:
            data = rest + data
        cut = data.rfind(b"\n") + 1
        if cut:
            yield LineBlock(data[:cut])
        rest = data[cut:]
    if rest:
        yield LineBlock(rest)


def _records(items: Sequence[Item]) -> Iterator[bytes | WalEntry]:
    for item in items:
        if isinstance(item, bytes | WalEntry):
            yield item
        else:
            yield from item.records()


# -- judging (a worker, or this process) -------------------------------------------------------


@dataclass(slots=True)
class Judged:
    """One block, judged; positions are block-relative.

    ``rows`` (verify, diagnose): per record ``(verdict or None, kid, content)``, None meaning
    valid by the short route. ``count`` mode instead carries ``counts`` (cause -> [count,
    first position]), the pcs_ids and contents to remember in order (contents pickled when they
    crossed a process boundary) and the unverifiable records the settler must decide
    (``(number of pcs_ids before it, position, content)``)."""

    n: int
    rows: list[tuple[Verdict | None, str | None, tuple[Any, ...] | None]] | None = None
    counts: dict[str, list[int]] | None = None
    pcs_ids: list[str] | None = None
    contents: list[tuple[Any, ...]] | bytes | None = None
    unverifiable: list[tuple[int, int, tuple[Any, ...]]] | None = None


def _rows(d: Diagnoser, items: Sequence[Item], start: int) -> Iterator[Row]:
    """``check_line`` / ``check_wal`` of every record of ``items``, numbered from ``start``;
    blocks and whole WALs through :meth:`Diagnoser.check_buffer` (many records per call of
    the compiled reader)."""
    n = start
    for item in items:
        if isinstance(item, bytes):
            yield d.check_line(item, n)
            n += 1
        elif isinstance(item, WalEntry):
            yield d.check_wal(item, n)
            n += 1
        else:
            if isinstance(item, WalBuffer):
                rows = d.check_buffer(item.data, True, n, item.since, item.until)
            else:
                rows = d.check_buffer(item.data, False, n)
            for row in rows:
                yield row
                n += 1


def judge_block(d: Diagnoser, items: Sequence[Item], mode: Mode, start: int = 0) -> Judged:
    """Judge each record of ``items`` alone (no memory of earlier records is used); verdicts
    are numbered from ``start`` (a worker, not knowing where its block starts, uses 0)."""
    if mode == "count":
        return _count_block(_rows(d, items, 0))
    if mode == "verify":
        rows = list(_rows(d, items, start))
        return Judged(len(rows), rows)
    out: list[Row] = []
    n = start
    judge = d.judge_line
    for rec in _records(items):
        v, content = d.judge_wal(rec, n) if isinstance(rec, WalEntry) else judge(rec, n)
        out.append((v, None, content))
        n += 1
    return Judged(n - start, out)


def judge_blocks(d: Diagnoser, items: Sequence[Item], mode: Mode, start: int = 0
                 ) -> Iterator[Judged]:
    """:func:`judge_block` in blocks of at most :data:`BLOCK_RECORDS` records, so that a
    whole WAL (one item) is judged with bounded memory (``verify``, ``count``)."""
    if mode == "diagnose":
        yield judge_block(d, items, mode, start)
        return
    rows = _rows(d, items, start if mode == "verify" else 0)
    while chunk := list(islice(rows, BLOCK_RECORDS)):
        yield Judged(len(chunk), chunk) if mode == "verify" else _count_block(iter(chunk))


def _count_block(rows: Iterator[Row]) -> Judged:
    n = 0
    counts: dict[str, list[int]] = {}
    pids: list[str] = []
    contents: list[tuple[Any, ...]] = []
    unverifiable: list[tuple[int, int, tuple[Any, ...]]] = []
    valid = counts["valid"] = [0, 0]
    for v, _, content in rows:
        if v is None:  # valid by the short route
            if not valid[0]:
                valid[1] = n
            valid[0] += 1
        elif content is not None and v.cause == "unverifiable":
            unverifiable.append((len(pids), n, content))
            n += 1
            continue
        else:
            c = counts.get(v.cause)
            if c is None:
                c = counts[v.cause] = [0, n]
            elif not c[0]:
                c[1] = n
            c[0] += 1
        if content is not None:
            pids.append(content[0])
            contents.append(content)
        n += 1
    if not valid[0]:
        del counts["valid"]
    return Judged(n, counts=counts, pcs_ids=pids, contents=contents, unverifiable=unverifiable)


# -- settling (this process, in input order) ---------------------------------------------------


class Settler:
    """Settles judged blocks in input order with one diagnoser's memory."""

    def __init__(self, d: Diagnoser) -> None:
        self.d = d
        self.base = 0
        """Records settled so far: the index of the next block's first record."""
        self.totals: dict[str, int] = {}
        """``count`` mode: final causes in order of first occurrence."""

    def outcomes(self, block: Judged) -> Iterator[Outcome]:
        """The final outcome of each record of ``block`` (verify, diagnose)."""
        assert block.rows is not None
        d, base = self.d, self.base
        settle, remember = d.settle, d.remember
        for i, (v, kid, content) in enumerate(block.rows, base):
            if v is None:  # valid by the short route
                assert content is not None and kid is not None
                remember(content[0], content)
                yield Valid(i, content[0], kid)
            else:
                if v.index != i:  # judged by a worker, numbered within its block
                    v = replace(v, index=i)
                yield settle(v, content)
        self.base = base + block.n

    def count(self, block: Judged) -> None:
        """Add ``block``'s final causes to :attr:`totals` (count mode)."""
        assert block.counts is not None and block.pcs_ids is not None
        d, counts, raw = self.d, block.counts, block.contents
        batch = ContentBatch(block.pcs_ids, (lambda: pickle.loads(raw)) if isinstance(
            raw, bytes) else (lambda: raw or []))
        start = 0
        for cut, pos, content in block.unverifiable or ():
            d.remember_batch(batch, start, cut)
            start = cut
            cause = d.settle(Verdict(pos, "unverifiable", content[0]), content).cause
            c = counts.get(cause)
            if c is None:
                counts[cause] = [1, pos]
            else:
                c[0] += 1
                c[1] = min(c[1], pos)
        d.remember_batch(batch, start)
        for cause, (n, _) in sorted(counts.items(), key=lambda kv: kv[1][1]):
            self.totals[cause] = self.totals.get(cause, 0) + n
        self.base += block.n


# -- the driver --------------------------------------------------------------------------------

_worker: Diagnoser | None = None


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker process builds the same diagnoser as this one."""

    keyring: str
    profile: str | None
    max_skew_seconds: float | None
    max_bytes: int


def _worker_init(spec: WorkerSpec) -> None:
    global _worker
    _worker = Diagnoser(load_keyring(spec.keyring, spec.profile),
                        max_skew_seconds=spec.max_skew_seconds, max_bytes=spec.max_bytes)


def _worker_judge(task: tuple[Mode, list[Item]]) -> Judged:
    mode, items = task
    assert _worker is not None
    out = judge_block(_worker, items, mode)
    if mode == "count" and out.contents is not None:
        # The parent rarely looks inside: one blob, unpickled only if it must.
        out.contents = pickle.dumps(out.contents, pickle.HIGHEST_PROTOCOL)
    return out


def parallel_safe(d: Diagnoser) -> bool:
    """Two kids with the same key material verify the same signatures; which kid a record
    gets then depends on the records before it (move-to-front), so one process judges."""
    material = [(k.alg, k.secret or k.public) for k in d.ring.keys]
    return len(set(material)) == len(material)


def _tasks(items: Iterable[Item]) -> Iterator[list[Item]]:
    """Items grouped into tasks of about :data:`CHUNK_RECORDS` records. An error from
    ``items`` (an input that ends early) comes after the task of the records before it."""
    task: list[Item] = []
    weight = 0
    it = iter(items)
    while True:
        try:
            item = next(it)
        except StopIteration:
            break
        except Exception:
            if task:
                yield task
            raise
        task.append(item)
        weight += 1 if isinstance(item, bytes | WalEntry) else CHUNK_RECORDS
        if weight >= CHUNK_RECORDS:
            yield task
            task, weight = [], 0
    if task:
        yield task


def _judged(d: Diagnoser, items: Iterable[Item], mode: Mode, jobs: int,
            spec: WorkerSpec | None) -> Iterator[Judged]:
    """Judged tasks in input order, in this process or in a pool of ``jobs`` workers."""
    if jobs <= 1 or spec is None or not parallel_safe(d):
        done = 0
        for task in _tasks(items):
            for block in judge_blocks(d, task, mode, done):
                done += block.n
                yield block
        return
    import multiprocessing

    pool = multiprocessing.get_context().Pool(jobs, _worker_init, (spec,))
    try:
        pending: deque[Any] = deque()
        tasks = _tasks(items)
        failure: BaseException | None = None
        while True:
            try:
                task = next(tasks)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - raised below, after the records before it
                failure = e
                break
            pending.append(pool.apply_async(_worker_judge, ((mode, task),)))
            while len(pending) > 2 * jobs:  # bounded: memory stays flat on any input
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
        if failure is not None:
            raise failure
        pool.close()
        pool.join()
    finally:
        pool.terminate()


def run(d: Diagnoser, items: Iterable[Item], mode: Literal["verify", "diagnose"], *,
        jobs: int = 1, spec: WorkerSpec | None = None,
        progress: Callable[[int], None] | None = None) -> Iterator[Outcome]:
    """Every record's final outcome, in input order (``diagnose``: always a Verdict)."""
    settler = Settler(d)
    for block in _judged(d, items, mode, jobs, spec):
        yield from settler.outcomes(block)
        if progress is not None:
            progress(block.n)


def count(d: Diagnoser, items: Iterable[Item], *, jobs: int = 1,
          spec: WorkerSpec | None = None, progress: Callable[[int], None] | None = None
          ) -> tuple[int, dict[str, int]]:
    """The number of records and the count of each final cause, in order of first
    occurrence (``sigops verify --summary``)."""
    settler = Settler(d)
    for block in _judged(d, items, "count", jobs, spec):
        settler.count(block)
        if progress is not None:
            progress(block.n)
    return settler.base, settler.totals
