"""Who may make sigops act through a SignatureIncident (issue 25), on the real API server with a
real `sigops run`: an incident acts only on a configured target, from that target's namespace
(or one the config lets request it); failed samples come from a ConfigMap only when the config
names it; scenario E rolls back only to a template of the Deployment's own ReplicaSets.

The attackers are namespace users with only their RBAC, acting through ``kubectl --as``."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sigops.core.keys import HMAC, generate_key
from tests.support import (
    SampleServer,
    alert_post,
    backend,
    backend_fingerprints,
    envelope,
    has_secret,
    kubectl,
    make_backend,
    only_incident,
    pcs,
    set_backend_key,
    start,
    token_rate,
    wait_for,
)

pytestmark = pytest.mark.integration

GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"
DEP = "fractal-lba-backend"
LKG = f"sigops-lkg-{DEP}"
MALFORMED = "\n".join(f"not a pcs {i}" for i in range(20))  # diagnosed as D (rate tightening)


def namespace_user(api: Any, ns: str, user: str) -> None:
    """What a team's member may do in her own namespace, and nothing elsewhere: create and read
    SignatureIncidents, ConfigMaps and Secrets."""
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(ns, client.V1Role(
        metadata=client.V1ObjectMeta(name=f"{user}-team"),
        rules=[client.V1PolicyRule(api_groups=[GROUP], resources=["signatureincidents"],
                                   verbs=["create", "get", "list", "watch", "patch"]),
               client.V1PolicyRule(api_groups=[""], resources=["configmaps", "secrets"],
                                   verbs=["create", "get", "list", "update", "patch"]),
               client.V1PolicyRule(api_groups=[""], resources=["events"],
                                   verbs=["get", "list"])]))
    rbac.create_namespaced_role_binding(ns, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=f"{user}-team"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                  name=f"{user}-team"),
        subjects=[client.RbacV1Subject(kind="User", name=user,
                                       api_group="rbac.authorization.k8s.io")]))


def as_user(cluster: Any, user: str, tmp_path: Path, ns: str, *docs: dict[str, Any]) -> None:
    """``kubectl --as <user> apply`` in ``ns``: the API server decides with her RBAC only."""
    path = tmp_path / f"{user}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    kubectl(cluster, "--as", user, "-n", ns, "apply", "-f", str(path))


def incident(name: str, target: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SignatureIncident",
            "metadata": {"name": name}, "spec": {"source": "person", "target": target, **spec}}


def config_map(name: str, text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"samples.jsonl": text}}


def get_si(api: Any, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, "signatureincidents", name)
    return obj


def phase_of(api: Any, ns: str, name: str, *phases: str) -> Any:
    def check() -> dict[str, Any] | None:
        obj = get_si(api, ns, name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None
    return check


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def backend_state(api: Any, ns: str) -> tuple[Any, ...]:
    """The target's Deployment (generation and spec) and every Secret (data and version)."""
    dep = client.AppsV1Api(api).read_namespaced_deployment(DEP, ns)
    spec = json.dumps(client.ApiClient().sanitize_for_serialization(dep.spec), sort_keys=True)
    secrets = {s.metadata.name: (s.metadata.resource_version, s.data)
               for s in client.CoreV1Api(api).list_namespaced_secret(ns).items}
    return dep.metadata.generation, spec, secrets


def plant_snapshot(api: Any, ns: str, digest: str | None = None) -> None:
    """Rewrite the last-known-good snapshot Secret as someone with Secret rights in ``ns``
    could: another image and command in its template (and, if given, another digest)."""
    core = client.CoreV1Api(api)
    doc = json.loads(base64.b64decode(core.read_namespaced_secret(LKG, ns).data["snapshot.json"]))
    doc["template"]["spec"]["containers"][0]["image"] = "attacker.invalid/evil:1"
    doc["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "exfiltrate"]
    if digest is not None:
        doc["digest"] = digest
    core.patch_namespaced_secret(LKG, ns, {"stringData": {"snapshot.json": json.dumps(doc)}})


@pytest.fixture
def other_namespace(api: Any) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def test_a_namespace_user_cannot_make_sigops_act_on_another_namespaces_backend(
        cluster, api, namespace, other_namespace, operator_factory, tmp_path):
    """Mallory may create incidents, ConfigMaps and Secrets in her namespace only. An incident
    there naming the configured backend of another namespace (with her samples, which would
    diagnose as D and tighten its TOKEN_RATE) is refused before anything is read; so is one
    naming her own, unconfigured, namespace. The other backend stays byte-identical."""
    victim, mine = namespace, other_namespace
    key = make_backend(api, victim, HMAC)
    namespace_user(api, mine, "mallory")
    op = start(operator_factory, tmp_path, victim, None)
    wait_for(lambda: has_secret(api, victim, LKG), 30, what="the victim's snapshot while healthy")
    before = backend_state(api, victim)
    as_user(cluster, "mallory", tmp_path, mine, config_map("mine", MALFORMED),
            incident("steal", {"namespace": victim, "deployment": DEP},
                     samples={"configMapRef": {"name": "mine"}}),
            incident("own", {"deployment": DEP}))
    for name, reason in (("steal", "NamespaceNotAllowed"), ("own", "TargetNotConfigured")):
        si = wait_for(phase_of(api, mine, name, "Refused", "Escalated", "Verifying", "Resolved"),
                      30, what=f"incident {name} handled")
        assert si["status"]["phase"] == "Refused", si["status"].get("conditions")
        assert ready(si)["reason"] == reason
        assert "nothing was read or changed" in ready(si)["message"]
        assert "evidence" not in si["status"] and not si["status"].get("actions")
    time.sleep(3)  # what a wrong operator would have done by now, it would have done
    assert backend_state(api, victim) == before
    assert token_rate(api, victim) == "100"
    events = client.CoreV1Api(api).list_namespaced_event(mine).items
    warned = {(e.involved_object.name, e.reason) for e in events if e.type == "Warning"}
    assert {("steal", "NamespaceNotAllowed"), ("own", "TargetNotConfigured")} <= warned
    # Nothing of the victim's reached her: no Secret of sigops' in her namespace, no key
    # material in what she can read.
    out = kubectl(cluster, "--as", "mallory", "-n", mine, "get",
                  "secrets,configmaps,signatureincidents,events", "-o", "json").stdout
    assert "sigops-" not in json.dumps([i["metadata"]["name"] for i in
                                        json.loads(out)["items"]])
    for material in (key.secret.decode(),):
        assert material not in out and material not in op.logs()
    # And her RBAC indeed stops at her namespace.
    assert kubectl(cluster, "--as", "mallory", "-n", victim, "auth", "can-i", "get", "secrets",
                   check=False).stdout.strip() == "no"


class NotFoundServer:
    """A backendURL that answers every GET with 404 (a backend without a samples endpoint)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def test_samples_only_from_the_configmap_the_config_names(cluster, api, namespace,
                                                          operator_factory, tmp_path):
    """Nina works in the backend's own namespace. Her ConfigMap of samples is not the one the
    config names: it is not read (else she would choose the diagnosis, here D on her own
    backend); the configured one is. With the configured backendURL answering 404, the source
    says what was asked and what came back."""
    make_backend(api, namespace, HMAC)
    namespace_user(api, namespace, "nina")
    not_found = NotFoundServer()
    try:
        start(operator_factory, tmp_path, namespace, not_found.url,
              target_extra={"samplesConfigMap": "failed-samples"})
        as_user(cluster, "nina", tmp_path, namespace, config_map("planted", MALFORMED),
                incident("planted", {"deployment": DEP},
                         samples={"configMapRef": {"name": "planted"}}))
        si = wait_for(phase_of(api, namespace, "planted", "Escalated", "Verifying", "Resolved"),
                      30, what="the incident diagnosed")
        st = si["status"]
        assert st["phase"] == "Escalated" and ready(si)["reason"] == "NoScenario", st
        assert token_rate(api, namespace) == "100"
        sources = {s["source"]: s for s in st["evidence"]["sources"]}
        assert sources["samplesConfigMap"]["status"] == "skipped"
        assert "only the configured samplesConfigMap" in sources["samplesConfigMap"]["detail"]
        detail = sources["samples"]["detail"]
        assert sources["samples"]["status"] == "unavailable"
        assert f"GET {not_found.url}/v1/samples/failures" in detail, detail
        assert "answered HTTP 404" in detail and "no backendURL" not in detail, detail
        # The ConfigMap the config names is read (created by whoever runs the backend).
        client.CoreV1Api(api).create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="failed-samples"),
            data={"samples.jsonl": MALFORMED}))
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "signatureincidents",
            incident("named", {"deployment": DEP},
                     samples={"configMapRef": {"name": "failed-samples"}}))
        si = wait_for(phase_of(api, namespace, "named", "Escalated", "Verifying", "Resolved"),
                      30, what="the incident with the configured ConfigMap")
        assert si["status"]["evidence"]["samples"]["source"] == "configmap/failed-samples"
        assert si["status"]["scenario"] == "D", si["status"].get("conditions")
    finally:
        not_found.close()


def test_a_planted_last_known_good_snapshot_never_rolls_the_backend_to_its_template(
        api, namespace, operator_factory, tmp_path):
    """Someone who may write Secrets in the backend's namespace rewrites the last-known-good
    snapshot: its template runs another image and command, under the digest of the real good
    template. Scenario E rolls back to the template of the Deployment's own ReplicaSet with
    that digest, never to the Secret's; a snapshot naming a template no ReplicaSet of the
    Deployment has is never restored, and the incident says so."""
    good, bad = generate_key(HMAC, kid="good"), generate_key(HMAC, kid="bad")
    backend(api, namespace, good)
    samples = SampleServer()
    try:
        op = start(operator_factory, tmp_path, namespace, samples.url)
        wait_for(lambda: has_secret(api, namespace, LKG), 30, what="a snapshot while healthy")
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        image = apps.read_namespaced_deployment(DEP, namespace).spec.template.spec \
            .containers[0].image
        set_backend_key(api, namespace, bad)
        wait_for(lambda: len(apps.list_namespaced_replica_set(namespace).items) >= 2, 20,
                 what="revision 2")
        op.stop()  # no new snapshot while the Secret is rewritten

        # A digest no ReplicaSet of the Deployment has: not restored, and said so (the next
        # candidate, here A, may still run).
        plant_snapshot(api, namespace, "0123456789abcdef")
        samples.samples = [envelope(pcs(good, i)) for i in range(10)]
        op.start()
        alert_post(op, namespace)
        inc = wait_for(lambda: (lambda i: i if (i.get("status") or {}).get("phase") in (
            "Escalated", "Verifying", "Resolved") else None)(only_incident(api, namespace)),
            30, what="scenario E tried")
        st = inc["status"]
        assert "E" in (st.get("tried") or []), (st.get("candidates"), st.get("conditions"))
        refused = [e.message for e in core.list_namespaced_event(namespace).items
                   if e.reason == "ScenarioFailed" and e.type == "Warning"]
        assert any("matches no ReplicaSet the Deployment owns" in m and "not restored" in m
                   for m in refused), refused
        assert not any(a["payload"]["action"] == "rollback-template"
                       for a in st.get("actions") or [])
        container = apps.read_namespaced_deployment(DEP, namespace).spec.template.spec \
            .containers[0]
        assert (container.image, container.command) == (image, None)
    finally:
        samples.close()


def test_a_planted_snapshot_template_is_never_applied_only_its_replica_sets(
        api, namespace, operator_factory, tmp_path):
    """The snapshot keeps the real digest of the good template, but carries another image and
    command: E restores the good ReplicaSet's own template (the good key, the real image)."""
    good, bad = generate_key(HMAC, kid="good"), generate_key(HMAC, kid="bad")
    backend(api, namespace, good)
    samples = SampleServer()
    try:
        op = start(operator_factory, tmp_path, namespace, samples.url)
        wait_for(lambda: has_secret(api, namespace, LKG), 30, what="a snapshot while healthy")
        apps = client.AppsV1Api(api)
        image = apps.read_namespaced_deployment(DEP, namespace).spec.template.spec \
            .containers[0].image
        set_backend_key(api, namespace, bad)
        wait_for(lambda: len(apps.list_namespaced_replica_set(namespace).items) >= 2, 20,
                 what="revision 2")
        op.stop()
        plant_snapshot(api, namespace)  # the real digest, another template
        samples.samples = [envelope(pcs(good, i)) for i in range(10)]
        op.start()
        alert_post(op, namespace)
        inc = wait_for(lambda: (lambda i: i if (i.get("status") or {}).get("phase") in (
            "Escalated", "Verifying", "Resolved") else None)(only_incident(api, namespace)),
            30, what="scenario E applied")
        assert inc["status"]["scenario"] == "E", inc["status"].get("conditions")
        assert inc["status"]["phase"] == "Verifying", inc["status"].get("conditions")
        container = apps.read_namespaced_deployment(DEP, namespace).spec.template.spec \
            .containers[0]
        assert (container.image, container.command) == (image, None)
        assert backend_fingerprints(api, namespace) == [good.fingerprint]
        assert "the template of its ReplicaSet" in inc["status"]["actions"][0]["payload"][
            "summary"]
    finally:
        samples.close()


def test_a_pod_that_only_matches_the_selector_is_not_evidence(api, namespace, operator_factory,
                                                              tmp_path):
    """A pod with the backend's labels that no ReplicaSet of the Deployment controls (anyone
    who may create pods in the namespace can make one) serves failed samples that would
    diagnose as tampering and tighten TOKEN_RATE: they are not read."""
    from tests.integration.test_keyrotation import ready_pod

    key = generate_key(HMAC, kid="k")
    backend(api, namespace, key, token_rate="100")
    samples = SampleServer()
    try:
        bad = []
        for i in range(30):
            p = pcs(key, 100 + i)
            p["merkle_root"] = "f" * 64  # changed after signing: D
            bad.append(envelope(p, "10.9.9.9"))
        samples.samples = bad
        port = int(samples.address.rsplit(":", 1)[1])
        client.AppsV1Api(api).patch_namespaced_deployment(DEP, namespace, {"spec": {
            "template": {"spec": {"containers": [{"name": "backend", "ports": [
                {"name": "http", "containerPort": port}]}]}}}})
        ready_pod(api, namespace, "lookalike", {"app": DEP}, "127.0.0.1")
        start(operator_factory, tmp_path, namespace, None)  # no backendURL: samples from pods
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "signatureincidents", incident("si", {"deployment": DEP}))
        si = wait_for(phase_of(api, namespace, "si", "Escalated", "Verifying", "Resolved"), 30,
                      what="the incident diagnosed")
        st = si["status"]
        assert st["phase"] == "Escalated" and ready(si)["reason"] == "NoScenario", (
            st.get("conditions"), st["evidence"]["sources"])
        assert token_rate(api, namespace) == "100"
        skipped = [s for s in st["evidence"]["sources"] if s["status"] == "skipped"]
        assert any("belong to none of its ReplicaSets" in s["detail"] for s in skipped), skipped
    finally:
        samples.close()
