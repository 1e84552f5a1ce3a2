"""The FLKSignatureFailuresSpike rule and the PromStack configs (no processes started)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import require_tool

from devtools.promstack import PromStack, ScrapeTarget
from sigops.testbed.cli import main
from sigops.testbed.rules import ALERT_NAME, duration, signature_failure_rule, write_rule_file


def _rule(doc: dict[str, Any]) -> dict[str, Any]:
    r: dict[str, Any] = doc["groups"][0]["rules"][0]
    return r


def test_upstream_defaults() -> None:
    r = _rule(signature_failure_rule())
    assert r["alert"] == ALERT_NAME == "FLKSignatureFailuresSpike"
    assert r["expr"] == "rate(flk_signature_err[5m]) > 10"
    assert r["for"] == "5m"
    assert r["labels"] == {"severity": "warning", "component": "backend"}
    assert set(r["annotations"]) == {"summary", "description", "runbook_url"}


def test_parameterized_to_seconds() -> None:
    doc = signature_failure_rule(metric="flk_signature_errors", window=10, for_=5, threshold=1.5,
                                 runbook_url="https://example.test/rb", interval="1s")
    r = _rule(doc)
    assert r["expr"] == "rate(flk_signature_errors[10s]) > 1.5" and r["for"] == "5s"
    assert r["annotations"]["runbook_url"] == "https://example.test/rb"
    assert doc["groups"][0]["interval"] == "1s"
    assert duration(0.5) == "500ms"
    for bad in ({"metric": "bad name"}, {"window": "5 minutes"}, {"for_": -1}):
        with pytest.raises(ValueError):
            signature_failure_rule(**bad)


def test_rule_file_is_valid_for_promtool(tmp_path: Path) -> None:
    p = write_rule_file(tmp_path / "rules" / "flk.yml", window="10s", for_="5s", threshold=1)
    assert _rule(yaml.safe_load(p.read_text()))["expr"] == "rate(flk_signature_err[10s]) > 1"
    promtool = require_tool("promtool")
    out = subprocess.run([promtool, "check", "rules", str(p)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cli_rules(tmp_path: Path, capsys: Any) -> None:
    assert main(["rules", "--window", "10s", "--for", "5s", "--threshold", "1"]) == 0
    assert _rule(yaml.safe_load(capsys.readouterr().out))["for"] == "5s"
    out = tmp_path / "r.yml"
    assert main(["rules", "-o", str(out)]) == 0
    assert _rule(yaml.safe_load(out.read_text()))["expr"].endswith("> 10")
    assert main(["rules", "--window", "soon"]) == 2


def test_promstack_configs(tmp_path: Path) -> None:
    stack = PromStack(targets=["127.0.0.1:1", ScrapeTarget("127.0.0.1:2", {"namespace": "n"})],
                      rule_files=[tmp_path / "r.yml"], webhook_url="http://127.0.0.1:3/v1/alerts",
                      webhook_token="s3cr3t-t0ken", workdir=tmp_path)
    stack.am_port = 9
    prom = stack._prometheus_config()
    assert prom["global"]["scrape_interval"] == prom["global"]["evaluation_interval"] == "1s"
    assert prom["scrape_configs"][0]["static_configs"][1]["labels"] == {"namespace": "n"}
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9"]
    am = stack._alertmanager_config(tmp_path)
    hook = am["receivers"][0]["webhook_configs"][0]
    assert hook["send_resolved"] is True
    cred = Path(hook["http_config"]["authorization"]["credentials_file"])
    assert cred.read_text() == "s3cr3t-t0ken" and (cred.stat().st_mode & 0o077) == 0
    assert "s3cr3t-t0ken" not in yaml.safe_dump(am)  # the token lives in its file only
