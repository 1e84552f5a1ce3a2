"""Coverage-guided fuzzing (atheris/libFuzzer) of parse -> canonicalize -> verify -> diagnose.

The first input byte picks (algorithm, profile, record shape); the rest is a PCS record,
starting from a seed corpus of correctly signed records that libFuzzer mutates. The oracle is
the one of the hypothesis tests (``pcsfuzz.check``): a record verifies only if its signed bytes
and decoded signature are unchanged, ``malformed`` always carries a reason, nothing raises.
Any violation aborts the run with a crash artifact.

    .venv/bin/python tests/reliability/fuzz_atheris.py -max_total_time=600 [CORPUS_DIR]

libFuzzer prints ``Done N runs in S second(s)`` at the end; outcome counts go to stdout as
one JSON line every 100,000 inputs and to ``$SIGOPS_ATHERIS_STATS`` if set.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from tests.reliability import pcsfuzz

COMBOS = [(a, p, s) for a in pcsfuzz.ALGS for p in pcsfuzz.PROFILES for s in range(3)]
ORIGINALS = {c: json.dumps(pcsfuzz.signed_record(*c)).encode() for c in COMBOS}
OUTCOMES: Counter[str] = Counter()


def _dump() -> None:
    line = json.dumps({"inputs_tried": OUTCOMES.total(),
                       "forgeries_accepted": OUTCOMES[pcsfuzz.FORGERY],
                       "crashes": OUTCOMES[pcsfuzz.CRASH],
                       "verified_with_unchanged_signed_bytes": OUTCOMES["valid-unchanged"],
                       "by_outcome": dict(OUTCOMES)})
    print(line, flush=True)
    path = os.environ.get("SIGOPS_ATHERIS_STATS")
    if path:
        Path(path).write_text(line)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    combo = COMBOS[data[0] % len(COMBOS)]
    try:
        outcome = pcsfuzz.judged(OUTCOMES, combo[0], combo[1], data[1:])
    except BaseException:
        _dump()  # the figures as counted, before atheris stops on the failure
        raise
    if outcome == pcsfuzz.FORGERY:
        _dump()
        raise AssertionError(f"forgery accepted: {data[1:301]!r}")
    if OUTCOMES.total() % 10_000 == 0:
        _dump()


def main() -> None:
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="sigops-atheris-"))
        for i, c in enumerate(COMBOS):
            (corpus / f"seed-{i}").write_bytes(bytes([i]) + ORIGINALS[c])
        args.append(str(corpus))
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
