"""What the reconcilers need of the Kubernetes API, as an interface.

:class:`~sigops.kube.api.Kube` is the real door (the official client, typed errors). The unit
tier drives a KeyRotation on an in-memory door of the tests (``tests/memkube.py``) whose
behaviour one contract suite holds to the real API server (``tests/integration/
test_kube_contract.py``): reads of missing objects, optimistic concurrency, status merges.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from kubernetes import client

__all__ = ["KubeDoor", "plain"]


def plain(obj: Any) -> Any:
    """A client model object as plain JSON-like data (no request is made)."""
    return _SERIALIZER.sanitize_for_serialization(obj)


_SERIALIZER = client.ApiClient()


class KubeDoor(Protocol):
    """Secrets, Deployments, pods, custom resources and Events, as the reconcilers use them.
    Errors are :class:`~sigops.kube.api.KubeError` (``NotFound``, ``Conflict``...)."""

    def read_secret(self, ns: str, name: str) -> client.V1Secret | None: ...

    def secret_value(self, ns: str, name: str, key: str) -> str | None: ...

    def write_secret(self, ns: str, name: str, data: dict[str, str],
                     existing: client.V1Secret | None, labels: dict[str, str] | None = None,
                     annotations: dict[str, str] | None = None) -> client.V1Secret: ...

    def delete_secret(self, ns: str, name: str) -> None: ...

    def read_config_map(self, ns: str, name: str) -> client.V1ConfigMap | None: ...

    def write_config_map(self, ns: str, name: str, data: dict[str, str],
                         existing: client.V1ConfigMap | None,
                         annotations: dict[str, str] | None = None) -> client.V1ConfigMap: ...

    def read_deployment(self, ns: str, name: str) -> dict[str, Any] | None: ...

    def replace_deployment(self, ns: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def list_replica_sets(self, ns: str, selector: str) -> list[client.V1ReplicaSet]: ...

    def list_pods(self, ns: str, selector: str) -> list[dict[str, Any]]: ...

    def pod_log_lines(self, ns: str, pod: str, container: str | None, since_seconds: int,
                      limit_bytes: int, max_line: int = 8192) -> Iterator[str]: ...

    def exec_output(self, ns: str, pod: str, container: str | None, command: list[str],
                    limit_bytes: int, timeout: float = ...) -> tuple[bytes, str, str]: ...

    def list_events(self, ns: str) -> list[dict[str, Any]]: ...

    def list_nodes(self) -> list[client.V1Node]: ...

    def label_node(self, name: str, key: str, value: str) -> None: ...

    def create_cr(self, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def list_cr(self, ns: str, plural: str, selector: str | None = None
                ) -> list[dict[str, Any]]: ...

    def get_cr(self, ns: str, plural: str, name: str) -> dict[str, Any] | None: ...

    def patch_status(self, ns: str, plural: str, name: str,
                     status: dict[str, Any]) -> None: ...

    def event(self, obj: dict[str, Any], reason: str, message: str,
              type_: str = "Normal") -> None: ...


if TYPE_CHECKING:  # the real door is one (checked by mypy)
    from .api import Kube

    def _real_door(k: Kube) -> KubeDoor:
        return k
