"""The operator's Prometheus metrics (served on --metrics-listen at /metrics)."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from .. import __version__

__all__ = ["REGISTRY", "INCIDENTS", "REMEDIATION_SECONDS", "SIGNALS_REJECTED",
           "SIGNALS_RATE_LIMITED", "ROTATION_STEPS", "ALERTS_RECEIVED", "UP", "BUILD_INFO"]

REGISTRY = CollectorRegistry()
# The process, Python and GC metrics every Prometheus client exports by default: a private
# registry has to ask for them.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
REGISTRY.register(GC_COLLECTOR)
BUILD_INFO = Gauge("sigops_build_info", "Always 1; the labels say which sigops runs",
                   ["version"], registry=REGISTRY)
BUILD_INFO.labels(__version__).set(1)
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
