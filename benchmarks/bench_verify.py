"""Part 1: verification throughput of ``sigops verify --summary`` as a whole process.

Baselines, each a whole process on the same file in the same run: (a) the upstream agent's own
Python verify path (``upstream_verify.py``), (b) the floor, ``json.loads`` + one HMAC per record
(``floor_verify.py``). Ed25519: ``sigops verify`` against the raw ``cryptography`` verify loop
over pre-parsed messages (``ed25519_raw.py``). Runs are interleaved (the order rotates every
round) so that load from other work on the machine falls on every variant alike.
"""

from __future__ import annotations

import base64
import gc
import json
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pcsdata
from common import (
    HERE,
    PYTHON,
    SIGOPS,
    ProcRun,
    log,
    machine_busy_seconds,
    median,
    run_measured,
    summary,
)


def _variants_hmac(data: Path, ring: Path) -> dict[str, list[str]]:
    secret = pcsdata.HMAC_SECRET
    return {
        "upstream": [PYTHON, str(HERE / "upstream_verify.py"), secret, str(data)],
        "floor": [PYTHON, str(HERE / "floor_verify.py"), secret, str(data)],
        "sigops_j1": [SIGOPS, "verify", "--keyring", str(ring), "--summary", str(data)],
        "sigops_j2": [SIGOPS, "verify", "--jobs", "2", "--keyring", str(ring), "--summary",
                      str(data)],
        # The pure-Python route alone (the compiled reader turned off), for comparison.
        "sigops_pure": ["/usr/bin/env", "SIGOPS_ACCEL=0", SIGOPS, "verify", "--keyring",
                        str(ring), "--summary", str(data)],
    }


def _check(name: str, r: ProcRun, n: int, all_valid: bool = True) -> None:
    """Every variant must have read (and, where it checks, accepted) all ``n`` records;
    ``all_valid`` False: read them all (upstream's python path on another profile's records
    does the same work and finds them invalid)."""
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"{name}: no JSON summary (rc {r.rc}): {r.stderr[-400:]}") from None
    if out.get("total") != n or (all_valid and out.get("valid", n) != n):
        raise RuntimeError(f"{name}: expected {n} valid records, got {out}")


CONTENDED = 0.5  # cores of other work on the machine that make a round unfair to --jobs 2
CALM = 0.3  # cores of other work under which a round may start
_calm_budget = {"left": 90.0, "waited": 0.0}  # seconds part 1 may wait for a calm machine


def _wait_calm() -> None:
    """Before a round: wait (within the part's budget) until other work on the machine keeps
    less than CALM cores busy over one second."""
    while _calm_budget["left"] > 0:
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(1.0)
        dt = time.monotonic() - t0
        busy = (machine_busy_seconds() - b0) / dt
        _calm_budget["left"] -= dt
        _calm_budget["waited"] += dt
        if busy <= CALM:
            return


def _rounds(variants: dict[str, list[str]], n: int, rounds: int, what: str,
            timeout: float, extra: int, any_valid: tuple[str, ...] = (),
            check: Callable[[str, ProcRun, int], None] | None = None
            ) -> tuple[dict[str, list[ProcRun]], dict[str, Any]]:
    """``rounds`` interleaved rounds (the order rotates). A round during which other work
    kept more than CONTENDED cores busy in any run is repeated, at most ``extra`` times; the
    uncontended rounds are kept when there are at least ``rounds`` of them, else all.
    ``check(name, run, n)`` raises when a run did not do its work (default: :func:`_check`
    of its JSON summary)."""
    names = list(variants)
    done: list[dict[str, ProcRun]] = []
    r = 0
    while True:
        _wait_calm()
        order = names[r % len(names):] + names[:r % len(names)]
        one: dict[str, ProcRun] = {}
        for name in order:
            res = run_measured(variants[name], timeout=timeout)
            if check is None:
                _check(name, res, n, name not in any_valid)
            else:
                check(name, res, n)
            one[name] = res
        done.append(one)
        busy = max(x.others for x in one.values())
        r += 1
        log(f"  {what} round {r}: " + ", ".join(f"{k} {one[k].wall:.2f}s" for k in names)
            + f"; other load up to {busy:.2f} cores")
        calm = [x for x in done if max(y.others for y in x.values()) <= CONTENDED]
        if len(calm) >= rounds or r >= rounds + extra:
            break
        if r >= rounds and len(calm) + (rounds + extra - r) < rounds:
            break  # too few calm rounds possible: keep what there is
    calm = [x for x in done if max(y.others for y in x.values()) <= CONTENDED]
    kept = calm if len(calm) >= rounds else done
    info = {"rounds_run": len(done), "rounds_kept": len(kept),
            "contended_rounds": len(done) - len(calm), "contended_threshold_cores": CONTENDED,
            "waited_for_calm_s": round(_calm_budget["waited"], 1)}
    return {k: [x[k] for x in kept] for k in names}, info


def _rates(runs: dict[str, list[ProcRun]], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        out[name] = {
            "wall_s": summary([r.wall for r in rs]),
            "cpu_s": summary([r.cpu for r in rs]),
            "records_per_s": summary([n / r.wall for r in rs]),
            "records_per_cpu_s": summary([n / r.cpu for r in rs if r.cpu > 0]),
            "maxrss_mib": median([r.maxrss_mib for r in rs]),
            "other_load_cores": median([r.others for r in rs]),
        }
    return out


def _paired(runs: dict[str, list[ProcRun]], a: str, b: str) -> float:
    """Median over rounds of wall(b)/wall(a) = rate(a)/rate(b), both from the same round."""
    return median([rb.wall / ra.wall for ra, rb in zip(runs[a], runs[b], strict=True)])


def _startup(work: Path, ring: Path) -> dict[str, float]:
    one = work / "one.jsonl"
    with (work / "hmac.jsonl").open("rb") as f:
        one.write_bytes(f.readline())
    argv = {"sigops_verify_1_record": [SIGOPS, "verify", "--keyring", str(ring), "--summary",
                                       str(one)],
            "upstream_1_record": [PYTHON, str(HERE / "upstream_verify.py"),
                                  pcsdata.HMAC_SECRET, str(one)],
            "python_-c_pass": [PYTHON, "-c", "pass"]}
    return {k: median([run_measured(v).wall for _ in range(5)]) for k, v in argv.items()}


def _stages(data: Path, ring: Path, n: int = 20000) -> dict[str, float]:
    """In-process microseconds per record of each step ``sigops verify`` takes (min of 3)."""
    import json as stdjson

    from sigops.core import strictjson
    from sigops.core.canonical import PROFILES, canonical_bytes_of
    from sigops.core.diagnose import Diagnoser
    from sigops.core.keys import b64decode_strict, load_keyring
    from sigops.core.pcs import typed_values

    with data.open("rb") as f:
        lines = [line for line in (f.readline() for _ in range(n)) if line]
    n = len(lines)
    objs = [strictjson.loads(x) for x in lines]
    values = [typed_values(o) for o in objs]
    keyring = load_keyring(ring)
    key, python = keyring.keys[0], PROFILES["python"]
    msgs = [canonical_bytes_of(v, python) for v in values if v is not None]
    sigs = [b64decode_strict(o["sig"], "sig") for o in objs]

    def t(fn: Any) -> float:
        return min(timeit.repeat(fn, setup=gc.collect, number=1, repeat=3)) / n * 1e6

    def check_all(accelerate: bool = True) -> None:
        d = Diagnoser(keyring, accelerate=accelerate)
        for i, x in enumerate(lines):
            v, _, content = d.check_line(x, i)
            if v is None and content is not None:
                d.remember(content[0], content)

    def short_all() -> None:
        d = Diagnoser(keyring)
        for o in objs:
            d._short(o)

    def classify_all() -> None:
        d = Diagnoser(keyring)
        for i, x in enumerate(lines):
            d.classify_line(x, i)

    from sigops.core import accel

    compiled: dict[str, float] = {}
    read = accel.read_pcs
    if read is not None:
        compiled = {
            "compiled reader (sigops_accel.read_pcs: parse, types, base64, canonical bytes)": t(
                lambda: [read(x, 0) for x in lines]),
            "check_line + remember, pure Python (accelerate=False)": t(
                lambda: check_all(False)),
        }
    return compiled | {
        "json.loads (stdlib, no checks)": t(lambda: [stdjson.loads(x) for x in lines]),
        "strictjson.loads (hardened parse)": t(lambda: [strictjson.loads(x) for x in lines]),
        "typed_values (types of the signed fields)": t(lambda: [typed_values(o) for o in objs]),
        "canonical_bytes (python profile)": t(
            lambda: [canonical_bytes_of(v, python) for v in values if v is not None]),
        "HMAC verify (Key.verify: precomputed key pads, compare_digest)": t(
            lambda: [key.verify(m, s) for m, s in zip(msgs, sigs, strict=True)]),
        "short route (types, base64, sent_at, canonical, HMAC, content)": t(short_all),
        "check_line + remember (what sigops verify does per record)": t(check_all),
        "classify_line (the full route with a Verdict, for comparison)": t(classify_all),
    }


def _profile(data: Path, ring: Path, work: Path, n: int = 20000) -> list[dict[str, Any]]:
    """cProfile of one `sigops verify --summary` process: the top functions by own time."""
    import pstats

    part = work / "profile.jsonl"
    with data.open("rb") as f, part.open("wb") as g:
        for _ in range(n):
            g.write(f.readline())
    prof = work / "verify.prof"
    r = run_measured([PYTHON, "-m", "cProfile", "-o", str(prof), "-m", "sigops.cli", "verify",
                      "--keyring", str(ring), "--summary", str(part)])
    if r.rc != 0:
        return []
    st = pstats.Stats(str(prof))
    rows = []
    for (file, line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({fn})", "calls": nc,
                     "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4)})
    rows.sort(key=lambda x: -x["tottime_s"])
    return rows[:12]


HMAC_SHAPES = (("nine", "python"), ("full", "python"), ("integral", "python"),
               ("negative_tiny", "python"), ("nine", "go"), ("full", "go"),
               ("negative_tiny", "go"), ("nine", "fixed9"), ("full", "fixed9"))
"""(record shape, canonical profile) rows measured with HMAC, each against upstream and the
floor on the same file."""
ED_SHAPES = (("nine", "python"), ("full", "python"), ("full", "go"))
"""(record shape, canonical profile) rows measured with Ed25519 against the raw verify loop."""


def _shape_rows(work: Path, n: int, rounds: int, ed_n: int, ed_rounds: int
                ) -> list[dict[str, Any]]:
    """One row per (shape, profile, alg): ``sigops verify --summary`` in one process against
    upstream's path and the floor (HMAC) or the raw verify loop (Ed25519), same file, same
    run, interleaved rounds."""
    rows: list[dict[str, Any]] = []
    key, ed = pcsdata.hmac_key(), pcsdata.ed_key()
    assert ed.public is not None
    pub = base64.b64encode(ed.public).decode()
    for alg, shapes, count, rnds in (("hmac-sha256", HMAC_SHAPES, n, rounds),
                                     ("ed25519", ED_SHAPES, ed_n, ed_rounds)):
        for shape, profile in shapes:
            what = f"{shape}/{profile}/{alg}"
            log(f"part 1 shapes: {what}, {count:,} records, {rnds} rounds")
            k = key if alg == "hmac-sha256" else ed
            data, ring = work / "shape.jsonl", work / "shape_ring.json"
            pcsdata.write_jsonl(data, pcsdata.signed_records(count, k, seed=3, profile=profile,
                                                             shape=shape))
            pcsdata.write_keyring(ring, [k], profile)
            sig = [SIGOPS, "verify", "--keyring", str(ring), "--summary", str(data)]
            if alg == "hmac-sha256":
                secret = pcsdata.HMAC_SECRET
                variants = {
                    "upstream": [PYTHON, str(HERE / "upstream_verify.py"), secret, str(data)],
                    "floor": [PYTHON, str(HERE / "floor_verify.py"), secret, str(data)],
                    "sigops_j1": sig}
            else:
                variants = {"raw_loop": [PYTHON, str(HERE / "ed25519_raw.py"), pub, str(data),
                                         profile], "sigops_j1": sig}
            runs, info = _rounds(variants, count, rnds, what, timeout=300, extra=2,
                                 any_valid=("upstream",) if profile != "python" else ())
            row: dict[str, Any] = {"shape": shape, "profile": profile, "alg": alg,
                                   "records": count, "round_selection": info,
                                   "example": _example(data)}
            rates = _rates(runs, count)
            row["sigops_records_per_s"] = rates["sigops_j1"]["records_per_s"]["median"]
            row["sigops_records_per_cpu_s"] = rates["sigops_j1"]["records_per_cpu_s"]["median"]
            if alg == "hmac-sha256":
                for base in ("upstream", "floor"):
                    row[f"{base}_records_per_s"] = rates[base]["records_per_s"]["median"]
                    row[f"vs_{base}"] = (row["sigops_records_per_s"]
                                         / row[f"{base}_records_per_s"])
                    row[f"paired_vs_{base}"] = _paired(runs, "sigops_j1", base)
                row["upstream_valid"] = json.loads(
                    runs["upstream"][0].stdout.strip().splitlines()[-1])["valid"]
            else:
                raw = [json.loads(r.stdout) for r in runs["raw_loop"]]
                row["raw_loop_verifies_per_s"] = median([x["per_second"] for x in raw])
                row["raw_loop_verifies_per_cpu_s"] = median([x["per_cpu_second"] for x in raw])
                row["vs_raw"] = row["sigops_records_per_s"] / row["raw_loop_verifies_per_s"]
                row["per_core_vs_raw"] = (row["sigops_records_per_cpu_s"]
                                          / row["raw_loop_verifies_per_cpu_s"])
            rows.append(row)
            data.unlink(missing_ok=True)
    return rows


def _example(data: Path) -> dict[str, Any]:
    """The four signed floats of the file's first record, as written: what the shape means."""
    with data.open("rb") as f:
        first = json.loads(f.readline())
    return {k: first[k] for k in ("D_hat", "coh_star", "r", "budget")}


def run(work: Path, n: int = 100_000, rounds: int = 5, ed_n: int = 100_000,
        ed_rounds: int = 3, shape_n: int = 100_000, shape_rounds: int = 3,
        shape_ed_n: int = 20_000, shape_ed_rounds: int = 3) -> dict[str, Any]:
    from sigops.core import accel

    res: dict[str, Any] = {"records": n, "rounds": rounds, "accel": accel.available()}
    log(f"part 1: generating {n:,} HMAC-signed upstream-shaped PCS")
    key = pcsdata.hmac_key()
    data, ring = work / "hmac.jsonl", work / "hmac_ring.json"
    pcsdata.write_jsonl(data, pcsdata.signed_records(n, key))
    pcsdata.write_keyring(ring, [key])
    res["file_bytes"] = data.stat().st_size
    log("part 1: process start-up times")
    res["startup_s"] = _startup(work, ring)
    log(f"part 1: HMAC, {rounds} interleaved rounds of 5 whole-process runs")
    runs, res["hmac_rounds"] = _rounds(_variants_hmac(data, ring), n, rounds, "HMAC",
                                       timeout=120, extra=rounds)
    res["hmac"] = _rates(runs, n)
    rate = {k: v["records_per_s"]["median"] for k, v in res["hmac"].items()}
    res["hmac_ratios"] = {
        "sigops_j1_vs_upstream": rate["sigops_j1"] / rate["upstream"],
        "sigops_j2_vs_upstream": rate["sigops_j2"] / rate["upstream"],
        "sigops_j1_vs_floor": rate["sigops_j1"] / rate["floor"],
        "sigops_j2_vs_floor": rate["sigops_j2"] / rate["floor"],
        "sigops_j2_vs_j1": rate["sigops_j2"] / rate["sigops_j1"],
        "sigops_pure_vs_upstream": rate["sigops_pure"] / rate["upstream"],
        "paired_sigops_pure_vs_upstream": _paired(runs, "sigops_pure", "upstream"),
        "upstream_vs_floor": rate["upstream"] / rate["floor"],
        "paired_sigops_j1_vs_upstream": _paired(runs, "sigops_j1", "upstream"),
        "paired_sigops_j2_vs_upstream": _paired(runs, "sigops_j2", "upstream"),
        "paired_sigops_j1_vs_floor": _paired(runs, "sigops_j1", "floor"),
        "paired_sigops_j2_vs_floor": _paired(runs, "sigops_j2", "floor"),
    }
    log("part 1: where the time goes (in-process stages, cProfile)")
    res["stages_us_per_record"] = _stages(data, ring)
    res["profile_top"] = _profile(data, ring, work)

    log(f"part 1: generating {ed_n:,} Ed25519-signed PCS")
    ed = pcsdata.ed_key()
    ed_data, ed_ring = work / "ed25519.jsonl", work / "ed_ring.json"
    pcsdata.write_jsonl(ed_data, pcsdata.signed_records(ed_n, ed, seed=2))
    pcsdata.write_keyring(ed_ring, [ed])
    assert ed.public is not None
    pub = base64.b64encode(ed.public).decode()
    variants = {
        "raw_loop": [PYTHON, str(HERE / "ed25519_raw.py"), pub, str(ed_data)],
        "sigops_j1": [SIGOPS, "verify", "--keyring", str(ed_ring), "--summary", str(ed_data)],
        "sigops_j2": [SIGOPS, "verify", "--jobs", "2", "--keyring", str(ed_ring), "--summary",
                      str(ed_data)],
    }
    log(f"part 1: Ed25519, {ed_rounds} interleaved rounds")
    ed_runs, ed_info = _rounds(variants, ed_n, ed_rounds, "Ed25519", timeout=300, extra=2)
    raw_out = [json.loads(r.stdout) for r in ed_runs["raw_loop"]]
    sig = _rates({k: v for k, v in ed_runs.items() if k != "raw_loop"}, ed_n)
    res["ed25519"] = {
        "records": ed_n, "rounds": ed_rounds, "round_selection": ed_info,
        "raw_loop_verifies_per_s": summary([x["per_second"] for x in raw_out]),
        "raw_loop_verifies_per_cpu_s": summary([x["per_cpu_second"] for x in raw_out]),
        "raw_loop_process_wall_s": summary([r.wall for r in ed_runs["raw_loop"]]),
        "raw_loop_other_load_cores": median([r.others for r in ed_runs["raw_loop"]]), **sig}
    raw = res["ed25519"]["raw_loop_verifies_per_s"]["median"]
    raw_cpu = res["ed25519"]["raw_loop_verifies_per_cpu_s"]["median"]
    j1 = sig["sigops_j1"]["records_per_s"]["median"]
    j2 = sig["sigops_j2"]["records_per_s"]["median"]
    # Per core: records per CPU-second on both sides (the raw loop is one thread), which
    # holds when other work on the machine takes a core away.
    res["ed25519_ratios"] = {
        "sigops_j1_vs_raw": j1 / raw, "sigops_j2_vs_raw": j2 / raw,
        "sigops_j1_per_core_vs_raw": sig["sigops_j1"]["records_per_cpu_s"]["median"] / raw_cpu,
        "sigops_j2_per_core_vs_raw": sig["sigops_j2"]["records_per_cpu_s"]["median"] / raw_cpu}
    for p in (data, ed_data):
        p.unlink(missing_ok=True)
    res["shapes"] = _shape_rows(work, shape_n, shape_rounds, shape_ed_n, shape_ed_rounds)
    return res
