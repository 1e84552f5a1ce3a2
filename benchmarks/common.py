"""Shared helpers of the benchmarks: the machine, timing, statistics, processes, progress."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
DEV_BIN = REPO / ".dev" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
SIGOPS = str(VENV_BIN / "sigops")
HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

_T0 = time.monotonic()


def log(msg: str) -> None:
    """Progress on stderr, with the time since the run started."""
    sys.stderr.write(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}\n")
    sys.stderr.flush()


def elapsed() -> float:
    return time.monotonic() - _T0


# -- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model (from /proc/cpuinfo), cores (nproc), memory (free), load, Python."""
    cpu = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu MHz", "cache size") and key not in cpu:
                cpu[key] = value.strip()
    except OSError:
        pass
    free = _run_text(["free", "-m"])
    mem_total = None
    for line in free.splitlines():
        if line.startswith("Mem:"):
            mem_total = int(line.split()[1])
    return {
        "cpu_model": cpu.get("model name", "unknown"),
        "cpu_mhz": cpu.get("cpu MHz"),
        "cache": cpu.get("cache size"),
        "nproc": int(_run_text(["nproc"]).strip() or os.cpu_count() or 0),
        "mem_total_mib": mem_total,
        "free_m": free.strip(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": loadavg(),
    }


def _run_text(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# -- statistics ----------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return float(s[k])


def summary(xs: Sequence[float]) -> dict[str, float]:
    return {"median": median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


# -- whole-process runs --------------------------------------------------------------------------


@dataclass
class ProcRun:
    wall: float
    cpu: float  # user + sys of the process and its waited-for children (pool workers)
    maxrss_mib: float  # peak RSS of the largest of them
    rc: int
    stdout: str
    stderr: str
    others: float = 0.0  # cores kept busy by everything else on the machine meanwhile


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def run_measured(argv: list[str], timeout: float = 180.0, env: dict[str, str] | None = None,
                 stdin_path: Path | None = None) -> ProcRun:
    """Run ``argv`` as a whole process: wall time from spawn to exit; CPU time and peak RSS
    from wait4 (so they cover worker processes it forked and waited for)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        busy0 = machine_busy_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=stdin, env=env)
        deadline = t0 + timeout
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    os.wait4(proc.pid, 0)
                    raise TimeoutError(f"{argv[:3]} did not finish in {timeout:.0f}s")
                time.sleep(0.002)
            wall = time.perf_counter() - t0
            busy = machine_busy_seconds() - busy0
        finally:
            if stdin_path:
                stdin.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        return ProcRun(wall, cpu, usage.ru_maxrss / 1024, proc.returncode,
                       out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                       max(0.0, (busy - cpu) / wall))


# -- a running process ----------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0
