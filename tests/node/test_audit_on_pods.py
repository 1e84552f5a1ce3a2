"""A SignatureAudit on the node (issue 27): the leaked-key drill, as an SRE runs it.

Two backend pods keep their inbox WALs on a volume (one directory per pod, so the WALs
outlive the pods, as an archive does), and the target's ``walClaim`` names it. Good traffic
is signed with the current key; an overlap key is used a little before time T, at which it
is found leaked, and PCS signed with it are injected after T through the backend's Service
(so both pods take some). Then the key is revoked (``kubectl sigops revoke``: the pods roll
and drop it) and the audit asks for every record signed with it since T.

What must hold: the audit finds exactly the injected records (none of the key's records
before T, none of the good ones); its totals equal a single-process ``sigops verify`` of the
same WAL files with the same key history, verdict by verdict and key by key; an index killed
while it runs is retried alone (the other index ran once) and the answer is the same; after
the Job's TTL the Job, its ServiceAccount, Role, RoleBinding, key Secret and result
ConfigMaps are gone.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import CoreV1Api

from devtools.cluster import free_port
from devtools.flk import BACKEND, Flk
from sigops.audit.job import job_name, result_config_map
from sigops.backend.deployment import Backend
from sigops.backend.keyring import ManagedRing, keyring_secret_name
from sigops.core.audit import closed_times, history_ring, shard_of
from sigops.core.keys import HMAC, generate_key, keyring_from_dict
from sigops.core.pcs import sign_pcs
from sigops.core.timeparse import format_time
from sigops.kube.api import Kube
from sigops.testbed.manifests import WAL_DIR
from sigops.testbed.pcsgen import make_pcs
from sigops.testbed.upstream import InboxWal
from tests.node.support import flk_in
from tests.support import REPO, wait_for

pytestmark = pytest.mark.node

NS = "node-audit"
CLAIM, PV = "flk-wal", f"{NS}-wal"
VENV = REPO / ".venv" / "bin"
ARCHIVE = 40_000
"""Records of an archived WAL (written before the drill, like a rotated-out pod's file): they
give the index that reads it enough to do that it is still running when it is killed."""


@pytest.fixture
def wal_root(tmp_path: Path) -> Path:
    root = tmp_path / "wal-volume"
    root.mkdir()
    root.chmod(0o777)  # the backend pods (uid 65532) make their own directories in it
    return root


@pytest.fixture
def flk(node: object, tmp_path: Path) -> Iterator[Flk]:
    for f in flk_in(node, tmp_path / "flk", NS):
        yield f
        f.kubectl("delete", "pv", PV, "--ignore-not-found", "--wait=false", check=False)


def volume(flk: Flk, root: Path) -> None:
    """A hostPath PersistentVolume bound to claim ``CLAIM`` of the namespace (one node)."""
    flk.kubectl("delete", "pv", PV, "--ignore-not-found", "--wait=true")  # an earlier run's
    flk.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": PV},
               "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                        "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                        "hostPath": {"path": str(root), "type": "Directory"},
                        "claimRef": {"namespace": NS, "name": CLAIM}}})
    flk.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": CLAIM},
               "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                        "volumeName": PV, "resources": {"requests": {"storage": "1Gi"}}}})
    flk.wait(lambda: flk.get("pvc", "-n", NS, CLAIM).get("status", {}).get("phase") == "Bound",
             60, "the WAL claim bound")


def post(url: str, body: dict[str, Any]) -> int:
    req = urllib.request.Request(f"{url}/v1/pcs/submit", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def send(url: str, key: Any, n: int, rng: random.Random, shard: str) -> list[str]:
    """``n`` fresh PCS signed with ``key``, each on a new connection (the Service spreads
    them over the pods); all must be accepted. Their pcs_ids."""
    ids = []
    for i in range(n):
        pcs = sign_pcs(make_pcs(rng, shard, epoch=i, sent_at=datetime.now(UTC), seq=i), key)
        assert post(url, pcs) == 200, f"{shard} record {i} was not accepted"
        ids.append(pcs["pcs_id"])
    return ids


def archive(root: Path, key: Any, n: int, start: datetime, rng: random.Random) -> Path:
    """An archived WAL of ``n`` good records received from ``start`` on, written as the
    backend writes its WAL."""
    wal = InboxWal(root / "archive")
    at = int(start.timestamp() * 1e9)
    for i in range(n):
        pcs = sign_pcs(make_pcs(rng, "archived", epoch=i, sent_at=start, seq=i), key)
        wal.append(json.dumps(pcs).encode(), at + i * 1000)
    (path,) = (root / "archive").iterdir()
    return path


def roll_done(flk: Flk) -> None:
    """The Deployment rolled and its old pods are gone (a terminating pod still answers
    through the Service until kube-proxy drops it): what was sent next met the new pods."""
    flk.kubectl("rollout", "status", "-n", NS, f"deployment/{BACKEND}", "--timeout=180s")
    flk.wait(lambda: len(flk.get("pods", "-n", NS, "-l", f"app={BACKEND}")["items"]) == 2, 120,
             "the old backend pods gone")
    time.sleep(2)  # kube-proxy's next sync


def wal_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("inbox-*.wal*") if p.is_file())


def index_process(core: Any, job: str, index: int) -> int | None:
    """The host PID of the audit process of index ``index`` (containers are plain processes
    of this machine, in the cgroup of their pod), if one runs now."""
    pods = core.list_namespaced_pod(NS, label_selector=(
        f"job-name={job},batch.kubernetes.io/job-completion-index={index}")).items
    uids = [p.metadata.uid for p in pods if p.status.phase in ("Pending", "Running")]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                cgroup = f.read()
            if not any(f"pod{u}" in cgroup for u in uids):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"\0shard\0" in f.read():
                    return int(pid)
        except OSError:
            continue
    return None


def managed_ring(flk: Flk, node_api: object, primary: Any, *more: Any) -> None:
    """The backend's keys in sigops' managed ring (the key history an audit mounts); the
    pods roll onto it."""
    ring = ManagedRing(primary=primary.kid, accepts=[k.kid for k in (primary, *more)])
    for k in (primary, *more):
        ring.entries.append({**k.to_entry(), "state": "active",
                             "created_at": format_time(datetime.now(UTC))})
    Backend(Kube(node_api), NS, BACKEND).apply(ring, HMAC, None)
    roll_done(flk)


def audit_phase(flk: Flk, name: str) -> dict[str, Any] | None:
    st = flk.get("sau", "-n", NS, name).get("status") or {}
    return st if st.get("phase") in ("Succeeded", "Failed", "Refused") else None


def test_leaked_key_drill(node: object, node_api: object, flk: Flk, wal_root: Path,
                          tmp_path: Path) -> None:
    rng = random.Random(27)
    good, leaked = generate_key(HMAC, kid="k-current"), generate_key(HMAC, kid="k-leaked")
    flk.namespace()
    volume(flk, wal_root)
    flk.install(free_port(),
                targets=[{"namespace": NS, "deployment": BACKEND, "default": True,
                          "walClaim": CLAIM}],
                audit={"enabled": True, "ttlAfterFinished": "20s", "firstN": 100,
                       "maxParallelism": 2, "cpu": "500m"})
    url = flk.backend(good, upstream=True, wal_claim=CLAIM)
    # The backend accepts both keys from sigops' managed ring (as scenario A's overlap leaves
    # it), and the pods roll onto it.
    managed_ring(flk, node_api, good, leaked)

    send(url, good, 30, rng, "good-early")
    before = send(url, leaked, 10, rng, "leaked-before-T")
    time.sleep(1.1)
    leak_time = datetime.now(UTC).replace(microsecond=0)
    archive(wal_root, good, ARCHIVE, leak_time + timedelta(milliseconds=500), rng)
    time.sleep(1.1)
    injected = send(url, leaked, 24, rng, "injected")
    send(url, good, 30, rng, "good-late")
    # Found leaked: revoked by a person, through the plugin; the pods roll and drop the key.
    r = subprocess.run([str(VENV / "kubectl-sigops"),
                        "revoke", leaked.kid, "--deployment", BACKEND, "-n", NS,
                        "--reason", "leak drill"], env=node.env,  # type: ignore[attr-defined]
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    roll_done(flk)
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(1.1)
    pods_dirs = [p for p in wal_root.iterdir() if p.name.startswith(BACKEND)]
    assert len(pods_dirs) >= 4  # two pods, rolled twice: every one left its WAL

    # The audit: two indexes at once; the one with the archive is killed while it runs.
    report = tmp_path / "report"
    follow = subprocess.Popen(
        [str(VENV / "kubectl-sigops"), "audit", "leak-drill", "-n", NS,
         "--deployment", BACKEND, "--key-id", leaked.kid, "--since", format_time(leak_time),
         "--until", format_time(until), "--shards", "2", "--parallelism", "2",
         "--timeout", "4m", "--report", str(report)],
        env=node.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # type: ignore[attr-defined]
        text=True)
    uid = wait_for(lambda: flk.kubectl("get", "sau", "-n", NS, "leak-drill",
                                       "--ignore-not-found", "-o", "jsonpath={.metadata.uid}"),
                   timeout=60, what="the audit created by kubectl sigops audit")
    job = job_name("leak-drill", uid)
    files = wal_files(wal_root)
    in_pod = [f"/wal/{p.relative_to(wal_root)}" for p in files]
    victim = next(i for i in (0, 1) if "/wal/archive/" in " ".join(shard_of(in_pod, 2, i)))
    core = CoreV1Api(node_api)
    deadline = time.monotonic() + 120
    while (pid := index_process(core, job, victim)) is None:
        assert time.monotonic() < deadline, "no audit process of the index ran"
        assert audit_phase(flk, "leak-drill") is None, flk.get("sau", "-n", NS, "leak-drill")
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    out, err = follow.communicate(timeout=300)
    status = audit_phase(flk, "leak-drill")
    assert status is not None and status["phase"] == "Succeeded", (status, out, err)
    # The plugin followed it (a line per index done), trusted its signed summary, and says
    # there are findings (exit 1).
    assert follow.returncode == 1, out + err
    assert "2/2 indexes done" in out and "signed summary verifies" in out + err, out + err

    # Exactly the injected records: not the key's records before T, not the good ones.
    found = status["findings"]["searched_key"]
    assert found["count"] == len(injected)
    assert sorted(f["pcs_id"] for f in found["first"]) == sorted(injected)
    assert not set(before) & {f["pcs_id"] for f in found["first"]}
    with open(report / "audit-leak-drill-findings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["pcs_id"] for r in rows if r["finding"] == "searched_key") == \
        sorted(injected)
    assert all(i in (report / "audit-leak-drill.md").read_text() for i in injected)
    # They reached both pods (through the Service), and the audit read every file.
    pods_with = {Path(f["input"]).parent.name for f in found["first"]}
    assert len(pods_with) >= 2, pods_with

    # The totals are a single-process `sigops verify` of the same files, same history.
    secret = flk.get("secret", "-n", NS, keyring_secret_name(BACKEND))
    doc = json.loads(base64.b64decode(secret["data"]["keyring.json"]))
    assert closed_times(doc).keys() == {leaked.kid}
    hist = tmp_path / "history.json"
    hist.write_text(json.dumps(history_ring(keyring_from_dict(doc), closed_times(doc))
                               .to_dict()))
    v = subprocess.run([str(VENV / "sigops"), "verify",
                        "--keyring", str(hist), "--since", format_time(leak_time),
                        "--until", format_time(until), *map(str, files)],
                       capture_output=True, text=True, timeout=300)
    lines = [json.loads(x) for x in v.stdout.splitlines()]
    totals = status["totals"]
    assert totals["total"] == len(lines) > ARCHIVE
    assert totals["by_verdict"] == dict(Counter("valid" if x["valid"] else x["reason"]
                                                for x in lines))
    assert totals["by_kid"] == dict(Counter(x["kid"] or "-" for x in lines))

    # The killed index ran twice, the other once; the Job finished with no failed index.
    pods = flk.get("pods", "-n", NS, "-l", f"job-name={job}")["items"]
    runs = Counter(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
                   for p in pods)
    assert runs == {str(victim): 2, str(1 - victim): 1}, runs
    failed = [p for p in pods if p["status"].get("phase") == "Failed"]
    assert [p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
            for p in failed] == [str(victim)]

    # After the TTL: the Job and everything it owned are gone; the audit's answer stays.
    owned = [("job", job), ("serviceaccount", job), ("role", job), ("rolebinding", job),
             ("secret", job), *(("configmap", result_config_map(job, i)) for i in (0, 1))]

    def left() -> list[tuple[str, str]]:
        return [(kind, name) for kind, name in owned
                if flk.kubectl("get", kind, name, "-n", NS, "--ignore-not-found")]

    deadline = time.monotonic() + 180
    while left():
        assert time.monotonic() < deadline, f"still there after the Job's TTL: {left()}"
        time.sleep(2)
    assert flk.get("sau", "-n", NS, "leak-drill")["status"]["phase"] == "Succeeded"



# Print each inbox WAL file of the pod's WAL directory, base64, one per line.
DUMP = ("import base64, glob, sys\n"
        "for f in sorted(glob.glob(sys.argv[1] + '/inbox-*.wal')):\n"
        "    print(base64.b64encode(open(f, 'rb').read()).decode())\n")


def test_an_audit_reads_each_pod_through_its_wal_reader(node: object, node_api: object,
                                                        flk: Flk, tmp_path: Path) -> None:
    """``walSource: sidecar``: no volume, the pods' WALs in their emptyDirs; one index per
    pod reads its window through the pod's WAL reader sidecar with the mounted token. A full
    re-verification finds exactly the records signed with an unknown key, and its totals equal
    a single-process verify of the pods' WAL files (copied out with exec)."""
    rng = random.Random(28)
    good, stranger = generate_key(HMAC, kid="k-current"), generate_key(HMAC, kid="k-unknown")
    flk.namespace()
    flk.install(free_port(),
                targets=[{"namespace": NS, "deployment": BACKEND, "default": True,
                          "walSource": "sidecar"}],
                audit={"enabled": True, "ttlAfterFinished": "1h", "firstN": 100,
                       "maxParallelism": 2, "cpu": "500m"})
    url = flk.backend(good, upstream=True)
    managed_ring(flk, node_api, good)
    since = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.1)
    send(url, good, 40, rng, "good")
    forged = []
    for i in range(12):  # refused by the backend (401), yet in its WAL
        pcs = sign_pcs(make_pcs(rng, "forged", epoch=i, sent_at=datetime.now(UTC), seq=i),
                       stranger)
        assert post(url, pcs) == 401
        forged.append(pcs["pcs_id"])
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    time.sleep(2.1)

    r = subprocess.run(
        [str(VENV / "kubectl-sigops"), "audit", "sidecar-audit", "-n", NS,
         "--deployment", BACKEND, "--all", "--since", format_time(since),
         "--until", format_time(until), "--timeout", "4m", "--report", str(tmp_path / "r")],
        env=node.env, capture_output=True, text=True, timeout=300)  # type: ignore[attr-defined]
    status = audit_phase(flk, "sidecar-audit")
    assert status is not None and status["phase"] == "Succeeded", (status, r.stdout, r.stderr)
    assert r.returncode == 1, r.stdout + r.stderr  # findings
    assert status["progress"]["summary"] == "2/2"  # one index per pod
    found = status["findings"]["invalid"]
    assert found["count"] == len(forged)
    assert sorted(f["pcs_id"] for f in found["first"]) == sorted(forged)

    # The same files, read out of the pods, verified in one process with the same ring.
    files = []
    pods = flk.get("pods", "-n", NS, "-l", f"app={BACKEND}")["items"]
    assert len(pods) == 2
    for p in pods:
        name = p["metadata"]["name"]
        out = flk.kubectl("exec", "-n", NS, name, "-c", "backend", "--", "python3", "-c",
                          DUMP, WAL_DIR)
        for i, line in enumerate(out.split()):
            f = tmp_path / f"{name}-{i}.wal"
            f.write_bytes(base64.b64decode(line))
            files.append(f)
    secret = flk.get("secret", "-n", NS, keyring_secret_name(BACKEND))
    doc = json.loads(base64.b64decode(secret["data"]["keyring.json"]))
    hist = tmp_path / "history.json"
    hist.write_text(json.dumps(history_ring(keyring_from_dict(doc), closed_times(doc))
                               .to_dict()))
    v = subprocess.run([str(VENV / "sigops"), "verify", "--keyring", str(hist),
                        "--since", format_time(since), "--until", format_time(until),
                        *map(str, files)], capture_output=True, text=True, timeout=300)
    lines = [json.loads(x) for x in v.stdout.splitlines()]
    totals = status["totals"]
    assert totals["total"] == len(lines) == 40 + len(forged)
    assert totals["by_verdict"] == dict(Counter("valid" if x["valid"] else x["reason"]
                                                for x in lines))
