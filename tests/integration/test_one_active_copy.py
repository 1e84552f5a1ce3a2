"""Two ``sigops run`` copies on one cluster (one operator namespace, so one leader Lease): one
acts, the other stands by. Its receiver answers 503 (Alertmanager retries), it takes no step.
When the active copy is SIGKILLed mid-incident and mid-rotation, the standby takes over within
the lease duration plus a poll (6 s + 2 s here; 15 s + 2 s by default) and finishes the work:
every remediation action and every rotation step exactly once.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from kubernetes import client

from sigops.core.keys import HMAC, Key
from tests.support import (
    GROUP,
    TOKEN,
    VERSION,
    OperatorProcess,
    SampleServer,
    alert_post,
    backend,
    envelope,
    get_kr,
    incidents,
    keyrotation,
    make_backend,
    pcs,
    phase,
    rotation_target,
    secret,
    token_rate,
    verify_history,
    wait_for,
)

LEASE = "6"


def tampered(key: Key) -> list[dict[str, Any]]:
    bad = []
    for i in range(20):
        p = pcs(key, 100 + i)
        p["merkle_root"] = "e" * 64  # changed after signing: scenario D
        bad.append(envelope(p, "10.7.7.7"))
    return [envelope(pcs(key, i), "agent-1") for i in range(5)] + bad


def leader(op: OperatorProcess) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics",
                                    timeout=3) as r:
            return "\nsigops_leader 1.0" in r.read().decode()
    except OSError:
        return False


def incident_phase(api: Any, ns: str) -> str | None:
    items = incidents(api, ns)
    return ((items[0].get("status") or {}).get("phase")) if items else None


def test_one_copy_acts_and_a_standby_takes_over_exactly_once(cluster, api, namespace,
                                                              tmp_path):
    key = Key("k", HMAC, secret=b"one-active-copy-backend-key-0001")
    backend(api, namespace, key, token_rate="100")
    samples = SampleServer()
    samples.samples = tampered(key)
    rot_ns = f"{namespace}-kr"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=rot_ns)))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    settings = {"targets": [{"namespace": namespace, "deployment": "fractal-lba-backend",
                             "backendURL": samples.url}, rotation_target(rot_ns)],
                "reconcile_interval": 0.5, "min_overlap": "1s", "verify_timeout": "60s",
                "cooldown": "2s", "last_known_good_after": "0s"}
    env = {"SIGOPS_ALERTS_TOKEN_FILE": str(token), "SIGOPS_LEASE_DURATION": LEASE}
    ops: list[OperatorProcess] = []
    try:
        for name in ("one", "two"):
            d = tmp_path / name
            d.mkdir()
            op = OperatorProcess(cluster, d, settings, None, extra_env=env)
            if ops:
                op.operator_ns = ops[0].operator_ns  # the same Lease
            ops.append(op)
        first, second = ops
        first.start()
        wait_for(lambda: leader(first), timeout=20, what="the first copy leading")
        second.start()  # /healthz answers for a copy standing by
        time.sleep(2)
        assert leader(first) and not leader(second)

        # The standby refuses alerts so that Alertmanager retries; the active one takes them.
        assert alert_post(second, namespace)[0] == 503
        assert incidents(api, namespace) == []
        assert alert_post(first, namespace)[0] == 200
        wait_for(lambda: incident_phase(api, namespace) == "Verifying", timeout=30,
                 what="scenario D applied by the active copy")
        assert token_rate(api, namespace) == "50"

        # A rotation elsewhere, under way when the active copy dies.
        make_backend(api, rot_ns, HMAC)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, rot_ns, "keyrotations", keyrotation("kr", HMAC, overlap="4s"))
        wait_for(lambda: phase(api, rot_ns, "kr") in ("Overlapping", "Verified", "Promoted"),
                 timeout=30, what="the rotation under way")
        first.kill()
        killed = time.monotonic()
        wait_for(lambda: leader(second), timeout=30, what="the standby taking over")
        takeover = time.monotonic() - killed
        assert takeover < float(LEASE) + 2 + 5, takeover  # duration, a poll, slack

        # The new active copy finishes both, each step once.
        assert alert_post(second, namespace, status="resolved")[0] == 200
        wait_for(lambda: token_rate(api, namespace) == "100", timeout=40,
                 what="TOKEN_RATE restored by the new active copy")
        wait_for(lambda: phase(api, rot_ns, "kr") == "Completed", timeout=60,
                 what="the rotation completed by the new active copy")
        (inc,) = incidents(api, namespace)
        actions = [a["payload"]["action"] for a in inc["status"]["actions"]]
        assert actions.count("tighten-token-rate") == 1, actions
        wait_for(lambda: [a["payload"]["action"] for a in incidents(api, namespace)[0][
            "status"]["actions"]].count("restore-token-rate") == 1, timeout=20,
                 what="one restore recorded")
        kr = get_kr(api, rot_ns, "kr")
        phases = [h["payload"]["phase"] for h in kr["status"]["history"]]
        for ph in ("Staged", "Overlapping", "Verified", "Promoted", "Retiring", "Completed"):
            assert phases.count(ph) == 1, phases
        ring = json.loads(secret(api, rot_ns, "sigops-keyring-fractal-lba-backend")[
            "keyring.json"])
        assert sorted(k["state"] for k in ring["keys"]) == ["active", "retired"]
        verify_history(api, second.operator_ns, kr)
        lease = client.CoordinationV1Api(api).read_namespaced_lease("sigops-leader",
                                                                   second.operator_ns)
        assert lease.spec.lease_transitions == 1
        assert "standing by" in second.logs() and "now the active sigops" in second.logs()
        print(f"standby took over {takeover:.1f}s after the active copy was killed")
    finally:
        for op in ops:
            op.stop()
        samples.close()
        core.delete_namespace(rot_ns)
