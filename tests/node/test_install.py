"""The README's install, upgrade and uninstall, run as written on the node: the operator pod
runs from the image with in-cluster config, the chart's RBAC, restricted Pod Security and a
read-only root filesystem; nothing it leaves behind is undeletable."""

from __future__ import annotations

import json
import subprocess
import urllib.request

from tests.node.support import (
    OPERATOR_NS,
    ensure_namespace,
    get_json,
    logs,
    readme_block,
    run_commands,
    uninstall_everything,
    wait_deleted,
    wait_operator_ready,
)
from tests.support import kubectl, wait_for

GROUP = "sigops.fractal-lba.io"


def _kr_failing(name: str, deployment: str = "fractal-lba-backend") -> dict[str, object]:
    """A KeyRotation of the configured target, whose Deployment does not exist here: it fails
    at once (a finished rotation)."""
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "KeyRotation",
            "metadata": {"name": name, "namespace": "fractal-lba"},
            "spec": {"target": {"deployment": deployment}, "algorithm": "hmac-sha256",
                     "overlap": "1h"}}


def test_readme_install_upgrade_uninstall(node: object) -> None:
    uninstall_everything(node)
    ensure_namespace(node, "fractal-lba")  # the backend's namespace exists before sigops

    run_commands(node, readme_block("install"))
    pod = wait_operator_ready(node)
    name = pod["metadata"]["name"]
    c = pod["spec"]["containers"][0]
    # The shipped image, its own entrypoint, no kubeconfig: in-cluster config.
    assert c["image"] == "sigops:0.1.0" and "command" not in c and c["args"] == ["run"]
    assert not any(e["name"] == "KUBECONFIG" for e in c.get("env") or [])
    assert pod["spec"]["securityContext"]["runAsUser"] == 65532
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    ns = get_json(node, "namespace", OPERATOR_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # Its probes answer on the pod network, and it reached the API with its ServiceAccount.
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8081/healthz", timeout=5) as r:
        assert r.status == 200
    cm = get_json(node, "configmap", "-n", OPERATOR_NS, "sigops-signal-pubkeys")
    assert cm["data"]["pubkeys.json"]
    out = logs(node, OPERATOR_NS, name)
    assert "alert receiver on 0.0.0.0:8080" in out and "Traceback" not in out, out

    # The installed admission policy refuses a backend the config does not name.
    refused = _create(node, _kr_failing("unconfigured", "no-such-backend"), check=False)
    assert refused.returncode != 0 and "is not a target of the sigops config" in refused.stderr
    # A finished rotation: no finalizer left on it once sigops has seen it end.
    _create(node, _kr_failing("gone-backend"))
    wait_for(lambda: (get_json(node, "keyrotation", "-n", "fractal-lba", "gone-backend")
                      .get("status") or {}).get("phase") == "Failed",
             timeout=60, what="the KeyRotation to fail")
    wait_for(lambda: not get_json(node, "keyrotation", "-n", "fractal-lba", "gone-backend")
             ["metadata"].get("finalizers"), timeout=30, what="its finalizer to go")

    run_commands(node, readme_block("upgrade"))
    pod2 = wait_operator_ready(node)
    env = {e["name"]: e.get("value") for e in pod2["spec"]["containers"][0]["env"]}
    assert env["SIGOPS_LOG_LEVEL"] == "DEBUG" and pod2["metadata"]["name"] != name

    run_commands(node, readme_block("uninstall"))
    wait_deleted(node, "deployment", "-n", OPERATOR_NS, "sigops")
    # Kept on purpose: the CRDs and the public keys; the finished rotation deletes without
    # any operator, and so does its namespace.
    kubectl(node, "get", "crd", f"keyrotations.{GROUP}", f"signatureincidents.{GROUP}")
    kubectl(node, "get", "configmap", "-n", OPERATOR_NS, "sigops-signal-pubkeys")
    kubectl(node, "delete", "keyrotation", "-n", "fractal-lba", "gone-backend",
            "--timeout=30s")

    # The other way: CRDs managed by hand, the chart told so.
    run_commands(node, readme_block("install-own-crds"))
    wait_operator_ready(node)
    rendered = kubectl(node, "get", "crd", f"keyrotations.{GROUP}", "-o", "json").stdout
    assert json.loads(rendered)["metadata"]["name"] == f"keyrotations.{GROUP}"
    run_commands(node, readme_block("uninstall"))
    wait_deleted(node, "deployment", "-n", OPERATOR_NS, "sigops")
    kubectl(node, "delete", "namespace", "fractal-lba", "--timeout=60s")


def _create(node: object, obj: dict[str, object], check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    from tests.support import BIN

    r = subprocess.run([str(BIN / "kubectl"), "create", "-f", "-"], input=json.dumps(obj),
                       env=node.env, capture_output=True, text=True, timeout=60)  # type: ignore[attr-defined]
    if check:
        assert r.returncode == 0, r.stderr
    return r
