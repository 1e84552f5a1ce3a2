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
           "SIGNALS_RATE_LIMITED", "ROTATION_STEPS", "ALERTS_RECEIVED", "ALERTS_DROPPED", "UP",
           "BUILD_INFO", "LIVE", "READY", "HEARTBEAT_AGE", "ACTIONS", "INCIDENT_PHASES",
           "ROTATIONS_OPEN", "ROTATION_OVERDUE", "ALERT_POST_SECONDS", "LEADER"]

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
# Every reason from the start at 0: a rule or panel on one reason has a series before the
# first rejection (the reasons of sigops.incident.intake).
for _reason in ("no_token", "unauthorized", "oversized", "bad_json", "bad_schema"):
    SIGNALS_REJECTED.labels(_reason)
SIGNALS_RATE_LIMITED = Counter("sigops_signals_rate_limited",
                               "Signals rate-limited per source", registry=REGISTRY)
ROTATION_STEPS = Counter("sigops_keyrotation_steps", "KeyRotation steps taken, by phase",
                         ["phase"], registry=REGISTRY)
ALERTS_RECEIVED = Counter("sigops_alerts_received", "Alerts received, by path and status",
                          ["path", "status"], registry=REGISTRY)
ALERTS_DROPPED = Counter(
    "sigops_alerts_dropped",
    "Alerts that opened nothing and used no target's rate limit, by path and reason "
    "(no_target, unknown_target, ambiguous_target, unconfirmed)", ["path", "reason"],
    registry=REGISTRY)
# Every reason of both paths from the start at 0 (sigops.incident.alert_targets.REASONS).
for _path in ("alertmanager", "prometheus-poll"):
    for _reason in ("no_target", "unknown_target", "ambiguous_target", "unconfirmed"):
        ALERTS_DROPPED.labels(_path, _reason)
UP = Gauge("sigops_up", "1 while the operator runs", registry=REGISTRY)
ACTIONS = Counter("sigops_remediation_actions",
                  "Remediation actions applied, by target and scenario (dashboard markers)",
                  ["target_namespace", "target_deployment", "scenario"], registry=REGISTRY)
INCIDENT_PHASES = Counter("sigops_incident_phase_changes",
                          "SignatureIncidents entering a phase, by phase", ["phase"],
                          registry=REGISTRY)
# Every phase (the CRD's enum) from the start at 0, so that increase() sees the first one.
for _phase in ("Diagnosing", "Remediating", "Verifying", "Resolved", "AwaitingApproval",
               "Escalated", "RateLimited", "Refused"):
    INCIDENT_PHASES.labels(_phase)
ROTATIONS_OPEN = Gauge("sigops_keyrotation_open",
                       "1 for each KeyRotation in progress, labelled with its current phase",
                       ["keyrotation_namespace", "keyrotation", "phase"], registry=REGISTRY)
ROTATION_OVERDUE = Gauge("sigops_keyrotation_overdue_seconds",
                         "How far an open KeyRotation is past its window (overlap plus two "
                         "rollouts and the probe grace); 0 while within it",
                         ["keyrotation_namespace", "keyrotation"], registry=REGISTRY)
ALERT_POST_SECONDS = Histogram("sigops_alert_post_seconds",
                               "Time to answer an authorized webhook post, by HTTP status",
                               ["code"], registry=REGISTRY,
                               buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LEADER = Gauge("sigops_leader", "1 while this copy holds the leader Lease and acts",
               registry=REGISTRY)
# (Label names that are not `namespace`: the scrape adds the operator's own namespace.)
LIVE = Gauge("sigops_live", "1 while no part of the operator is stuck (what /livez says)",
             registry=REGISTRY)
READY = Gauge("sigops_ready", "1 while started and the API server answers (what /readyz says)",
              registry=REGISTRY)
HEARTBEAT_AGE = Gauge("sigops_heartbeat_age_seconds",
                      "Seconds since a part's heartbeat (reconcile, intake)", ["part"],
                      registry=REGISTRY)
