"""One active sigops: leader election on a ``coordination.k8s.io`` Lease.

kopf's peering pauses operators that see a peer of higher priority, but it is not leader
election (two copies of equal priority both act). A Lease is: the holder renews it; another copy
takes it over only once it has watched the Lease go unrenewed for a whole lease duration.
Expiry is judged by the observer's own monotonic clock from the moment it saw the record change
(as client-go does), never by comparing timestamps written by another node's clock.

Writes use the Lease's resourceVersion: of two copies trying at once, one wins (409 for the
other). A copy that can no longer renew must stop acting before its Lease can expire for
the others (the caller exits; see ``sigops.runtime.operator``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from .api import TIMEOUT, Kube

__all__ = ["Lease", "LEASE_NAME"]

LEASE_NAME = "sigops-leader"


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Lease:
    """The Lease ``namespace/name`` as seen by the copy ``identity``."""

    def __init__(self, kube: Kube, namespace: str, identity: str, name: str = LEASE_NAME,
                 duration: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.identity, self.duration, self.clock = identity, duration, clock
        self._seen: tuple[Any, ...] | None = None  # the record last observed
        self._seen_at = 0.0  # when it was first observed (our clock)
        self.holder: str | None = None

    @property
    def _api(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(self.kube.api)

    def _body(self, transitions: int, acquired: str | None,
              version: str | None = None) -> client.V1Lease:
        now = _now_micro()
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace,
                                         resource_version=version),
            spec=client.V1LeaseSpec(holder_identity=self.identity,
                                    lease_duration_seconds=int(round(self.duration)),
                                    acquire_time=acquired or now, renew_time=now,
                                    lease_transitions=transitions))

    def try_acquire(self) -> bool:
        """Take or renew the Lease; True while this copy holds it. API failures are False (a
        copy that cannot reach the API server must not believe it leads)."""
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace,
                                                    _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status != 404:
                return False
            try:
                self._api.create_namespaced_lease(self.namespace, self._body(0, None),
                                                  _request_timeout=TIMEOUT)
            except ApiException:
                return False  # another copy created it first
            except Exception:  # noqa: BLE001 - unreachable API server: not leading
                return False
            self.holder = self.identity
            return True
        except Exception:  # noqa: BLE001 - unreachable API server: not leading
            return False
        spec = lease.spec
        record = (spec.holder_identity, spec.renew_time, spec.lease_transitions)
        now = self.clock()
        if record != self._seen:
            self._seen, self._seen_at = record, now
        self.holder = spec.holder_identity
        mine = spec.holder_identity == self.identity
        duration = float(spec.lease_duration_seconds or self.duration)
        expired = not spec.holder_identity or now - self._seen_at > duration
        if not mine and not expired:
            return False
        transitions = int(spec.lease_transitions or 0) + (0 if mine else 1)
        acquired = spec.acquire_time if mine else None
        if isinstance(acquired, datetime):
            acquired_s: str | None = acquired.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        else:
            acquired_s = acquired
        try:
            self._api.replace_namespaced_lease(
                self.name, self.namespace,
                self._body(transitions, acquired_s, lease.metadata.resource_version),
                _request_timeout=TIMEOUT)
        except Exception:  # noqa: BLE001 - 409 (someone else won) or unreachable
            return False
        self.holder = self.identity
        return True

    def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over at once."""
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace,
                                                    _request_timeout=TIMEOUT)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.renew_time = None
            self._api.replace_namespaced_lease(self.name, self.namespace, lease,
                                               _request_timeout=TIMEOUT)
        except Exception:  # noqa: BLE001 - best effort: the Lease expires anyway
            return
