"""``kubectl sigops audit`` on the real local API server (issue 27): the plugin creates the
SignatureAudit, the reconciler starts its Job, the indexes run here by hand as the Job's
ServiceAccount (no kubelet on this control plane), the Job is marked complete as its
controller would, and the plugin -- following all along -- verifies the operator's signed
summary and writes a report whose totals are the status'. A namespace user creates audits
where her RBAC lets her and nowhere else."""

from __future__ import annotations

import csv
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sigops.audit.reconciler import AuditReconciler
from sigops.core.keys import ED25519, Key, generate_key
from sigops.core.signals import pubkeys_document
from sigops.kube.api import Kube, secret_strings
from sigops.signing.records import Signer
from tests.integration.test_audit_job import leak_drill, sa_kubeconfig
from tests.support import GROUP, REPO, grant_user, kubectl, service_account_user, wait_for

pytestmark = pytest.mark.integration

PLUGIN = str(REPO / ".venv" / "bin" / "kubectl-sigops")
SINCE, UNTIL = "2026-11-30T09:00:00Z", "2026-11-30T13:00:00Z"


def plugin(cluster: Any, *args: str, kubeconfig: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {})}
    out = subprocess.run([PLUGIN, *args], env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def publish_pubkeys(kube: Kube, ns: str, key: Key) -> None:
    kube.write_config_map(ns, "sigops-signal-pubkeys",
                          {"pubkeys.json": json.dumps(pubkeys_document([key]))}, None)


def complete_job(api: Any, ns: str, name: str, shards: int) -> None:
    """Mark the Job complete as the job controller does once every index succeeded."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cond = {"status": "True", "lastProbeTime": now, "lastTransitionTime": now}
    client.BatchV1Api(api).patch_namespaced_job_status(name, ns, {"status": {
        "startTime": now, "completionTime": now, "succeeded": shards, "active": 0,
        "completedIndexes": f"0-{shards - 1}", "failedIndexes": "", "ready": 0,
        "terminating": 0, "uncountedTerminatedPods": {},
        "conditions": [{**cond, "type": "SuccessCriteriaMet", "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods"},
                       {**cond, "type": "Complete", "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods"}]}})


def test_the_plugin_creates_follows_verifies_and_reports_an_audit(
        cluster: Any, api: Any, namespace: str, tmp_path: Path) -> None:
    kube = Kube.connect(str(cluster.kubeconfig))
    operator_key = generate_key(ED25519, "sigops-op-test", state="active")
    publish_pubkeys(kube, namespace, operator_key)
    settings, history = leak_drill(namespace, tmp_path)
    report = tmp_path / "report"
    follower = subprocess.Popen(
        [PLUGIN, "-n", namespace, "audit", "leak", "--key-id", "leaked",
         "--accepted-invalid", "--since", SINCE, "--until", UNTIL, "--shards", "2",
         "--parallelism", "2", "--timeout", "3m", "--report", str(report),
         "--operator-namespace", namespace],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        obj = wait_for(lambda: kube.get_cr(namespace, "signatureaudits", "leak"), 60,
                       what="the audit the plugin creates")
        assert obj["spec"] == {"target": {"deployment": "fractal-lba-backend"},
                               "lookFor": {"keyIds": ["leaked"], "acceptedInvalid": True},
                               "shards": 2, "parallelism": 2, "since": SINCE,
                               "until": UNTIL}
        rec = AuditReconciler(kube, settings, Signer(operator_key))
        assert rec.tick(obj) == "Running"
        name = (kube.get_cr(namespace, "signatureaudits", "leak") or {})["status"]["job"][
            "name"]
        kc = sa_kubeconfig(cluster, namespace, name, tmp_path / "kc")
        key = tmp_path / "key.json"
        key.write_text(secret_strings(kube.read_secret(namespace, name))["key.json"])
        args = (kube.read_job(namespace, name) or {})["spec"]["template"]["spec"][
            "containers"][0]["args"]
        args = [{"/etc/sigops/history/keyring.json": str(history),
                 "/etc/sigops/audit-key/key.json": str(key),
                 "/wal": str(tmp_path / "wal")}.get(a, a) for a in args]
        for i in range(2):
            r = subprocess.run([str(REPO / ".venv" / "bin" / "sigops"), *args,
                                "--index", str(i)], env={**cluster.env, "KUBECONFIG": str(kc)},
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
        assert rec.tick(kube.get_cr(namespace, "signatureaudits", "leak") or {}) == "Running"
        complete_job(api, namespace, name, 2)
        assert rec.tick(kube.get_cr(namespace, "signatureaudits", "leak") or {}) == \
            "Succeeded"
        out, err = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert "Traceback" not in err, err
    assert follower.returncode == 1, out + err  # findings
    st = (kube.get_cr(namespace, "signatureaudits", "leak") or {})["status"]
    assert "sau/leak created" in out
    assert "sau/leak: Running: 2/2 indexes done, 11 records, 14 findings" in out, out
    assert "signed summary verifies (operator key sigops-op-test" in out, out
    assert "sau/leak: 14 finding(s) in 11 records" in out
    md = (report / "audit-leak.md").read_text()
    totals = st["totals"]
    assert f"{totals['total']:,} records: {totals['valid']:,} valid, " \
           f"{totals['invalid']:,} invalid; {st['findingsCount']:,} finding(s)." in md
    for verdict, n in totals["by_verdict"].items():
        assert f"| `{verdict}` | {n:,} |" in md
    for fname, f in st["findings"].items():
        assert f"### {fname.replace('_', chr(92) + '_')}: {f['count']:,}" in md
    for row in st["progress"]["indexes"]:
        assert row["digest"] in md
    assert "`sigops-op-test`" in md
    rows = list(csv.DictReader((report / "audit-leak-findings.csv").open(newline="")))
    assert len(rows) == sum(len(f["first"]) for f in st["findings"].values())
    assert {r["received"][:10] for r in rows} == {"2026-11-30"}
    # Following it again, or a rerun with the same spec, gives the same answer.
    again = plugin(cluster, "-n", namespace, "audit", "leak", "--key-id", "leaked",
                   "--accepted-invalid", "--since", SINCE, "--until", UNTIL, "--shards", "2",
                   "--parallelism", "2", "--operator-namespace", namespace)
    assert again.returncode == 1 and "exists with the same spec" in again.stdout, again
    assert "14 finding(s) in 11 records" in again.stdout
    # Another spec under that name: refused, nothing changed.
    before = kube.get_cr(namespace, "signatureaudits", "leak") or {}
    other = plugin(cluster, "-n", namespace, "audit", "leak", "--all", "--since", SINCE,
                   "--until", UNTIL, "--operator-namespace", namespace)
    assert other.returncode == 2 and "exists in" in other.stderr and \
        "another spec" in other.stderr, other
    after = kube.get_cr(namespace, "signatureaudits", "leak") or {}
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    # The report again, from the verb that writes reports; and verify.
    rep = plugin(cluster, "report", "sau/leak", "-n", namespace, "-o", str(tmp_path / "r2"),
                 "--operator-namespace", namespace)
    assert rep.returncode == 1 and (tmp_path / "r2" / "audit-leak.md").exists(), rep
    ver = plugin(cluster, "verify", "sau/leak", "-n", namespace,
                 "--operator-namespace", namespace)
    assert ver.returncode == 0 and "sau/leak: valid" in ver.stdout, ver
    # A status someone rewrote is refused, never reported.
    forged = dict(st)
    forged["totals"] = {**st["totals"], "total": 10}
    kube.patch_status(namespace, "signatureaudits", "leak", forged)
    rep = plugin(cluster, "report", "sau/leak", "-n", namespace, "-o", str(tmp_path / "r3"),
                 "--operator-namespace", namespace)
    assert rep.returncode == 2 and "not trusted" in rep.stderr, rep
    assert not (tmp_path / "r3" / "audit-leak.md").exists()


def test_a_namespace_user_creates_audits_only_where_her_rbac_lets_her(
        cluster: Any, api: Any, namespace: str, tmp_path: Path) -> None:
    other = f"{namespace}-x"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        kc, user = service_account_user(api, cluster, namespace, "alice",
                                        tmp_path / "alice.kc")
        grant_user(api, namespace, user, "alice-audits", [client.V1PolicyRule(
            api_groups=[GROUP], resources=["signatureaudits"],
            verbs=["create", "get", "list", "watch"])])

        def can(ns: str) -> str:
            return kubectl(cluster, "auth", "can-i", "--as", user, "-n", ns, "create",
                           "signatureaudits.sigops.fractal-lba.io", check=False).stdout.strip()

        wait_for(lambda: can(namespace) == "yes", 30, what="her Role in effect")
        assert can(other) == "no"
        window = ("--since", SINCE, "--until", UNTIL)
        theirs = plugin(cluster, "-n", other, "audit", "--all", *window, "--no-wait",
                        kubeconfig=kc)
        assert theirs.returncode == 2, theirs
        assert f"you may not create SignatureAudits in namespace {other}" in theirs.stderr
        assert not client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, "v1alpha1", other, "signatureaudits")["items"]
        mine = plugin(cluster, "audit", "--all", *window, "--no-wait", kubeconfig=kc)
        assert mine.returncode == 0, mine
        made = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, "v1alpha1", namespace, "signatureaudits")["items"]
        assert len(made) == 1 and made[0]["metadata"]["name"].startswith(
            "fractal-lba-backend-audit-")
        assert f"kubectl sigops audit --follow {made[0]['metadata']['name']}" in mine.stdout
    finally:
        core.delete_namespace(other)
