"""Flags of ``sigops run``; each is also an environment variable.

Kept import-light (argparse only): the CLI builds its parser from here on every start.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

__all__ = ["RUN_FLAGS", "add_run_flags", "overrides"]


@dataclass(frozen=True)
class Flag:
    name: str
    env: str
    default: str | None
    help: str


RUN_FLAGS: tuple[Flag, ...] = (
    Flag("--alerts-listen", "SIGOPS_ALERTS_LISTEN", "0.0.0.0:8080",
         "address of the Alertmanager webhook receiver (POST /v1/alerts)"),
    Flag("--alerts-token-file", "SIGOPS_ALERTS_TOKEN_FILE", None,
         "file holding the bearer token Alertmanager sends (required to accept alerts)"),
    Flag("--wal-token-file", "SIGOPS_WAL_TOKEN_FILE", None,
         "file holding the bearer token sigops presents to the backends' WAL reader sidecars "
         "(re-read when it changes; without it the sidecars are not asked)"),
    Flag("--alerts-tls-cert-file", "SIGOPS_ALERTS_TLS_CERT_FILE", None,
         "serve the receiver over TLS with this certificate chain (PEM; reloaded on change)"),
    Flag("--alerts-tls-key-file", "SIGOPS_ALERTS_TLS_KEY_FILE", None,
         "the private key of --alerts-tls-cert-file (PEM; reloaded on change)"),
    Flag("--metrics-listen", "SIGOPS_METRICS_LISTEN", "0.0.0.0:8081",
         "address serving /metrics and /healthz"),
    Flag("--prometheus-url", "SIGOPS_PROMETHEUS_URL", None,
         "Prometheus base URL (error-rate guard, ALERTS poll); optional"),
    Flag("--prometheus-ca-file", "SIGOPS_PROMETHEUS_CA_FILE", None,
         "CA bundle (PEM) that signed Prometheus' certificate (default: the system's)"),
    Flag("--prometheus-cert-file", "SIGOPS_PROMETHEUS_CERT_FILE", None,
         "client certificate (PEM) presented to Prometheus"),
    Flag("--prometheus-key-file", "SIGOPS_PROMETHEUS_KEY_FILE", None,
         "private key of --prometheus-cert-file"),
    Flag("--prometheus-bearer-token-file", "SIGOPS_PROMETHEUS_BEARER_TOKEN_FILE", None,
         "file holding a bearer token for Prometheus (re-read when it changes)"),
    Flag("--prometheus-basic-auth-user", "SIGOPS_PROMETHEUS_BASIC_AUTH_USER", None,
         "basic auth user name for Prometheus (with --prometheus-basic-auth-password-file)"),
    Flag("--prometheus-basic-auth-password-file", "SIGOPS_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
         None, "file holding the basic auth password (re-read when it changes)"),
    Flag("--prometheus-insecure-skip-verify", "SIGOPS_PROMETHEUS_INSECURE_SKIP_VERIFY", "false",
         "true: do not verify Prometheus' certificate (tests only; never the default)"),
    Flag("--namespace", "SIGOPS_NAMESPACES", None,
         "comma list of namespaces to watch (default: all)"),
    Flag("--config", "SIGOPS_CONFIG", None,
         "YAML config: targets, modes per scenario, thresholds, metric names, windows"),
    Flag("--operator-namespace", "SIGOPS_OPERATOR_NAMESPACE", "sigops-system",
         "namespace of the operator's signing key Secret and public-key ConfigMap"),
    Flag("--kubeconfig", "KUBECONFIG", None,
         "kubeconfig file (default: in-cluster service account)"),
    Flag("--stuck-after", "SIGOPS_STUCK_AFTER", "300",
         "seconds a reconcile step or an alert post may run before liveness fails"),
    Flag("--leader-election", "SIGOPS_LEADER_ELECTION", "true",
         "true: only the copy holding Lease sigops-leader (operator namespace) acts; the "
         "others stand by and take over when it goes"),
    Flag("--lease-duration", "SIGOPS_LEASE_DURATION", "15",
         "seconds a standby waits for an unrenewed Lease before taking over"),
    Flag("--log-format", "SIGOPS_LOG_FORMAT", "text",
         "text, or json: one JSON object per line with incident/rotation names as fields"),
    # Overrides of the config file's values, for a quick change without editing it.
    Flag("--signature-error-metric", "SIGOPS_SIGNATURE_ERROR_METRIC", None,
         "signature error counter (config: signature_error_metric; default flk_signature_err)"),
    Flag("--error-rate-threshold", "SIGOPS_ERROR_RATE_THRESHOLD", None,
         "errors/s under which a spike is over (config: error_rate_threshold; default 10)"),
    Flag("--modes", "SIGOPS_MODES", None,
         "scenario modes, e.g. A=auto,E=approval (config: modes)"),
    Flag("--notification-url", "SIGOPS_NOTIFICATION_URL", None,
         "webhook notified on escalation (config: notification_url)"),
)


def overrides(args: argparse.Namespace) -> dict[str, object]:
    """Config-file values given on the command line or in the environment."""
    out: dict[str, object] = {}
    if args.signature_error_metric:
        out["signature_error_metric"] = args.signature_error_metric
    if args.error_rate_threshold:
        try:
            out["error_rate_threshold"] = float(args.error_rate_threshold)
        except ValueError:
            raise ValueError("--error-rate-threshold must be a number") from None
    if args.modes:
        modes: dict[str, str] = {}
        for part in args.modes.split(","):
            letter, sep, mode = part.strip().partition("=")
            if not sep:
                raise ValueError(f"--modes: {part!r} is not SCENARIO=MODE")
            modes[letter.strip()] = mode.strip()
        out["modes"] = modes
    if args.notification_url:
        out["notification_url"] = args.notification_url
    return out


def add_run_flags(p: argparse.ArgumentParser) -> None:
    for f in RUN_FLAGS:
        p.add_argument(f.name, default=os.environ.get(f.env, f.default),
                       help=f"{f.help} [{f.env}; default: {f.default or 'unset'}]")
