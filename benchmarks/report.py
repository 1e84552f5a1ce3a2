"""BENCHMARKS.md from one run's results: method, machine, numbers, ratios, goals and, for
every goal not met, the measured figure and what limits it. Only measured numbers appear."""

from __future__ import annotations

from typing import Any

GOAL_LATENCY_P99_MS = 300.0
GOAL_RSS_MIB = 150.0
GOAL_FLAT = 1.25  # matching samples: 64-key cost within 25% of the 1-key cost


def _get(d: Any, *path: Any, default: Any = None) -> Any:
    for p in path:
        if not isinstance(d, dict | list):
            return default
        try:
            d = d[p]
        except (KeyError, IndexError, TypeError):
            return default
    return d


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal of the brief that this run measured: name, target, measured, met, and the
    topic whose limits explain it when it is not met (see :func:`limits`)."""
    out: list[dict[str, Any]] = []

    def add(topic: str, name: str, target: str, measured: str, met: bool) -> None:
        out.append({"topic": topic, "name": name, "target": target, "measured": measured,
                    "met": bool(met)})

    hm, ed_rows = shape_rows(r)
    if hm:
        w, f = hm[0], min(hm, key=lambda x: x["paired_vs_floor"])
        ru, rf = w["paired_vs_upstream"], f["paired_vs_floor"]
        add("shapes", "every record shape: sigops verify >= 1x upstream (must)", ">= 1.00x",
            f"weakest {_shape_name(w)}: {ru:.2f}x", ru >= 1.0)
        add("shapes", "every record shape: sigops verify >= 2x upstream (goal)", ">= 2.00x",
            f"weakest {_shape_name(w)}: {ru:.2f}x", ru >= 2.0)
        add("shapes", "every record shape: sigops verify >= 0.8x the floor (goal)", ">= 0.80x",
            f"weakest {_shape_name(f)}: {rf:.2f}x", rf >= 0.8)
    if ed_rows:
        w = ed_rows[0]
        add("shapes-ed25519", "every record shape: Ed25519 sigops verify within 10% of the raw "
            "loop, per core", ">= 0.90x", f"weakest {_shape_name(w)}: "
            f"{w['per_core_vs_raw']:.2f}x", w["per_core_vs_raw"] >= 0.9)
    ratios = _get(r, "verify", "hmac_ratios")
    if ratios:
        for key, label in (("sigops_j1", "sigops verify"),
                           ("sigops_j2", "sigops verify --jobs 2")):
            ru, rf = ratios[f"{key}_vs_upstream"], ratios[f"{key}_vs_floor"]
            add("hmac", f"HMAC: {label} >= 1x upstream (must)", ">= 1.00x", f"{ru:.2f}x",
                ru >= 1.0)
            add("hmac", f"HMAC: {label} >= 2x upstream (goal)", ">= 2.00x", f"{ru:.2f}x",
                ru >= 2.0)
            add("hmac", f"HMAC: {label} >= 0.8x the floor", ">= 0.80x", f"{rf:.2f}x",
                rf >= 0.8)
    ed = _get(r, "verify", "ed25519_ratios")
    if ed:
        for key, label in (("sigops_j1", "sigops verify"),
                           ("sigops_j2", "sigops verify --jobs 2")):
            x = ed[f"{key}_per_core_vs_raw"]
            add("ed25519", f"Ed25519: {label} within 10% of the raw loop, per core "
                "(records per CPU-second)", ">= 0.90x", f"{x:.2f}x (records/s: "
                f"{ed[f'{key}_vs_raw']:.2f}x)", x >= 0.9)
    pc = _get(r, "audit", "per_core")
    if pc:
        x = pc["audit_vs_verify_wal"]
        add("audit", "audit: one index >= 1x sigops verify per core, same WAL (must)",
            ">= 1.00x", f"{x:.2f}x (vs verify of the JSONL: {pc['audit_vs_verify_jsonl']:.2f}x)",
            x >= 1.0)
        if "audit_vs_go_wal" in pc:
            g = pc["audit_vs_go_wal"]
            add("audit", "audit: one index >= 2x the Go verify path per core (goal)", ">= 2.00x",
                f"{g:.2f}x (sigops verify: {pc['verify_wal_vs_go_wal']:.2f}x)", g >= 2.0)
    dg = r.get("diagnose") or {}
    if "growth" in dg:
        g = dg["growth"]
        ratio = dg["growth_matching_ratio_64_vs_1"]
        add("growth", "diagnosis: matching samples nearly flat from 1 to 64 keys",
            f"64-key cost <= {GOAL_FLAT:.2f}x the 1-key cost",
            f"{ratio:.2f}x ({g[0]['matching_us']:.1f} -> {g[-1]['matching_us']:.1f} us)",
            ratio <= GOAL_FLAT)
    lat = _get(r, "operator", "latency", "latency_ms")
    if lat:
        add("latency", "alert-to-incident p99 < 300 ms", f"< {GOAL_LATENCY_P99_MS:.0f} ms",
            f"{lat['p99']:.0f} ms (p50 {lat['p50']:.0f} ms)", lat["p99"] < GOAL_LATENCY_P99_MS)
    s = _get(r, "operator", "storm")
    if s and "posts" in s:
        exp = s["expected_incidents"] + s["expected_rate_limited_records"]
        add("storm-count", "storm: incidents = distinct groups minus rate-limited",
            f"{s['expected_incidents']} incidents + {s['expected_rate_limited_records']} "
            "RateLimited record", f"{s['incidents_remediating']} incidents + "
            f"{s['incidents_rate_limited_records']} RateLimited record(s)",
            s["incidents_total"] == exp
            and s["incidents_remediating"] == s["expected_incidents"])
        add("storm-rate", f"storm: {s['posts']:,} posts within {s['target_duration_s']:.0f} s",
            f"elapsed <= {s['target_duration_s'] + 0.5:.1f} s",
            f"{s['elapsed_s']:.1f} s ({s['posts_per_s']:.0f} posts/s), p99 "
            f"{s['response_ms']['p99']:.0f} ms", s["elapsed_s"] <= s["target_duration_s"] + 0.5)
        peak = max(s["rss_mib"]["after"], s["rss_mib"]["peak_after"])
        add("storm-rss", "storm: operator RSS < 150 MB", f"< {GOAL_RSS_MIB:.0f} MiB",
            f"peak {s['rss_mib']['peak_after']:.0f} MiB, after {s['rss_mib']['after']:.0f} MiB",
            peak < GOAL_RSS_MIB)
        before, settled = s["rss_mib"]["before"], s["rss_mib"]["settled_15s"]
        add("storm-rss", "storm: no RSS growth after the storm",
            "RSS 15 s after <= 1.10x RSS before", f"{before:.0f} -> {settled:.0f} MiB",
            settled <= before * 1.10)
    return out


def shape_rows(r: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The record-shape rows of the run, weakest first: HMAC by the ratio to upstream, Ed25519
    by the per-core ratio to the raw verify loop."""
    rows = _get(r, "verify", "shapes") or []
    hm = sorted((x for x in rows if x["alg"] == "hmac-sha256"),
                key=lambda x: x["paired_vs_upstream"])
    ed = sorted((x for x in rows if x["alg"] == "ed25519"), key=lambda x: x["per_core_vs_raw"])
    return hm, ed


def _shape_name(row: dict[str, Any]) -> str:
    return f"{row['shape']}/{row['profile']}"


def _kept(row: dict[str, Any]) -> str:
    """Rounds kept, and how many of those ran while other work kept more than the threshold
    of cores busy (all are kept when too few calm ones could be had)."""
    info = row.get("round_selection") or {}
    calm = info.get("rounds_run", 0) - info.get("contended_rounds", 0)
    kept = info.get("rounds_kept", 0)
    return f"{kept} ({max(0, kept - calm)})"


def _floats(row: dict[str, Any]) -> str:
    return " ".join(f"`{v!r}`" for v in row["example"].values())


def limits(r: dict[str, Any]) -> dict[str, str]:
    """What limits each topic, in this run's own numbers."""
    out: dict[str, str] = {}
    hm, ed_rows = shape_rows(r)
    if hm:
        w = hm[0]
        best = hm[-1]
        us = {_shape_name(x): 1e6 / x["sigops_records_per_cpu_s"] for x in hm}
        up = [1e6 / x["upstream_records_per_s"] for x in hm]
        out["shapes"] = (
            f"the weakest shape, {_shape_name(w)}, costs sigops {us[_shape_name(w)]:.1f} us of "
            f"CPU per record against {us[_shape_name(best)]:.1f} us for the strongest, "
            f"{_shape_name(best)} (table 'Record shapes'); upstream's path took "
            f"{min(up):.1f} to {max(up):.1f} us of wall time per record across the shapes. "
            "Most of sigops' cost is the per-record work every shape shares (see the HMAC "
            "rows below: hardened parse, type checks, canonical bytes, the signed content "
            "kept for the tamper check)"
            + (", most of it done by the compiled reader in this run." if
               (r.get("verify") or {}).get("accel") else
               ", which one pure-Python process cannot halve (the compiled reader was not "
               "built for this run)."))
    if ed_rows:
        w = ed_rows[0]
        out["shapes-ed25519"] = (
            f"{_shape_name(w)}: one Ed25519 verify costs "
            f"{1e6 / w['raw_loop_verifies_per_cpu_s']:.1f} us of CPU in the raw loop and sigops "
            f"{1e6 / w['sigops_records_per_cpu_s']:.1f} us per record: the same per-record "
            "reading, checking and canonicalisation as the HMAC rows, plus a SHA-256, come on "
            "top of the verify (see the Ed25519 goal below).")
    v = r.get("verify") or {}
    if "hmac" in v:
        st = v.get("stages_us_per_record") or {}
        h = v["hmac"]
        cpu = {k: 1e6 / x["records_per_cpu_s"]["median"] for k, x in h.items()}
        su = v.get("startup_s") or {}
        out["hmac"] = (
            f"CPU per record, whole process: sigops {cpu['sigops_j1']:.1f} us, upstream "
            f"{cpu['upstream']:.1f} us, floor {cpu['floor']:.1f} us. In process (table "
            "'Where sigops spends a record'): the hardened parse "
            f"{st.get('strictjson.loads (hardened parse)', float('nan')):.1f} us against "
            f"{st.get('json.loads (stdlib, no checks)', float('nan')):.1f} us for a bare "
            "json.loads (orjson parses, then one byte translation rules out integers beyond "
            "2^53 and one re-encoding proves no key was duplicated), the short route "
            f"{st.get('short route (types, base64, sent_at, canonical, HMAC, content)', float('nan')):.1f}"  # noqa: E501
            " us (types, base64, sent_at, canonical bytes "
            f"{st.get('canonical_bytes (python profile)', float('nan')):.1f} us, HMAC "
            f"{st.get('HMAC verify (Key.verify: precomputed key pads, compare_digest)', float('nan')):.1f} us, "  # noqa: E501
            "the signed content kept for the tamper check)"
            + ("; those stages are the pure-Python route's: in this run's whole processes the "
               "compiled reader did the parse, the checks of types, base64 and sent_at, the "
               "canonical bytes and the HMAC of each plain record, many records per call. "
               if v.get("accel") else ". ")
            + "The floor does only json.loads and "
            "one HMAC, and upstream adds one json.dumps of 8 fields; sigops checks what they do "
            "not, so one process cannot reach the floor. "
            f"Start-up: {su.get('sigops_verify_1_record', float('nan')) * 1000:.0f} ms for "
            f"sigops, {su.get('upstream_1_record', float('nan')) * 1000:.0f} ms for upstream. "
            "With --jobs 2 the two workers and the parent (which cuts the file into ranges, "
            "starts the pool and settles the results in input order) used "
            f"{h['sigops_j2']['cpu_s']['median']:.2f} CPU-s against "
            f"{h['sigops_j1']['cpu_s']['median']:.2f} for one process, on the "
            "2 cores that the machine's other work also uses (load average "
            f"{(r.get('machine') or {}).get('loadavg_start')} at the start).")
    if "ed25519" in v:
        e = v["ed25519"]
        j1cpu = e["sigops_j1"]["cpu_s"]["median"] / e["records"] * 1e6
        raw_cpu = e["raw_loop_verifies_per_cpu_s"]["median"]
        raw_us = 1e6 / raw_cpu
        other_us = float("nan")
        if "hmac" in v:
            mac = (v.get("stages_us_per_record") or {}).get(
                "HMAC verify (Key.verify: precomputed key pads, compare_digest)", float("nan"))
            other_us = 1e6 / v["hmac"]["sigops_j1"]["records_per_cpu_s"]["median"] - mac
        out["ed25519"] = (
            f"one Ed25519 verify costs {raw_us:.1f} us of CPU in the raw loop; sigops "
            f"spends {j1cpu:.1f} us of CPU per record: the verify plus the same per-record "
            "reading, checking and canonicalisation as in the HMAC rows (and a SHA-256 of the "
            f"canonical bytes), {j1cpu - raw_us:.1f} us in all. Within 10% would leave "
            f"{raw_us / 9:.1f} us for that work"
            + (f"; in the HMAC run the same work (CPU per record less the MAC) took "
               f"{other_us:.1f} us, so per core the goal needs it "
               f"{other_us / (raw_us / 9):.1f}x cheaper" if other_us == other_us else "")
            + ". With --jobs 2 the records/s pass the single-threaded raw loop; --jobs 2 "
            "adds the parent's "
            "share. Records/s also depend on the cores the machine's other work took "
            "meanwhile (column 'other load').")
    au = r.get("audit") or {}
    if "variants" in au:
        us = {k: 1e6 / x["records_per_cpu_s"] for k, x in au["variants"].items()}
        out["audit"] = (
            "CPU per record, whole process (start-up included): audit index "
            f"{us['audit_index']:.1f} us, sigops verify of the same WAL {us['verify_wal']:.1f} us"
            + (f", the Go path {us['go_wal']:.1f} us" if "go_wal" in us else "")
            + f", the audit's pure-Python route {us['audit_index_pure']:.1f} us. The compiled "
            "reader (`read_batch`) parses, checks types, decodes the signature, writes the "
            "canonical bytes and checks the HMAC-SHA256 (RustCrypto, under the key that "
            "matched last, whose secret Python passes per call) of many records per call. For "
            "sigops verify it hands Python one row of objects per record (the canonical bytes, "
            "the signature, the signed values); Python runs the key window and skew checks "
            "and keeps the signed content for the tamper check. For an audit index "
            "(`read_batch(short=)`, `Diagnoser.check_runs`) it runs the window and skew "
            "checks too and hands over runs of records valid under that key: per record only "
            "its pcs_id and its entry's offset as objects, the other signed values packed in "
            "one bytes object per run (read back only if a tamper check asks for one, or the "
            "run has too few new pcs_ids to be held whole), and a count per shard_id; Python "
            "adds a run to the tamper memory at once (one dict entry per new pcs_id) and to "
            "the tally once per shard_id. Every other record (another key, a bad signature, "
            "outside its key's window, skewed, Ed25519) takes the per-record route in Python "
            "(read again; verify checks such a record inline). Beyond what sigops verify does, "
            "an index hashes every byte it reads (SHA-256, hashlib, whole pages) and loads "
            "the signing library for its signed partial at start-up.")
    dg = r.get("diagnose") or {}
    if "growth" in dg:
        g = dg["growth"]
        out["growth"] = (
            f"matching samples tried {g[0]['matching_tried_per_sample']:.3f} pairs each with "
            f"{g[0]['keys']} key(s) and {g[-1]['matching_tried_per_sample']:.3f} with "
            f"{g[-1]['keys']} (only the first sample of the stream walks the ring), so the "
            "difference in time is not spent trying keys: it is run-to-run noise on a shared "
            "machine (load average at the start of the run "
            f"{(r.get('machine') or {}).get('loadavg_start')}).")
    o = r.get("operator") or {}
    lat = o.get("latency") or {}
    if "latency_ms" in lat:
        out["latency"] = (
            "a new alert takes three sequential API calls (list the open incidents of the "
            "fingerprint, write the rate-limit ConfigMap, create the incident); POST response "
            f"p50 {lat['response_ms']['p50']:.0f} ms.")
    s = o.get("storm") or {}
    if "posts" in s:
        br = s.get("response_ms_by_result") or {}
        dup = br.get("duplicate", {})
        rl = br.get("rate_limited", {})
        out["storm-rate"] = (
            "the client paces its posts over the target duration, so the elapsed time can "
            "only exceed it when answers come late. New groups (their API calls run outside "
            "the intake lock, one alert per fingerprint at a time) answered in p50 "
            f"{rl.get('p50', float('nan')):.0f} ms, p99 {rl.get('p99', float('nan')):.0f} ms; "
            f"duplicates in p50 {dup.get('p50', float('nan')):.1f} ms, p99 "
            f"{dup.get('p99', float('nan')):.0f} ms. The operator used "
            f"{s.get('operator_cpu_share', 0) * 100:.0f}% of a core and the client "
            f"{s.get('client_cpu_share', 0) * 100:.0f}% during the storm.")
        out["storm-rss"] = "CPython keeps memory it freed (arenas, thread stacks) for reuse."
    return out


def _counts(d: dict[str, Any]) -> str:
    """{"a": 1, "b": 2} as "a: 1, b: 2"."""
    return ", ".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in d.items())


def _fmt(x: Any, spec: str = ",.0f") -> str:
    if x is None:
        return "n/a"
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    L: list[str] = []
    a = L.append
    a("# sigops benchmarks")
    a("")
    a("Generated by `make bench` (`python benchmarks/run.py`) from the run that started "
      f"{r['started']} and took {r['total_seconds']:.0f} s. Machine-readable results: "
      "`benchmarks/results/latest.json` (not in git). Every number below was measured in "
      "that run; every ratio compares two numbers of that run.")
    if r.get("quick"):
        a("")
        a("**This is a `--quick` smoke run: sizes are far below the real ones.**")
    missing = [p for p in ("verify", "diagnose", "audit", "operator")
               if p not in (r.get("parts") or ())]
    if missing:
        a("")
        a(f"Parts run: {', '.join(r.get('parts') or ())}; not run in this run (so not "
          f"reported here): {', '.join(missing)} (`--parts`).")
    a("")
    a("## Machine")
    a("")
    a(f"- CPU: {m['cpu_model']} ({m.get('cpu_mhz') or '?'} MHz, cache {m.get('cache') or '?'}), "
      f"`nproc` = {m['nproc']}")
    a(f"- Memory: {_fmt(m.get('mem_total_mib'))} MiB (`free -m`); kernel {m['kernel']}; "
      f"Python {m['python']}")
    a(f"- Load average at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')}. "
      "The machine is shared with other work, so every comparison interleaves its variants "
      "(the order rotates each round) and quotes medians.")
    a("")
    a("```")
    a(m.get("free_m", ""))
    a("```")
    a("")
    a("## Goals")
    a("")
    a("| goal | target | measured | met |")
    a("| --- | --- | --- | --- |")
    for g in r.get("goals", []):
        a(f"| {g['name']} | {g['target']} | {g['measured']} | {'yes' if g['met'] else '**no**'} |")
    unmet = [g for g in r.get("goals", []) if not g["met"]]
    if unmet:
        a("")
        a("### Goals not met: the measured figure and what limits it")
        lim = limits(r)
        for topic in dict.fromkeys(g["topic"] for g in unmet):
            a("")
            for g in (g for g in unmet if g["topic"] == topic):
                a(f"- **{g['name']}**: measured {g['measured']} (target {g['target']}).")
            a("")
            a(f"  What limits it: {lim.get(topic, 'see the numbers below.')}")
    _verify(r, a)
    _diagnose(r, a)
    _audit(r, a)
    _fleet(r, a)
    _operator(r, a)
    a("")
    return "\n".join(L)


def _rounds_note(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    return (" Each round waits (within a budget) for the rest of the machine to be quiet; a "
            f"round in which other work kept more than {info['contended_threshold_cores']:g} "
            "cores busy is repeated (up to a limit): "
            f"{info['rounds_run']} rounds run, {info['contended_rounds']} contended, "
            f"{info['rounds_kept']} kept; {info.get('waited_for_calm_s', 0):.0f} s spent "
            "waiting so far in this part.")


def _verify(r: dict[str, Any], a: Any) -> None:
    v = r.get("verify")
    if not v:
        return
    a("")
    a("## 1. Verification throughput (`sigops verify --summary`, whole process)")
    a("")
    if "error" in v:
        a(f"Failed: `{v['error']}`")
        return
    a(f"Method: {v['records']:,} valid HMAC-SHA256 PCS in one JSONL file "
      f"({v['file_bytes'] / 1e6:.1f} MB; upstream-shaped records like "
      "`pcs_tiny_case_1.json`, four signed floats at 9 decimals, signed with "
      "`sigops.core.pcs.sign_pcs`, profile `python`). Each variant runs as a whole process "
      "(interpreter start-up included); wall time from spawn to exit, CPU time (user+sys, "
      f"worker processes included) from `wait4`. {v['rounds']} interleaved rounds; medians."
      + _rounds_note(v.get("hmac_rounds")))
    a("")
    a("Compiled reader (`sigops_accel`, built from `accel/` by `make venv`): "
      + ("**in use** in this run: it parses each plain record, checks its types, decodes its "
         "signature, writes its canonical bytes and checks its HMAC under the key that "
         "matched last; the MAC of any other record, the Ed25519 verify, the key window and "
         "the tamper memory stay in Python. Whatever it is unsure of goes to the "
         "pure-Python route, which `sigops_pure` runs alone (`SIGOPS_ACCEL=0`)."
         if v.get("accel") else "**not built** here: every figure is the pure-Python route."))
    a("")
    a("- **upstream**: `benchmarks/upstream_verify.py`, the agent's own path (json.loads, "
      "Decimal half-up at 9 decimals, json.dumps(sort_keys) of the signed subset, HMAC, base64 "
      "decode, compare_digest).")
    a("- **floor**: `benchmarks/floor_verify.py`, json.loads + one HMAC per record.")
    a("- **sigops**: `sigops verify --summary` (strict JSON, type checks, canonical bytes, "
      "replay/tamper memory, verdicts), one process and `--jobs 2`.")
    a("")
    a("| variant | records/s (median) | min - max | wall s | CPU s | records per CPU-s | "
      "peak RSS MiB | other load (cores) |")
    a("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in ("upstream", "floor", "sigops_j1", "sigops_j2", "sigops_pure"):
        if name not in v["hmac"]:
            continue
        x = v["hmac"][name]
        a(f"| {name} | {_fmt(x['records_per_s']['median'])} | "
          f"{_fmt(x['records_per_s']['min'])} - {_fmt(x['records_per_s']['max'])} | "
          f"{x['wall_s']['median']:.2f} | {x['cpu_s']['median']:.2f} | "
          f"{_fmt(x['records_per_cpu_s']['median'])} | {x['maxrss_mib']:.0f} | "
          f"{_fmt(x.get('other_load_cores'), '.2f')} |")
    a("")
    a("'other load': cores kept busy by everything else on the machine during the run "
      "(machine-wide busy time from /proc/stat minus the run's own CPU time), median.")
    rt = v["hmac_ratios"]
    a("")
    a("| ratio (records/s) | median of runs | median of per-round ratios |")
    a("| --- | --- | --- |")
    for k, label in (("sigops_j1_vs_upstream", "sigops / upstream"),
                     ("sigops_j2_vs_upstream", "sigops --jobs 2 / upstream"),
                     ("sigops_j1_vs_floor", "sigops / floor"),
                     ("sigops_j2_vs_floor", "sigops --jobs 2 / floor")):
        a(f"| {label} | {rt[k]:.2f}x | {rt['paired_' + k]:.2f}x |")
    if "sigops_pure_vs_upstream" in rt:
        a(f"| sigops, pure Python (SIGOPS_ACCEL=0) / upstream | "
          f"{rt['sigops_pure_vs_upstream']:.2f}x | {rt['paired_sigops_pure_vs_upstream']:.2f}x |")
    a(f"| sigops --jobs 2 / sigops | {rt['sigops_j2_vs_j1']:.2f}x | |")
    a(f"| upstream / floor | {rt['upstream_vs_floor']:.2f}x | |")
    su = v.get("startup_s") or {}
    if su:
        a("")
        a("Start-up (one-record file, median of 5): " + ", ".join(
            f"{k} {x * 1000:.0f} ms" for k, x in su.items()) + ".")
    st = v.get("stages_us_per_record") or {}
    if st:
        a("")
        a("Where sigops spends a record (in process, 20,000 records, min of 3, microseconds "
          "per record; each row includes the rows it names):")
        a("")
        a("| step | us/record |")
        a("| --- | --- |")
        for k, x in st.items():
            a(f"| {k} | {x:.1f} |")
    prof = v.get("profile_top") or []
    if prof:
        a("")
        a("cProfile of one `sigops verify --summary` process on 20,000 records (top by own "
          "time; the profiler inflates small calls):")
        a("")
        a("| function | calls | own s | cumulative s |")
        a("| --- | --- | --- | --- |")
        for row in prof[:10]:
            a(f"| `{row['function']}` | {row['calls']:,} | {row['tottime_s']:.3f} | "
              f"{row['cumtime_s']:.3f} |")
    _shapes(v, a)
    e = v.get("ed25519")
    if e:
        a("")
        a(f"### Ed25519 ({e['records']:,} records, {e['rounds']} interleaved rounds)")
        a("")
        note = _rounds_note(e.get("round_selection")).strip()
        if note:
            a(note)
            a("")
        a("Baseline: `benchmarks/ed25519_raw.py` parses the file and builds every message "
          "first (not timed), then times only `cryptography`'s `verify` over the pre-parsed "
          "(signature, SHA-256 of canonical bytes) pairs, in one process.")
        a("")
        a("| variant | records/s (median) | min - max | CPU s | records per CPU-s | "
          "other load (cores) |")
        a("| --- | --- | --- | --- | --- | --- |")
        raw = e["raw_loop_verifies_per_s"]
        a(f"| raw verify loop | {_fmt(raw['median'])} | {_fmt(raw['min'])} - "
          f"{_fmt(raw['max'])} | (loop only) | "
          f"{_fmt(e['raw_loop_verifies_per_cpu_s']['median'])} | "
          f"{_fmt(e.get('raw_loop_other_load_cores'), '.2f')} |")
        for k in ("sigops_j1", "sigops_j2"):
            x = e[k]
            a(f"| {k.replace('_j1', ' verify').replace('_j2', ' verify --jobs 2')} | "
              f"{_fmt(x['records_per_s']['median'])} | {_fmt(x['records_per_s']['min'])} - "
              f"{_fmt(x['records_per_s']['max'])} | {x['cpu_s']['median']:.2f} | "
              f"{_fmt(x['records_per_cpu_s']['median'])} | "
              f"{_fmt(x.get('other_load_cores'), '.2f')} |")
        er = v["ed25519_ratios"]
        a("")
        a(f"sigops / raw loop, records/s: {er['sigops_j1_vs_raw']:.2f}x (one process), "
          f"{er['sigops_j2_vs_raw']:.2f}x (--jobs 2); per core (records per CPU-second): "
          f"{er['sigops_j1_per_core_vs_raw']:.2f}x and {er['sigops_j2_per_core_vs_raw']:.2f}x.")


def _diagnose(r: dict[str, Any], a: Any) -> None:
    d = r.get("diagnose")
    if not d:
        return
    a("")
    a("## 2. Diagnosis cost (in process, `sigops.core.diagnose.Diagnoser`)")
    a("")
    if "error" in d:
        a(f"Failed: `{d['error']}`")
        return
    a(f"Method: {d['samples']:,} distinct JSONL envelopes, one eighth of each cause "
      "(malformed, valid, clock_skew, stale_key, pending_key, canonicalization_drift, tampered "
      "- half pcs_id rule, half replays of an earlier pcs_id with other content - and "
      "unverifiable), shuffled; ring of 3 HMAC keys (active, retired, pending), max skew "
      f"300 s. A fresh Diagnoser classifies the whole stream; {d['rounds']} runs, median. The "
      "naive baseline (`bench_diagnose.NaiveDiagnoser`) parses the same way and applies the "
      "same first-match rules but tries every key under every profile for every sample "
      f"(canonical bytes once per profile), on the first {d['naive_samples']:,} samples, "
      "in the same rounds as sigops. Inputs are generated first and frozen out of the "
      "garbage collector's way (`gc.freeze()`); a full collection precedes every timed "
      "stream.")
    a("")
    a(f"- sigops: **{d['sigops_us_per_sample']:.1f} us/sample** "
      f"({d['sigops_pairs_tried_per_sample']:.2f} (key, profile) pairs tried per sample); "
      f"verdicts equal the intended cause for {d['sigops_agrees_with_intended'] * 100:.2f}% "
      "of samples.")
    a(f"- on the first {d['naive_samples']:,} samples, in the same rounds: sigops "
      f"{d['sigops_us_per_sample_naive_subset']:.1f} us/sample, naive "
      f"{d['naive_us_per_sample']:.1f} us/sample ({d['naive_pairs_tried_per_sample']} pairs "
      f"per sample); same cause as sigops for {d['naive_agrees_with_sigops'] * 100:.2f}% of "
      f"samples. Naive cost / sigops cost: **{d['speedup_vs_naive']:.2f}x**.")
    a("")
    a("")
    a("Per cause in the mixed stream (each call timed alone; means per sample):")
    a("")
    a("| cause | us/sample | pairs tried | canonical forms built |")
    a("| --- | --- | --- | --- |")
    for c, x in d["per_cause"].items():
        a(f"| {c} | {x['us']:.1f} | {x['pairs_tried']:.2f} | {x['canonical_built']:.2f} |")
    a("")
    a(f"In this stream sigops builds {d['sigops_canonical_built_per_sample']:.2f} canonical "
      f"forms and tries {d['sigops_pairs_tried_per_sample']:.2f} pairs per sample, the naive "
      f"baseline {d['naive_canonical_built_per_sample']} and "
      f"{d['naive_pairs_tried_per_sample']}. The move-to-front list is one list over keys "
      "and profiles, and in a stream where consecutive samples come from different keys and "
      "profiles its front changes with almost every sample, so the saving is small with 3 "
      "keys; the key-ring growth below is where trying the likely pair first pays.")
    gs = d["growth_samples"]
    a("")
    a(f"Key-ring growth: rings of N HMAC keys (N-2 retired decoys, a second active key, the "
      f"signing key listed last). Streams: {gs['matching']:,} matching samples signed by the "
      f"last key; the same count alternating between two accepted keys (a rotation); "
      f"{gs['unverifiable']:,} unverifiable samples (no key verifies: every pair is tried). "
      f"Fresh Diagnoser per stream, median of {d['rounds']}. Naive: first "
      f"{gs['naive_matching']:,} matching samples.")
    a("")
    a("| keys | pairs | matching us | pairs tried | two keys interleaved us | pairs tried | "
      "unverifiable us | pairs tried | naive matching us |")
    a("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for g in d["growth"]:
        a(f"| {g['keys']} | {g['pairs']} | {g['matching_us']:.1f} | "
          f"{g['matching_tried_per_sample']:.2f} | "
          f"{_fmt(g.get('two_keys_interleaved_us'), '.1f')} | "
          f"{_fmt(g.get('two_keys_interleaved_tried_per_sample'), '.2f')} | "
          f"{g['unverifiable_us']:.1f} | {g['unverifiable_tried_per_sample']:.0f} | "
          f"{g['naive_matching_us']:.1f} |")


def _operator(r: dict[str, Any], a: Any) -> None:
    o = r.get("operator")
    if not o:
        return
    a("")
    a("## 3-5. The operator on a local control plane")
    a("")
    if "error" in o and len(o) <= 2:
        a(f"Failed: `{o['error']}`")
        return
    a("Method: `devtools.cluster.LocalCluster` (etcd, kube-apiserver, "
      "kube-controller-manager from `.dev/bin`, no kubelet) with `crds/` applied, started in "
      f"{_fmt(o.get('control_plane_start_s'), '.1f')} s. Each part starts its own `sigops run` "
      "(own `--config`, operator namespace, loopback ports for `--alerts-listen` and "
      "`--metrics-listen`, `--alerts-token-file`), with `reconcile_interval: 0.5` and a "
      "target `{namespace: <part>, deployment: fractal-lba-backend}`; the backend Deployment "
      "exists with replicas 0 and its HMAC key in a Secret. Alerts are Alertmanager webhook v4 "
      "posts with `Authorization: Bearer`. Operator CPU from /proc/PID/stat (utime+stime), "
      "RSS from /proc/PID/status (VmRSS, VmHWM). Everything ran on the same 2 cores: the "
      "client, the operator, the API server and etcd.")
    lat = o.get("latency") or {}
    a("")
    a("### 3. Alert to incident")
    a("")
    if "latency_ms" in lat:
        lm, rm = lat["latency_ms"], lat["response_ms"]
        a(f"{lat['alerts']} distinct alerts (distinct fingerprint and group key), posted one "
          f"at a time with {lat['gap_s'] * 1000:.0f} ms between them, after 3 warm-up alerts; "
          "`signal_rate_limit: 100000` in the config (the default of 3 per hour per target "
          "would rate-limit all but 3). Latency is from just before the POST to the ADDED "
          "event of a watch on signatureincidents (a thread of the benchmark process).")
        a("")
        a("| | p50 | p90 | p99 | max |")
        a("| --- | --- | --- | --- | --- |")
        a(f"| POST to incident on the API server (ms) | {lm['p50']:.0f} | {lm['p90']:.0f} | "
          f"**{lm['p99']:.0f}** | {lm['max']:.0f} |")
        a(f"| POST response time (ms) | {rm['p50']:.0f} | | {rm['p99']:.0f} | |")
        a("")
        a(f"Responses: {_counts(lat['responses'])}; incidents missing after 10 s: "
          f"{lat['missing']}; "
          f"incidents in the namespace at the end: {lat['incidents_in_namespace']}; operator "
          f"CPU during the part: {lat['operator_cpu_share'] * 100:.0f}% of one core; RSS "
          f"{lat['operator_rss_mib']:.0f} MiB.")
    else:
        a(f"Failed: `{lat.get('error')}`")
    sa = o.get("scenario_a")
    if sa:
        a("")
        a("### 3b. Alert to first action, scenario A (key overlap)")
        a("")
        if "runs" in sa:
            a(f"Setup as in `test_scenario_a_key_overlap`: the backend accepts only the new "
              f"key, the keyring knows the agents' old key as retired, and a sample endpoint "
              f"(`backendURL`) serves 20 failed samples signed with the old key. {sa['reps']} "
              f"alerts, one per namespace; the incident is polled every "
              f"{sa['poll_interval_s'] * 1000:.0f} ms until `status.actions` has an entry.")
            a("")
            a("| namespace | incident seen (s) | first action (s) | action | phases first seen "
              "(s) |")
            a("| --- | --- | --- | --- | --- |")
            for run in sa["runs"]:
                ph = ", ".join(f"{k} {v:.2f}" for k, v in run["phases_first_seen_s"].items())
                a(f"| {run['namespace']} | {_fmt(run['incident_s'], '.2f')} | "
                  f"{_fmt(run['first_action_s'], '.2f')} | {run['first_action']} | {ph} |")
            a("")
            a(f"Median alert to first action: {_fmt(sa['first_action_s']['median'], '.2f')} s.")
        else:
            a(f"Failed: `{sa.get('error')}`")
    s = o.get("storm") or {}
    a("")
    a("### 4. Storm")
    a("")
    if "posts" in s:
        a(f"{s['posts']:,} posts: {s['groups']} distinct alert groups, "
          f"{s['posts'] // s['groups']} posts each, shuffled, from {s['client_threads']} "
          f"client threads paced to spread them over {s['target_duration_s']:.0f} s (each "
          "thread waits for its answer before the next post; a new TCP connection per post, "
          "request bytes prepared beforehand); default rate limit "
          f"({s['signal_rate_limit']} new incidents per hour per target).")
        a("")
        a(f"- Elapsed {s['elapsed_s']:.1f} s: **{s['posts_per_s']:.0f} posts/s** sustained; "
          f"response time p50 {s['response_ms']['p50']:.1f} ms, p90 "
          f"{s['response_ms']['p90']:.1f} ms, **p99 {s['response_ms']['p99']:.1f} ms**, max "
          f"{s['response_ms']['max']:.0f} ms.")
        a(f"- Status codes: {_counts(s['status_codes'])}; results: {_counts(s['results'])}.")
        br = s.get("response_ms_by_result") or {}
        if br:
            a("- Response time by result: " + "; ".join(
                f"{k}: {x['n']} posts, p50 {x['p50']:.1f} ms, p99 {x['p99']:.0f} ms"
                for k, x in br.items()) + ".")
        if "client_cpu_share" in s:
            a(f"- CPU during the storm: operator {s['operator_cpu_share'] * 100:.0f}% of a "
              f"core, benchmark client {s['client_cpu_share'] * 100:.0f}%.")
        a(f"- Incidents: {s['incidents_remediating']} opened + "
          f"{s['incidents_rate_limited_records']} `SignalRateLimited` record (phase "
          f"RateLimited) = {s['incidents_total']}; expected {s['expected_incidents']} + "
          f"{s['expected_rate_limited_records']} ({s['groups']} distinct groups, "
          f"{s['groups'] - s['expected_incidents']} rate-limited).")
        rss = s["rss_mib"]
        a(f"- Operator RSS: before {rss['before']:.0f} MiB, right after {rss['after']:.0f} MiB, "
          f"15 s later {rss['settled_15s']:.0f} MiB; peak (VmHWM) {rss['peak_after']:.0f} MiB. "
          f"Operator CPU during the storm {s['operator_cpu_s_during_storm']:.1f} s; alive "
          f"after: {s['operator_alive']}.")
    else:
        a(f"Failed: `{s.get('error')}`")
    i = o.get("idle") or {}
    a("")
    a("### 5. Idle cost")
    a("")
    if i.get("runs"):
        a(f"{i['keyrotations']} KeyRotations (`dryRun: true`, settled in phase Planned) and "
          f"{i['incidents']} SignatureIncidents (created by a person with `mode: dryRun`) on "
          "one target; once all had settled, the operator's CPU was read over the window. "
          "The same objects were then measured with the default `reconcile_interval` of 5 s "
          "(a fresh operator process) to show what the timers cost.")
        a("")
        a("| reconcile_interval | window s | operator CPU % of a core | RSS MiB | threads | "
          "kube-apiserver CPU % | etcd CPU % | settled in s | phases |")
        a("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for run in i["runs"]:
            cp = run["control_plane_cpu_percent"]
            st = run["settle"]
            a(f"| {run['reconcile_interval_s']:g} s | {run['window_s']:.0f} | "
              f"**{run['operator_cpu_percent']:.1f}** | {run['operator_rss_mib']['end']:.0f} | "
              f"{run['operator_threads']} | {cp.get('kube-apiserver', 0):.1f} | "
              f"{cp.get('etcd', 0):.1f} | {st['seconds']:.0f} | "
              f"KeyRotations: {_counts(st['keyrotation_phases'])}; incidents: "
              f"{_counts(st['incident_phases'])} |")
        a("")
        a("During each window: API requests per second to the API server (all clients, "
          "from `apiserver_request_total`, the most frequent verbs and resources) and lines "
          "per second the operator wrote to its log:")
        a("")
        for run in i["runs"]:
            reqs = ", ".join(f"{k.strip() if k.strip() != 'GET' else 'GET (non-resource)'} "
                             f"{v:g}" for k, v in run.get("api_requests_per_s", {}).items())
            a(f"- reconcile_interval {run['reconcile_interval_s']:g} s: {reqs or 'none'}; "
              f"operator log {_fmt(run.get('operator_log_lines_per_s'), '.0f')} lines/s")
        if len(i["runs"]) >= 2:
            fast, slow = i["runs"][0], i["runs"][-1]
            req = [sum(x.get("api_requests_per_s", {}).values()) for x in (fast, slow)]
            ratio = fast["operator_cpu_percent"] / max(slow["operator_cpu_percent"], 1e-9)
            a("")
            a(f"Operator CPU at {fast['reconcile_interval_s']:g} s is {ratio:.1f}x the CPU at "
              f"{slow['reconcile_interval_s']:g} s (API requests {req[0]:.2f} against "
              f"{req[1]:.2f} per second). Settled objects (a KeyRotation in a final phase, an "
              "incident Escalated, RateLimited, or Resolved with nothing left to restore) have "
              "no timer at all: kopf stops a timer when its `when` filter stops matching, so "
              "the interval only costs CPU for objects still at work.")
    else:
        a(f"Failed: `{i.get('error')}`")


def _shapes(v: dict[str, Any], a: Any) -> None:
    hm, ed_rows = shape_rows({"verify": v})
    if not hm and not ed_rows:
        return
    a("")
    a("### Record shapes (weakest first)")
    a("")
    a("The same verification on records that differ only in their four signed floats, each "
      "shape and profile its own file (signed with `sign_pcs` under that profile), "
      "`sigops verify --summary` in one process against the baselines on the same file, "
      "interleaved rounds in the same run; ratios are medians of the per-round ratios. "
      "Shapes: `nine` (9 decimals, as the upstream agent sends them), `full` (full double "
      "precision), `integral` (`2.0`), `negative_tiny` (negative full-precision values and "
      "tiny ones such as `-3.1e-07` or `4.2e-11`, which round to zero). On the `go` and "
      "`fixed9` files upstream's path does the same work and finds the records invalid "
      "(column 'upstream valid'), since it only knows the python form.")
    if hm:
        a("")
        a(f"HMAC-SHA256, {hm[0]['records']:,} records per file:")
        a("")
        a("| shape / profile | first record's signed floats | sigops records/s | "
          "upstream records/s | "
          "floor records/s | sigops / upstream | sigops / floor | upstream valid | "
          "rounds kept (contended) |")
        a("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for x in hm:
            a(f"| {_shape_name(x)} | {_floats(x)} | "
              f"{_fmt(x['sigops_records_per_s'])} | {_fmt(x['upstream_records_per_s'])} | "
              f"{_fmt(x['floor_records_per_s'])} | **{x['paired_vs_upstream']:.2f}x** | "
              f"{x['paired_vs_floor']:.2f}x | {_fmt(x['upstream_valid'])} | "
              f"{_kept(x)} |")
    if ed_rows:
        a("")
        a(f"Ed25519, {ed_rows[0]['records']:,} records per file, against the raw verify loop "
          "(`ed25519_raw.py` with the file's profile):")
        a("")
        a("| shape / profile | first record's signed floats | sigops records/s | "
          "raw loop verifies/s | "
          "sigops / raw | per core (records per CPU-s) | rounds kept (contended) |")
        a("| --- | --- | --- | --- | --- | --- | --- |")
        for x in ed_rows:
            a(f"| {_shape_name(x)} | {_floats(x)} | "
              f"{_fmt(x['sigops_records_per_s'])} | {_fmt(x['raw_loop_verifies_per_s'])} | "
              f"{x['vs_raw']:.2f}x | **{x['per_core_vs_raw']:.2f}x** | {_kept(x)} |")


def _span(seconds: float) -> str:
    """A duration as hours, or minutes when under an hour.

    >>> _span(7200), _span(112), _span(30)
    ('2.0 h', '1.9 min', '0.5 min')
    """
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _audit(r: dict[str, Any], a: Any) -> None:
    au = r.get("audit")
    if not au:
        return
    a("")
    a("## 6. Fleet audit: one index, and indexes side by side")
    a("")
    if "error" in au:
        a(f"Failed: `{au['error']}`")
        return
    v = au["variants"]
    sel = au.get("round_selection") or {}
    a(f"Method: {au['records']:,} valid HMAC-SHA256 PCS (upstream-shaped, signed in the `go` "
      "profile, the upstream backend's form) as one JSONL file "
      f"({au['jsonl_bytes'] / 1e6:.1f} MB) and as one inbox WAL of the same bodies "
      f"({au['wal_bytes'] / 1e6:.1f} MB, {au['wal_bytes_per_record']:.0f} bytes per record), "
      "each received at its `sent_at`. Whole processes, interleaved rounds (the order "
      f"rotates); {sel.get('rounds_run')} rounds run, {sel.get('contended_rounds')} with more "
      f"than {sel.get('contended_threshold_cores')} cores of other work, "
      f"{sel.get('rounds_kept')} kept; medians. Per core = records per CPU-second (user+sys "
      "from `wait4`), start-up included.")
    a("")
    a("- **audit_index**: `sigops audit shard --accepted-invalid WAL` (one index, one "
      "process; the compiled reader's batch route); **audit_index_pure**: the same with "
      "`SIGOPS_ACCEL=0` (the pure-Python reference route).")
    a("- **verify_jsonl** / **verify_wal**: `sigops verify --summary` of the JSONL / the WAL, "
      "one process.")
    if au.get("go_built"):
        a("- **go_jsonl** / **go_wal**: `benchmarks/goverify/main.go`, built by the bench with "
          "`go build` into its temporary directory: the upstream Go backend's verify path "
          "(json.Unmarshal into the PCS struct, math.Round(x*1e9)/1e9 of the four floats, "
          "json.Marshal of the signed-subset struct, HMAC-SHA256, base64 decode, hmac.Equal), "
          "reading the JSONL or the WAL (`-wal`).")
    else:
        a("- The Go verify path was not measured: no `go` on this machine.")
    a("")
    # (No peak RSS here: a child's ru_maxrss also counts the bench process it was forked
    # from before exec, which held the generated records.)
    a("| variant | records/s | wall s | CPU s | records per CPU-s | other load (cores) |")
    a("| --- | --- | --- | --- | --- | --- |")
    for k, x in v.items():
        a(f"| {k} | {_fmt(x['records_per_s'])} | {x['wall_s']:.2f} | {x['cpu_s']:.2f} | "
          f"**{_fmt(x['records_per_cpu_s'])}** | {x['other_load_cores']:.2f} |")
    pc = au["per_core"]
    a("")
    a("Per core (median over rounds of the CPU-time ratio in the same round): "
      + "; ".join(f"{k.replace('_vs_', ' / ')} **{x:.2f}x**" for k, x in pc.items()) + ".")
    idx = au.get("indexes") or []
    if idx:
        a("")
        a(f"Indexes side by side: the same {idx[0]['records']:,} records cut into "
          f"{idx[0]['files']} WAL files, audited by one index (`--dir D --shards-of 1`) and by "
          "two indexes started at once (`--shards-of 2 --index 0|1`, as the Job's pods run), "
          "on this machine's cores (shared with other work); wall time until the last index "
          "exits, CPU of all of them.")
        a("")
        a("| indexes | wall s | records/s | CPU s | other load (cores) |")
        a("| --- | --- | --- | --- | --- |")
        for x in idx:
            a(f"| {x['indexes']} | {x['wall_s']:.2f} | {_fmt(x['records_per_s'])} | "
              f"{x['cpu_s']:.2f} | {x['other_load_cores']:.2f} |")
        a("")
        a(f"Two indexes: {au['speedup_2_vs_1']:.2f}x the records/s of one, on "
          f"{(r.get('machine') or {}).get('nproc')} cores.")


FLEET_PODS = 500
FLEET_BYTES = 10e12
RECONCILE_S = 5.0  # the operator's default reconcile_interval


def _fleet(r: dict[str, Any], a: Any) -> None:
    """On paper, from this run's numbers: a fleet of 500 backend pods and 10 TB of WAL."""
    au = r.get("audit") or {}
    if "variants" not in au:
        return
    bpr = au["wal_bytes_per_record"]
    rate = au["variants"]["audit_index"]["records_per_cpu_s"]
    per_tb = 1e12 / bpr
    total = FLEET_BYTES / bpr
    per_pod = FLEET_BYTES / FLEET_PODS
    index_s = per_pod / bpr / rate
    a("")
    a("### On paper: a fleet of 500 pods and 10 TB of WAL")
    a("")
    a("Not measured: arithmetic on this run's measured figures, shown step by step, for one "
      "audit of every inbox WAL of 500 backend pods, 10 TB in all (upstream-shaped records).")
    a("")
    a(f"- Records: 1 TB / {bpr:.0f} bytes per WAL record = {per_tb:,.0f} records per TB; "
      f"10 TB = **{total:,.0f} records**.")
    a(f"- Indexes: one per pod (each pod's WAL directory one shard): **{FLEET_PODS} "
      f"indexes** of {per_pod / 1e9:.0f} GB = {per_pod / bpr:,.0f} records each. The "
      "operator's defaults allow `maxShards` 64 and `maxParallelism` 4 (limits 10000 and "
      "1000): this audit needs `maxShards` >= 500 in the config.")
    a(f"- Time: one index reads {rate:,.0f} records per CPU-second (measured, one core), so "
      f"one pod's share takes {per_pod / bpr:,.0f} / {rate:,.0f} = {index_s:,.0f} CPU-s "
      f"({_span(index_s)}) and the whole fleet {total / rate:,.0f} CPU-s "
      f"({total / rate / 3600:,.0f} core-hours). Wall time at P indexes at once, one core "
      "each, if nothing else limits: "
      + ", ".join(f"P = {p}: {_span(total / (p * rate))}" for p in (4, 64, 500))
      + ".")
    mbps = rate * bpr / 1e6
    a(f"- Reading: each index consumes {rate:,.0f} x {bpr:.0f} B = {mbps:,.0f} MB/s of WAL; "
      f"500 at once {500 * mbps / 1e3:,.1f} GB/s from wherever the WAL files are mounted.")
    reads = 3
    a(f"- API load: per index one pod created by the Job controller (500 pod creates, plus "
      "their status updates by the kubelets), one result ConfigMap created empty by the "
      "operator and written once by the index (500 creates + 500 updates; each partial is "
      "bounded: counts keep at most 1000 values per dimension, each finding its first N "
      "records). While the audit runs, the operator's tick reads the Job and its key Secret "
      "and lists the audit's result ConfigMaps by label: "
      f"{reads} requests per tick, every {RECONCILE_S:g} s (the default "
      "`reconcile_interval`), whatever the number of indexes -- the LIST's answer grows "
      f"with the partials written so far (up to {FLEET_PODS}) -- plus one status write per "
      "tick; over the audit that is "
      + ", ".join(f"P = {p}: {reads * total / (p * rate) / RECONCILE_S:,.0f} requests"
                  for p in (4, 64, 500))
      + ".")
    a("- What limits it: (1) node CPU -- an index is one single-threaded process, so the "
      "fleet audit is core-hours divided by the cores given to it (the 1-vs-2-index row "
      "above is this machine's own scaling); (2) the storage the WAL files are read from, "
      "at the MB/s above; (3) the API server: the operator's per-tick LIST answers every "
      "partial written so far (each bounded), the one part of the load that grows with "
      "shards x duration; (4) the WAL reader sidecars cannot feed this "
      "audit: they now also serve a paged `GET /v1/wal/range` (forward pages of whole "
      "entries, what an audit reading the pods through them uses), but still only within "
      "the last 24 h (`max_window`), one read in flight per client and four in all per "
      "sidecar (`per_client` 1, `total` 4), each read cut off after 10 s (`deadline`) -- "
      "enough for an audit of a pod's last day, not for 10 TB of history, so a 10 TB audit "
      "reads the WAL files (or an archive of them) mounted into the index pods.")
