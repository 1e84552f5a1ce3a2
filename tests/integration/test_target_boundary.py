"""One Target from configuration, tried as Mallory: a user with rights only in her own namespace
(create KeyRotations, SignatureIncidents and ConfigMaps, read Secrets there), acting through
``kubectl --as`` on the real API server, with a real `sigops run` watching every namespace.

Each attack must be refused or harmless: the other namespace's Deployment and Secrets unchanged
(same resourceVersion), no key of it readable by her anywhere, no request reaching her URL."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sigops.core.keys import HMAC
from tests.support import (
    GROUP,
    REPO,
    VERSION,
    get_kr,
    grant_user,
    keyrotation,
    kubectl,
    make_backend,
    phase,
    rotation_target,
    secret,
    undo_snapshots,
    wait_for,
)

pytestmark = pytest.mark.integration
MALLORY = "mallory"


def ns_name(tag: str) -> str:
    return f"t-{tag}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def world(api: Any, cluster: Any) -> Iterator[dict[str, str]]:
    """``victim``: a configured target's namespace, its backend and Secrets. ``mallory``: her
    namespace, with a configured backend of her own. ``sre``: a namespace the victim's target
    lets request rotations."""
    core = client.CoreV1Api(api)
    names = {"victim": ns_name("victim"), "mallory": ns_name("mallory"), "sre": ns_name("sre")}
    for ns in names.values():
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    make_backend(api, names["victim"], HMAC)
    make_backend(api, names["mallory"], HMAC)
    grant_user(api, names["mallory"], MALLORY, "mallory", [
        client.V1PolicyRule(api_groups=[GROUP], resources=["keyrotations", "signatureincidents",
                                                           "signatureaudits"],
                            verbs=["create", "get", "list", "watch", "patch", "update",
                                   "delete"]),
        client.V1PolicyRule(api_groups=[""], resources=["configmaps"],
                            verbs=["create", "get", "list", "update"]),
        client.V1PolicyRule(api_groups=[""], resources=["secrets"],
                            verbs=["get", "list", "create"])])
    yield names
    for ns in names.values():
        kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)


def as_mallory(cluster: Any, ns: str, obj: dict[str, Any], tmp: Path
               ) -> subprocess.CompletedProcess[str]:
    f = tmp / f"obj-{uuid.uuid4().hex[:6]}.json"
    f.write_text(json.dumps(obj))
    return kubectl(cluster, "--as", MALLORY, "create", "-n", ns, "-f", str(f), check=False)


def fingerprint_of_namespace(api: Any, ns: str) -> dict[str, str]:
    """Every Secret's and the Deployment's resourceVersion: any write changes it."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    out = {f"secret/{s.metadata.name}": s.metadata.resource_version
           for s in core.list_namespaced_secret(ns).items}
    for d in apps.list_namespaced_deployment(ns).items:
        out[f"deployment/{d.metadata.name}"] = d.metadata.resource_version
    return out


def readable_by_mallory(cluster: Any, namespaces: list[str]) -> str:
    """Everything Mallory can read of Secrets anywhere she is allowed (the text of it)."""
    out = []
    for ns in namespaces:
        r = kubectl(cluster, "--as", MALLORY, "get", "secrets", "-n", ns, "-o", "json",
                    check=False)
        out.append(r.stdout if r.returncode == 0 else "")
    return "\n".join(out)


def test_mallory_cannot_point_a_rotation_at_another_namespace(
        cluster, api, world, operator_factory, tmp_path):
    victim, mallory = world["victim"], world["mallory"]
    before = fingerprint_of_namespace(api, victim)
    victim_key = secret(api, victim, "backend-key")["PCS_HMAC_KEY"]
    op = operator_factory({"targets": [rotation_target(victim), rotation_target(mallory)]})
    # Her rotation, aimed at the victim's backend, from her namespace.
    kr = keyrotation("steal", HMAC, overlap="1h")
    kr["spec"]["target"]["namespace"] = victim
    r = as_mallory(cluster, mallory, kr, tmp_path)
    assert r.returncode == 0, r.stderr  # no admission policy installed here: sigops refuses
    wait_for(lambda: phase(api, mallory, "steal") == "Failed", 30, what="the refusal")
    st = get_kr(api, mallory, "steal")["status"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NamespaceNotAllowed", ready
    assert victim in ready["message"] and mallory in ready["message"]
    # The Warning Event follows the status write.
    wait_for(lambda: any(e.reason == "NamespaceNotAllowed" and e.type == "Warning"
                         for e in client.CoreV1Api(api).list_namespaced_event(
                             mallory, field_selector="involvedObject.name=steal").items),
             15, what="the Warning Event")
    # Nothing of the victim's changed; nothing of it is readable by her.
    assert fingerprint_of_namespace(api, victim) == before
    assert victim_key not in readable_by_mallory(cluster, [mallory, victim, op.operator_ns])
    assert "sigops-undo" not in readable_by_mallory(cluster, [mallory])


@pytest.mark.parametrize("field", [
    {"env": {"hmacKey": "DATABASE_PASSWORD"}},
    {"agentSecret": {"name": "backend-key"}},
    {"probeURL": "http://127.0.0.1:9/v1/pcs/submit"},
    {"container": "sidecar"},
])
def test_the_crd_refuses_what_the_config_owns(cluster, api, world, tmp_path, field):
    mallory = world["mallory"]
    kr = keyrotation("fields", HMAC, overlap="1h")
    kr["spec"]["target"].update(field)
    r = as_mallory(cluster, mallory, kr, tmp_path)
    assert r.returncode != 0
    assert "come from the operator config" in r.stderr, r.stderr


def test_her_own_rotation_runs_no_query_of_hers(cluster, api, world, operator_factory,
                                                tmp_path):
    """On her own configured backend she may rotate, but her PromQL (run with sigops'
    Prometheus credentials) is refused: the config does not allow it for that target."""
    mallory = world["mallory"]
    operator_factory({"targets": [rotation_target(mallory)]})
    kr = keyrotation("query", HMAC, overlap="1h",
                     errorRateQuery='sum(rate(anything{job="x"}[5m]))')
    assert as_mallory(cluster, mallory, kr, tmp_path).returncode == 0
    wait_for(lambda: phase(api, mallory, "query") == "Failed", 30, what="the refusal")
    ready = next(c for c in get_kr(api, mallory, "query")["status"]["conditions"]
                 if c["type"] == "Ready")
    assert ready["reason"] == "FieldNotAllowed" and "allowErrorRateQuery" in ready["message"]


def test_the_undo_snapshot_is_out_of_reach_and_a_lock_holds_across_namespaces(
        cluster, api, world, operator_factory, tmp_path):
    """A rotation of the victim's backend (by its owner) keeps its undo snapshot in the
    operator's namespace, which Mallory cannot read, and nothing in her namespace is ever
    restored from. A second rotation requested from another allowed namespace does not take
    the key ring over: the lock's holder is looked up where it lives."""
    victim, mallory, sre = world["victim"], world["mallory"], world["sre"]
    agent0 = secret(api, victim, "agent-key")
    op = operator_factory({"targets": [rotation_target(victim, requestNamespaces=[sre]),
                                       rotation_target(mallory)]})
    # A planted "snapshot" in her namespace under the old naming: never read.
    planted = {"undo.json": json.dumps({"ring": "{}", "env": [{"name": "EVIL", "value": "1"}],
                                        "agent": "mallory-key", "agent_existed": True})}
    for name in ("sigops-undo-rot", "sigops-undo-owner"):
        r = as_mallory(cluster, mallory, {"apiVersion": "v1", "kind": "Secret",
                                          "metadata": {"name": name},
                                          "stringData": planted}, tmp_path)
        assert r.returncode == 0, r.stderr
    co = client.CustomObjectsApi(api)
    co.create_namespaced_custom_object(GROUP, VERSION, victim, "keyrotations",
                                       keyrotation("owner", HMAC, overlap="1h"))
    wait_for(lambda: phase(api, victim, "owner") == "Retiring", 60, what="Retiring")
    uid = get_kr(api, victim, "owner")["metadata"]["uid"]
    assert uid in undo_snapshots(api, op.operator_ns)
    r = kubectl(cluster, "--as", MALLORY, "get", "secret", "sigops-undo-snapshots", "-n",
                op.operator_ns, check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower()
    # The same name in another allowed namespace: refused, the ring stays with its holder.
    co.create_namespaced_custom_object(GROUP, VERSION, sre, "keyrotations", {
        **keyrotation("owner", HMAC, overlap="1h"),
        "spec": {**keyrotation("owner", HMAC, overlap="1h")["spec"],
                 "target": {"namespace": victim}}})
    wait_for(lambda: phase(api, sre, "owner") == "Failed", 30, what="the second refused")
    ready = next(c for c in get_kr(api, sre, "owner")["status"]["conditions"]
                 if c["type"] == "Ready")
    assert ready["reason"] == "TargetBusy" and f"{victim}/owner" in ready["message"], ready
    assert phase(api, victim, "owner") == "Retiring"
    # The owner aborts: restored from the operator's snapshot, not from hers.
    co.patch_namespaced_custom_object(GROUP, VERSION, victim, "keyrotations", "owner",
                                      {"spec": {"abort": True}})
    wait_for(lambda: phase(api, victim, "owner") == "Aborted", 30, what="Aborted")
    assert secret(api, victim, "agent-key") == agent0
    env = client.AppsV1Api(api).read_namespaced_deployment(
        "fractal-lba-backend", victim).spec.template.spec.containers[0].env
    assert not any(e.name == "EVIL" for e in env)
    assert uid not in undo_snapshots(api, op.operator_ns)


def test_the_admission_policy_refuses_foreign_targets_before_they_are_stored(
        cluster, api, world, tmp_path):
    """The chart's ValidatingAdmissionPolicy, rendered for these targets: her rotation of the
    victim's backend, her rotation of an unconfigured one, and her own PromQL are refused by
    the API server; her rotation of her own configured backend is admitted."""
    victim, mallory = world["victim"], world["mallory"]
    values = tmp_path / "values.json"
    values.write_text(json.dumps({"targets": [
        {"namespace": victim, "deployment": "fractal-lba-backend", "default": True},
        {"namespace": mallory, "deployment": "fractal-lba-backend"}]}))
    manifest = subprocess.run(
        [str(REPO / ".dev" / "bin" / "helm"), "template", f"bnd-{uuid.uuid4().hex[:6]}",
         str(REPO / "charts" / "sigops"), "-f", str(values),
         "--show-only", "templates/admissionpolicy.yaml"],
        capture_output=True, text=True, check=True).stdout
    (tmp_path / "vap.yaml").write_text(manifest)
    kubectl(cluster, "apply", "-f", str(tmp_path / "vap.yaml"))
    try:
        foreign = keyrotation("foreign", HMAC, overlap="1h")
        foreign["spec"]["target"]["namespace"] = victim

        def refused() -> str | None:
            r = as_mallory(cluster, mallory, foreign, tmp_path)
            if r.returncode == 0:  # the policy is not active yet: take it back, try again
                kubectl(cluster, "delete", "kr", "foreign", "-n", mallory, check=False)
                return None
            return r.stderr

        err = wait_for(refused, 30, 0.5, what="the policy to refuse a foreign target")
        assert f"{victim}/fractal-lba-backend is not a target" in err, err
        unknown = keyrotation("unknown", HMAC, overlap="1h")
        unknown["spec"]["target"]["deployment"] = "not-configured"
        r = as_mallory(cluster, mallory, unknown, tmp_path)
        assert r.returncode != 0 and "is not a target" in r.stderr, r.stderr
        query = keyrotation("query", HMAC, overlap="1h", errorRateQuery="up")
        r = as_mallory(cluster, mallory, query, tmp_path)
        assert r.returncode != 0 and "allowErrorRateQuery" in r.stderr, r.stderr
        r = as_mallory(cluster, mallory, keyrotation("mine", HMAC, overlap="1h"), tmp_path)
        assert r.returncode == 0, r.stderr
        # Granted the status subresource, she still may not write a rotation's status (move it
        # on, cut its history): only the operator's ServiceAccount and cluster admins may.
        grant_user(api, mallory, MALLORY, "mallory-status", [client.V1PolicyRule(
            api_groups=[GROUP], resources=["keyrotations/status"], verbs=["get", "patch"])])
        done = json.dumps({"status": {"phase": "Completed"}})
        patch = ["--as", MALLORY, "patch", "kr", "mine", "-n", mallory, "--subresource=status",
                 "--type", "merge", "-p", done]

        def status_policy_active() -> bool:
            # The API server loads each policy on its own: the one that refused her targets
            # above may be in force a moment before this one (seen once in a fresh-clone run).
            # A server-side dry run goes through admission and changes nothing.
            r = kubectl(cluster, *patch, "--dry-run=server", check=False)
            return r.returncode != 0 and "written by the sigops operator" in r.stderr

        wait_for(status_policy_active, 30, 0.5, what="the status policy to refuse her")
        r = kubectl(cluster, *patch, check=False)
        assert r.returncode != 0 and "written by the sigops operator" in r.stderr, r.stderr
        r = kubectl(cluster, "patch", "kr", "mine", "-n", mallory, "--subresource=status",
                    "--type", "merge", "-p", done, check=False)  # a cluster admin may
        assert r.returncode == 0, r.stderr
        # SignatureAudits alike: not of the victim's backend; her own audit's status is the
        # operator's; and its spec, the question its signed summary answers, never changes.
        sau = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "SignatureAudit",
               "metadata": {"name": "peek"},
               "spec": {"target": {"namespace": victim}, "lookFor": {"all": True}}}
        r = as_mallory(cluster, mallory, sau, tmp_path)
        assert r.returncode != 0 and f"{victim}/fractal-lba-backend is not a target" in \
            r.stderr, r.stderr
        sau["spec"]["target"] = {}
        r = as_mallory(cluster, mallory, sau, tmp_path)
        assert r.returncode == 0, r.stderr
        grant_user(api, mallory, MALLORY, "mallory-sau-status", [client.V1PolicyRule(
            api_groups=[GROUP], resources=["signatureaudits/status"], verbs=["get", "patch"])])
        r = kubectl(cluster, "--as", MALLORY, "patch", "sau", "peek", "-n", mallory,
                    "--subresource=status", "--type", "merge", "-p",
                    json.dumps({"status": {"phase": "Succeeded", "job": {"name": "x"}}}),
                    check=False)
        assert r.returncode != 0 and "written by the sigops operator" in r.stderr, r.stderr
        for who in (("--as", MALLORY), ()):
            r = kubectl(cluster, *who, "patch", "sau", "peek", "-n", mallory, "--type",
                        "merge", "-p", json.dumps({"spec": {"lookFor": {"keyIds": ["k"]}}}),
                        check=False)
            assert r.returncode != 0 and "spec is immutable" in r.stderr, r.stderr
    finally:
        kubectl(cluster, "delete", "-f", str(tmp_path / "vap.yaml"), check=False)
        # The API server drops the policy a moment later: wait, so later tests see none.
        probe = keyrotation("probe-gone", HMAC, overlap="1h", dryRun=True)
        probe["spec"]["target"]["deployment"] = "not-configured"

        def gone() -> bool:
            ok = as_mallory(cluster, mallory, probe, tmp_path).returncode == 0
            kubectl(cluster, "delete", "kr", "probe-gone", "-n", mallory, check=False)
            return ok

        wait_for(gone, 30, 0.5, what="the admission policy to be gone")
