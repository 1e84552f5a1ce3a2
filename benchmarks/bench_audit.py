"""Part: the fleet audit (issue 27). Records per second of one index of ``sigops audit shard``
(one process) against ``sigops verify --summary`` (one process) and the upstream Go backend's
verify path (``goverify/main.go``, built here with ``go build`` into the run's temporary
directory), all on the same HMAC records in the Go backend's profile; per CPU-second, so a
core taken by other work does not count against anyone. Then the wall time of one WAL set
audited by 1 and by 2 indexes at once (processes in parallel, as the Job's pods run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pcsdata
from bench_verify import _rounds, _wait_calm
from common import HERE, SIGOPS, ProcRun, log, machine_busy_seconds, median


def build_go(work: Path) -> str | None:
    """The Go verify path, built into ``work`` (never into the repository)."""
    go = shutil.which("go")
    if go is None:
        return None
    out = work / "goverify"
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-trimpath")
    subprocess.run([go, "build", "-o", str(out), str(HERE / "goverify" / "main.go")],
                   check=True, capture_output=True, env=env, timeout=300)
    return str(out)


def _wal(jsonl: Path, wal: Path) -> Path:
    """The records of ``jsonl`` as one inbox WAL, each received at its sent_at."""
    with wal.open("wb") as f, jsonl.open("rb") as src:
        for line in src:
            body = line.strip()
            if body:
                sent = json.loads(body)["sent_at"]
                stamp = sent[:-1] + "000000Z"  # nanoseconds, as the backend writes them
                f.write(f"{stamp}|{len(body)}|".encode() + body + b"\n")
    return wal


def _total(name: str, r: ProcRun) -> int:
    """Records the run read, from its JSON answer (audit: the signed partial's result)."""
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"{name}: no JSON answer (rc {r.rc}): {r.stderr[-400:]}") from None
    res = out.get("payload", {}).get("result", out)
    if res.get("valid", 0) != res.get("total"):
        raise RuntimeError(f"{name}: not every record valid: {res}")
    return int(res["total"])


def _parallel(argvs: list[list[str]], timeout: float = 600.0) -> dict[str, Any]:
    """Processes started at once; wall time until the last exits, CPU of all of them."""
    busy0 = machine_busy_seconds()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for a in argvs]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        outs.append((p.returncode, out.decode(), err.decode()))
    wall = time.perf_counter() - t0
    return {"wall": wall, "outs": outs, "busy": machine_busy_seconds() - busy0}


def _children_cpu() -> float:
    ru = os.times()
    return ru.children_user + ru.children_system


def run(work: Path, n: int = 200_000, rounds: int = 3, extra: int = 3) -> dict[str, Any]:
    res: dict[str, Any] = {"records": n, "rounds": rounds, "profile": "go"}
    gobin = build_go(work)
    res["go_built"] = gobin is not None
    key = pcsdata.hmac_key()
    data, ring = work / "audit.jsonl", work / "audit_ring.json"
    log(f"audit: generating {n:,} HMAC-signed PCS in the go profile")
    pcsdata.write_jsonl(data, pcsdata.signed_records(n, key, seed=5, profile="go"))
    pcsdata.write_keyring(ring, [key], "go")
    wal = _wal(data, work / "inbox-20250119.wal")
    res["jsonl_bytes"], res["wal_bytes"] = data.stat().st_size, wal.stat().st_size
    res["wal_bytes_per_record"] = res["wal_bytes"] / n
    akey = work / "audit_key.json"
    akey.write_text(subprocess.run([SIGOPS, "keygen", "--alg", "ed25519", "--kid", "bench-audit"],
                                   check=True, capture_output=True, text=True).stdout)
    audit = [SIGOPS, "audit", "shard", "--keyring", str(ring), "--key", str(akey),
             "--accepted-invalid"]
    variants = {
        "audit_index": audit + [str(wal)],
        "audit_index_pure": ["/usr/bin/env", "SIGOPS_ACCEL=0"] + audit + [str(wal)],
        "verify_jsonl": [SIGOPS, "verify", "--keyring", str(ring), "--summary", str(data)],
        "verify_wal": [SIGOPS, "verify", "--keyring", str(ring), "--summary", str(wal)],
    }
    if gobin is not None:
        variants["go_jsonl"] = [gobin, pcsdata.HMAC_SECRET, str(data)]
        variants["go_wal"] = [gobin, "-wal", pcsdata.HMAC_SECRET, str(wal)]
    def counted(name: str, x: ProcRun, n: int) -> None:
        if _total(name, x) != n:
            raise RuntimeError(f"{name}: read {_total(name, x)} records, not {n}")

    runs, res["round_selection"] = _rounds(variants, n, rounds, "audit", timeout=600,
                                           extra=extra, check=counted)
    names = list(variants)
    kept = [{k: runs[k][i] for k in names} for i in range(len(runs[names[0]]))]
    res["variants"] = {k: {
        "wall_s": median([x[k].wall for x in kept]),
        "cpu_s": median([x[k].cpu for x in kept]),
        "records_per_s": median([n / x[k].wall for x in kept]),
        "records_per_cpu_s": median([n / x[k].cpu for x in kept]),
        "maxrss_mib": median([x[k].maxrss_mib for x in kept]),
        "other_load_cores": median([x[k].others for x in kept])} for k in names}

    def paired(a: str, b: str) -> float:
        """Median over kept rounds of cpu(b)/cpu(a): a's records per CPU-s over b's."""
        return median([x[b].cpu / x[a].cpu for x in kept])

    res["per_core"] = {"audit_vs_verify_wal": paired("audit_index", "verify_wal"),
                       "audit_vs_verify_jsonl": paired("audit_index", "verify_jsonl"),
                       "audit_vs_pure": paired("audit_index", "audit_index_pure"),
                       "verify_jsonl_vs_verify_wal": paired("verify_jsonl", "verify_wal")}
    if gobin is not None:
        res["per_core"] |= {"audit_vs_go_wal": paired("audit_index", "go_wal"),
                            "audit_vs_go_jsonl": paired("audit_index", "go_jsonl"),
                            "verify_jsonl_vs_go_jsonl": paired("verify_jsonl", "go_jsonl"),
                            "verify_wal_vs_go_wal": paired("verify_wal", "go_wal")}
    data.unlink(missing_ok=True)

    # The same WAL set (4 files) audited by 1 index, then by 2 indexes at once.
    wal_dir = work / "walset"
    _wal_set(wal, wal_dir)
    wal.unlink(missing_ok=True)
    scaling: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for rr in range(rounds):
        for k in ((1, 2) if rr % 2 == 0 else (2, 1)):
            _wait_calm()
            argvs = [audit + ["--dir", str(wal_dir), "--shards-of", str(k), "--index", str(i)]
                     for i in range(k)]
            c0 = _children_cpu()
            p = _parallel(argvs)
            cpu = _children_cpu() - c0
            total = 0
            for rc, out, err in p["outs"]:
                if rc != 0:
                    raise RuntimeError(f"audit index failed (rc {rc}): {err[-400:]}")
                total += int(json.loads(out)["payload"]["result"]["total"])
            if total != n:
                raise RuntimeError(f"{k} indexes read {total} records, not {n}")
            others = max(0.0, (p["busy"] - cpu) / p["wall"])
            scaling[k].append({"wall_s": p["wall"], "cpu_s": cpu, "other_load_cores": others})
            log(f"  audit {k} index(es): {p['wall']:.2f}s wall, {cpu:.2f} CPU-s, other load "
                f"{others:.2f} cores")
    res["indexes"] = [{"indexes": k, "files": 4, "records": n,
                       "wall_s": median([x["wall_s"] for x in v]),
                       "cpu_s": median([x["cpu_s"] for x in v]),
                       "other_load_cores": median([x["other_load_cores"] for x in v]),
                       "records_per_s": n / median([x["wall_s"] for x in v])}
                      for k, v in scaling.items()]
    res["speedup_2_vs_1"] = res["indexes"][0]["wall_s"] / res["indexes"][1]["wall_s"]
    shutil.rmtree(wal_dir, ignore_errors=True)
    return res


def _wal_set(wal: Path, out: Path, files: int = 4) -> None:
    """``wal`` cut into ``files`` WAL files at entry boundaries (equal record counts)."""
    from sigops.core.wal import entry_bytes, read_wal

    entries = list(read_wal(wal.read_bytes()))
    out.mkdir(parents=True, exist_ok=True)
    per = -(-len(entries) // files)
    for k in range(files):
        (out / f"inbox-2025011{k}.wal").write_bytes(
            b"".join(entry_bytes(e) for e in entries[k * per:(k + 1) * per]))


if __name__ == "__main__":  # a quick look: python benchmarks/bench_audit.py
    import tempfile

    w = Path(tempfile.mkdtemp(prefix="sigops-bench-audit-"))
    try:
        print(json.dumps(run(w, n=20_000, rounds=1, extra=0), indent=2))
    finally:
        shutil.rmtree(w, ignore_errors=True)
