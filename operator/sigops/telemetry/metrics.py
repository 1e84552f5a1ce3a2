"""The operator's Prometheus metrics (served on --metrics-listen at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["REGISTRY", "INCIDENTS", "REMEDIATION_SECONDS", "SIGNALS_REJECTED",
           "SIGNALS_RATE_LIMITED", "ROTATION_STEPS", "ALERTS_RECEIVED", "UP"]

REGISTRY = CollectorRegistry()
INCIDENTS = Counter("sigops_incidents", "SignatureIncidents opened, by cause and scenario",
                    ["cause", "scenario"], registry=REGISTRY)
REMEDIATION_SECONDS = Histogram("sigops_remediation_seconds",
                                "Time from incident creation to Resolved", registry=REGISTRY,
                                buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600))
SIGNALS_REJECTED = Counter("sigops_signals_rejected",
                           "Signals and alert posts rejected (potential attacks), by reason",
                           ["reason"], registry=REGISTRY)
SIGNALS_RATE_LIMITED = Counter("sigops_signals_rate_limited",
                               "Signals rate-limited per source", registry=REGISTRY)
ROTATION_STEPS = Counter("sigops_keyrotation_steps", "KeyRotation steps taken, by phase",
                         ["phase"], registry=REGISTRY)
ALERTS_RECEIVED = Counter("sigops_alerts_received", "Alerts received, by path and status",
                          ["path", "status"], registry=REGISTRY)
UP = Gauge("sigops_up", "1 while the operator runs", registry=REGISTRY)
