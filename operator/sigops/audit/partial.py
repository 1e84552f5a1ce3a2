"""The signed partial result of one index of an audit.

An index signs its result with the audit's own Ed25519 key (generated for the audit, mounted
into its pods only), never with the operator's long-lived key: a Job pod that is compromised
can then forge the partials of that one audit and nothing else. The operator checks every
partial against the audit's public key before it merges it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.errors import SignalRejected
from ..core.keys import Key
from ..core.signals import verify_signal
from ..signing.records import Signer

__all__ = ["PARTIAL_KIND", "sign_partial", "verify_partial"]

PARTIAL_KIND = "audit_partial"
SERVICE_ID = "sigops-audit"


def sign_partial(key: Key, audit: str, index: int, target: str,
                 result: Mapping[str, Any]) -> dict[str, Any]:
    """The partial result of index ``index`` of audit ``audit`` (``namespace/name``), signed.
    The payload's ``result`` is the result as given (lists in it come back sorted)."""
    return Signer(key, SERVICE_ID).record([], PARTIAL_KIND, target, audit=audit, index=index,
                                          result=dict(result))


def verify_partial(signal: Any, public: Mapping[str, bytes], audit: str, index: int
                   ) -> dict[str, Any]:
    """The result of a partial that verifies with ``public`` and names this audit and index;
    :class:`SignalRejected` otherwise (a partial copied from another audit or index too)."""
    payload = verify_signal(signal, public)
    if payload.get("type") != PARTIAL_KIND:
        raise SignalRejected("malformed", f"not an audit partial: {payload.get('type')!r}")
    if payload.get("audit") != audit or payload.get("index") != index:
        raise SignalRejected("foreign_record",
                             f"partial of {payload.get('audit')!r} index "
                             f"{payload.get('index')!r}, expected {audit!r} index {index}")
    result = payload.get("result")
    if not isinstance(result, dict):
        raise SignalRejected("malformed", "a partial's payload has no result object")
    return result
