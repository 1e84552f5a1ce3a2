"""Where the backend's configuration comes from: env vars, or its own Deployment.

With no kubelet, nothing restarts the testbed backend after a rollout, so it stands in for
its pods: it polls its Deployment and, when ``.spec.template`` changes (a rollout), re-reads
the container's env, resolving ``secretKeyRef`` values from the Secrets *at that moment*. A
Secret edited without a template change is not seen, exactly as running pods do not see it.
A template whose env cannot be resolved (a missing, non-optional Secret key: the kubelet's
``CreateContainerConfigError``) or holds no usable key leaves the old configuration serving
and is retried on every poll, like a crash-looping new pod during a rolling update.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..backend.config import BackendConfig, EnvNames, backend_config, find_container, resolve_env
from ..core.errors import KeyringError, SigopsError
from .bucket import parse_rate

__all__ = [
    "ConfigError",
    "single_key_names",
    "LoadedConfig",
    "config_from_env",
    "config_from_deployment",
    "template_hash",
    "DeploymentReader",
    "DeploymentWatcher",
    "DEFAULT_NAMES",
]

log = logging.getLogger("sigops.testbed")

DEFAULT_NAMES = EnvNames()
"""The upstream env var names."""


class ConfigError(SigopsError):
    """The backend's configuration is unusable (no keys, bad alg, unresolved Secret ref)."""


@dataclass(frozen=True)
class LoadedConfig:
    """One configuration, as a pod has it from its start (or a rollout) on."""

    backend: BackendConfig
    token_rate: float
    source: str
    template_hash: str | None = None

    def describe(self) -> str:
        """A log line without key material: algorithm, key fingerprints, rate, source."""
        fps = ",".join(self.backend.fingerprints)
        rate = f"{self.token_rate:g}/s" if self.token_rate > 0 else "unlimited"
        tpl = f" template={self.template_hash}" if self.template_hash else ""
        return (f"source={self.source}{tpl} alg={self.backend.alg} keys=[{fps}] "
                f"token_rate={rate}")


def _loaded(cfg: BackendConfig, source: str, tpl: str | None, names: EnvNames) -> LoadedConfig:
    if not cfg.keys:
        want = (f"{names.hmac_key} or {names.hmac_keys}" if cfg.alg == "hmac-sha256"
                else f"{names.ed25519_pub} or {names.ed25519_pubs}")
        raise ConfigError(f"no verification key configured: set {want}")
    try:
        rate = parse_rate(cfg.token_rate)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return LoadedConfig(cfg, rate, source, tpl)


def single_key_names(names: EnvNames = DEFAULT_NAMES) -> EnvNames:
    """Env names of a backend that holds one key, as the upstream Go server does: it reads the
    single-key variables and never the multi-key ones (``PCS_HMAC_KEYS`` is ignored)."""
    return dataclasses.replace(names, hmac_keys="", ed25519_pubs="")


def config_from_env(env: Mapping[str, str], names: EnvNames = DEFAULT_NAMES,
                    source: str = "env") -> LoadedConfig:
    """The configuration from plain env vars (use outside Kubernetes)."""
    try:
        cfg = backend_config(env, names)
    except KeyringError as e:
        raise ConfigError(str(e)) from None
    return _loaded(cfg, source, None, names)


def template_hash(deployment: Mapping[str, Any]) -> str:
    """A short hash of ``.spec.template``: it changes exactly when a rollout happens."""
    tpl = (deployment.get("spec") or {}).get("template") or {}
    raw = json.dumps(tpl, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _missing_refs(container: Mapping[str, Any], resolved: Mapping[str, str]) -> list[str]:
    missing = []
    for e in container.get("env") or []:
        vf = e.get("valueFrom") or e.get("value_from") or {}
        ref = vf.get("secretKeyRef") or vf.get("secret_key_ref")
        if ref and not ref.get("optional") and e.get("name") not in resolved:
            missing.append(f"{e.get('name')} (secret {ref.get('name')!r} key {ref.get('key')!r})")
    return missing


def config_from_deployment(deployment: Mapping[str, Any],
                           read_secret: Callable[[str, str], str | None],
                           container: str | None = None, names: EnvNames = DEFAULT_NAMES,
                           source: str = "deployment") -> LoadedConfig:
    """The configuration a pod of this Deployment would start with, Secrets read now."""
    try:
        c = find_container(deployment, container)
    except KeyringError as e:
        raise ConfigError(str(e)) from None
    env = resolve_env(c, read_secret)
    missing = _missing_refs(c, env)
    if missing:
        raise ConfigError("CreateContainerConfigError: cannot resolve " + ", ".join(missing))
    try:
        cfg = backend_config(env, names)
    except KeyringError as e:
        raise ConfigError(str(e)) from None
    return _loaded(cfg, source, template_hash(deployment), names)


class DeploymentReader(Protocol):
    """What the watcher needs from the API (:class:`sigops.kube.api.Kube` fits)."""

    def read_deployment(self, ns: str, name: str) -> dict[str, Any] | None: ...

    def secret_value(self, ns: str, name: str, key: str) -> str | None: ...


class DeploymentWatcher:
    """Polls a Deployment and hands a new :class:`LoadedConfig` to ``apply`` on each rollout."""

    def __init__(self, kube: DeploymentReader, namespace: str, deployment: str,
                 apply: Callable[[LoadedConfig], None], *, container: str | None = None,
                 names: EnvNames = DEFAULT_NAMES, interval: float = 0.5,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.deployment = deployment
        self.container = container
        self.names = names
        self.interval = interval
        self._apply = apply
        self._on_error = on_error
        self._seen: str | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def source(self) -> str:
        return f"deployment {self.namespace}/{self.deployment}"

    def _error(self, msg: str) -> None:
        if msg != self.last_error:  # log each distinct problem once, not every poll
            log.error("config from %s not applied: %s", self.source, msg)
        self.last_error = msg
        if self._on_error is not None:
            self._on_error(msg)

    def poll_once(self) -> bool:
        """Read the Deployment once; True when a new configuration was applied."""
        try:
            dep = self.kube.read_deployment(self.namespace, self.deployment)
        except Exception as e:  # noqa: BLE001 - API down or forbidden: keep serving, retry
            self._error(f"cannot read the deployment: {type(e).__name__}: {str(e)[:200]}")
            return False
        if dep is None:
            self._error("deployment not found")
            return False
        tpl = template_hash(dep)
        if tpl == self._seen:
            return False
        try:
            cfg = config_from_deployment(
                dep, lambda n, k: self.kube.secret_value(self.namespace, n, k),
                self.container, self.names, self.source)
        except ConfigError as e:
            self._error(str(e))
            return False
        except Exception as e:  # noqa: BLE001 - a Secret read failed: retry next poll
            self._error(f"cannot read a secret: {type(e).__name__}: {str(e)[:200]}")
            return False
        self._apply(cfg)
        self._seen = tpl
        self.last_error = None
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll_once()

    def start(self) -> DeploymentWatcher:
        """Poll in a daemon thread (call :meth:`poll_once` first for a synchronous start)."""
        self._thread = threading.Thread(target=self._run, name="testbed-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
