"""Helpers of the node tests: the README's command blocks, Helm, pods and their readiness."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devtools.flk import Flk
from tests.support import BIN, REPO, kubectl, wait_for

RELEASE, OPERATOR_NS = "sigops", "sigops-system"


def readme_block(name: str) -> list[str]:
    """The commands of the bash block after ``<!-- test: NAME -->`` in README.md, with
    backslash continuations joined: what a user copies."""
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- test: " + re.escape(name) + r" -->\s*```bash\n(.*?)```", text, re.S)
    assert m, f"README.md has no block marked 'test: {name}'"
    joined = m.group(1).replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]


def run_commands(node: object, commands: list[str], timeout: float = 300) -> None:
    for cmd in commands:
        r = subprocess.run(["bash", "-ec", cmd], cwd=REPO, env=node.env,  # type: ignore[attr-defined]
                           capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"`{cmd}` failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"


def helm(node: object, *args: str, check: bool = True, timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(BIN / "helm"), *args], env=node.env,  # type: ignore[attr-defined]
                       capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check:
        assert r.returncode == 0, f"helm {' '.join(args)}: {r.stdout}\n{r.stderr}"
    return r


def uninstall_everything(node: object) -> None:
    """No release and no operator namespace: the state a first install starts from."""
    if helm(node, "status", RELEASE, "-n", OPERATOR_NS, check=False).returncode == 0:
        helm(node, "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait")
    if kubectl(node, "get", "namespace", OPERATOR_NS, check=False).returncode == 0:
        kubectl(node, "delete", "namespace", OPERATOR_NS, "--wait=true", timeout=120)


def ensure_namespace(node: object, ns: str) -> None:
    """``ns`` exists and is not on its way out (an earlier run's namespace may be
    Terminating: wait for it to go, then create it again)."""
    r = kubectl(node, "get", "namespace", ns, "-o", "json", check=False)
    if r.returncode == 0:
        if json.loads(r.stdout).get("status", {}).get("phase") != "Terminating":
            return
        wait_deleted(node, "namespace", ns, timeout=120)
    kubectl(node, "create", "namespace", ns)


def get_json(node: object, *args: str) -> Any:
    return json.loads(kubectl(node, "get", *args, "-o", "json").stdout)


def operator_pods(node: object) -> list[dict[str, Any]]:
    pods = get_json(node, "pods", "-n", OPERATOR_NS, "-l",
                    "app.kubernetes.io/name=sigops")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def pod_ready(pod: dict[str, Any]) -> bool:
    conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
    return conds.get("Ready") == "True"


def wait_operator_ready(node: object, timeout: float = 120) -> dict[str, Any]:
    def one_ready() -> dict[str, Any] | None:
        pods = operator_pods(node)
        return pods[0] if len(pods) == 1 and pod_ready(pods[0]) else None

    pod: dict[str, Any] = wait_for(one_ready, timeout=timeout, interval=0.5,
                                   what="one Ready operator pod")
    return pod


def logs(node: object, ns: str, pod: str, container: str | None = None) -> str:
    args = ["logs", "-n", ns, pod] + (["-c", container] if container else [])
    return kubectl(node, *args, check=False).stdout


def wait_deleted(node: object, *args: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kubectl(node, "get", *args, check=False).returncode != 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{' '.join(args)} still exists after {timeout}s")


def flk_in(node: object, tmp_path: Path, ns: str) -> Iterator[Flk]:
    """A fixture body: namespace ``ns`` on the node (after an earlier one of the name has
    gone), then the release uninstalled and the namespace deleted."""
    f = Flk(node.env, node.kubeconfig, tmp_path, ns, BIN)  # type: ignore[attr-defined]
    f.namespace()
    yield f
    f.stop()
    f.helm("uninstall", RELEASE, "-n", OPERATOR_NS, "--wait")
    f.kubectl("delete", "namespace", ns, "--wait=false", check=False)
