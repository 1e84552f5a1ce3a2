"""The backend's Prometheus metrics, exposed under their exact upstream names.

prometheus_client appends ``_total`` to every counter it renders, but the upstream backend
exposes ``flk_signature_err`` and ``flk_accepted`` as they are, and the alert expression
``rate(flk_signature_err[5m])`` depends on that. So the counters live in a private
:class:`~prometheus_client.CollectorRegistry` through a small collector, and :func:`render`
writes the text format without renaming anything.

>>> m = BackendMetrics("flk_signature_err")
>>> m.inc("signature_err")
>>> m.registry.get_sample_value("flk_signature_err")
1.0
>>> b"flk_signature_err 1.0" in m.render()
True
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["BackendMetrics", "render", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class _Family:
    key: str
    name: str
    kind: str
    help: str
    label: str | None = None


class BackendMetrics(Collector):
    """Counters of the reference backend (thread-safe), registered in a private registry.

    Upstream names: ``signature_err`` (name configurable), ``flk_ingest_total``,
    ``flk_accepted``. The ``flk_testbed_*`` families are the testbed's own.
    """

    def __init__(self, signature_error_metric: str = "flk_signature_err") -> None:
        self._families = (
            _Family("signature_err", signature_error_metric, "counter",
                    "PCS submissions rejected with 401 (signature verification failed)"),
            _Family("ingest", "flk_ingest_total", "counter", "PCS submissions received"),
            _Family("accepted", "flk_accepted", "counter",
                    "PCS submissions accepted (200), dedup hits included"),
            _Family("malformed", "flk_testbed_malformed", "counter",
                    "PCS submissions rejected with 400 (malformed)"),
            _Family("rate_limited", "flk_testbed_rate_limited", "counter",
                    "PCS submissions rejected with 429 (over TOKEN_RATE)"),
            _Family("dedup_hits", "flk_testbed_dedup_hits", "counter",
                    "Replays of an accepted pcs_id answered from the dedup cache"),
            _Family("verdicts", "flk_testbed_verdicts", "counter",
                    "Verification verdicts by cause (sigops.core causes)", "cause"),
            _Family("reloads", "flk_testbed_config_reloads", "counter",
                    "Configuration loads (start-up and rollouts)"),
            _Family("generation", "flk_testbed_config_generation", "gauge",
                    "Generation of the configuration in use (0 = none yet)"),
        )
        self._by_key = {f.key: f for f in self._families}
        self._values: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def inc(self, key: str, label: str = "", amount: float = 1.0) -> None:
        """Add ``amount`` to a counter (``label`` is the value of its label, if it has one)."""
        with self._lock:
            self._values[(key, label)] = self._values.get((key, label), 0.0) + amount

    def set(self, key: str, value: float) -> None:
        """Set a gauge."""
        with self._lock:
            self._values[(key, "")] = value

    def value(self, key: str, label: str = "") -> float:
        """Current value of one series (0 when never touched)."""
        with self._lock:
            return self._values.get((key, label), 0.0)

    def by_label(self, key: str) -> dict[str, float]:
        """Every series of a labelled family, as {label value: value}."""
        with self._lock:
            return {lbl: v for (k, lbl), v in sorted(self._values.items()) if k == key}

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = dict(self._values)
        for f in self._families:
            m = Metric(f.name, f.help, f.kind)
            if f.label is None:
                m.add_sample(f.name, {}, values.get((f.key, ""), 0.0))
            else:
                for (k, lbl), v in sorted(values.items()):
                    if k == f.key:
                        m.add_sample(f.name, {f.label: lbl}, v)
            yield m

    def render(self) -> bytes:
        """The Prometheus text format (0.0.4) of this registry."""
        return render(self.registry)


def _value(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _escape(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render(registry: CollectorRegistry) -> bytes:
    """Text exposition that keeps metric and sample names exactly as collected."""
    out: list[str] = []
    for m in registry.collect():
        kind = "untyped" if m.type == "unknown" else m.type
        doc = m.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {m.name} {doc}\n# TYPE {m.name} {kind}\n")
        for s in m.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(s.labels.items()))
            out.append(f"{s.name}{{{labels}}} " if labels else f"{s.name} ")
            out.append(f"{_value(s.value)}\n")
    return "".join(out).encode("utf-8")
