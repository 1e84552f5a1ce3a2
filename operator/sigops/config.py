"""Flags of ``sigops run``; each is also an environment variable.

Kept import-light (argparse only): the CLI builds its parser from here on every start.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

__all__ = ["RUN_FLAGS", "add_run_flags"]


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
    Flag("--metrics-listen", "SIGOPS_METRICS_LISTEN", "0.0.0.0:8081",
         "address serving /metrics and /healthz"),
    Flag("--prometheus-url", "SIGOPS_PROMETHEUS_URL", None,
         "Prometheus base URL (error-rate guard, ALERTS poll); optional"),
    Flag("--namespace", "SIGOPS_NAMESPACES", None,
         "comma list of namespaces to watch (default: all)"),
    Flag("--config", "SIGOPS_CONFIG", None,
         "YAML config: targets, modes per scenario, thresholds, metric names, windows"),
    Flag("--operator-namespace", "SIGOPS_OPERATOR_NAMESPACE", "sigops-system",
         "namespace of the operator's signing key Secret and public-key ConfigMap"),
)


def add_run_flags(p: argparse.ArgumentParser) -> None:
    for f in RUN_FLAGS:
        p.add_argument(f.name, default=os.environ.get(f.env, f.default),
                       help=f"{f.help} [{f.env}; default: {f.default or 'unset'}]")
