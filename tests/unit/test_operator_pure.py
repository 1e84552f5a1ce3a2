"""The operator's pure parts, without a cluster: settings and flags, conditions, the managed
keyring and Deployment env builders, the decision table, alert parsing and fingerprints."""

from __future__ import annotations

import argparse
import doctest
import json

import pytest

import sigops.settings as settings_module
from sigops.backend import keyring
from sigops.backend.config import EnvNames, backend_config, resolve_env
from sigops.backend.keyring import ManagedRing, desired_env, revision_of
from sigops.core import ratelimit, timeparse
from sigops.core.keys import ED25519, HMAC, Key, generate_key
from sigops.core.timeparse import parse_duration
from sigops.incident import alertmanager, decide
from sigops.incident.alertmanager import WebhookError, alert_fingerprint, parse_webhook
from sigops.incident.decide import candidates, communication, needs_approval
from sigops.kube import conditions
from sigops.kube.conditions import set_condition
from sigops.rotation.model import plan
from sigops.runtime import flags
from sigops.settings import Settings, load_settings


@pytest.mark.parametrize("mod", [alertmanager, conditions, ratelimit, timeparse,
                                 settings_module])
def test_doctests(mod):
    assert doctest.testmod(mod).failed == 0


# -- settings and flags ----------------------------------------------------------------------


def test_settings_defaults_and_unknown_keys_rejected(tmp_path):
    s = load_settings(None)
    assert s.modes["E"] == "approval" and s.error_rate_threshold == 10.0
    # The target's own pods' errors, whichever of upstream's two counter names it exports
    # (or its namespace's where the series have no pod label): the rule's expression,
    # narrowed to the target.
    names = '__name__=~"flk_signature_err|flk_signature_errors"'
    assert s.error_query("ns", "dep") == (
        f'sum(sum by (namespace, deployment) (label_replace(rate({{{names},namespace="ns",'
        f'pod=~"dep-[a-z0-9]+-[a-z0-9]+"}}[5m]), "deployment", "$1", "pod", '
        f'"(.+)-[a-z0-9]+-[a-z0-9]+")) '
        f'or (sum by (namespace) (rate({{{names},namespace="ns"}}[5m])) '
        f'unless on(namespace) count by (namespace) ({{{names},namespace="ns",pod!=""}})))')
    assert s.error_query("ns", "dep") == f'sum({s.error_rate_by_target("ns", "dep")})'
    assert Settings(namespace_label="kubernetes_namespace").error_query("a\"b").startswith(
        'sum(sum by (kubernetes_namespace, deployment) (label_replace(rate('
        f'{{{names},kubernetes_namespace="a\\"b",pod!=""}}[5m])')
    # The former default's placeholders still work in a custom query.
    old = Settings(error_rate_query="sum(rate({{{pod_match}}}[{window}]))",
                   error_rate_window="2m")
    assert old.error_query("ns", "dep") == (
        f'sum(rate({{{names},namespace="ns",pod=~"dep-[a-z0-9]+-[a-z0-9]+"}}[2m]))')
    bad = tmp_path / "c.yaml"
    bad.write_text("error_rate_treshold: 3\n")  # a typo must not fall back to a default
    with pytest.raises(ValueError):
        load_settings(bad)
    bad.write_text("min_overlap: soon\n")
    with pytest.raises(ValueError):
        load_settings(bad)
    bad.write_text("modes: {F: auto}\n")
    with pytest.raises(ValueError):
        load_settings(bad)
    for line in ("error_rate_window: 5 minutes\n", "namespace_label: a b\n",
                 "deployment_label: 'x) or vector(1'\n"):
        bad.write_text(line)  # spliced into PromQL: refused, not quoted
        with pytest.raises(ValueError):
            load_settings(bad)


def test_default_target():
    one = Settings.model_validate({"targets": [{"namespace": "a", "deployment": "b"}]})
    assert one.default_target().namespace == "a"
    two = Settings.model_validate({"targets": [{"namespace": "a"}, {"namespace": "c"}]})
    assert two.default_target() is None
    marked = Settings.model_validate({"targets": [{"namespace": "a"},
                                                  {"namespace": "c", "default": True}]})
    assert marked.default_target().namespace == "c"
    assert Settings.model_validate(
        {"targets": [{"backendURL": "http://x", "maxSkewSeconds": 5}]}
    ).targets[0].backend_url == "http://x"


def test_flag_overrides():
    p = argparse.ArgumentParser()
    flags.add_run_flags(p)
    a = p.parse_args(["--modes", "A=approval, E=auto", "--error-rate-threshold", "2.5",
                      "--signature-error-metric", "flk_signature_errors"])
    o = flags.overrides(a)
    assert o == {"modes": {"A": "approval", "E": "auto"}, "error_rate_threshold": 2.5,
                 "signature_error_metric": "flk_signature_errors"}
    s = Settings.model_validate({**Settings().model_dump(by_alias=True), **o})
    assert s.error_query().startswith(
        'sum(sum by (namespace, deployment) (label_replace(rate('
        '{__name__=~"flk_signature_errors|flk_signature_err",pod!=""}[5m])')
    with pytest.raises(ValueError):
        flags.overrides(p.parse_args(["--modes", "A"]))
    with pytest.raises(ValueError):
        flags.overrides(p.parse_args(["--error-rate-threshold", "lots"]))


# -- conditions ------------------------------------------------------------------------------


def test_condition_transition_time_moves_only_on_status_change():
    c = set_condition([], "Ready", "False", "A", "m1", 1, "t1")
    c = set_condition(c, "Ready", "False", "B", "m2", 2, "t2")
    assert c[0]["lastTransitionTime"] == "t1" and c[0]["reason"] == "B"
    c = set_condition(c, "Ready", "True", "Done", "ok", 2, "t3")
    assert c[0]["lastTransitionTime"] == "t3"
    c = set_condition(c, "Progressing", "True", "X", "", 2, "t4")
    assert [x["type"] for x in c] == ["Progressing", "Ready"]


@pytest.mark.parametrize("text,secs", [("336h", 1209600), ("1h30m", 5400), ("90s", 90),
                                       ("2d", 172800), ("500ms", 0.5), ("1.5h", 5400)])
def test_durations(text, secs):
    assert parse_duration(text) == secs


@pytest.mark.parametrize("bad", ["", "10", "h", "1h 30m", "-5s", "5x", "1h30"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


# -- managed keyring and env ---------------------------------------------------------------


def _ring(alg: str = HMAC) -> tuple[ManagedRing, Key, Key]:
    old, new = generate_key(alg, kid="old", state="retiring"), generate_key(alg, kid="new",
                                                                            state="active")
    r = ManagedRing([old.to_entry(), new.to_entry()], primary="new", accepts=["old", "new"])
    return r, old, new


def test_secret_data_hmac_primary_first_and_roundtrip():
    r, old, new = _ring()
    data = r.secret_data(HMAC)
    assert data["PCS_HMAC_KEY"] == new.secret.decode()
    assert data["PCS_HMAC_KEYS"].split(",") == [new.secret.decode(), old.secret.decode()]
    back = ManagedRing.from_json(data["keyring.json"])
    assert back.accepts == ["old", "new"] and back.primary == "new"
    # What the backend would accept from that Secret is exactly the two keys.
    eff = backend_config({"PCS_SIGN_ALG": "hmac", **data})
    assert sorted(eff.fingerprints) == sorted([old.fingerprint, new.fingerprint])
    # public_view never carries material.
    assert old.secret.decode() not in json.dumps(r.public_view())


def test_secret_data_ed25519_has_public_keys_only():
    r, old, new = _ring(ED25519)
    data = r.secret_data(ED25519)
    assert set(data) == {"keyring.json", "PCS_ED25519_PUBS_B64", "PCS_ED25519_PUB_B64"}
    eff = backend_config({"PCS_SIGN_ALG": "ed25519", **data})
    assert eff.alg == ED25519 and new.fingerprint in eff.fingerprints


def test_revision_changes_exactly_when_accepted_set_changes():
    r, _, _ = _ring()
    a = revision_of(r)
    r2 = r.copy()
    assert revision_of(r2) == a
    r2.accepts = ["new"]
    assert revision_of(r2) != a
    # Which accepted key is primary does not change what the backend accepts: no rollout
    # (the live overlap probe has already refused single-key backends by then).
    r3 = r.copy()
    r3.primary = "old" if r.primary != "old" else "new"
    assert revision_of(r3) == a
    r4 = r.copy()
    r4.accepts = list(reversed(r.accepts))
    assert revision_of(r4) == a


def test_desired_env_keeps_other_vars_in_place():
    env = [{"name": "A", "value": "1"}, {"name": "PCS_HMAC_KEY", "value": "literal"},
           {"name": "Z", "value": "2"}]
    out = desired_env(env, HMAC, "sigops-keyring-b")
    assert [e["name"] for e in out] == ["A", "PCS_HMAC_KEY", "Z", "PCS_SIGN_ALG",
                                        "PCS_HMAC_KEYS"]
    ref = out[1]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "sigops-keyring-b", "key": "PCS_HMAC_KEY"}
    assert desired_env(out, HMAC, "sigops-keyring-b") == out  # idempotent


def test_resolve_env_reads_secret_refs():
    c = {"env": [{"name": "PCS_HMAC_KEY", "valueFrom": {"secretKeyRef": {"name": "s",
                                                                          "key": "k"}}},
                 {"name": "TOKEN_RATE", "value": "7"}, {"name": "MISSING", "valueFrom": {
                     "secretKeyRef": {"name": "nope", "key": "k"}}}]}
    env = resolve_env(c, lambda n, k: "sekrit" if (n, k) == ("s", "k") else None)
    assert env == {"PCS_HMAC_KEY": "sekrit", "TOKEN_RATE": "7"}
    assert backend_config(env).token_rate == "7"
    assert EnvNames.from_spec({"tokenRate": "RATE"}).token_rate == "RATE"


def test_dry_run_plan_names_every_phase():
    steps = plan(HMAC, "ns/b", None, "336h", "agent-key", guarded=False)
    for ph in ("Staged", "Overlapping", "Verified", "Promoted", "Retiring", "Completed"):
        assert any(s.startswith(ph) for s in steps)
    assert "Unguarded" in steps[-1]


# -- decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize("report,rot,recent,skew,expect", [
    ({"scenario": "A", "total": 5}, False, False, None, ["A"]),
    ({"scenario": "A", "total": 5}, False, True, None, ["E", "A"]),
    ({"scenario": "A", "total": 5}, True, True, None, ["A"]),
    ({"scenario": "B", "total": 5}, False, False, None, ["B"]),
    ({"scenario": "C", "total": 5}, False, True, None, ["C"]),
    ({"scenario": "D", "total": 5}, False, False, None, ["D"]),
    ({"scenario": "E", "total": 5, "dominant_cause": "unverifiable"}, False, False, None, ["E"]),
    ({"scenario": "D", "total": 5, "dominant_cause": "unverifiable"}, False, True, None, ["E"]),
    (None, False, True, None, ["E"]),
    (None, True, False, None, ["A"]),
    (None, False, False, 3.0, ["B"]),
    (None, False, False, 0.1, []),
])
def test_candidates(report, rot, recent, skew, expect):
    assert candidates(report, rotation_in_progress=rot, recent_signing_change=recent,
                      skew_metric_seconds=skew) == expect


def test_approval_rules():
    assert needs_approval("E", "approval", [], recent_signing_change=False)
    assert not needs_approval("E", "approval", [], recent_signing_change=True)
    assert not needs_approval("E", "approval", ["E"], recent_signing_change=False)
    assert needs_approval("A", "dryRun", [], recent_signing_change=True)
    assert not needs_approval("A", "auto", [], recent_signing_change=False)


def test_communication_is_filled_in():
    text = communication(phase="Resolved", cause="KeyRotationInProgress", scenario="A",
                         actions=[{"summary": "added key f00", "result": "applied"}],
                         error_rate=0.5, next_update="T", target="ns/b")
    assert "Status: Resolved" in text and "- added key f00" in text
    assert "Enabled key overlap" in text and "0.5/s" in text
    pending = communication(phase="Diagnosing", cause=None, scenario=None, actions=[],
                            error_rate=None, next_update="T", target="ns/b")
    assert "In Progress" in pending and "- none yet" in pending


# -- alerts --------------------------------------------------------------------------------


def test_fingerprint_matches_alertmanager_known_values():
    # FNV-1a offset basis: the empty label set's fingerprint in Prometheus' model.
    assert alert_fingerprint({}) == "cbf29ce484222325"
    a = alert_fingerprint({"alertname": "X", "job": "j"})
    assert a == alert_fingerprint({"job": "j", "alertname": "X"}) and len(a) == 16
    assert a != alert_fingerprint({"alertname": "X", "job": "k"})


def _doc(**kw):
    d = {"version": "4", "groupKey": "g", "status": "firing",
         "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": "t"}]}
    d.update(kw)
    return d


def test_parse_webhook_ok_and_fingerprint_filled():
    (a,) = parse_webhook(_doc())
    assert a.name == "A" and a.fingerprint == alert_fingerprint({"alertname": "A"})
    assert a.dedupe_key == ("g", a.fingerprint, "firing", "t")


@pytest.mark.parametrize("doc", [
    [], {"version": "3", "alerts": []}, _doc(alerts="x"), _doc(alerts=[1]),
    _doc(alerts=[{"status": "weird", "labels": {}}]),
    _doc(alerts=[{"status": "firing", "labels": {"a": 1}}]),
    _doc(groupKey=5), _doc(alerts=[{"status": "firing", "labels": {}}] * 1001),
])
def test_parse_webhook_rejects(doc):
    with pytest.raises(WebhookError):
        parse_webhook(doc)


def test_small_invariants():
    assert Key("k", HMAC, secret=b"x").fingerprint != Key("k", HMAC, secret=b"y").fingerprint
    assert keyring.keyring_secret_name("b") == "sigops-keyring-b"
    assert decide.SCENARIOS["C"].changes_something is False


def test_one_table_of_scenario_letters() -> None:
    """Diagnosis, decision, settings and the implementations all read core.scenarios."""
    from sigops.core.diagnose import CAUSES
    from sigops.core.scenarios import LETTERS, SCENARIOS
    from sigops.incident.scenarios import REGISTRY
    from sigops.settings import DEFAULT_MODES

    assert tuple(REGISTRY) == LETTERS == ("A", "B", "C", "D", "E")
    assert all(REGISTRY[x].info is SCENARIOS[x] for x in LETTERS)
    assert DEFAULT_MODES == {x: SCENARIOS[x].default_mode for x in LETTERS}
    assert decide.INCIDENT_CAUSE_OF == {x: SCENARIOS[x].incident_cause for x in LETTERS}
    for cause in CAUSES.values():
        assert cause.scenario is None or cause.incident_cause == \
            SCENARIOS[cause.scenario].incident_cause
    # What sets C and D apart is data on their registry entries, not reconciler branches.
    assert REGISTRY["C"].escalation is not None and REGISTRY["D"].restore is not None
    assert [x for x in LETTERS if REGISTRY[x].escalation] == ["C"]
    assert [x for x in LETTERS if REGISTRY[x].restore] == ["D"]
    with pytest.raises(ValueError, match="unknown scenario"):
        Settings(modes={"F": "auto"})


def test_version_and_build_info_and_process_metrics(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    import tomllib

    from prometheus_client import generate_latest
    from tests.support import REPO

    import sigops
    from sigops import cli
    from sigops.telemetry.metrics import REGISTRY

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert sigops.__version__ == version
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"sigops {version}"
    text = generate_latest(REGISTRY).decode()
    assert f'sigops_build_info{{version="{version}"}} 1.0' in text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info",
                 "python_gc_objects_collected_total"):
        assert f"\n{name}" in text, name


def test_devtools_find_the_repository() -> None:
    """operator/devtools is outside the package: its paths still name this checkout."""
    from tests.support import BIN, REPO

    from devtools import cluster, demo

    assert cluster.REPO == demo.REPO == REPO
    assert cluster.DEFAULT_BIN == demo.BIN == BIN
