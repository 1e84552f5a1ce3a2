"""The WAL reader sidecar on running pods, as a client in the pod network meets it.

- Any pod may connect while no policy is enforced, but only the token of the chart's Secret
  ``sigops-wal-token`` reads the WAL: none or a wrong one is 401, a window further back than
  the sidecar serves is 400 (``since=2000-01-01`` gave the whole WAL before).
- With kube-router enforcing NetworkPolicy (``make tools`` builds it; see conftest.py), the
  runbook's policy (``runbooks/wal-reader-networkpolicy.yaml``, applied by ``Flk.backend``)
  lets sigops' own pod read the WAL with the token it mounts, while a pod of the backend's
  namespace cannot connect to the port even with the token; the backend's own port stays open.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster import free_port
from devtools.flk import BACKEND, Flk, image_ref
from sigops.core.keys import HMAC, generate_key
from sigops.testbed.manifests import RESTRICTED, WAL_PORT
from tests.node.support import OPERATOR_NS, flk_in, operator_pods
from tests.support import wait_for

# Run in a pod: GET a URL with the bearer token read from a file (or stdin: "-"; none: ""),
# print "HTTP <code>", "refused" or "timeout". The token is never printed.
GET = r"""
import socket, sys, urllib.error, urllib.request
url, timeout, src = sys.argv[1], float(sys.argv[2]), sys.argv[3]
lines = (sys.stdin.read() if src == "-" else open(src).read() if src else "").split()
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + lines[0]}
                             if lines else {})
try:
    with urllib.request.urlopen(req, timeout=timeout) as r:
        r.read()
        print("HTTP", r.status)
except urllib.error.HTTPError as e:
    print("HTTP", e.code)
except urllib.error.URLError as e:
    r = e.reason
    print("refused" if isinstance(r, ConnectionRefusedError) else
          "timeout" if isinstance(r, (TimeoutError, socket.timeout)) else f"error {r!r}")
except (TimeoutError, socket.timeout):
    print("timeout")
"""


@pytest.fixture
def flk(node: object, tmp_path: Path) -> Iterator[Flk]:
    yield from flk_in(node, tmp_path, "node-walreader")


def _outsider(flk: Flk, name: str = "outsider",
              labels: dict[str, str] | None = None) -> str:
    """A pod of the backend's namespace that is not sigops (or, with ``labels``, one
    labelled as something the policy admits)."""
    flk.apply({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": labels or {"app": "curious"}},
               "spec": {"containers": [{
                   "name": "client", "image": image_ref(), "imagePullPolicy": "IfNotPresent",
                   "command": ["python3", "-c", "import time; time.sleep(100000)"],
                   "securityContext": RESTRICTED}],
                   "automountServiceAccountToken": False,
                   "terminationGracePeriodSeconds": 0}})
    flk.kubectl("wait", "-n", flk.ns, "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    return name


def _token(flk: Flk) -> str:
    secret = flk.get("secret", "-n", flk.ns, "sigops-wal-token")
    return base64.b64decode(secret["data"]["token"]).decode()


def get_from(flk: Flk, ns: str, pod: str, url: str, token: str | None = None,
             token_file: str = "") -> str:
    src = "-" if token is not None else token_file
    return flk.kubectl("exec", "-i", "-n", ns, pod, "--", "python3", "-c", GET, url, "3", src,
                       input=token or "").strip()


def _wal_url(flk: Flk, query: str = "") -> tuple[str, str]:
    pod = next(p for p in flk.get("pods", "-n", flk.ns, "-l", f"app={BACKEND}")["items"]
               if not p["metadata"].get("deletionTimestamp"))
    ip = pod["status"]["podIP"]
    return ip, f"http://{ip}:{WAL_PORT}/v1/wal{query}"


def test_only_the_token_reads_the_wal(flk: Flk) -> None:
    flk.install(free_port())
    flk.backend(generate_key(HMAC, kid="k"), upstream=True)
    who = _outsider(flk)
    _, url = _wal_url(flk)
    assert get_from(flk, flk.ns, who, url) == "HTTP 401"
    assert get_from(flk, flk.ns, who, url, token="not-the-token") == "HTTP 401"
    assert get_from(flk, flk.ns, who, url, token=_token(flk)) == "HTTP 200"
    _, old = _wal_url(flk, "?since=2000-01-01T00:00:00Z")
    assert get_from(flk, flk.ns, who, old, token=_token(flk)) == "HTTP 400"


@pytest.mark.netpol
def test_the_runbook_policy_admits_only_sigops_pods(node: object, flk: Flk) -> None:
    from devtools.netpol import PolicyEnforcer, filter_rules

    flk.install(free_port())
    flk.backend(generate_key(HMAC, kid="k"), upstream=True)
    who = _outsider(flk)
    # Labelled as a SignatureAudit Job's pod (audit/job.py): the policy admits those too.
    auditor = _outsider(flk, "auditor", {"app.kubernetes.io/managed-by": "sigops",
                                         "app.kubernetes.io/component": "audit"})
    ip, url = _wal_url(flk)
    op: dict[str, Any] = operator_pods(node)[0]
    op_token = "/etc/sigops/wal-token/token"  # the chart's mount
    # Unenforced, both connect: what follows is the policy's doing.
    assert get_from(flk, flk.ns, who, url, token=_token(flk)) == "HTTP 200"
    assert get_from(flk, OPERATOR_NS, op["metadata"]["name"], url,
                    token_file=op_token) == "HTTP 200"
    with PolicyEnforcer(node.kubeconfig, flk.workdir / "enforcer") as enforcer:  # type: ignore[attr-defined]
        wait_for(lambda: any(ln.startswith("-A KUBE-ROUTER-FORWARD") and f"-d {ip}/32" in ln
                             for ln in filter_rules()), timeout=60, interval=0.5,
                 what="kube-router's firewall chain for the backend pod")
        wait_for(lambda: get_from(flk, flk.ns, who, url, token=_token(flk)) != "HTTP 200",
                 timeout=60, interval=1, what="the policy enforced")
        # The token alone does not get a pod of the namespace through.
        assert get_from(flk, flk.ns, who, url, token=_token(flk)) in ("refused", "timeout")
        # sigops' own pod, with the token it mounts, reads.
        assert get_from(flk, OPERATOR_NS, op["metadata"]["name"], url,
                        token_file=op_token) == "HTTP 200"
        # An audit index's pod, with the token its Job mounts, reads.
        assert get_from(flk, flk.ns, auditor, url, token=_token(flk)) == "HTTP 200"
        # The backend's own port stays open to all.
        assert get_from(flk, flk.ns, who, f"http://{ip}:8080/healthz") == "HTTP 200"
    assert enforcer.leftovers() == []
