"""The only door to the Kubernetes API: thin, typed helpers over the official client.

Every call goes through :meth:`Kube._call`, which adds the request timeout and turns the
client's ``ApiException`` into a typed :class:`KubeError` (:class:`NotFound`,
:class:`Conflict`, :class:`Forbidden`), so no caller compares status numbers.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..core.backendlog import lines_of
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

    @classmethod
    def for_user(cls, context: str | None = None) -> Kube:
        """The person's kubeconfig, as kubectl reads it: ``KUBECONFIG`` (a list of files is
        merged) else ``~/.kube/config``, its current context unless ``context`` is given."""
        try:
            return cls(config.new_client_from_config(context=context))
        except config.ConfigException as e:
            raise KubeError(0, f"kubeconfig: {e}") from None

    @staticmethod
    def context_namespace(context: str | None = None) -> str:
        """The namespace of the (current or given) kubeconfig context, ``default`` if unset."""
        try:
            contexts, current = config.list_kube_config_contexts()
        except config.ConfigException as e:
            raise KubeError(0, f"kubeconfig: {e}") from None
        chosen = next((c for c in contexts if c.get("name") == context), None) \
            if context else current
        if chosen is None:
            raise KubeError(0, f"kubeconfig: no context named {context!r}")
        ns = (chosen.get("context") or {}).get("namespace")
        return str(ns) if ns else "default"

    def whoami(self) -> dict[str, Any]:
        """The requesting user as the API server sees these credentials (SelfSubjectReview):
        ``{"user", "uid"?, "groups"?}``."""
        body = client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1",
                                          kind="SelfSubjectReview")
        r = self._call("self subject review",
                       client.AuthenticationV1Api(self.api).create_self_subject_review, body)
        info = r.status.user_info if r.status is not None else None
        if info is None or not info.username:
            raise KubeError(0, "the API server did not name the requesting user")
        out: dict[str, Any] = {"user": info.username}
        if info.uid:
            out["uid"] = info.uid
        if info.groups:
            out["groups"] = sorted(info.groups)
        return out

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

    def replace_config_map_data(self, existing: client.V1ConfigMap,
                                data: dict[str, str]) -> client.V1ConfigMap:
        """Replace the data of ``existing`` and nothing else: its labels, annotations and owner
        references stay (an audit's result ConfigMap must stay owned by its Job, or the Job's
        TTL would leave it behind). Conflict when someone else wrote since it was read."""
        existing.data = data
        ns, name = existing.metadata.namespace, existing.metadata.name
        return self._call(f"write configmap {ns}/{name}", self.core.replace_namespaced_config_map,
                          name, ns, existing)

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

    def list_config_maps(self, ns: str, selector: str) -> list[client.V1ConfigMap]:
        cms: list[client.V1ConfigMap] = self._call(
            f"list configmaps in {ns}", self.core.list_namespaced_config_map, ns,
            label_selector=selector).items
        return cms

    def list_pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        pods = self._call(f"list pods in {ns}", self.core.list_namespaced_pod, ns,
                          label_selector=selector)
        out: list[dict[str, Any]] = self.api.sanitize_for_serialization(pods).get("items", [])
        return out

    def pod_log_lines(self, ns: str, pod: str, container: str | None, since_seconds: int,
                      limit_bytes: int, max_line: int = 8192) -> Iterator[str]:
        """The pod's log of the last ``since_seconds``, at most ``limit_bytes`` of it, one line
        at a time (streamed: memory stays bounded whatever the log holds; lines are cut at
        ``max_line`` bytes, undecodable bytes replaced)."""
        kw: dict[str, Any] = {"since_seconds": max(1, since_seconds),
                              "limit_bytes": limit_bytes, "_preload_content": False}
        if container:
            kw["container"] = container
        r = self._call(f"read log of pod {ns}/{pod}", self.core.read_namespaced_pod_log, pod,
                       ns, **kw)
        try:
            yield from lines_of(r.stream(65536), max_line)
        except urllib3.exceptions.HTTPError as e:
            raise KubeError(0, f"read log of pod {ns}/{pod}: {type(e).__name__}") from None
        finally:
            r.release_conn()

    def exec_output(self, ns: str, pod: str, container: str | None, command: list[str],
                    limit_bytes: int, timeout: float = TIMEOUT) -> tuple[bytes, str, str]:
        """Run ``command`` (no shell) in the container: (stdout up to ``limit_bytes``, the head
        of stderr, the failure the API server reported on the error channel or "" on
        success). Over a client of its own: the websocket call swaps a method of the client
        it runs on, which must not touch the shared one other threads use."""
        import json as _json
        import time

        from kubernetes.stream import stream

        api = client.CoreV1Api(client.ApiClient(self.api.configuration))
        kw: dict[str, Any] = {"command": command, "stdout": True, "stderr": True,
                              "stdin": False, "tty": False, "binary": True,
                              "_preload_content": False, "_request_timeout": timeout}
        if container:
            kw["container"] = container
        what = f"exec in pod {ns}/{pod}"
        try:
            resp = stream(api.connect_get_namespaced_pod_exec, pod, ns, **kw)
        except ApiException as e:
            raise typed_error(e, what) from None
        except Exception as e:  # websocket handshake and transport errors
            raise KubeError(0, f"{what}: {type(e).__name__}") from None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        status = b""
        try:
            while resp.is_open() and len(out) <= limit_bytes:
                if time.monotonic() > deadline:
                    raise KubeError(0, f"{what}: timed out after {timeout:.0f}s")
                resp.update(timeout=1)
                if resp.peek_stdout():
                    out += resp.read_stdout()
                if resp.peek_stderr():
                    err += resp.read_stderr()[:4096]
                if resp.peek_channel(3):
                    status += resp.read_channel(3)
        except KubeError:
            raise
        except Exception as e:  # the connection dropped mid-way (a pod that went away)
            raise KubeError(0, f"{what}: {type(e).__name__}") from None
        finally:
            resp.close()
        failure = ""
        if status:
            try:
                doc = _json.loads(status)
                if doc.get("status") != "Success":
                    failure = str(doc.get("message") or doc.get("reason") or "failed")[:200]
            except ValueError:
                failure = "unreadable exec status"
        return (bytes(out[:limit_bytes]), bytes(err[:300]).decode("utf-8", "replace"),
                failure)

    def list_events(self, ns: str) -> list[dict[str, Any]]:
        """The namespace's Events (core/v1), at most 1000."""
        evs = self._call(f"list events in {ns}", self.core.list_namespaced_event, ns,
                         limit=1000)
        out: list[dict[str, Any]] = self.api.sanitize_for_serialization(evs).get("items", [])
        return out

    # -- Jobs and the objects an audit Job owns ----------------------------------------------

    def _creator(self, kind: str) -> Callable[..., Any]:
        """The create call of a namespaced kind that sigops creates from a manifest."""
        batch, rbac = client.BatchV1Api(self.api), client.RbacAuthorizationV1Api(self.api)
        table: dict[str, Callable[..., Any]] = {
            "Job": batch.create_namespaced_job,
            "ServiceAccount": self.core.create_namespaced_service_account,
            "Secret": self.core.create_namespaced_secret,
            "ConfigMap": self.core.create_namespaced_config_map,
            "Role": rbac.create_namespaced_role,
            "RoleBinding": rbac.create_namespaced_role_binding,
        }
        if kind not in table:
            raise KubeError(0, f"sigops does not create {kind} objects")
        return table[kind]

    def create_object(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create one namespaced object from its manifest (Job, ServiceAccount, Secret,
        ConfigMap, Role, RoleBinding); :class:`Conflict` when it exists."""
        meta = body["metadata"]
        r = self._call(f"create {body['kind']} {meta['namespace']}/{meta['name']}",
                       self._creator(body["kind"]), meta["namespace"], body)
        out: dict[str, Any] = self.api.sanitize_for_serialization(r)
        return out

    def read_job(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            r = self._call(f"read job {ns}/{name}",
                           client.BatchV1Api(self.api).read_namespaced_job, name, ns)
        except NotFound:
            return None
        out: dict[str, Any] = self.api.sanitize_for_serialization(r)
        return out

    def patch_job(self, ns: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of a Job (``{"spec": {"suspend": False}}`` resumes it)."""
        r = self._call(f"patch job {ns}/{name}",
                       client.BatchV1Api(self.api).patch_namespaced_job, name, ns, patch,
                       _content_type="application/merge-patch+json")
        out: dict[str, Any] = self.api.sanitize_for_serialization(r)
        return out

    # -- custom resources ---------------------------------------------------------------------

    def list_cr(self, ns: str, plural: str, selector: str | None = None
                ) -> list[dict[str, Any]]:
        kw = {"label_selector": selector} if selector else {}
        r = self._call(f"list {plural} in {ns}", self.custom.list_namespaced_custom_object,
                       GROUP, VERSION, ns, plural, **kw)
        items: list[dict[str, Any]] = r.get("items", [])
        return items

    def list_cr_all(self, plural: str) -> list[dict[str, Any]]:
        """Custom resources of one kind in every namespace."""
        r = self._call(f"list {plural}", self.custom.list_cluster_custom_object,
                       GROUP, VERSION, plural)
        items: list[dict[str, Any]] = r.get("items", [])
        return items

    def json_patch_cr(self, ns: str, plural: str, name: str, ops: list[dict[str, Any]]
                      ) -> dict[str, Any]:
        """An RFC 6902 JSON patch of a custom resource (a ``test`` op of the resourceVersion
        makes it apply only to the object that was read; otherwise 422 or 409)."""
        r: dict[str, Any] = self._call(
            f"patch {plural} {ns}/{name}", self.custom.patch_namespaced_custom_object,
            GROUP, VERSION, ns, plural, name, ops,
            _content_type="application/json-patch+json")
        return r

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

    def watch_cr(self, ns: str, plural: str, name: str, seconds: float,
                 resource_version: str | None = None) -> Iterator[dict[str, Any]]:
        """The custom resource ``ns/name`` each time it changes, for at most ``seconds``
        (the server ends the watch then): ADDED and MODIFIED objects; a DELETED one ends
        it with :class:`NotFound`. Needs ``watch`` on the kind (:class:`Forbidden`
        otherwise: poll with :meth:`get_cr` instead)."""
        from kubernetes import watch

        w = watch.Watch()
        kw: dict[str, Any] = {"field_selector": f"metadata.name={name}",
                              "timeout_seconds": max(int(seconds), 1),
                              "_request_timeout": max(seconds, 1.0) + TIMEOUT}
        if resource_version:
            kw["resource_version"] = resource_version
        try:
            for ev in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, ns,
                               plural, **kw):
                obj = ev.get("object")
                if ev.get("type") == "DELETED":
                    raise NotFound(404, f"{plural} {ns}/{name} was deleted")
                if isinstance(obj, dict) and ev.get("type") in ("ADDED", "MODIFIED"):
                    yield obj
        except ApiException as e:
            raise typed_error(e, f"watch {plural} {ns}/{name}") from None
        except urllib3.exceptions.HTTPError as e:  # the connection broke or timed out
            raise KubeError(0, f"watch {plural} {ns}/{name}: {type(e).__name__}") from None
        finally:
            w.stop()

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
