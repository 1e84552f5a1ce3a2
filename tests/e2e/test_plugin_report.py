"""``kubectl sigops report`` on an incident of the closed loop, with the real Prometheus: the
picture is drawn from Prometheus' range query over the incident window, and its data (read
back from the PNG, not its pixels) holds the alert threshold and one marker per signed action.
"""

from __future__ import annotations

import subprocess
from typing import Any

from kubernetes import client

from sigops.cli.plugin.plot import read_png_figure_data
from sigops.core.keys import HMAC, generate_key
from tests.e2e.test_closed_loop import QUERY, THRESHOLD, make_backend, run_to_end
from tests.e2e.test_closed_loop import loop as loop  # the fixture
from tests.support import REPO, wait_for


def _token_rate(api: Any, ns: str) -> str | None:
    dep = client.AppsV1Api(api).read_namespaced_deployment("fractal-lba-backend", ns)
    return next((e.value for e in dep.spec.template.spec.containers[0].env
                 if e.name == "TOKEN_RATE"), None)


def test_report_of_a_tamper_flood_has_the_picture(loop, api, namespace, operator_factory,
                                                  tmp_path):
    key = generate_key(HMAC, kid="k")
    make_backend(api, namespace, key, token_rate="1000")
    loop.start_backend()
    loop.start_stack_and_operator(operator_factory, token_rate="1")
    loop.agents_run(key, rate=5)
    loop.agents_run(key, rate=20, faults=("tamper",), agent_prefix="attacker")
    before, inc = run_to_end(loop)
    assert before > THRESHOLD
    wait_for(lambda: _token_rate(api, namespace) == "1000", 30,
             what="TOKEN_RATE restored after the cool-down (a third action)")
    name = inc["metadata"]["name"]
    inc = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "sigops.fractal-lba.io", "v1alpha1", namespace, "signatureincidents", name)
    actions = inc["status"]["actions"]
    assert len(actions) == 3

    out_dir = tmp_path / "report"
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "kubectl-sigops"), "report", f"si/{name}",
         "-n", namespace, "-o", str(out_dir), "--prometheus-url", loop.stack.prometheus_url,
         "--query", QUERY, "--threshold", str(THRESHOLD),
         "--operator-namespace", loop.operator.operator_ns],
        env=loop.cluster.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"picture: {out_dir / 'error-rate.png'}" in out.stdout

    data = read_png_figure_data(out_dir / "error-rate.png")
    assert data is not None, "the PNG carries no figure data"
    assert data["threshold"] == [THRESHOLD]
    assert len(data["actions"]) == len(actions) == 3
    assert all(a["vertical"] for a in data["actions"])
    assert [a["x"] for a in data["actions"]] == [a["payload"]["detected_at"]
                                                 for a in actions]
    assert data["rate_points"] >= 10

    md = (out_dir / "report.md").read_text()
    assert "![Signature error rate of" in md and "(error-rate.png)" in md
    peak = float(md.split("Peak ")[1].split("/s")[0])
    assert peak > THRESHOLD  # the spike Prometheus recorded is in the picture's data
    assert "| Time to resolve |" in md and "Tightened TOKEN_RATE" in md
    assert "all 4 verify with the published public keys" in md  # detection + 3 actions
    assert "MaliciousActivity" in md
