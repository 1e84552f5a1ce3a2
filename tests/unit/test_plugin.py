"""``kubectl sigops`` without a cluster: the story, the approve/deny/abort patches and their
refusals, verification of signed records (and of tampered ones), the report, the picture's
data and shell completion. Records are signed by the operator's own Signer, as in a cluster."""

from __future__ import annotations

import doctest
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sigops.cli import completion
from sigops.cli import main as sigops_main
from sigops.cli.plugin import build_parser, complete_main, main, plot, refs, report, requests
from sigops.cli.plugin.checks import verify_object
from sigops.cli.plugin.story import commands_for, incident_story, render, rotation_story
from sigops.core.keys import ED25519, generate_key
from sigops.core.signals import pubkeys_document
from sigops.incident import reconciler as incident_reconciler
from sigops.rotation import reconciler as rotation_reconciler
from sigops.signing.records import Signer

T0 = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
KEY = generate_key(ED25519, kid="sigops-test", state="active")
OTHER = generate_key(ED25519, kid="someone-else", state="active")
PUBKEYS = {KEY.kid: KEY.public or b""}


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def incident(phase: str = "Resolved", actions: int = 2, scenario: str = "A",
             name: str = "flk-sig-abc12") -> dict[str, Any]:
    """A SignatureIncident as the operator writes it, signed with KEY."""
    s = Signer(KEY)
    target = "fractal-lba/fractal-lba-backend"
    signal = s.record([], "detection", target, now=T0 + timedelta(seconds=5),
                      cause="KeyRotationInProgress", scenario=scenario,
                      evidence={"x": 1}, incident=name, confidence=0.9)
    chain: list[dict[str, Any]] = []
    for i in range(actions):
        chain = [*chain, s.record(chain, "incident.action", target,
                                  now=T0 + timedelta(seconds=10 + 20 * i), scenario=scenario,
                                  result="applied", incident=name, action=f"step-{i}",
                                  summary=f"Step {i} done")]
    st: dict[str, Any] = {
        "phase": phase, "cause": "KeyRotationInProgress", "confidence": 0.9,
        "scenario": scenario, "candidates": [scenario], "signal": signal, "actions": chain,
        "evidence": {"samples": {"source": "configmap/s", "report": {
            "total": 20, "by_cause": {"stale_key": 20}, "dominant_cause": "stale_key"}},
            "errorRate": 42.0, "revisions": [{}], "recentSigningChange": False,
            "keyRotations": [], "goldenProbe": [{"kid": "k1", "accepted": True}], "notes": []},
        "errorRate": "0.50",
        "conditions": [{"type": "Ready", "status": "True" if phase == "Resolved" else "False",
                        "reason": phase, "message": "m"}],
        "communication": "Subject: [P2] Signature Verification Failures - Resolved",
    }
    if phase == "Resolved":
        st["resolvedAt"] = iso(T0 + timedelta(minutes=3))
    return {"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "SignatureIncident",
            "metadata": {"name": name, "namespace": "fractal-lba", "resourceVersion": "77",
                         "creationTimestamp": iso(T0)},
            "spec": {"source": "alertmanager", "target": {"deployment": "fractal-lba-backend"},
                     "alert": {"name": "FLKSignatureFailuresSpike", "fingerprint": "ab12",
                               "startsAt": iso(T0 - timedelta(seconds=90)), "value": "42"}},
            "status": st}


def rotation(phase: str = "Completed", steps: int = 3) -> dict[str, Any]:
    s = Signer(KEY)
    chain: list[dict[str, Any]] = []
    for i in range(steps):
        chain = s.append(chain, "keyrotation.step", "fractal-lba/fractal-lba-backend",
                         step=f"step {i}", phase=["Staged", "Overlapping", "Verified"][i % 3],
                         rotation="fractal-lba/rot-1", new_key="k2", previous_key="k1")
    return {"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "KeyRotation",
            "metadata": {"name": "rot-1", "namespace": "fractal-lba", "resourceVersion": "9",
                         "creationTimestamp": iso(T0)},
            "spec": {"algorithm": "hmac-sha256", "overlap": "1h"},
            "status": {"phase": phase, "history": chain, "newKeyId": "k2",
                       "previousKeyId": "k1"}}


def awaiting(scenario: str = "E", reason: str = "AwaitingApproval") -> dict[str, Any]:
    inc = incident("AwaitingApproval", actions=0, scenario=scenario)
    inc["status"]["conditions"][0]["reason"] = reason
    inc["status"]["pendingActions"] = {"scenario": scenario, "steps": [
        {"action": "rollback-template", "summary": "Roll back to the last known good"}]}
    return inc


# -- doctests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mod", [refs, requests, incident_reconciler, rotation_reconciler])
def test_doctests(mod: Any) -> None:
    assert doctest.testmod(mod).failed == 0


# -- explain ----------------------------------------------------------------------------------


def test_incident_story_is_in_order_and_names_signers() -> None:
    s = incident_story(incident())
    assert s["diagnosis"]["cause"] == "KeyRotationInProgress"
    assert s["diagnosis"]["signedBy"] == KEY.kid
    assert [a["action"] for a in s["actions"]] == ["step-0", "step-1"]
    assert all(a["signer"] == KEY.kid for a in s["actions"])
    events = [e["event"] for e in s["timeline"]]
    assert events[0].startswith("alert FLKSignatureFailuresSpike started")
    assert events[1].startswith("incident opened")
    assert events[2].startswith("diagnosed: cause KeyRotationInProgress")
    assert events[-1] == "incident Resolved"
    assert [e["source"] for e in s["evidence"]][:2] == ["failed samples (configmap/s)",
                                                         "Prometheus"]
    assert s["waiting"] is None
    text = render(s)
    for heading in ("Alert", "Evidence", "Cause", "Plan", "Actions", "Verification",
                    "Outcome"):
        assert f"\n{heading}\n" in text
    assert "stale_key 20" in text and f"signed by {KEY.kid}" in text


def test_waiting_incident_says_the_exact_commands() -> None:
    s = incident_story(awaiting())
    cmds = [c["command"] for c in s["waiting"]["commands"]]
    assert cmds == ["kubectl sigops approve si/flk-sig-abc12 -n fractal-lba",
                    "kubectl sigops deny si/flk-sig-abc12 -n fractal-lba"]
    assert s["plan"] == ["Roll back to the last known good"]
    assert "Waiting on" in render(s)
    dry = incident_story(awaiting(reason="DryRun"))
    assert dry["waiting"]["commands"] == []


def test_rotation_story_and_abort_command() -> None:
    s = rotation_story(rotation("Overlapping"))
    assert [x["step"] for x in s["steps"]] == ["step 0", "step 1", "step 2"]
    assert s["waiting"]["commands"][0]["command"] == "kubectl sigops abort kr/rot-1 -n fractal-lba"
    assert commands_for(rotation("Completed")) == []
    assert "Steps" in render(s)


# -- approve, deny, abort ---------------------------------------------------------------------


WHO = {"user": "ann", "groups": ["sre"]}


def test_approve_patch_tests_the_version_and_records_the_user() -> None:
    scen, ops = requests.decision_patch(awaiting(), "approve", WHO, "2026-11-30T10:05:00Z")
    assert scen == "E"
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "77"}
    assert ops[1] == {"op": "add", "path": "/spec/approve", "value": ["E"]}
    assert ops[2]["value"] == [{"scenario": "E", "decision": "approve", "user": "ann",
                                "groups": ["sre"], "at": "2026-11-30T10:05:00Z"}]
    _, deny = requests.decision_patch(awaiting(), "deny", WHO, "t")
    assert deny[1] == {"op": "add", "path": "/spec/deny", "value": ["E"]}


@pytest.mark.parametrize("obj,kw,why", [
    (incident("Resolved"), {}, "is Resolved, not waiting for approval"),
    (incident("Verifying"), {}, "is Verifying, not waiting for approval"),
    (awaiting(reason="DryRun"), {}, "is a dry run"),
    (awaiting(), {"scenario": "D"}, "waits for scenario E, not D"),
])
def test_decisions_refused_when_not_waiting(obj: dict[str, Any], kw: dict[str, Any],
                                            why: str) -> None:
    with pytest.raises(requests.Refused, match=why) as e:
        requests.decision_patch(obj, "approve", WHO, "t", **kw)
    assert "nothing changed" in str(e.value)


def test_a_decided_scenario_is_not_decided_again() -> None:
    inc = awaiting()
    inc["spec"]["approve"] = ["E"]
    with pytest.raises(requests.Refused, match="already approved"):
        requests.decision_patch(inc, "deny", WHO, "t")


def test_abort_patch_and_refusals() -> None:
    ops = requests.abort_patch(rotation("Overlapping"), WHO, "t")
    assert ops[0]["value"] == "9"
    assert {"op": "add", "path": "/spec/abort", "value": True} in ops
    assert ops[-1]["value"] == {"user": "ann", "groups": ["sre"], "at": "t"}
    for done in ("Completed", "Aborted", "Failed", "Planned"):
        with pytest.raises(requests.Refused, match=f"is {done}: nothing to abort"):
            requests.abort_patch(rotation(done), WHO, "t")
    asked = rotation("Promoted")
    asked["spec"].update(abort=True, abortRequestedBy={"user": "bob"})
    with pytest.raises(requests.Refused, match=r"already requested \(by bob\)"):
        requests.abort_patch(asked, WHO, "t")


def test_operator_reads_who_decided() -> None:
    spec = {"decisions": [{"scenario": "E", "decision": "approve", "user": "ann", "at": "1"},
                          {"scenario": "E", "decision": "deny", "user": "bob", "at": "2"}]}
    assert incident_reconciler.decided_by(spec, "E", "deny")["user"] == "bob"
    assert incident_reconciler.decided_by({}, "E", "approve")["user"].startswith("unknown")
    step = incident_reconciler.decision_step("approve", "E", {"user": "ann"})
    assert step["summary"] == "Scenario E approved by ann" and step["by"] == {"user": "ann"}


# -- verify -----------------------------------------------------------------------------------


def test_real_records_verify() -> None:
    v = verify_object(incident(), PUBKEYS)
    assert v.valid and len(v.findings) == 3
    assert verify_object(rotation(), PUBKEYS).valid


def test_changed_action_is_a_bad_signature() -> None:
    inc = incident()
    inc["status"]["actions"][1]["payload"]["summary"] = "Nothing happened here"
    v = verify_object(inc, PUBKEYS)
    assert not v.valid
    assert [(b.where, b.reason) for b in v.broken] == [("status.actions[1]", "bad_signature")]


def test_removed_or_reordered_records_break_the_chain() -> None:
    inc = incident(actions=3)
    del inc["status"]["actions"][1]
    v = verify_object(inc, PUBKEYS)
    assert [(b.where, b.reason) for b in v.broken] == [("status.actions[1]", "broken_chain")]
    first_gone = incident(actions=3)
    del first_gone["status"]["actions"][0]
    v = verify_object(first_gone, PUBKEYS)
    assert v.broken[0].where == "status.actions[0]" and v.broken[0].reason == "broken_chain"
    kr = rotation(steps=3)
    kr["status"]["history"].reverse()
    assert not verify_object(kr, PUBKEYS).valid


def test_record_of_another_object_or_unknown_key_is_rejected() -> None:
    inc = incident()
    inc["status"]["signal"] = incident(name="another-one")["status"]["signal"]
    v = verify_object(inc, PUBKEYS)
    assert [(b.where, b.reason) for b in v.broken] == [("status.signal", "foreign_record")]
    stranger = Signer(OTHER).record([], "detection", "x", incident="flk-sig-abc12")
    inc = incident()
    inc["status"]["signal"] = stranger
    assert verify_object(inc, PUBKEYS).broken[0].reason == "unknown_key"


def test_nothing_signed_is_not_valid() -> None:
    inc = incident(actions=0)
    del inc["status"]["signal"]
    v = verify_object(inc, PUBKEYS)
    assert not v.valid
    assert v.to_dict()["broken"][0]["reason"] == "nothing_signed"


def test_a_chain_at_its_limit_may_start_mid_way() -> None:
    kr = rotation(steps=101)
    kr["status"]["history"] = kr["status"]["history"][-100:]
    v = verify_object(kr, PUBKEYS)
    assert v.valid and "dropped" in v.notes[0]
    kr["status"]["history"] = kr["status"]["history"][-99:]
    assert not verify_object(kr, PUBKEYS).valid


def _files(tmp_path: Path, obj: dict[str, Any]) -> tuple[Path, Path]:
    f = tmp_path / "obj.yaml"
    f.write_text(yaml.safe_dump(obj))
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "sigops-signal-pubkeys"},
          "data": {"pubkeys.json": json.dumps(pubkeys_document([KEY]))}}
    k = tmp_path / "keys.yaml"
    k.write_text(yaml.safe_dump(cm))
    return f, k


def test_verify_offline_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f, k = _files(tmp_path, incident())
    assert main(["verify", "-f", str(f), "--pubkeys", str(k)]) == 0
    assert "si/flk-sig-abc12: valid: 3 signed record(s)" in capsys.readouterr().out
    bad = incident()
    bad["status"]["actions"][0]["payload"]["result"] = "undone"
    f, k = _files(tmp_path, bad)
    assert main(["verify", "-f", str(f), "--pubkeys", str(k)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and "status.actions[0]: bad_signature" in out
    assert main(["verify", "-f", str(f), "--pubkeys", str(k), "-o", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False and doc["broken"][0]["where"] == "status.actions[0]"


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "pod/x", "-f", "/nonexistent"]) == 2
    assert main(["verify", "-f", str(tmp_path / "missing.yaml"), "--pubkeys", "x"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["approve"])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_explain_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f, _ = _files(tmp_path, awaiting())
    assert main(["explain", "-f", str(f), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["waiting"]["commands"]
    assert main(["explain", "-f", str(f)]) == 0
    assert "kubectl sigops approve si/flk-sig-abc12" in capsys.readouterr().out


# -- report -----------------------------------------------------------------------------------


def test_durations_window_and_markers() -> None:
    inc = incident()
    d = report.durations(inc)
    assert d == {"detect": 90.0, "act": 10.0, "resolve": 270.0}
    w = report.incident_window(inc, T0 + timedelta(hours=1))
    assert w.start == T0 - timedelta(seconds=90) - report.LEAD
    assert w.end == T0 + timedelta(minutes=3) + report.LEAD
    assert [m[1] for m in report.markers(inc)] == ["step-0", "step-1"]
    old_alert = incident()
    old_alert["spec"]["alert"]["startsAt"] = "2020-01-01T00:00:00Z"  # a replayed alert
    assert report.durations(old_alert)["detect"] == 0.0


def test_markdown_has_every_section_and_says_how_to_get_the_picture() -> None:
    md = report.build_markdown(incident(), plot=None, plot_note=None, rate_summary=None,
                               threshold=10.0, query=None, verification={"valid": True,
                                                                         "records": 3},
                               generated_at="now")
    for h in ("## Summary", "## Signature error rate", "## Timeline", "## Evidence",
              "## Cause", "## Actions", "## Verification", "## Communication"):
        assert h in md
    assert "pip install 'sigops[report]'" in md
    assert "| Time to detect | 1m30s |" in md and "| Time to resolve | 4m30s |" in md
    assert "| 1 |" in md and "| 2 |" in md and f"| {KEY.kid} |" in md
    assert "Signature Verification Failures - Resolved" in md
    assert "all 3 verify" in md


# -- the picture ------------------------------------------------------------------------------


def _points() -> list[tuple[float, float]]:
    t0 = (T0 - timedelta(minutes=5)).timestamp()
    return [(t0 + 15 * i, 30.0 if 20 <= i <= 32 else 0.3) for i in range(60)]


def test_figure_has_threshold_and_one_marker_per_action(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    inc = incident(actions=3)
    marks = report.markers(inc)
    fig = plot.figure(_points(), 10.0, marks, "t")
    data = plot.figure_data(fig)
    assert data["threshold"] == [10.0]
    assert len(data["actions"]) == 3 and all(a["vertical"] for a in data["actions"])
    assert [a["x"] for a in data["actions"]] == [iso(t) for t, _ in marks]
    assert data["rate_points"] == 60
    saved = plot.save_png(fig, tmp_path / "p.png")
    assert plot.read_png_figure_data(tmp_path / "p.png") == json.loads(json.dumps(saved))
    # Actions in the same second share one number label, above the frame.
    same = [(T0, "a"), (T0, "b"), (T0 + timedelta(seconds=30), "c")]
    texts = sorted(t.get_text() for t in plot.figure(_points(), 10.0, same, "t").axes[0].texts)
    assert texts == ["1,2", "3"]
    # The check can fail: a figure missing a marker is seen as such.
    assert len(plot.figure_data(plot.figure(_points(), 10.0, marks[:2], "t"))["actions"]) == 2


def test_report_without_prometheus_writes_markdown(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    f, k = _files(tmp_path, incident())
    rc = main(["report", "-f", str(f), "--pubkeys", str(k), "-o", str(tmp_path / "r")])
    assert rc == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "--prometheus-url" in md and "all 3 verify" in md
    assert not (tmp_path / "r" / report.PLOT_FILE).exists()
    assert str(tmp_path / "r" / "report.md") in capsys.readouterr().out


# -- completion and help ----------------------------------------------------------------------


def test_completion_candidates() -> None:
    p = build_parser()

    def names(plural: str, ns: str | None) -> list[str]:
        return {"signatureincidents": ["flk-sig-1", "flk-sig-2"], "keyrotations": ["r"]}[plural]

    assert completion.candidates(p, ["ap"]) == ["approve"]
    assert completion.candidates(p, ["approve", ""], names) == ["si/"]
    assert completion.candidates(p, ["abort", ""], names) == ["kr/"]
    assert completion.candidates(p, ["explain", "si/flk-sig-"], names) == ["si/flk-sig-1",
                                                                          "si/flk-sig-2"]
    assert completion.candidates(p, ["verify", "-n", "x", "--"], names)[:2] == [
        "--all", "--all-namespaces"]
    assert completion.candidates(p, ["explain", "-o", ""]) == ["text", "json"]
    assert completion.candidates(p, ["completion", ""]) == ["bash", "zsh"]


def test_completion_scripts_and_helpers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert "complete -o default -F _kubectl_sigops_complete kubectl-sigops" in out
    assert "kubectl_complete-sigops" in out
    assert sigops_main(["completion", "zsh"]) == 0
    out = capsys.readouterr().out
    assert "bashcompinit" in out and "sigops __complete" in out
    assert sigops_main(["__complete", "sig"]) == 0
    assert capsys.readouterr().out == "signal\n"
    assert sigops_main(["__complete", "verify", "--profile", ""]) == 0
    assert capsys.readouterr().out.split() == ["python", "go", "fixed9"]
    assert complete_main(["ab"]) == 0
    assert capsys.readouterr().out == "abort\n:4\n"


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["report", "--help"], ["verify", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sigops_main(["--help"])
    assert "examples:" in capsys.readouterr().out


def test_no_key_material_in_what_it_writes(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    inc = incident()
    f, k = _files(tmp_path, inc)
    main(["explain", "-f", str(f), "-o", "json"])
    main(["report", "-f", str(f), "--pubkeys", str(k), "-o", str(tmp_path / "r")])
    written = capsys.readouterr().out + (tmp_path / "r" / "report.md").read_text()
    private = KEY.to_entry()["private_b64"]
    assert private not in written


def test_kubectl_and_bash_use_the_completions() -> None:
    """The real kubectl finds `kubectl sigops` and its completer on PATH; bash completes from
    the generated scripts."""
    import os
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    kubectl = repo / ".dev" / "bin" / "kubectl"
    venv = repo / ".venv" / "bin"
    if not kubectl.exists() or not (venv / "kubectl-sigops").exists():
        pytest.skip("kubectl or the installed scripts missing: run `make venv tools`")
    env = {**os.environ, "PATH": f"{venv}:{kubectl.parent}:{os.environ['PATH']}",
           "KUBECONFIG": "/nonexistent"}

    def run(*argv: str) -> str:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60).stdout

    assert run(str(kubectl), "__complete", "sigops", "ap").splitlines() == ["approve", ":4"]
    assert run(str(kubectl), "__complete", "sigops", "abort", "").splitlines() == ["kr/", ":4"]
    from sigops import __version__

    assert run(str(kubectl), "sigops", "--version").strip() == f"kubectl-sigops {__version__}"
    bash = shutil.which("bash")
    assert bash is not None
    for prog, words, want in (("kubectl-sigops", "kubectl-sigops ex", "explain"),
                              ("sigops", "sigops verify --pro", "--profile")):
        script = (f"source <({prog} completion bash); COMP_WORDS=({words}); "
                  f"COMP_CWORD={len(words.split()) - 1}; _{prog.replace('-', '_')}_complete; "
                  'echo "${COMPREPLY[@]}"')
        assert run(bash, "-c", script).strip() == want


@pytest.mark.parametrize("has_matplotlib", [True, False])
def test_report_with_rate_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 has_matplotlib: bool) -> None:
    """The report verb end to end with Prometheus' answer stubbed (the real one is in
    tests/e2e): a picture with matplotlib, the way to get one without it."""
    from sigops.prometheus.client import Prom

    if has_matplotlib:
        pytest.importorskip("matplotlib")
    asked: list[tuple[str, float, float, float]] = []

    def fake_range(self: Prom, q: str, start: float, end: float, step: float
                   ) -> list[tuple[float, float]]:
        asked.append((q, start, end, step))
        return _points()

    monkeypatch.setattr(Prom, "range", fake_range)
    monkeypatch.setattr(plot, "available", lambda: has_matplotlib)
    f, k = _files(tmp_path, incident(actions=3))
    out = tmp_path / "r"
    assert main(["report", "-f", str(f), "--pubkeys", str(k), "-o", str(out),
                 "--prometheus-url", "http://prom.invalid:9090", "--threshold", "10"]) == 0
    q, start, end, step = asked[0]
    assert 'namespace="fractal-lba"' in q  # the operator's default query for the target
    assert start == (T0 - timedelta(seconds=90) - report.LEAD).timestamp()  # from the alert
    assert end > start and step >= 1.0
    md = (out / "report.md").read_text()
    assert "Peak 30.00/s" in md
    if has_matplotlib:
        data = plot.read_png_figure_data(out / report.PLOT_FILE)
        assert data is not None and data["threshold"] == [10.0] and len(data["actions"]) == 3
        assert "(error-rate.png)" in md
    else:
        assert not (out / report.PLOT_FILE).exists()
        assert "pip install 'sigops[report]'" in md


def test_an_escalated_incident_without_a_measured_error_rate_says_so() -> None:
    """The status keeps ``n/a`` when Prometheus gave no rate: explain and report said
    "n/a/s" (issue 25)."""
    obj = incident("Escalated")
    obj["status"]["errorRate"] = "n/a"
    text = render(incident_story(obj))
    assert "n/a/s" not in text
    assert "error rate not measured (no answer from Prometheus)" in text
    md = report.build_markdown(obj, plot=None, plot_note=None, rate_summary=None,
                               threshold=10.0, query=None, verification=None,
                               generated_at="2026-12-06T09:00:00Z")
    assert "n/a/s" not in md and "not measured" in md
    obj["status"]["errorRate"] = "0.50"
    assert "error rate 0.50/s" in render(incident_story(obj))


# -- kubectl's flags before or after the verb (issue 26, item 6) ------------------------------


@pytest.mark.parametrize("argv", [
    ["-n", "fractal-lba", "--context", "prod", "explain", "si/x"],
    ["explain", "si/x", "-n", "fractal-lba", "--context", "prod"],
    ["--namespace=fractal-lba", "explain", "--context=prod", "si/x"],
    ["-n", "other", "explain", "si/x", "-n", "fractal-lba", "--context", "prod"],
])
def test_connection_flags_before_or_after_the_verb(argv: list[str]) -> None:
    """Was refused: ``kubectl sigops -n NS explain si/x`` said "invalid choice"."""
    args = build_parser().parse_args(argv)
    assert (args.verb, args.ref, args.namespace, args.context) == (
        "explain", "si/x", "fractal-lba", "prod")


def test_connection_flags_default_to_the_context() -> None:
    args = build_parser().parse_args(["approve", "si/x"])
    assert (args.namespace, args.context, args.all_namespaces) == (None, None, False)


@pytest.mark.parametrize("argv", [["-A", "verify"], ["verify", "-A"],
                                  ["--all-namespaces", "verify"]])
def test_all_namespaces_before_or_after_verify(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.verb == "verify" and args.all_namespaces is True


def test_all_namespaces_with_a_one_object_verb_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["-A", "explain", "si/x"])
    assert e.value.code == 2
    assert "-A/--all-namespaces works with verify only" in capsys.readouterr().err


def test_completion_after_a_leading_namespace_flag() -> None:
    assert completion.candidates(build_parser(), ["-n", "x", "ap"]) == ["approve"]
