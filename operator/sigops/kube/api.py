"""Thin, typed helpers over the official client; every call has a request timeout."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

__all__ = ["Kube", "ApiException", "GROUP", "VERSION", "b64", "unb64"]

GROUP, VERSION = "sigops.fractal-lba.io", "v1alpha1"
TIMEOUT = 15.0


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


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
            return self.core.read_namespaced_secret(name, ns, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def secret_value(self, ns: str, name: str, key: str) -> str | None:
        s = self.read_secret(ns, name)
        if s is None or not s.data or key not in s.data:
            return None
        return unb64(s.data[key])

    def write_secret(self, ns: str, name: str, data: dict[str, str],
                     existing: client.V1Secret | None, labels: dict[str, str] | None = None,
                     annotations: dict[str, str] | None = None) -> client.V1Secret:
        """Create, or replace with optimistic concurrency (409 when someone else wrote)."""
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, namespace=ns, labels=labels,
                                         annotations=annotations),
            type="Opaque", data={k: b64(v) for k, v in data.items()})
        if existing is None:
            return self.core.create_namespaced_secret(ns, body, _request_timeout=TIMEOUT)
        body.metadata.resource_version = existing.metadata.resource_version
        body.metadata.labels = labels if labels is not None else existing.metadata.labels
        return self.core.replace_namespaced_secret(name, ns, body, _request_timeout=TIMEOUT)

    def delete_secret(self, ns: str, name: str) -> None:
        try:
            self.core.delete_namespaced_secret(name, ns, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status != 404:
                raise

    # -- Deployments --------------------------------------------------------------------------

    def read_deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            d = self.apps.read_namespaced_deployment(name, ns, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        out: dict[str, Any] = self.api.sanitize_for_serialization(d)
        return out

    def list_pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(ns, label_selector=selector,
                                             _request_timeout=TIMEOUT)
        out: list[dict[str, Any]] = self.api.sanitize_for_serialization(pods).get("items", [])
        return out

    def replace_deployment(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        d = self.apps.replace_namespaced_deployment(body["metadata"]["name"], ns, body,
                                                    _request_timeout=TIMEOUT)
        out: dict[str, Any] = self.api.sanitize_for_serialization(d)
        return out

    # -- custom resources ---------------------------------------------------------------------

    def list_cr(self, ns: str, plural: str) -> list[dict[str, Any]]:
        r = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural,
                                                      _request_timeout=TIMEOUT)
        items: list[dict[str, Any]] = r.get("items", [])
        return items

    def get_cr(self, ns: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            r: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, plural, name, _request_timeout=TIMEOUT)
            return r
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_status(self, ns: str, plural: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, plural, name, {"status": status}, _request_timeout=TIMEOUT)

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
            self.core.create_namespaced_event(meta["namespace"], ev, _request_timeout=TIMEOUT)
        except ApiException:
            pass
