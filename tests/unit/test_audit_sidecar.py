"""The fleet audit reads backend pods through their WAL reader sidecars (issue 27,
``walSource: sidecar``): the Job (one index per pod of the Deployment's own ReplicaSets, the
pods list in a ConfigMap, the token mounted, never in args), the page reader (retries,
failures), and end to end on this machine: ``sigops wal serve`` on a directory of WAL files
and ``sigops audit shard --pods`` against it give the totals of ``sigops audit shard`` over
the same files, record for record."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_audit_job import META, SPEC
from test_audit_shard import AUDIT_KEY, RING, T0, pod_wal
from tests.memkube import MemoryKube

from sigops import cli
from sigops.audit.job import (
    WAL_TOKEN_PATH,
    AuditRefused,
    job_manifest,
    owned_manifests,
    plan_job,
    pods_config_map,
    result_config_map,
    with_pods,
)
from sigops.audit.partial import verify_partial
from sigops.audit.sidecar import (
    WalPod,
    WalReadError,
    parse_pods,
    pods_digest,
    pods_json,
    read_pages,
    wal_pods,
)
from sigops.core.audit import AuditQuery, ShardInput, audit_shard, history_ring
from sigops.settings import Settings

pytestmark = pytest.mark.unit

TOKEN = "audit-wal-token-0123456789abcdef"
SIDECAR = Settings.model_validate({
    "targets": [{"namespace": "fractal-lba", "walSource": "sidecar", "profile": "go",
                 "requestNamespaces": ["sre"]}],
    "audit": {"maxParallelism": 3, "maxShards": 4, "image": "sigops:0.test"},
})
PODS = [WalPod("backend-rs-a", "10.1.0.4", 8079), WalPod("backend-rs-b", "10.1.0.5", 8079)]
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def plan(spec: dict[str, Any] | None = None) -> Any:
    spec = SPEC if spec is None else spec
    target = SIDECAR.resolve_target(META["namespace"], spec.get("target"), "SignatureAudit")
    return plan_job(META, spec, target, SIDECAR.audit, "sigops-keyring-fractal-lba-backend")


def test_one_index_per_pod_the_pods_in_a_config_map_and_the_token_mounted_never_an_arg(
        ) -> None:
    p = plan()
    assert p.shards == 5  # as asked, until the pods are known
    with pytest.raises(ValueError, match="with_pods"):
        job_manifest(p)
    p = with_pods(p, PODS, NOW)
    assert p.shards == 2 and p.parallelism == 2  # spec.shards 5 is replaced by the pods
    assert p.until == "2026-12-07T12:00:00Z"  # the launch ends the window of every index
    job = job_manifest(p)
    assert job["spec"]["completions"] == 2
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert "wal" not in vols  # no claim
    assert vols["pods"]["configMap"] == {"name": pods_config_map(p.name),
                                         "items": [{"key": "pods.json", "path": "pods.json"}]}
    assert vols["wal-token"]["secret"] == {"secretName": "sigops-wal-token",
                                           "items": [{"key": "token", "path": "token"}]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert all(m["readOnly"] for m in mounts.values())
    assert WAL_TOKEN_PATH.startswith(mounts["wal-token"]["mountPath"] + "/")
    args = c["args"]
    assert "--dir" not in args and "--shards-of" not in args
    assert args[args.index("--wal-token-file") + 1] == WAL_TOKEN_PATH
    assert args[args.index("--until") + 1] == "2026-12-07T12:00:00Z"
    assert not any(TOKEN in a for a in args) and "env" not in c
    parsed = cli.build_parser().parse_args(args)
    assert parsed.pods == "/etc/sigops/pods/pods.json" and parsed.publish_configmap
    objs = owned_manifests(p, "job-uid-1", json.dumps(AUDIT_KEY.to_entry()))
    cms = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    assert parse_pods(cms[pods_config_map(p.name)]["data"]["pods.json"]) == PODS
    # The pod template (which cannot change) carries the list's digest.
    assert args[args.index("--pods-sha256") + 1] == pods_digest(
        cms[pods_config_map(p.name)]["data"]["pods.json"])
    assert cms[pods_config_map(p.name)]["metadata"]["ownerReferences"][0]["uid"] == "job-uid-1"
    # The Role is what it was: its own result ConfigMaps only (no pods, no Secrets).
    (rule,) = next(o for o in objs if o["kind"] == "Role")["rules"]
    assert rule["resourceNames"] == [result_config_map(p.name, i) for i in range(2)]
    assert rule["verbs"] == ["get", "update"]


def test_no_pods_or_more_pods_than_the_limit_is_refused_and_spec_until_is_kept() -> None:
    with pytest.raises(AuditRefused) as e:
        with_pods(plan(), [], NOW)
    assert e.value.reason == "NoPodsToRead"
    many = [WalPod(f"p-{i}", f"10.0.0.{i}", 8079) for i in range(5)]
    with pytest.raises(AuditRefused) as e:
        with_pods(plan(), many, NOW)
    assert e.value.reason == "TooManyShards"
    assert with_pods(plan({**SPEC, "since": "2026-12-06T20:00:00Z",
                           "until": "2026-12-07T01:00:00Z"}), PODS,
                     NOW).until == "2026-12-07T01:00:00Z"
    with pytest.raises(ValueError, match="set one of them"):
        Settings.model_validate({"targets": [{"walSource": "sidecar", "walClaim": "w"}]})
    assert Settings.model_validate({"targets": [{}]}).targets[0].wal_source == "volume"


def backend_pod(name: str, rs: str, ip: str, ready: bool = True, wal_port: bool = True
                ) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": 8080}]
    containers = [{"name": "backend", "ports": ports}]
    if wal_port:
        containers.append({"name": "wal-reader",
                           "ports": [{"name": "flk-wal", "containerPort": 8079}]})
    return {"metadata": {"name": name, "labels": {"app": "fractal-lba-backend"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": rs,
                                              "controller": True}]},
            "spec": {"containers": containers},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def test_only_the_deployments_own_ready_pods_are_read() -> None:
    kube = MemoryKube()
    kube.add_deployment("fractal-lba", {
        "metadata": {"name": "fractal-lba-backend"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "fractal-lba-backend"}},
                 "template": {"metadata": {"labels": {"app": "fractal-lba-backend"}},
                              "spec": {"containers": [{"name": "backend"}]}}}})
    own = "fractal-lba-backend-rs"
    kube.pods["fractal-lba"] = [
        backend_pod("be-b", own, "10.1.0.5"),
        backend_pod("be-a", own, "10.1.0.4"),
        backend_pod("be-c", own, "10.1.0.6", ready=False),
        backend_pod("impostor", "someone-elses-rs", "10.9.9.9"),  # matches the selector
    ]
    pods, not_ready, no_port = wal_pods(kube, "fractal-lba", "fractal-lba-backend")
    assert pods == [WalPod("be-a", "10.1.0.4", 8079), WalPod("be-b", "10.1.0.5", 8079)]
    assert (not_ready, no_port) == (1, 0)
    kube.pods["fractal-lba"].append(backend_pod("be-d", own, "10.1.0.7", wal_port=False))
    assert wal_pods(kube, "fractal-lba", "fractal-lba-backend")[2] == 1
    assert wal_pods(kube, "fractal-lba", "absent") == ([], 0, 0)


@pytest.mark.parametrize("text", ["{}", "[1]", '[{"name": "a", "ip": "not-an-ip", "port": 1}]',
                                  '[{"name": "a", "ip": "10.0.0.1", "port": 0}]',
                                  '[{"name": "../a", "ip": "10.0.0.1", "port": 80}]',
                                  '[{"name": "a", "ip": "10.0.0.1", "port": true}]', "nope"])
def test_a_pods_file_is_read_strictly(text: str) -> None:
    with pytest.raises(WalReadError):
        parse_pods(text)
    assert parse_pods(pods_json(PODS)) == PODS


# -- the page reader against a live sidecar ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def sidecar(tmp_path: Path) -> Any:
    """``sigops wal serve`` on a directory of two pods' worth of WAL in two day files (every
    kind of bad record, damaged entries included), with a token; yields (url port, WAL dir,
    token file)."""
    wal = tmp_path / "wal"
    wal.mkdir()
    (wal / "inbox-20250119.wal").write_bytes(pod_wal(10_000)[0])
    (wal / "inbox-20250120.wal").write_bytes(pod_wal(20_000)[0].replace(
        b"2025-01-19T", b"2025-01-20T"))
    tok = tmp_path / "wal-token"
    tok.write_text(TOKEN + "\n")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sigops.cli", "wal", "serve", "--dir", str(wal), "--listen",
         f"127.0.0.1:{port}", "--token-file", str(tok), "--max-window", "1000000h",
         "--max-bytes", "65536"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        yield port, wal, tok
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert TOKEN not in err


def test_the_index_reads_its_pod_page_by_page_and_audits_it_as_the_files(
        sidecar: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, wal, tok = sidecar
    since, until = T0 - timedelta(hours=1), T0 + timedelta(days=2)
    pods = tmp_path / "pods.json"
    pods.write_text(pods_json([WalPod("other", "127.0.0.9", 1),
                               WalPod("backend-rs-a", "127.0.0.1", port)]))
    kr = tmp_path / "history.json"
    kr.write_text(json.dumps(RING.to_dict()))
    key = tmp_path / "key.json"
    key.write_text(json.dumps(AUDIT_KEY.to_entry()))
    common = ["audit", "shard", "--keyring", str(kr), "--key", str(key), "--all",
              "--accepted-invalid", "--first", "1000", "--since", since.isoformat(),
              "--until", until.isoformat(), "--audit", "sre/drill"]
    public = {AUDIT_KEY.kid: AUDIT_KEY.public or b""}
    assert cli.main([*common, "--pods", str(pods), "--index", "1", "--wal-token-file",
                     str(tok), "--page-bytes", "3000", "--wal-window", "1000000h"]) == 1
    out = capsys.readouterr()
    paged = verify_partial(json.loads(out.out), public, "sre/drill", 1)
    assert TOKEN not in out.out + out.err and "backend-rs-a's window" in out.err
    files = sorted(str(p) for p in wal.iterdir())
    assert cli.main([*common, *files]) == 1
    direct = verify_partial(json.loads(capsys.readouterr().out), public, "sre/drill", 0)
    # many pages, each read once, one input: the pod
    assert int(out.err.split("window (")[1].split(" page")[0]) > 10
    assert [i["name"] for i in paged["inputs"]] == ["backend-rs-a"]
    for k in ("total", "valid", "invalid", "by_verdict", "by_kid", "by_profile", "by_shard"):
        assert paged[k] == direct[k], k
    assert paged["by_verdict"]["malformed"] == 4  # the damaged entries and the bad bodies
    # record for record: every finding names the same records, numbered alike

    def records(r: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        # every field but the input's name (a page of a pod, or a file)
        return {n: [{k: v for k, v in x.items() if k != "input"} for x in f["first"]]
                for n, f in r["findings"].items()}

    assert records(paged) == records(direct)
    assert {n: f["count"] for n, f in paged["findings"].items()} == {
        n: f["count"] for n, f in direct["findings"].items()}
    # the same, in process: the pages are ShardInputs audit_shard takes one at a time
    ring = history_ring(RING)
    query = AuditQuery(all=True, since=since, until=until)
    stats: dict[str, int] = {}
    pages = read_pages(WalPod("a", "127.0.0.1", port), TOKEN.encode(), since, until,
                       page_bytes=5000, stats=stats)
    one = audit_shard(ring, pages, query)
    whole = audit_shard(ring, [ShardInput(f, Path(f).read_bytes()) for f in files], query)
    assert one["total"] == whole["total"] and one["by_verdict"] == whole["by_verdict"]
    assert stats["damaged"] == 2 and stats["pages"] >= 8


def test_a_wrong_token_or_a_dead_pod_fails_the_index(sidecar: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    port, _, _ = sidecar
    since, until = T0 - timedelta(hours=1), T0 + timedelta(days=2)
    with pytest.raises(WalReadError, match="HTTP 401"):
        list(read_pages(WalPod("a", "127.0.0.1", port), b"wrong", since, until))
    with pytest.raises(WalReadError, match="cannot read its WAL sidecar"):
        list(read_pages(WalPod("a", "127.0.0.1", free_port()), TOKEN.encode(), since, until))
    with pytest.raises(WalReadError, match="HTTP 422"):  # a page too small for a stub
        list(read_pages(WalPod("a", "127.0.0.1", port), TOKEN.encode(), since, until,
                        page_bytes=50))
    # in the verb: exit 3, nothing published, the token never printed
    pods = tmp_path / "pods.json"
    pods.write_text(pods_json([WalPod("a", "127.0.0.1", port)]))
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token\n")
    kr = tmp_path / "history.json"
    kr.write_text(json.dumps(RING.to_dict()))
    key = tmp_path / "key.json"
    key.write_text(json.dumps(AUDIT_KEY.to_entry()))
    rc = cli.main(["audit", "shard", "--keyring", str(kr), "--key", str(key), "--all",
                   "--pods", str(pods), "--wal-token-file", str(bad), "--wal-window",
                   "1000000h", "--since", since.isoformat(), "--until", until.isoformat()])
    out = capsys.readouterr()
    assert rc == 3 and "HTTP 401" in out.err and not out.out
    assert "not-the-token" not in out.err


def test_a_pods_list_changed_after_launch_gets_no_token(sidecar: Any, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """Whoever may write ConfigMaps in the namespace may rewrite the pods list: an index sends
    its token only to the pods of the list whose digest its Job's arguments carry."""
    port, _, _ = sidecar
    planned = pods_json([WalPod("a", "10.244.0.9", 8079)])
    pods = tmp_path / "pods.json"
    pods.write_text(pods_json([WalPod("a", "127.0.0.1", port)]))  # points elsewhere
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    kr = tmp_path / "history.json"
    kr.write_text(json.dumps(RING.to_dict()))
    key = tmp_path / "key.json"
    key.write_text(json.dumps(AUDIT_KEY.to_entry()))
    since, until = T0 - timedelta(hours=1), T0 + timedelta(days=2)
    common = ["audit", "shard", "--keyring", str(kr), "--key", str(key), "--all",
              "--pods", str(pods), "--wal-token-file", str(tok), "--wal-window", "1000000h",
              "--since", since.isoformat(), "--until", until.isoformat()]
    rc = cli.main([*common, "--pods-sha256", pods_digest(planned)])
    out = capsys.readouterr()
    assert rc == 2 and "someone changed it" in out.err and not out.out
    # The same list with its own digest reads (the sidecar answers the token).
    rc = cli.main([*common, "--pods-sha256", pods_digest(pods.read_text())])
    assert rc in (0, 1) and capsys.readouterr().out


class _Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.status, self.headers, self.body = status, headers, body


def test_busy_answers_wait_retry_after_and_are_retried_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import email.message
    import io
    import urllib.error

    answers: list[_Answer] = []
    asked: list[str] = []

    def fake_open(req: urllib.request.Request, timeout: float) -> Any:
        asked.append(req.full_url)
        assert req.get_header("Authorization") == f"Bearer {TOKEN}"
        a = answers.pop(0)
        msg = email.message.Message()
        for k, v in a.headers.items():
            msg[k] = v
        if a.status != 200:
            raise urllib.error.HTTPError(req.full_url, a.status, "x", msg, io.BytesIO(a.body))
        msg["Content-Length"] = str(len(a.body))

        class R(io.BytesIO):
            headers = msg

        return R(a.body)

    from sigops.audit import sidecar as reader

    monkeypatch.setattr(reader._OPENER, "open", fake_open)
    slept: list[float] = []
    pod = WalPod("a", "10.0.0.1", 8079)
    since, until = T0, T0 + timedelta(hours=1)
    answers[:] = [_Answer(429, {"Retry-After": "2"}), _Answer(503, {"Retry-After": "999"}),
                  _Answer(200, {"X-WAL-Next-Cursor": "v1.20250119.10"}, b"page-1"),
                  _Answer(200, {"X-WAL-Complete": "true"}, b"page-2")]
    got = [p.data for p in read_pages(pod, TOKEN.encode(), since, until, sleep=slept.append,
                                      max_wait=30)]
    assert got == [b"page-1", b"page-2"] and slept == [2.0, 30.0]
    assert "cursor=v1.20250119.10" in asked[-1] and TOKEN not in asked[-1]
    answers[:] = [_Answer(503, {"Retry-After": "1"})] * 3
    with pytest.raises(WalReadError, match="HTTP 503.*after 3 attempts"):
        list(read_pages(pod, TOKEN.encode(), since, until, attempts=3, sleep=slept.append))
    answers[:] = [_Answer(400, {}, b'{"error": "cursor is not one of this window\'s"}')]
    with pytest.raises(WalReadError, match="HTTP 400: cursor is not"):
        list(read_pages(pod, TOKEN.encode(), since, until, sleep=slept.append))


def test_the_wal_port_admits_the_audit_jobs_pods_of_the_backends_namespace_only() -> None:
    """The NetworkPolicy of the WAL reader port (runbook and builder alike) admits the audit
    Job's pods by the labels the Job gives them, with no namespaceSelector: the backend's own
    namespace, where the Jobs run."""
    import yaml
    from tests.support import REPO

    from sigops.testbed.manifests import AUDIT_POD_LABELS, wal_reader_policy

    doc = yaml.safe_load((REPO / "runbooks" / "wal-reader-networkpolicy.yaml").read_text())
    assert doc == wal_reader_policy({"app": "fractal-lba-backend"})
    operator, audit = doc["spec"]["ingress"][0]["from"]
    assert "namespaceSelector" in operator
    assert audit == {"podSelector": {"matchLabels": AUDIT_POD_LABELS}}
    labels = job_manifest(with_pods(plan(), PODS, NOW))["spec"]["template"]["metadata"][
        "labels"]
    assert AUDIT_POD_LABELS.items() <= labels.items()


class _RawServer:
    """A socket server answering each connection with the next scripted raw HTTP answer
    (then closing it), and keeping the requests it got."""

    def __init__(self, answers: list[bytes]) -> None:
        import threading

        self.answers, self.requests = list(answers), []  # type: list[bytes]
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                req = b""
                while b"\r\n\r\n" not in req:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    req += chunk
                self.requests.append(req)
                conn.sendall(self.answers.pop(0))

    def close(self) -> None:
        self.sock.close()


def _raw(status: str, headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {status}\r\n{head}Connection: close\r\n\r\n".encode() + body


def test_a_page_cut_short_is_retried_and_a_page_without_its_length_is_refused() -> None:
    whole = _raw("200 OK", {"Content-Length": "6", "X-WAL-Complete": "true"}, b"page-1")
    cut = _raw("200 OK", {"Content-Length": "100", "X-WAL-Complete": "true"}, b"page-1")
    since, until = T0, T0 + timedelta(hours=1)
    srv = _RawServer([cut, whole])
    try:
        slept: list[float] = []
        got = [p.data for p in read_pages(WalPod("a", "127.0.0.1", srv.port), TOKEN.encode(),
                                          since, until, sleep=slept.append)]
        assert got == [b"page-1"] and len(srv.requests) == 2 and len(slept) == 1
    finally:
        srv.close()
    srv = _RawServer([cut] * 3)
    try:
        with pytest.raises(WalReadError, match="6 of its 100 bytes.*after 3 attempts"):
            list(read_pages(WalPod("a", "127.0.0.1", srv.port), TOKEN.encode(), since, until,
                            attempts=3, sleep=lambda _: None))
    finally:
        srv.close()
    srv = _RawServer([_raw("200 OK", {"X-WAL-Complete": "true"}, b"page-1")])
    try:
        with pytest.raises(WalReadError, match="no Content-Length"):
            list(read_pages(WalPod("a", "127.0.0.1", srv.port), TOKEN.encode(), since, until,
                            sleep=lambda _: None))
    finally:
        srv.close()


def test_a_redirect_is_an_error_and_the_token_goes_nowhere_else() -> None:
    elsewhere = _RawServer([_raw("200 OK", {"Content-Length": "0",
                                            "X-WAL-Complete": "true"}, b"")])
    srv = _RawServer([_raw("302 Found", {"Location": f"http://127.0.0.1:{elsewhere.port}/x",
                                         "Content-Length": "0"}, b"")] * 3)
    try:
        slept: list[float] = []
        with pytest.raises(WalReadError, match="HTTP 302"):
            list(read_pages(WalPod("a", "127.0.0.1", srv.port), TOKEN.encode(), T0,
                            T0 + timedelta(hours=1), sleep=slept.append))
        assert len(srv.requests) == 1 and not slept  # not retried
        time.sleep(0.2)
        assert elsewhere.requests == []
    finally:
        srv.close()
        elsewhere.close()


def _pages(wal: Path, since: datetime, until: datetime, page_bytes: int) -> list[ShardInput]:
    """The pages the sidecar serves of ``wal`` (in process), as an index gets them."""
    from sigops.runtime.walreader import WalDirectory

    wd, cursor, out = WalDirectory(wal, 1 << 20), None, []
    while True:
        page = wd.page(since, until, cursor, page_bytes)
        assert len(page.data) <= page_bytes
        if page.data:
            out.append(ShardInput(f"a@{cursor}", page.data))
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def test_an_entry_longer_than_the_page_is_served_as_one_malformed_record_as_the_files_judge_it(
        tmp_path: Path) -> None:
    from test_audit_shard import GOOD, at, entry, rec

    wal = tmp_path / "wal"
    wal.mkdir()
    data, _ = pod_wal(10_000)
    cut = data.index(b"\n2025-01-19T", len(data) // 2) + 1  # an entry boundary mid-file
    huge = rec(GOOD, 99_999, at(7), pad="x" * 6000)  # signed, valid, but above max_bytes
    assert b"|6" in huge[:60]
    (wal / "inbox-20250119.wal").write_bytes(data[:cut] + huge + data[cut:]
                                             + entry(at(16), b'{"late": 1}'))
    since, until = T0 - timedelta(hours=1), T0 + timedelta(days=1)
    ring = history_ring(RING)
    query = AuditQuery(all=True, accepted_invalid=True, since=since, until=until,
                       first_n=1000)
    direct = audit_shard(ring, [ShardInput("f", (wal / "inbox-20250119.wal").read_bytes())],
                         query, max_bytes=4000)
    paged = audit_shard(ring, _pages(wal, since, until, 3000), query, max_bytes=4000)
    for k in ("total", "valid", "invalid", "by_verdict", "by_kid", "by_profile", "by_shard"):
        assert paged[k] == direct[k], k
    without = audit_shard(ring, [ShardInput("f", data + entry(at(16), b'{"late": 1}'))],
                          query, max_bytes=4000)
    assert direct["by_verdict"]["malformed"] == without["by_verdict"]["malformed"] + 1
    assert direct["total"] == without["total"] + 1

    def records(r: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        return {n: [{k: v for k, v in x.items() if k != "input"} for x in f["first"]]
                for n, f in r["findings"].items()}

    assert records(paged) == records(direct)
    # the stub keeps the entry's time: outside the window, it is not served at all
    later = audit_shard(ring, _pages(wal, at(8), until, 3000), query, max_bytes=4000)
    assert later["total"] == audit_shard(
        ring, [ShardInput("f", (wal / "inbox-20250119.wal").read_bytes())],
        AuditQuery(all=True, since=at(8), until=until), max_bytes=4000)["total"]


def test_a_pod_is_one_input_whose_digest_does_not_depend_on_the_page_size(
        sidecar: Any) -> None:
    """The partial names each pod once, with one running SHA-256 over the bytes of all its
    pages: it does not grow with the pages, and a page size gives the same digests as
    another."""
    import hashlib

    port, _, _ = sidecar
    since, until = T0 - timedelta(hours=1), T0 + timedelta(days=2)
    ring = history_ring(RING)
    query = AuditQuery(all=True, since=since, until=until)
    results, served = [], []
    for page_bytes in (3000, 7001, 65536):
        pages = list(read_pages(WalPod("backend-rs-a", "127.0.0.1", port), TOKEN.encode(),
                                since, until, page_bytes=page_bytes))
        assert len(pages) > 1 or page_bytes == 65536
        served.append(b"".join(bytes(p.data) for p in pages))
        results.append(audit_shard(ring, iter(pages), query))
    assert served[0] == served[1] == served[2]
    for r in results:
        assert r["inputs"] == [{"name": "backend-rs-a", "bytes": len(served[0]),
                                "sha256": hashlib.sha256(served[0]).hexdigest()}]
        assert r["digest"] == results[0]["digest"]
        for k in ("total", "valid", "invalid", "by_verdict", "findings"):
            assert r[k] == results[0][k], k


def test_the_window_is_decided_once_at_launch_and_every_index_reads_it_as_given(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sigops.audit import sidecar as reader
    from sigops.cli.audit import _pod_source

    # spec.since older than the sidecars serve, no until: 10 minutes inside, to the launch
    p = with_pods(plan(), PODS, NOW)
    assert (p.since, p.until) == ("2026-12-06T12:10:00Z", "2026-12-07T12:00:00Z")
    args = job_manifest(p)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--since") + 1] == "2026-12-06T12:10:00Z"
    assert args[args.index("--until") + 1] == "2026-12-07T12:00:00Z"
    # an until after the launch is cut at the launch; one inside the window is kept
    p = with_pods(plan({**SPEC, "until": "2027-01-01T00:00:00Z"}), PODS, NOW)
    assert p.until == "2026-12-07T12:00:00Z"
    p = with_pods(plan({**SPEC, "since": "2026-12-07T01:00:00Z",
                        "until": "2026-12-07T02:00:00Z"}), PODS, NOW)
    assert (p.since, p.until) == ("2026-12-07T01:00:00Z", "2026-12-07T02:00:00Z")
    # a window wholly before what the sidecars serve: refused at launch
    with pytest.raises(AuditRefused) as e:
        with_pods(plan({**SPEC, "until": "2026-12-01T00:00:00Z"}), PODS, NOW)
    assert e.value.reason == "WindowNotServed"
    # an index reads the window of its args, however late it starts
    read: list[tuple[datetime, datetime]] = []
    monkeypatch.setattr(reader, "read_pages", lambda pod, token, since, until, **kw: (
        read.append((since, until)), iter(()))[1])
    pods = tmp_path / "pods.json"
    pods.write_text(pods_json(PODS))
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    launch = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)  # 30 min on
    p = with_pods(plan(), PODS, launch)
    args = cli.build_parser().parse_args([
        "audit", "shard", "--keyring", "k", "--key", "k", "--all", "--pods", str(pods),
        "--wal-token-file", str(tok), "--since", str(p.since), "--until", str(p.until)])
    query = AuditQuery(all=True, since=args.since, until=args.until)
    _, got, _, _ = _pod_source(args, query)
    assert read == [(args.since, args.until)] == [(got.since, got.until)]
    # not 10 minutes inside the index's own window: the launch's
    assert args.since == launch - timedelta(hours=24) + timedelta(minutes=10)



def test_no_proxy_of_the_environment_sees_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from sigops.audit import sidecar as reader

    proxy = _RawServer([_raw("200 OK", {"Content-Length": "0",
                                        "X-WAL-Complete": "true"}, b"")])
    pod = _RawServer([_raw("200 OK", {"Content-Length": "2", "X-WAL-Complete": "true"},
                           b"ok")])
    try:
        for name in ("http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(reader, "_OPENER", reader._build_opener())  # as built now
        got = [p.data for p in read_pages(WalPod("a", "127.0.0.1", pod.port), TOKEN.encode(),
                                          T0, T0 + timedelta(hours=1))]
        assert got == [b"ok"] and proxy.requests == [] and len(pod.requests) == 1
    finally:
        proxy.close()
        pod.close()
