"""The SignatureAudit's Indexed Job and its RBAC, built as pure manifests (issue 27)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_audit_shard import AUDIT_KEY, RING, history_ring, pod_wal

from sigops import cli
from sigops.audit.job import (
    AuditRefused,
    job_manifest,
    job_name,
    owned_manifests,
    plan_job,
    result_config_map,
)
from sigops.audit.partial import verify_partial
from sigops.core.audit import AuditQuery, ShardInput, audit_shard, merge_partials, shard_of
from sigops.settings import AuditSettings, Settings

pytestmark = pytest.mark.unit

SETTINGS = Settings.model_validate({
    "targets": [{"namespace": "fractal-lba", "walClaim": "backend-wal", "profile": "go",
                 "requestNamespaces": ["sre"]}],
    "audit": {"maxParallelism": 3, "maxShards": 8, "image": "sigops:0.test",
              "ttlAfterFinished": "30m", "activeDeadline": "2h"},
})
META = {"namespace": "sre", "name": "leak-drill", "uid": "0a1b2c3d-4e5f-6789-abcd-ef0123456789"}
SPEC: dict[str, Any] = {"target": {"namespace": "fractal-lba"}, "shards": 5, "parallelism": 10,
                        "since": "2026-11-30T10:00:00Z",
                        "lookFor": {"fingerprints": ["3f2a9c01b7de"], "acceptedInvalid": True}}


def plan(spec: dict[str, Any] | None = None, settings: Settings = SETTINGS) -> Any:
    spec = SPEC if spec is None else spec
    target = settings.resolve_target(META["namespace"], spec.get("target"), "SignatureAudit")
    return plan_job(META, spec, target, settings.audit, "sigops-keyring-fractal-lba-backend")


def test_the_job_is_indexed_bounded_retried_per_index_and_suspended() -> None:
    p = plan()
    job = job_manifest(p)
    spec = job["spec"]
    assert job["metadata"]["namespace"] == "fractal-lba"  # where the WAL volume lives
    assert job["metadata"]["name"] == "audit-leak-drill-0a1b2c3d" == p.name
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 5
    assert spec["parallelism"] == 3  # the spec asked for 10; the config allows 3
    assert spec["backoffLimitPerIndex"] == 2
    assert spec["activeDeadlineSeconds"] == 7200 and spec["ttlSecondsAfterFinished"] == 1800
    assert spec["suspend"] is True
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == p.name
    (c,) = pod["containers"]
    assert c["image"] == "sigops:0.test"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert all(m["readOnly"] for m in c["volumeMounts"])
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["wal"]["persistentVolumeClaim"] == {"claimName": "backend-wal",
                                                    "readOnly": True}
    assert vols["history"]["secret"]["secretName"] == "sigops-keyring-fractal-lba-backend"
    args = c["args"]
    assert args[:2] == ["audit", "shard"]
    assert args[args.index("--profile") + 1] == "go"  # the target's profile, from the config
    assert args[args.index("--shards-of") + 1] == "5"
    assert args[args.index("--audit") + 1] == "sre/leak-drill"
    assert "--accepted-invalid" in args and "--all" not in args
    assert args[args.index("--since") + 1] == "2026-11-30T10:00:00Z"
    # The args parse as the verb's own flags.
    parsed = cli.build_parser().parse_args(args)
    assert parsed.fingerprint == ["3f2a9c01b7de"] and parsed.publish_configmap == f"{p.name}-r"


def test_rbac_grants_only_its_own_result_config_maps_and_everything_is_owned_by_the_job(
        ) -> None:
    p = plan()
    objs = owned_manifests(p, "job-uid-1", json.dumps(AUDIT_KEY.to_entry()))
    kinds = [o["kind"] for o in objs]
    assert kinds[:4] == ["ServiceAccount", "Role", "RoleBinding", "Secret"]
    assert kinds[4:] == ["ConfigMap"] * 5
    for o in objs:
        assert o["metadata"]["namespace"] == "fractal-lba"
        (owner,) = o["metadata"]["ownerReferences"]
        assert owner["kind"] == "Job" and owner["uid"] == "job-uid-1"  # gone with its TTL
    (rule,) = objs[1]["rules"]
    assert rule == {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"],
                    "resourceNames": [result_config_map(p.name, i) for i in range(5)]}
    assert objs[2]["subjects"] == [{"kind": "ServiceAccount", "name": p.name,
                                    "namespace": "fractal-lba"}]
    assert [o["metadata"]["name"] for o in objs[4:]] == rule["resourceNames"]


@pytest.mark.parametrize(("change", "reason"), [
    ({"lookFor": {}}, "NothingToLookFor"),
    ({"shards": 9}, "TooManyShards"),
    ({"shards": 0}, "InvalidSpec"),
    ({"parallelism": True}, "InvalidSpec"),
    ({"lookFor": {"keyIds": "k1"}}, "InvalidSpec"),
])
def test_specs_the_operator_will_not_run_are_refused_with_a_reason(
        change: dict[str, Any], reason: str) -> None:
    with pytest.raises(AuditRefused) as e:
        plan({**SPEC, **change})
    assert e.value.reason == reason


def test_a_target_without_a_wal_volume_or_a_config_without_an_image_is_refused() -> None:
    bare = Settings.model_validate({"targets": [{"namespace": "sre"}],
                                    "audit": {"image": "sigops:0.test"}})
    with pytest.raises(AuditRefused) as e:
        plan({**SPEC, "target": {}}, bare)
    assert e.value.reason == "NoWalSource"
    no_image = Settings.model_validate({"targets": [{"namespace": "sre", "walClaim": "w"}]})
    with pytest.raises(AuditRefused) as e:
        plan({**SPEC, "target": {}}, no_image)
    assert e.value.reason == "NoImage"
    assert AuditSettings().max_parallelism == 4


def test_job_names_are_dns_labels_unique_per_object() -> None:
    long = job_name("x" * 80, META["uid"])
    assert len(long) <= 63 and long.endswith("-0a1b2c3d")
    assert job_name("a", "1" * 36) != job_name("a", "2" * 36)


def test_indexes_share_a_wal_tree_each_file_read_once_and_the_merge_is_one_verify(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """What the Job does, run here index by index: the totals of the merged partials equal
    one audit (and one `sigops verify`) of every file."""
    root = tmp_path / "wal"
    files = []
    for pod in range(3):
        for day in range(2):
            f = root / f"backend-{pod}" / f"inbox-2025011{day}.wal"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(pod_wal(100_000 * pod + 1_000 * day)[0])
            files.append(str(f))
    kr = tmp_path / "history.json"
    kr.write_text(json.dumps(RING.to_dict()))
    key = tmp_path / "key.json"
    key.write_text(json.dumps(AUDIT_KEY.to_entry()))
    shards = 4
    assert sorted(sum((shard_of(files, shards, i) for i in range(shards)), [])) == sorted(files)
    partials = []
    for i in range(shards):
        rc = cli.main(["audit", "shard", "--keyring", str(kr), "--key", str(key), "--dir",
                       str(root), "--shards-of", str(shards), "--index", str(i), "--all",
                       "--audit", "sre/leak-drill"])
        assert rc == 1
        partials.append(verify_partial(json.loads(capsys.readouterr().out),
                                       {AUDIT_KEY.kid: AUDIT_KEY.public or b""},
                                       "sre/leak-drill", i))
    merged = merge_partials(partials)
    one = audit_shard(history_ring(RING), [ShardInput(f, Path(f).read_bytes())
                                           for f in sorted(files)], AuditQuery(all=True))
    for k in ("total", "valid", "invalid", "by_verdict", "by_kid", "by_profile", "by_shard"):
        assert merged[k] == one[k], k
    assert merged["findings"]["invalid"]["count"] == one["findings"]["invalid"]["count"]
    hk = tmp_path / "h.json"
    hk.write_text(json.dumps(history_ring(RING).to_dict()))
    cli.main(["verify", "--summary", "--keyring", str(hk), *sorted(files)])
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == merged["total"] and summary["valid"] == merged["valid"]
