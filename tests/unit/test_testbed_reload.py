"""Config from a Deployment, without a cluster: a fake API stands in for the API server."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pcskit import hmac_key

from sigops.testbed.backend import Backend
from sigops.testbed.reload import (
    ConfigError,
    DeploymentWatcher,
    LoadedConfig,
    config_from_deployment,
    template_hash,
)

A, B, C = (hmac_key(k).secret.decode() for k in "abc")  # type: ignore[union-attr]


def ref(secret: str, key: str, optional: bool | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"name": secret, "key": key}
    if optional is not None:
        r["optional"] = optional
    return {"secretKeyRef": r}


def deployment(env: list[dict[str, Any]], annotation: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": "fractal-lba-backend"},
            "spec": {"template": {
                "metadata": {"annotations": {"sigops.fractal-lba.io/restartedAt": annotation}},
                "spec": {"containers": [
                    {"name": "sidecar", "env": [{"name": "PCS_HMAC_KEY", "value": C}]},
                    {"name": "backend", "env": env}]}}}}


class FakeKube:
    """read_deployment / secret_value over dicts, like sigops.kube.api.Kube."""

    def __init__(self, dep: dict[str, Any] | None, secrets: dict[str, dict[str, str]]) -> None:
        self.dep, self.secrets, self.fail = dep, secrets, False

    def read_deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        if self.fail:
            raise ConnectionError("API server unreachable")
        return copy.deepcopy(self.dep)

    def secret_value(self, ns: str, name: str, key: str) -> str | None:
        return self.secrets.get(name, {}).get(key)


ENV = [{"name": "PCS_SIGN_ALG", "value": "hmac"},
       {"name": "PCS_HMAC_KEY", "valueFrom": ref("backend-keys", "current")},
       {"name": "TOKEN_RATE", "value": "50"}]


def test_config_from_deployment_resolves_secret_refs_of_the_named_container() -> None:
    kube = FakeKube(deployment(ENV), {"backend-keys": {"current": A}})
    cfg = config_from_deployment(kube.dep or {}, lambda n, k: kube.secret_value("ns", n, k),
                                 "backend")
    assert cfg.backend.fingerprints == [hmac_key("a").fingerprint]
    assert cfg.token_rate == 50 and cfg.template_hash == template_hash(kube.dep or {})
    first = config_from_deployment(kube.dep or {}, lambda n, k: None if n else None, None)
    assert first.backend.fingerprints == [hmac_key("c").fingerprint]  # the first container


def test_missing_secret_ref_is_a_container_config_error_unless_optional() -> None:
    dep = deployment(ENV)
    with pytest.raises(ConfigError, match="CreateContainerConfigError.*backend-keys"):
        config_from_deployment(dep, lambda n, k: None, "backend")
    env = [*ENV, {"name": "PCS_HMAC_KEYS", "valueFrom": ref("multi", "keys", optional=True)}]
    cfg = config_from_deployment(deployment(env), lambda n, k: A if n == "backend-keys" else None,
                                 "backend")
    assert len(cfg.backend.keys) == 1
    with pytest.raises(ConfigError, match="no container named"):
        config_from_deployment(dep, lambda n, k: A, "nope")


def test_template_hash_moves_only_with_the_pod_template() -> None:
    d1 = deployment(ENV)
    d2 = copy.deepcopy(d1)
    d2["metadata"]["resourceVersion"] = "42"
    d2["status"] = {"replicas": 1}
    assert template_hash(d1) == template_hash(d2)
    assert template_hash(d1) != template_hash(deployment(ENV, annotation="2"))


def test_watcher_reloads_on_template_change_not_on_secret_change() -> None:
    kube = FakeKube(deployment(ENV), {"backend-keys": {"current": A}})
    backend = Backend()
    w = DeploymentWatcher(kube, "ns", "fractal-lba-backend", backend.apply, container="backend",
                          on_error=backend.report_error)
    assert w.poll_once() is True
    fp = lambda: backend.current_config()["fingerprints"]  # noqa: E731
    assert fp() == [hmac_key("a").fingerprint]
    kube.secrets["backend-keys"]["current"] = B  # the Secret alone: running pods keep A
    assert w.poll_once() is False and fp() == [hmac_key("a").fingerprint]
    kube.dep = deployment(ENV, annotation="2")  # a rollout: new pods read B
    assert w.poll_once() is True and fp() == [hmac_key("b").fingerprint]
    assert backend.current_config()["generation"] == 2


def test_a_broken_rollout_keeps_the_old_config_and_is_retried() -> None:
    kube = FakeKube(deployment(ENV), {"backend-keys": {"current": A}})
    backend = Backend()
    w = DeploymentWatcher(kube, "ns", "d", backend.apply, container="backend",
                          on_error=backend.report_error)
    w.poll_once()
    env = [e if e["name"] != "PCS_HMAC_KEY" else {"name": "PCS_HMAC_KEY",
                                                  "valueFrom": ref("new-keys", "current")}
           for e in ENV]
    kube.dep = deployment(env, annotation="2")
    assert w.poll_once() is False
    assert "new-keys" in (backend.config_error or "")
    assert backend.current_config()["fingerprints"] == [hmac_key("a").fingerprint]
    kube.secrets["new-keys"] = {"current": B}  # the missing Secret appears: the pod starts
    assert w.poll_once() is True and backend.config_error is None
    assert backend.current_config()["fingerprints"] == [hmac_key("b").fingerprint]


def test_api_errors_and_a_missing_deployment_keep_serving() -> None:
    kube = FakeKube(deployment(ENV), {"backend-keys": {"current": A}})
    applied: list[LoadedConfig] = []
    errors: list[str] = []
    w = DeploymentWatcher(kube, "ns", "d", applied.append, container="backend",
                          on_error=errors.append)
    w.poll_once()
    kube.fail = True
    assert w.poll_once() is False and "unreachable" in errors[-1]
    kube.fail, kube.dep = False, None
    assert w.poll_once() is False and errors[-1] == "deployment not found"
    assert len(applied) == 1


def test_watcher_thread_polls_until_stopped() -> None:
    import time

    kube = FakeKube(deployment(ENV), {"backend-keys": {"current": A}})
    applied: list[LoadedConfig] = []
    w = DeploymentWatcher(kube, "ns", "d", applied.append, container="backend",
                          interval=0.02).start()
    try:
        deadline = time.monotonic() + 5
        while not applied and time.monotonic() < deadline:
            time.sleep(0.01)
        kube.dep = deployment(ENV, annotation="9")
        while len(applied) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        w.stop()
    assert len(applied) == 2
