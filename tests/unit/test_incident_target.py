"""A SignatureIncident acts only on a configured target, from its namespace or one the config
lets request it (issue 25): the refusal comes before anything of the backend is read. Also the
pure parts around evidence and scenario E: which samples ConfigMap may be read, what a failed
samples read says, which ReplicaSets count as the Deployment's own."""

from __future__ import annotations

import urllib.error
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from sigops.backend.deployment import owned_by, pod_of
from sigops.backend.lkg import replica_set_template, template_digest
from sigops.cli.plugin.story import error_rate_text
from sigops.core.keys import ED25519, generate_key
from sigops.incident.evidence import failure_text, samples_config_map
from sigops.incident.reconciler import REFUSED, TERMINAL_INCIDENT, IncidentReconciler
from sigops.prometheus.client import Prom
from sigops.settings import Settings, Target
from sigops.signing.records import Signer

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


class ReadNothingKube:
    """A Kube door that lets the reconciler write its own status and Events, and fails the
    test on any other call (a read of a Secret, Deployment, pod, log ...)."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.events: list[tuple[str, str, str]] = []

    def patch_status(self, ns: str, plural: str, name: str, status: dict[str, Any]) -> None:
        self.status.update(status)

    def event(self, obj: dict[str, Any], reason: str, message: str,
              type_: str = "Normal") -> None:
        self.events.append((reason, message, type_))

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a refused incident called Kube.{name}")


def incident(ns: str, target: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": "person"}
    if target is not None:
        spec["target"] = target
    return {"apiVersion": "sigops.fractal-lba.io/v1alpha1", "kind": "SignatureIncident",
            "metadata": {"name": "si", "namespace": ns, "uid": "u-1", "generation": 1,
                         "creationTimestamp": "2026-12-06T08:59:00Z"},
            "spec": spec}


def reconciler(kube: ReadNothingKube, settings: Settings) -> IncidentReconciler:
    signer = Signer(generate_key(ED25519, kid="unit-signer", state="active"))
    return IncidentReconciler(kube, Prom(None), settings, signer,  # type: ignore[arg-type]
                              clock=lambda: NOW)


SETTINGS = Settings(targets=[Target(namespace="payments", deployment="fractal-lba-backend",
                                    requestNamespaces=["sre"])])


@pytest.mark.parametrize(("ns", "target", "reason"), [
    ("mallory", {"namespace": "payments"}, "NamespaceNotAllowed"),
    ("mallory", None, "TargetNotConfigured"),
    ("payments", {"deployment": "other-backend"}, "TargetNotConfigured"),
    ("sre", {"namespace": "elsewhere", "deployment": "fractal-lba-backend"},
     "TargetNotConfigured"),
])
def test_an_incident_for_a_target_not_allowed_is_refused_before_anything_is_read(
        ns: str, target: dict[str, Any] | None, reason: str) -> None:
    kube = ReadNothingKube()
    obj = incident(ns, target)
    assert reconciler(kube, SETTINGS).tick(obj) == REFUSED
    assert REFUSED in TERMINAL_INCIDENT
    assert kube.status["phase"] == REFUSED
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert "nothing was read or changed" in ready["message"]
    assert [(r, t) for r, _, t in kube.events] == [(reason, "Warning")]
    assert "(no configured target)" in kube.status["communication"]
    # Terminal: the next tick does nothing at all.
    obj["status"] = dict(kube.status)
    kube.events.clear()
    assert reconciler(kube, SETTINGS).tick(obj) == REFUSED
    assert kube.events == []


@pytest.mark.parametrize(("ns", "target"), [
    ("payments", None), ("payments", {"deployment": "fractal-lba-backend"}),
    ("sre", {"namespace": "payments"}),
])
def test_an_incident_for_its_configured_target_goes_on(ns: str,
                                                       target: dict[str, Any] | None) -> None:
    kube = ReadNothingKube()
    assert reconciler(kube, SETTINGS).tick(incident(ns, target)) == "Diagnosing"
    assert "payments/fractal-lba-backend" in kube.status["communication"]


def test_samples_configmap_only_the_configured_one() -> None:
    configured = Target(namespace="be", samplesConfigMap="failed-samples")
    assert samples_config_map(configured, {"name": "failed-samples"}) == (
        "failed-samples", "configmap be/failed-samples")
    name, why = samples_config_map(configured, {"name": "planted"})
    assert name is None and "only the configured samplesConfigMap" in why
    name, why = samples_config_map(Target(namespace="be"), {"name": "failed-samples"})
    assert name is None and "names no samplesConfigMap" in why
    assert samples_config_map(configured, {})[0] is None
    assert samples_config_map(configured, "failed-samples")[0] is None


def test_failure_text_says_what_came_back() -> None:
    err = urllib.error.HTTPError("http://be/v1/samples/failures", 404, "Not Found",
                                 {}, None)  # type: ignore[arg-type]
    assert failure_text(err) == "HTTP 404"
    assert failure_text(urllib.error.URLError(ConnectionRefusedError())) == (
        "no answer (ConnectionRefusedError)")
    assert "not a JSON sample list" in failure_text(ValueError("x"))


def _rs(uid: str, kind: str = "Deployment", controller: bool = True) -> Any:
    ref = SimpleNamespace(kind=kind, uid=uid, controller=controller, name="fractal-lba-backend")
    return SimpleNamespace(metadata=SimpleNamespace(owner_references=[ref]))


def test_a_replica_set_is_the_deployments_own_by_uid_not_by_name() -> None:
    dep = {"metadata": {"name": "fractal-lba-backend", "uid": "dep-uid"}}
    assert owned_by(_rs("dep-uid"), dep)
    assert not owned_by(_rs("other-uid"), dep), "same name, another object"
    assert not owned_by(_rs("dep-uid", controller=False), dep)
    assert not owned_by(_rs("dep-uid", kind="StatefulSet"), dep)
    assert not owned_by(SimpleNamespace(metadata=SimpleNamespace(owner_references=None)), dep)
    assert not owned_by(_rs(""), {"metadata": {}})


def test_a_pod_is_the_deployments_own_only_under_one_of_its_replica_sets() -> None:
    def pod(*refs: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"labels": {"app": "be"}, "ownerReferences": list(refs)}}

    own = {"be-5f", "be-7c"}
    assert pod_of(pod({"kind": "ReplicaSet", "name": "be-7c", "controller": True}), own)
    assert not pod_of(pod(), own), "labels alone"
    assert not pod_of(pod({"kind": "ReplicaSet", "name": "other", "controller": True}), own)
    assert not pod_of(pod({"kind": "ReplicaSet", "name": "be-5f"}), own), "not its controller"
    assert not pod_of(pod({"kind": "StatefulSet", "name": "be-5f", "controller": True}), own)
    assert not pod_of({"metadata": {}}, set())


def test_a_replica_set_template_digests_as_its_deployments_template() -> None:
    dep_template = {"metadata": {"labels": {"app": "be"}},
                    "spec": {"containers": [{"name": "b", "image": "be:1"}]}}
    rs_template = {"metadata": {"labels": {"app": "be", "pod-template-hash": "7c9d"}},
                   "spec": {"containers": [{"name": "b", "image": "be:1"}]}}
    assert template_digest(replica_set_template(rs_template)) == template_digest(dep_template)
    assert rs_template["metadata"]["labels"]["pod-template-hash"] == "7c9d", "not mutated"


def test_explain_says_when_no_error_rate_was_measured() -> None:
    assert error_rate_text("n/a") == "not measured (no answer from Prometheus)"
    assert error_rate_text(None) == error_rate_text("n/a")
    assert error_rate_text("1.50") == "1.50/s"
    assert "n/a/s" not in error_rate_text("n/a")


def test_doctests() -> None:
    import doctest

    from sigops.backend import deployment, lkg
    from sigops.cli.plugin import story
    from sigops.incident import evidence

    for mod in (deployment, lkg, story, evidence):
        assert doctest.testmod(mod).failed == 0, mod.__name__
