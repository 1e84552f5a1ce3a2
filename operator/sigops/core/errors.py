"""The root of every error sigops raises on purpose, and the core's own errors.

Other layers derive theirs from :class:`SigopsError` too: ``kube.KubeError`` (NotFound,
Conflict, Forbidden), ``incident.scenarios.ScenarioError``, ``rotation.reconciler.StepError``,
``incident.alertmanager.WebhookError``, ``cli.UsageError``, ``testbed.reload.ConfigError``."""

from __future__ import annotations

__all__ = [
    "SigopsError",
    "MalformedInput",
    "KeyringError",
    "SignalRejected",
]


class SigopsError(Exception):
    """Root of every error sigops raises on purpose."""


class MalformedInput(SigopsError):
    """The input is not a well-formed record (parse, type, duplicate key, base64, size).

    ``reason`` is short and safe to log: it never echoes the offending input.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyringError(SigopsError):
    """A key ring could not be loaded or is unusable (empty, unknown alg, bad material)."""


class SignalRejected(SigopsError):
    """A signed signal was rejected; ``reason`` is one of the stable reason codes."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
