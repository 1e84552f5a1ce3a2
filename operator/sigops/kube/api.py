"""The only door to the Kubernetes API: thin, typed helpers over the official client.

Every call goes through :meth:`Kube._call`, which adds the request timeout and turns the
client's ``ApiException`` into a typed :class:`KubeError` (:class:`NotFound`,
:class:`Conflict`, :class:`Forbidden`), so no caller compares status numbers.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..core.errors import SigopsError

__all__ = ["Kube", "KubeError", "NotFound", "Conflict", "Forbidden", "GROUP", "VERSION",
           "TIMEOUT", "b64", "unb64", "secret_strings"]

GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"
TIMEOUT = 15.0
"""Seconds any one API request may take: a hung API server stalls nothing for longer."""
MANAGED = {"app.kubernetes.io/managed-by": "sigops"}

T = TypeVar("T")


class KubeError(SigopsError):
    """The API server refused a request; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class Conflict(KubeError):
    """409: someone else wrote the object between our read and our write (or it exists)."""


class Forbidden(KubeError):
    """403: RBAC does not allow it."""


_TYPED: dict[int, type[KubeError]] = {404: NotFound, 409: Conflict, 403: Forbidden}


def typed_error(e: ApiException, what: str) -> KubeError:
    status = int(e.status or 0)
    return _TYPED.get(status, KubeError)(status, f"{what}: {status} {e.reason or ''}".strip())


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def secret_strings(secret: client.V1Secret | None) -> dict[str, str]:
    """A Secret's ``data`` decoded to text (empty for a missing Secret)."""
    return {k: unb64(v) for k, v in ((secret.data or {}) if secret is not None else {}).items()}


@dataclass
class Kube:
    """The API groups sigops uses, sharing one ApiClient."""

    api: client.ApiClient

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> Kube:
        """KUBECONFIG (or the given file) if set, else the in-cluster service account."""
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path:
            return cls(config.new_client_from_config(config_file=path))
        config.load_incluster_config()
        return cls(client.ApiClient())

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` with the request timeout; API errors come out typed."""
        try:
            return fn(*args, _request_timeout=TIMEOUT, **kw)
        except ApiException as e:
            raise typed_error(e, what) from None

    def reachable(self, timeout: float = 5.0) -> str | None:
        """None when the API server answers ``/version`` now, else the kind of failure
        (for readiness; never the server's reply)."""
        try:
            client.VersionApi(self.api).get_code(_request_timeout=timeout)
        except ApiException as e:
            return f"HTTP {e.status}"
        except Exception as e:  # noqa: BLE001 - connection refused, timeout, TLS ...
            return type(e).__name__
        return None

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    # -- Secrets ------------------------------------------------------------------------------

    def read_secret(self, ns: str, name: str) -> client.V1Secret | None:
        try:
            return self._call(f"read secret {ns}/{name}", self.core.read_namespaced_secret,
                              name, ns)
        except NotFound:
            return None

    def secret_value(self, ns: str, name: str, key: str) -> str | None:
        """One key of a Secret as text (only that key is decoded)."""
        sec = self.read_secret(ns, name)
        value = (sec.data or {}).get(key) if sec is not None else None
        return None if value is None else unb64(value)

    def write_secret(self, ns: str, name: str, data: dict[str, str],
                     existing: client.V1Secret | None, labels: dict[str, str] | None = None,
                     annotations: dict[str, str] | None = None) -> client.V1Secret:
        """Create, or replace with optimistic concurrency (409 when someone else wrote)."""
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=ns, labels=labels,
                                         annotations=annotations),
            type="Opaque", data={k: b64(v) for k, v in data.items()})
        what = f"write secret {ns}/{name}"
        if existing is None:
            return self._call(what, self.core.create_namespaced_secret, ns, body)
        body.metadata.resource_version = existing.metadata.resource_version
        body.metadata.labels = labels if labels is not None else existing.metadata.labels
        return self._call(what, self.core.replace_namespaced_secret, name, ns, body)

    def delete_secret(self, ns: str, name: str) -> None:
        try:
            self._call(f"delete secret {ns}/{name}", self.core.delete_namespaced_secret, name, ns)
        except NotFound:
            pass

    # -- ConfigMaps and namespaces --------------------------------------------------------------

    def read_config_map(self, ns: str, name: str) -> client.V1ConfigMap | None:
        try:
            return self._call(f"read configmap {ns}/{name}",
                              self.core.read_namespaced_config_map, name, ns)
        except NotFound:
            return None

    def write_config_map(self, ns: str, name: str, data: dict[str, str],
                         existing: client.V1ConfigMap | None,
                         annotations: dict[str, str] | None = None) -> client.V1ConfigMap:
        """Create, or replace with optimistic concurrency (Conflict when someone else wrote)."""
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name, namespace=ns, labels=dict(MANAGED),
                                         annotations=annotations), data=data)
        what = f"write configmap {ns}/{name}"
        if existing is None:
            return self._call(what, self.core.create_namespaced_config_map, ns, body)
        body.metadata.resource_version = existing.metadata.resource_version
        return self._call(what, self.core.replace_namespaced_config_map, name, ns, body)

    def ensure_namespace(self, ns: str) -> None:
        try:
            self._call(f"read namespace {ns}", self.core.read_namespace, ns)
        except NotFound:
            try:
                self._call(f"create namespace {ns}", self.core.create_namespace,
                           client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
            except Conflict:
                pass  # created in between

    # -- nodes --------------------------------------------------------------------------------

    def list_nodes(self) -> list[client.V1Node]:
        nodes: list[client.V1Node] = self._call("list nodes", self.core.list_node).items
        return nodes

    def label_node(self, name: str, key: str, value: str) -> None:
        self._call(f"label node {name}", self.core.patch_node, name,
                   {"metadata": {"labels": {key: value}}})

    # -- Deployments --------------------------------------------------------------------------

    def read_deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            d = self._call(f"read deployment {ns}/{name}", self.apps.read_namespaced_deployment,
                           name, ns)
        except NotFound:
            return None
        out: dict[str, Any] = self.api.sanitize_for_serialization(d)
        return out

    def replace_deployment(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        d = self._call(f"replace deployment {ns}/{name}",
                       self.apps.replace_namespaced_deployment, name, ns, body)
        out: dict[str, Any] = self.api.sanitize_for_serialization(d)
        return out

    def list_replica_sets(self, ns: str, selector: str) -> list[client.V1ReplicaSet]:
        rss: list[client.V1ReplicaSet] = self._call(
            f"list replicasets in {ns}", self.apps.list_namespaced_replica_set, ns,
            label_selector=selector).items
        return rss

    def list_pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        pods = self._call(f"list pods in {ns}", self.core.list_namespaced_pod, ns,
                          label_selector=selector)
        out: list[dict[str, Any]] = self.api.sanitize_for_serialization(pods).get("items", [])
        return out

    # -- custom resources ---------------------------------------------------------------------

    def list_cr(self, ns: str, plural: str, selector: str | None = None
                ) -> list[dict[str, Any]]:
        kw = {"label_selector": selector} if selector else {}
        r = self._call(f"list {plural} in {ns}", self.custom.list_namespaced_custom_object,
                       GROUP, VERSION, ns, plural, **kw)
        items: list[dict[str, Any]] = r.get("items", [])
        return items

    def get_cr(self, ns: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            r: dict[str, Any] = self._call(f"get {plural} {ns}/{name}",
                                           self.custom.get_namespaced_custom_object,
                                           GROUP, VERSION, ns, plural, name)
            return r
        except NotFound:
            return None

    def create_cr(self, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        r: dict[str, Any] = self._call(f"create {plural} in {ns}",
                                       self.custom.create_namespaced_custom_object,
                                       GROUP, VERSION, ns, plural, body)
        return r

    def patch_status(self, ns: str, plural: str, name: str, status: dict[str, Any]) -> None:
        self._call(f"patch status of {plural} {ns}/{name}",
                   self.custom.patch_namespaced_custom_object_status,
                   GROUP, VERSION, ns, plural, name, {"status": status})

    def event(self, obj: dict[str, Any], reason: str, message: str,
              type_: str = "Normal") -> None:
        """Record a Kubernetes Event on a custom resource (best effort)."""
        import datetime as dt
        import uuid

        meta = obj["metadata"]
        now = dt.datetime.now(dt.UTC)
        ev = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                                         namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=obj.get("apiVersion", f"{GROUP}/{VERSION}"), kind=obj.get("kind"),
                name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid")),
            reason=reason, message=message[:1024], type=type_,
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component="sigops"))
        try:
            self._call("create event", self.core.create_namespaced_event, meta["namespace"], ev)
        except KubeError:
            pass
