"""The backend's signing configuration on the API server: the managed keyring Secret, the
Deployment env that consumes it, and what the backend effectively accepts.

Shared by KeyRotation and the incident scenarios, so a key is added, promoted or dropped the
same way whoever does it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.keys import Key
from ..core.timeparse import now_iso
from ..kube.api import MANAGED, Conflict, secret_strings
from ..kube.door import KubeDoor
from .config import BackendConfig, EnvNames, backend_config, find_container, resolve_env
from .keyring import REVISION_ANNOTATION, ManagedRing, desired_env, keyring_secret_name, revision_of

__all__ = ["Backend", "MANAGED", "owned_by", "pod_of", "rollout_done", "WAL_PORT_NAME"]
DEFAULT_BACKEND_PORT = 8080
"""The upstream backend's listen port, when its container declares none."""
WAL_PORT_NAME = "flk-wal"
"""The container port of the ``sigops wal serve`` sidecar in a backend pod (evidence and the
fleet audit read the WAL there)."""


class Backend:
    """One backend Deployment and its keyring Secret."""

    def __init__(self, kube: KubeDoor, namespace: str, deployment: str,
                 container: str | None = None, names: EnvNames | None = None) -> None:
        self.kube, self.ns, self.name, self.container = kube, namespace, deployment, container
        self.names = names or EnvNames()

    @property
    def ring_secret(self) -> str:
        return keyring_secret_name(self.name)

    def deployment(self) -> dict[str, Any] | None:
        return self.kube.read_deployment(self.ns, self.name)

    def pod_urls(self, deployment: dict[str, Any], path: str = "/v1/pcs/submit",
                 replica_sets: set[str] | None = None) -> list[str]:
        """Submit URLs of the Deployment's running, ready pods (by its selector), one per pod:
        what the live backend answers, whatever its env says. With ``replica_sets`` (names of
        the Deployment's own ReplicaSets) only pods one of them controls."""
        match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not match:
            return []
        container = find_container(deployment, self.container)
        ports = container.get("ports") or []
        port = next((p.get("containerPort") for p in ports if p.get("name") == "http"),
                    ports[0].get("containerPort") if ports else DEFAULT_BACKEND_PORT)
        urls = []
        for pod in self.kube.list_pods(self.ns, ",".join(f"{k}={v}" for k, v in
                                                         sorted(match.items()))):
            st = pod.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in st.get("conditions") or [])
            ip = st.get("podIP")
            if replica_sets is not None and not pod_of(pod, replica_sets):
                continue
            if st.get("phase") == "Running" and ready and ip and not (
                    pod.get("metadata") or {}).get("deletionTimestamp"):
                host = f"[{ip}]" if ":" in ip else ip
                urls.append(f"http://{host}:{port}{path}")
        return sorted(urls)

    def own_replica_sets(self, deployment: dict[str, Any]) -> set[str]:
        """Names of the ReplicaSets this Deployment controls (by its UID): its pods are the
        ones they control, not whatever else matches its selector."""
        sel = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not sel:
            return set()
        rss = self.kube.list_replica_sets(
            self.ns, ",".join(f"{k}={v}" for k, v in sorted(sel.items())))
        return {rs.metadata.name for rs in rss if owned_by(rs, deployment)}

    def read_ring(self) -> tuple[ManagedRing | None, Any]:
        sec = self.kube.read_secret(self.ns, self.ring_secret)
        text = secret_strings(sec).get("keyring.json")
        if text is None:
            return None, sec
        return ManagedRing.from_json(text), sec

    def write_ring(self, ring: ManagedRing, alg: str, existing: Any) -> None:
        try:
            self.kube.write_secret(self.ns, self.ring_secret, ring.secret_data(alg, self.names),
                                   existing, labels={**MANAGED,
                                                     "sigops.fractal-lba.io/target": self.name})
        except Conflict:
            raise Conflict(409, f"keyring Secret {self.ring_secret} changed concurrently"
                           ) from None

    def effective(self, deployment: dict[str, Any] | None = None) -> BackendConfig:
        """What the backend accepts, read back from its Deployment and Secrets."""
        dep = deployment or self.deployment()
        if dep is None:
            from ..core.errors import KeyringError

            raise KeyringError(f"deployment {self.ns}/{self.name} not found")
        return self.effective_of_template(dep["spec"]["template"])

    def effective_of_template(self, template: dict[str, Any]) -> BackendConfig:
        container = find_container({"spec": {"template": template}}, self.container)

        def read(name: str, key: str) -> str | None:
            return self.kube.secret_value(self.ns, name, key)

        return backend_config(resolve_env(container, read), self.names)

    def import_ring(self, alg: str, deployment: dict[str, Any]) -> ManagedRing:
        """A managed ring holding the keys the backend uses today (first adoption)."""
        eff = self.effective(deployment)
        ring = ManagedRing()
        for k in eff.keys:
            if k.alg != alg:
                continue
            kid = f"imported-{k.fingerprint}"
            ring.entries.append({**Key(kid, k.alg, "active", k.secret, k.public).to_entry(),
                                 "created_at": now_iso(), "imported": True})
            ring.accepts.append(kid)
        ring.primary = ring.accepts[0] if ring.accepts else None
        return ring

    def apply(self, ring: ManagedRing, alg: str, existing: Any) -> bool:
        """Write the ring, point the Deployment's env at it and bump the pod-template
        annotation so pods roll. Returns True if the Deployment changed."""
        self.write_ring(ring, alg, existing)
        rev = revision_of(ring)

        def point_at_ring(dep: dict[str, Any]) -> bool:
            container = find_container(dep, self.container)
            env = desired_env(container.get("env"), alg, self.ring_secret, self.names)
            tmeta = dep["spec"]["template"].setdefault("metadata", {})
            annotations = tmeta.get("annotations") or {}
            if container.get("env") == env and annotations.get(REVISION_ANNOTATION) == rev:
                return False
            for c in dep["spec"]["template"]["spec"]["containers"]:
                if c.get("name") == container.get("name"):
                    c["env"] = env
            tmeta["annotations"] = {**annotations, REVISION_ANNOTATION: rev}
            return True

        return self.update(point_at_ring)

    def update(self, change: Callable[[dict[str, Any]], bool], attempts: int = 3) -> bool:
        """Read the Deployment, let ``change`` edit it in place (False: nothing to do) and
        replace it. A 409 means someone wrote in between (the deployment controller writes
        status and annotations after each change of ours): read, edit and try again."""
        for attempt in range(attempts):
            dep = self.deployment()
            if dep is None:
                raise Conflict(404, f"deployment {self.ns}/{self.name} disappeared")
            if not change(dep):
                return False
            try:
                self.kube.replace_deployment(self.ns, dep)
                return True
            except Conflict:
                if attempt == attempts - 1:
                    raise Conflict(
                        409, f"deployment {self.ns}/{self.name} changed concurrently") from None
        return False  # pragma: no cover - the loop returns or raises

    def set_env(self, name: str, value: str | None) -> str | None:
        """Set (or remove, with None) one literal env var; returns the previous literal value."""
        previous: list[str | None] = []

        def set_var(dep: dict[str, Any]) -> bool:
            container = find_container(dep, self.container)
            env = list(container.get("env") or [])
            old = next((e.get("value") for e in env if e.get("name") == name), None)
            previous[:] = [old]
            if old == value:
                return False
            env = [e for e in env if e.get("name") != name]
            if value is not None:
                env.append({"name": name, "value": value})
            for c in dep["spec"]["template"]["spec"]["containers"]:
                if c.get("name") == container.get("name"):
                    c["env"] = env
            return True

        self.update(set_var)
        return previous[0]


def owned_by(rs: Any, dep: dict[str, Any]) -> bool:
    """Whether a ReplicaSet belongs to this Deployment: its controller owner reference names
    the Deployment's UID (a name or matching labels alone could be anyone's object)."""
    uid = (dep.get("metadata") or {}).get("uid")
    return bool(uid) and any(o.kind == "Deployment" and o.uid == uid and o.controller
                             for o in rs.metadata.owner_references or [])


def pod_of(pod: dict[str, Any], replica_sets: set[str]) -> bool:
    """Whether the pod's controller is one of these ReplicaSets (of a Deployment).

    >>> pod = {"metadata": {"ownerReferences": [
    ...     {"kind": "ReplicaSet", "name": "be-5f", "controller": True}]}}
    >>> pod_of(pod, {"be-5f"}), pod_of(pod, {"other"})
    (True, False)
    """
    return any(o.get("kind") == "ReplicaSet" and o.get("controller") and o.get("name")
               in replica_sets for o in (pod.get("metadata") or {}).get("ownerReferences") or [])


def rollout_done(dep: dict[str, Any]) -> bool:
    """The Deployment's latest template runs on every replica and all of them are available."""
    st, spec = dep.get("status") or {}, dep["spec"]
    want = spec.get("replicas", 1)
    return bool(st.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
                and st.get("updatedReplicas", 0) == want
                and st.get("replicas", 0) == want
                and st.get("availableReplicas", 0) >= want)
