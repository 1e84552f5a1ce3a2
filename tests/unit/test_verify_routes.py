"""``sigops verify`` takes shortcuts; they must never change an answer.

- :meth:`Diagnoser.check_line` settles a valid record without a Verdict (the short route);
  every record must get the cause, kid and profile :meth:`Diagnoser.classify_line` gives it.
- ``--jobs N`` judges blocks in worker processes and settles them here, remembering whole
  batches of signed contents at once (:meth:`Diagnoser.remember_batch`); output, order and exit
  code must be those of one process, also when a replayed pcs_id crosses a block boundary.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcskit import SENT_AT, ed_key, envelope, hmac_key, later, ring, signed

from sigops import cli
from sigops.core import batch
from sigops.core.diagnose import ContentBatch, Diagnoser
from sigops.core.keys import KeyRing

ACTIVE, ED = hmac_key("k-active"), ed_key("k-ed", seed_byte=9)
RETIRED, PENDING = hmac_key("k-old", "retired"), hmac_key("k-new", "pending")
STRANGER = hmac_key("k-stranger")
RING = ring([ACTIVE, ED, RETIRED, PENDING], max_skew_seconds=30)


def mixed_records(n: int, seed: int) -> list[str]:
    """``n`` JSONL records of every cause in random order, with replays: the same pcs_id
    again with other content (signed by a stranger: tampered), the same content again
    (valid), and records the short route must hand on (envelopes, other profiles)."""
    rng = random.Random(seed)
    out: list[str] = []
    valid: list[dict[str, Any]] = []
    for i in range(n):
        shard, epoch = f"shard-{i % 13}", i
        kind = rng.choice(["valid", "valid", "valid", "ed", "stale", "pending", "drift",
                           "pcs_id", "stranger", "replay_other", "replay_same", "malformed",
                           "skew", "envelope", "int_float", "no_sent_at"])
        if kind == "valid":
            pcs = signed(ACTIVE, shard=shard, epoch=epoch)
            valid.append(pcs)
        elif kind == "ed":
            pcs = signed(ED, shard=shard, epoch=epoch)
            valid.append(pcs)
        elif kind == "stale":
            pcs = signed(RETIRED, shard=shard, epoch=epoch)
        elif kind == "pending":
            pcs = signed(PENDING, shard=shard, epoch=epoch)
        elif kind == "drift":
            pcs = signed(ACTIVE, "go", shard=shard, epoch=epoch)
        elif kind == "pcs_id":
            pcs = signed(STRANGER, shard=shard, epoch=epoch, pcs_id="0" * 64)
        elif kind == "stranger":
            pcs = signed(STRANGER, shard=shard, epoch=epoch)
        elif kind in ("replay_other", "replay_same") and valid:
            prev = rng.choice(valid)
            pcs = dict(prev) if kind == "replay_same" else signed(
                STRANGER, shard=prev["shard_id"], epoch=prev["epoch"],
                merkle_root=prev["merkle_root"], D_hat=prev["D_hat"] + 0.5)
        elif kind == "malformed":
            out.append(rng.choice(['{"pcs_id": "x"}', '{"a": 1, "a": 2}', "[1, 2", "NaN",
                                   '{"sig": 12}']))
            continue
        elif kind == "skew":
            pcs = signed(ACTIVE, shard=shard, epoch=epoch)
            out.append(json.dumps(envelope(pcs, received_at=later(rng.choice([5, 300])))))
            continue
        elif kind == "envelope":
            pcs = signed(ACTIVE, shard=shard, epoch=epoch)
            out.append(json.dumps(envelope(pcs, received_at=SENT_AT, source=f"agent-{i % 3}")))
            continue
        elif kind == "int_float":
            pcs = signed(ACTIVE, shard=shard, epoch=epoch, D_hat=2, r=0.0)
        elif kind == "no_sent_at":
            pcs = signed(ACTIVE, shard=shard, epoch=epoch)
            del pcs["sent_at"]
        else:
            pcs = signed(ACTIVE, shard=shard, epoch=epoch)
        out.append(json.dumps(pcs))
    return out


def _full(d: Diagnoser, records: list[str]) -> list[tuple[Any, ...]]:
    vs = [d.classify_line(r.encode() + b"\n", i) for i, r in enumerate(records)]
    return [(v.cause, v.pcs_id, v.kid, v.profile) for v in vs]


def _short(d: Diagnoser, records: list[str]) -> tuple[list[tuple[Any, ...]], int]:
    out, shortcuts = [], 0
    for i, r in enumerate(records):
        v, kid, content = d.check_line(r.encode() + b"\n", i)
        if v is None:
            assert content is not None
            d.remember(content[0], content)
            out.append(("valid", content[0], kid, d.profile))
            shortcuts += 1
        else:
            v = d.settle(v, content)
            out.append((v.cause, v.pcs_id, v.kid, v.profile))
    return out, shortcuts


@pytest.mark.parametrize("seed", range(6))
def test_short_route_gives_the_full_routes_answers(seed: int) -> None:
    records = mixed_records(400, seed)
    full = _full(Diagnoser(RING), records)
    short, shortcuts = _short(Diagnoser(RING), records)
    assert short == full
    causes = {c for c, *_ in full}
    assert {"valid", "stale_key", "pending_key", "canonicalization_drift", "tampered",
            "unverifiable", "malformed", "clock_skew"} <= causes, "the stream covers them"
    assert 0 < shortcuts < sum(c == "valid" for c, *_ in full), \
        "some valid records take the short route, and some (envelopes, ints) do not"


def test_short_route_is_off_when_two_kids_share_material() -> None:
    twin = hmac_key("k-twin", secret="sigops-test-secret-k-active")
    records = mixed_records(120, 1)
    d = Diagnoser(KeyRing(RING.keys + (twin,), profile="python"))
    short, shortcuts = _short(d, records)
    assert shortcuts == 0
    assert short == _full(Diagnoser(KeyRing(RING.keys + (twin,), profile="python")), records)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefghijklmnop"), max_size=12), max_size=12),
       st.integers(min_value=2, max_value=10))
def test_remember_batch_is_remember_one_by_one(batches: list[list[str]], memory: int) -> None:
    """Same memory (which pcs_ids, in which order, with which content) whether records are
    remembered one by one or a batch at a time, including when the memory fills up."""
    one = Diagnoser(RING, content_memory=memory)
    many = Diagnoser(RING, content_memory=memory)
    for b, ids in enumerate(batches):
        contents = [(pid, b, k) for k, pid in enumerate(ids)]
        for c in contents:
            one.remember(c[0], c)
        many.remember_batch(ContentBatch(ids, lambda cs=contents: cs))  # type: ignore[misc]
    assert list(one._seen) == list(many._seen)
    for pid, content in one._seen.items():
        got = many._seen[pid]
        assert (got.content_for(pid) if isinstance(got, ContentBatch) else got) == content


def test_a_batch_with_few_new_pcs_ids_is_not_held_whole() -> None:
    """A batch stays in the memory (as the value of its new pcs_ids) only if one record in
    FRESH_SHARE is new: else its new pcs_ids get their own contents and the batch is let go,
    so replays of remembered records cannot make the memory hold a batch per new pcs_id."""
    d = Diagnoser(RING)
    old = [f"old-{k}" for k in range(64)]
    d.remember_batch(ContentBatch(old, lambda: [(p, 0) for p in old]))
    assert all(type(d._seen[p]) is ContentBatch for p in old)
    few = old[:62] + ["new-1", "new-2"]  # 2 new in 64: fewer than 1 in 8
    d.remember_batch(ContentBatch(few, lambda: [(p, 1) for p in few]))
    assert d._seen["new-1"] == ("new-1", 1) and d._seen["new-2"] == ("new-2", 1)
    enough = old[:56] + [f"fresh-{k}" for k in range(8)]  # 8 new in 64
    d.remember_batch(ContentBatch(enough, lambda: [(p, 2) for p in enough]))
    assert type(d._seen["fresh-0"]) is ContentBatch
    assert d._seen["fresh-7"].content_for("fresh-7") == ("fresh-7", 2)
    assert d._seen[old[0]].content_for(old[0]) == (old[0], 0)  # the first content stays


# -- --jobs ------------------------------------------------------------------------------------


def _call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = cli.main(list(args))
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap.out


@pytest.fixture()
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], tuple[str, str]]:
    """A keyring file and a mixed JSONL file; blocks of 4 KiB so that a few hundred records
    make many tasks and replays cross block boundaries."""
    monkeypatch.setattr(batch, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(batch, "CHUNK_RECORDS", 16)
    kr = tmp_path / "ring.json"
    kr.write_text(json.dumps(RING.to_dict()))

    def make(seed: int) -> tuple[str, str]:
        data = tmp_path / f"mixed-{seed}.jsonl"
        data.write_text("".join(r + "\n" + ("\n" if i % 50 == 7 else "")
                                for i, r in enumerate(mixed_records(300, seed))))
        return str(kr), str(data)
    return make


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("verb", [["verify"], ["verify", "--summary"], ["diagnose"]])
def test_jobs_output_is_that_of_one_process(capsys: pytest.CaptureFixture[str],
                                            inputs: Callable[[int], tuple[str, str]],
                                            verb: list[str], seed: int) -> None:
    kr, data = inputs(seed)
    one = _call(capsys, *verb, "--keyring", kr, data)
    two = _call(capsys, *verb, "--jobs", "2", "--keyring", kr, data)
    assert two == one
    assert one[0] == (1 if verb[0] == "verify" else 0), "verify: the stream has invalid records"
    if verb == ["verify", "--summary"]:
        summary = json.loads(one[1])
        assert summary["total"] == 300 and summary["by_reason"]["tampered"] > 0


def test_jobs_reads_stdin_too(capsys: pytest.CaptureFixture[str],
                              inputs: Callable[[int], tuple[str, str]],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    kr, data = inputs(5)
    one = _call(capsys, "verify", "--keyring", kr, data)
    for summary in ([], ["--summary"]):
        want = _call(capsys, "verify", *summary, "--keyring", kr, data)
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(Path(data).read_bytes())))
        assert _call(capsys, "verify", *summary, "--jobs", "2", "--keyring", kr, "-") == want
    assert one[0] == 1


def test_jobs_all_valid_exit_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "BLOCK_BYTES", 2048)
    kr = tmp_path / "ring.json"
    kr.write_text(json.dumps(RING.to_dict()))
    data = tmp_path / "ok.jsonl"
    data.write_text("".join(json.dumps(signed(ACTIVE, epoch=i)) + "\n" for i in range(200)))
    rc, out = _call(capsys, "verify", "--jobs", "2", "--summary", "--keyring", str(kr),
                    str(data))
    assert rc == 0
    assert json.loads(out) == {"total": 200, "valid": 200, "invalid": 0, "by_reason": {}}


def test_records_before_an_input_error_are_settled_first(tmp_path: Path) -> None:
    """The batch engine hands on the records read before an input fails, then the error.
    (One process: a worker pool forked from the test process, with its threads, can hang.)"""
    jobs = 1
    kr = tmp_path / "ring.json"
    kr.write_text(json.dumps(RING.to_dict()))
    d = Diagnoser(RING)

    def items() -> Any:
        for i in range(5):
            yield json.dumps(signed(ACTIVE, epoch=i)).encode()
        raise EOFError("the input ended early")

    spec = batch.WorkerSpec(str(kr), None, None, 1 << 20)
    got: list[Any] = []
    with pytest.raises(EOFError):
        for outcome in batch.run(d, items(), "verify", jobs=jobs, spec=spec):
            got.append(outcome)
    assert [o.index for o in got] == [0, 1, 2, 3, 4]
