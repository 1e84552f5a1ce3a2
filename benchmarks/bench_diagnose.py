"""Part 2: diagnosis cost per sample, in process (``sigops.core.diagnose.Diagnoser``).

- 100,000 mixed failing samples (every cause, distinct records, envelopes with received_at):
  the Diagnoser against a naive baseline that tries every key under every profile for every
  sample (canonical bytes computed once per profile; the same parse; the same cause rules).
- Key-ring growth (1, 4, 16, 64 keys): samples that match (the signing key listed last in the
  ring; and two keys interleaved, as during a rotation) and unverifiable samples (which must
  try every key under every profile), each on a fresh Diagnoser.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from typing import Any

import pcsdata
from common import log, median

from sigops.core.canonical import PROFILES, canonical_bytes
from sigops.core.diagnose import Diagnoser, Verdict
from sigops.core.errors import MalformedInput
from sigops.core.keys import Key, KeyRing
from sigops.core.pcs import parse_record, signing_message
from sigops.core.strictjson import loads


class NaiveDiagnoser:
    """The baseline: every key under every profile, every sample, no ordering and no cache.

    Same parse and the same first-match-wins cause rules as sigops, so both do the same job.
    """

    def __init__(self, ring: KeyRing, max_skew_seconds: float | None = None) -> None:
        self.ring, self.max_skew = ring, max_skew_seconds
        self.seen: dict[str, tuple[Any, ...]] = {}

    def classify_line(self, line: bytes, index: int) -> str:
        try:
            sample = parse_record(loads(line))
        except MalformedInput:
            return "malformed"
        pcs = sample.pcs
        own = self.ring.profile
        matches: list[tuple[Key, str]] = []
        for prof in PROFILES:
            msg = signing_message(canonical_bytes(pcs.subset, prof), pcs.alg)
            for key in self.ring.keys:
                if key.alg == pcs.alg and key.verify(msg, pcs.sig):
                    matches.append((key, prof))
        own_hits = [m for m in matches if m[1] == own]
        when = sample.received_at or pcs.sent_at
        if own_hits:
            key = own_hits[0][0]
            if key.valid_at(when) == 0 and self.ring.accepts(key):
                if sample.received_at and pcs.sent_at and self.max_skew is not None:
                    skew = (sample.received_at - pcs.sent_at).total_seconds()
                    if abs(skew) > self.max_skew:
                        self.seen.setdefault(pcs.pcs_id, pcs.content_key())
                        return "clock_skew"
                cause = "valid"
            elif key.valid_at(when) > 0 or key.state in ("retired", "retiring"):
                cause = "stale_key"
            else:
                cause = "pending_key"
        elif matches:
            cause = "canonicalization_drift"
        elif not pcs.pcs_id_ok():
            return "tampered"
        else:
            prev = self.seen.get(pcs.pcs_id)
            return "tampered" if prev is not None and prev != pcs.content_key() else \
                "unverifiable"
        self.seen.setdefault(pcs.pcs_id, pcs.content_key())
        return cause


def _ring(keys: list[Key], **kw: Any) -> KeyRing:
    return KeyRing(tuple(keys), **kw)


def _time_stream(make: Any, lines: list[bytes]) -> tuple[float, list[Any]]:
    """Seconds for one fresh diagnoser to classify every line, and its results. A full
    collection first, so no stream pays for the garbage of the one before."""
    gc.collect()
    d = make()
    out = []
    t0 = time.perf_counter()
    for i, line in enumerate(lines):
        out.append(d.classify_line(line, i))
    return time.perf_counter() - t0, out


def _per_cause(lines: list[tuple[str, bytes]], ring: KeyRing) -> dict[str, dict[str, float]]:
    """Per intended cause: mean microseconds per sample (each call timed alone), (key,
    profile) pairs tried and canonical forms built per sample."""
    import sigops.core.diagnose as diagnose_module

    built = [0]
    real = diagnose_module.canonical_bytes

    def counting(*a: Any, **kw: Any) -> bytes:
        built[0] += 1
        return real(*a, **kw)

    d = Diagnoser(ring, max_skew_seconds=pcsdata.MAX_SKEW)
    acc: dict[str, list[tuple[int, int, int]]] = {}
    clock = time.perf_counter_ns
    diagnose_module.canonical_bytes = counting  # type: ignore[assignment]
    try:
        for i, (cause, line) in enumerate(lines):
            tried, b = d.tried, built[0]
            t0 = clock()
            d.classify_line(line, i)
            acc.setdefault(cause, []).append((clock() - t0, d.tried - tried, built[0] - b))
    finally:
        diagnose_module.canonical_bytes = real  # type: ignore[assignment]
    return {c: {"us": sum(x[0] for x in v) / len(v) / 1000,
                "pairs_tried": sum(x[1] for x in v) / len(v),
                "canonical_built": sum(x[2] for x in v) / len(v)}
            for c, v in sorted(acc.items())}


def run(n: int = 100_000, rounds: int = 3, naive_n: int = 20_000,
        sizes: tuple[int, ...] = (1, 4, 16, 64), match_n: int = 20_000,
        unverifiable_n: int = 1_000, naive_growth_n: int = 2_000) -> dict[str, Any]:
    res: dict[str, Any] = {"samples": n, "rounds": rounds}
    keys = pcsdata.diagnosis_keys()
    ring = _ring([keys["active"], keys["retired"], keys["pending"]])
    log(f"part 2: generating {n:,} mixed failing samples (8 causes)")
    mixed = [(c, line.encode()) for c, line in pcsdata.mixed_lines(n)]
    lines = [line for _, line in mixed]
    intended = Counter(c for c, _ in mixed)
    res["intended_causes"] = dict(sorted(intended.items()))

    def sigops() -> Diagnoser:
        return Diagnoser(ring, max_skew_seconds=pcsdata.MAX_SKEW)

    def naive() -> NaiveDiagnoser:
        return NaiveDiagnoser(ring, pcsdata.MAX_SKEW)

    gc.collect()
    gc.freeze()  # the inputs stay for the whole part: keep them out of the collector's way
    sub = lines[:naive_n]
    walls, verdicts = [], []
    sub_walls, naive_walls, naive_out = [], [], []
    for r in range(rounds):  # interleaved with the naive baseline, on the same samples
        wall, verdicts = _time_stream(sigops, lines)
        walls.append(wall)
        sub_walls.append(_time_stream(sigops, sub)[0])
        wall_naive, naive_out = _time_stream(naive, sub)
        naive_walls.append(wall_naive)
        log(f"  mixed round {r + 1}/{rounds}: {wall / n * 1e6:.1f} us/sample; first "
            f"{naive_n:,}: sigops {sub_walls[-1] / naive_n * 1e6:.1f}, naive "
            f"{wall_naive / naive_n * 1e6:.1f} us/sample")
    got = Counter(v.cause for v in verdicts if isinstance(v, Verdict))
    res["sigops_causes"] = dict(sorted(got.items()))
    res["sigops_agrees_with_intended"] = sum(
        v.cause == c for v, (c, _) in zip(verdicts, mixed, strict=True)) / n
    res["sigops_us_per_sample"] = median(walls) / n * 1e6
    res["sigops_us_per_sample_runs"] = [w / n * 1e6 for w in walls]
    d = sigops()
    for i, line in enumerate(lines):
        d.classify_line(line, i)
    res["sigops_pairs_tried_per_sample"] = d.tried / n

    res["naive_samples"] = naive_n
    res["naive_us_per_sample"] = median(naive_walls) / naive_n * 1e6
    res["sigops_us_per_sample_naive_subset"] = median(sub_walls) / naive_n * 1e6
    res["naive_pairs_tried_per_sample"] = len(ring.keys) * len(PROFILES)
    res["naive_agrees_with_sigops"] = sum(
        a == b.cause for a, b in zip(naive_out, verdicts[:naive_n], strict=True)) / naive_n
    res["speedup_vs_naive"] = (res["naive_us_per_sample"]
                               / res["sigops_us_per_sample_naive_subset"])
    log(f"  naive: {res['naive_us_per_sample']:.1f} us/sample "
        f"({res['speedup_vs_naive']:.2f}x slower than sigops)")
    res["per_cause"] = _per_cause(mixed, ring)
    res["sigops_canonical_built_per_sample"] = sum(
        x["canonical_built"] * intended[c] for c, x in res["per_cause"].items()) / n
    res["naive_canonical_built_per_sample"] = len(PROFILES)

    log(f"part 2: key-ring growth {sizes}")
    growth = []
    active = keys["active"]
    other = pcsdata.hmac_key("rotating-new", "active", "rotating-new-secret-0123456789")
    rng_lines = _growth_lines(active, other, keys["unknown"], match_n, unverifiable_n)
    naive_stream = rng_lines["matching"][:naive_growth_n]
    rings = {}
    for size in sizes:
        decoys = [pcsdata.hmac_key(f"decoy-{i}", "retired", f"decoy-secret-{i:04d}-0123456789")
                  for i in range(max(0, size - 2))]
        rings[size] = _ring(decoys + ([other] if size >= 2 else []) + [active])  # signer last
    _time_stream(lambda: Diagnoser(rings[sizes[0]]), rng_lines["matching"][:2000])  # warm-up
    walls: dict[tuple[int, str], list[float]] = {}
    for _ in range(rounds):  # interleaved: load from other work falls on every size alike
        for size, g_ring in rings.items():
            for name, stream in (*rng_lines.items(), ("naive_matching", naive_stream)):
                if name == "two_keys_interleaved" and size < 2:
                    continue
                make = ((lambda r=g_ring: NaiveDiagnoser(r)) if name == "naive_matching"
                        else (lambda r=g_ring: Diagnoser(r)))
                walls.setdefault((size, name), []).append(_time_stream(make, stream)[0])
    for size, g_ring in rings.items():
        row: dict[str, Any] = {"keys": size, "pairs": size * len(PROFILES)}
        for name, stream in (*rng_lines.items(), ("naive_matching", naive_stream)):
            if (size, name) not in walls:
                continue
            row[f"{name}_us"] = median(walls[(size, name)]) / len(stream) * 1e6
            if name != "naive_matching":
                d = Diagnoser(g_ring)
                for i, line in enumerate(stream):
                    d.classify_line(line, i)
                row[f"{name}_tried_per_sample"] = d.tried / len(stream)
        growth.append(row)
        log(f"  {size:2d} keys: matching {row['matching_us']:.1f} us, unverifiable "
            f"{row['unverifiable_us']:.1f} us, naive matching {row['naive_matching_us']:.1f} us")
    res["growth"] = growth
    res["growth_samples"] = {"matching": match_n, "unverifiable": unverifiable_n,
                             "naive_matching": naive_growth_n}
    base = growth[0]["matching_us"]
    res["growth_matching_ratio_64_vs_1"] = growth[-1]["matching_us"] / base
    gc.unfreeze()
    return res


def _growth_lines(active: Key, other: Key, unknown: Key, match_n: int, unverifiable_n: int
                  ) -> dict[str, list[bytes]]:
    import json
    import random

    from sigops.core.pcs import sign_pcs

    rng = random.Random(5)

    def line(key: Key, i: int) -> bytes:
        return json.dumps(sign_pcs(pcsdata.upstream_pcs(rng, i, i % 16), key)).encode()

    return {
        "matching": [line(active, i) for i in range(match_n)],
        "two_keys_interleaved": [line(active if i % 2 else other, i) for i in range(match_n)],
        "unverifiable": [line(unknown, i) for i in range(unverifiable_n)],
    }
