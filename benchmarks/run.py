"""`make bench`: every benchmark of sigops in one run, then BENCHMARKS.md from its numbers.

Writes benchmarks/results/latest.json (machine-readable, git-ignored) and regenerates
BENCHMARKS.md at the repository root. Progress goes to stderr. ``--quick`` shrinks every size
for a smoke test (its BENCHMARKS.md says so); ``--parts`` picks parts (verify, diagnose,
audit, operator); ``--report-only`` rewrites BENCHMARKS.md from the last results without running.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_audit  # noqa: E402
import bench_diagnose  # noqa: E402
import bench_operator  # noqa: E402
import bench_verify  # noqa: E402
import report  # noqa: E402
from common import REPO, elapsed, loadavg, log, machine  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/run.py")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    p.add_argument("--parts", default="verify,diagnose,audit,operator",
                   help="comma list of parts: verify, diagnose, audit, operator")
    p.add_argument("--no-markdown", action="store_true", help="do not rewrite BENCHMARKS.md")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite BENCHMARKS.md from benchmarks/results/latest.json, run nothing")
    a = p.parse_args(argv)
    if a.report_only:
        results = json.loads((RESULTS / "latest.json").read_text())
        results["goals"] = report.goals(results)
        (REPO / "BENCHMARKS.md").write_text(report.markdown(results))
        log(f"report: {REPO / 'BENCHMARKS.md'} from {RESULTS / 'latest.json'}")
        return 0
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    q = a.quick
    started = datetime.now(UTC)
    results: dict = {"started": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "quick": q,
                     "parts": parts, "machine": machine()}
    log(f"machine: {results['machine']['cpu_model']}, {results['machine']['nproc']} cores, "
        f"load {results['machine']['loadavg_start']}")
    work = Path(tempfile.mkdtemp(prefix="sigops-bench-"))
    plan = {
        "verify": lambda: bench_verify.run(
            work, n=5_000 if q else 100_000, rounds=2 if q else 5,
            ed_n=1_000 if q else 100_000, ed_rounds=1 if q else 3,
            shape_n=3_000 if q else 100_000, shape_rounds=1 if q else 3,
            shape_ed_n=500 if q else 50_000, shape_ed_rounds=1 if q else 3),
        "diagnose": lambda: bench_diagnose.run(
            n=4_000 if q else 100_000, rounds=1 if q else 3, naive_n=1_000 if q else 20_000,
            match_n=1_000 if q else 20_000, unverifiable_n=100 if q else 1_000,
            naive_growth_n=200 if q else 2_000),
        "audit": lambda: bench_audit.run(work, n=10_000 if q else 200_000,
                                         rounds=1 if q else 3, extra=0 if q else 3),
        "operator": lambda: bench_operator.run(
            work, latency_n=20 if q else 200, storm_posts=1_000 if q else 10_000,
            idle_window=10.0 if q else 45.0),
    }
    try:
        for name in parts:
            log(f"== {name} ==")
            t0 = time.monotonic()
            try:
                results[name] = plan[name]()
            except Exception as e:  # noqa: BLE001 - record it; the other parts still run
                traceback.print_exc()
                results[name] = {"error": f"{type(e).__name__}: {e}"}
            results[name]["seconds"] = time.monotonic() - t0
            log(f"== {name} done in {results[name]['seconds']:.0f}s ==")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results["total_seconds"] = elapsed()
    results["machine"]["loadavg_end"] = loadavg()
    results["goals"] = report.goals(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "latest.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results: {out}")
    if not a.no_markdown:
        md = REPO / "BENCHMARKS.md"
        md.write_text(report.markdown(results))
        log(f"report: {md}")
    for g in results["goals"]:
        log(f"goal {'MET    ' if g['met'] else 'NOT MET'} {g['name']}: {g['measured']}")
    log(f"total {elapsed():.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
