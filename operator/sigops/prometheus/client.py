"""Reading Prometheus with prometheus-api-client; failures become None, never exceptions."""

from __future__ import annotations

import logging
import math
from typing import Any

__all__ = ["Prom"]

log = logging.getLogger("sigops.prometheus")


class Prom:
    """A Prometheus server at ``url``; ``None`` url means not configured."""

    def __init__(self, url: str | None, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/") if url else None
        self.timeout = timeout
        self._conn: Any = None

    @property
    def configured(self) -> bool:
        return self.url is not None

    def _c(self) -> Any:
        if self._conn is None:
            from prometheus_api_client import PrometheusConnect

            self._conn = PrometheusConnect(url=self.url, disable_ssl=True, timeout=self.timeout)
        return self._conn

    def query(self, promql: str) -> list[dict[str, Any]] | None:
        """Instant vector result, or None if Prometheus is unreachable or the query fails."""
        if not self.url:
            return None
        try:
            res: list[dict[str, Any]] = self._c().custom_query(promql)
            return res
        except Exception as e:  # noqa: BLE001 - any client/HTTP error means "unknown"
            log.warning("prometheus query failed: %s", type(e).__name__)
            return None

    def scalar(self, promql: str) -> float | None:
        """Sum of an instant vector (0.0 when empty); None when unknown."""
        res = self.query(promql)
        if res is None:
            return None
        total = 0.0
        for r in res:
            try:
                v = float(r["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if math.isfinite(v):
                total += v
        return total

    def range(self, promql: str, start: float, end: float, step: float
              ) -> list[tuple[float, float]] | None:
        """The sum over series of a range query, as ``(unix time, value)`` points in time
        order (non-finite values left out); None when unknown."""
        if not self.url:
            return None
        from datetime import UTC, datetime

        try:
            res: list[dict[str, Any]] = self._c().custom_query_range(
                promql, start_time=datetime.fromtimestamp(start, UTC),
                # seconds as a number: a duration string may not have a fraction ("1.5s")
                end_time=datetime.fromtimestamp(end, UTC), step=f"{max(step, 1.0):.3f}")
        except Exception as e:  # noqa: BLE001 - any client/HTTP error means "unknown"
            log.warning("prometheus range query failed: %s: %s", type(e).__name__,
                        str(e)[:200])
            return None
        total: dict[float, float] = {}
        for r in res:
            for t, v in r.get("values") or []:
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(x):
                    total[float(t)] = total.get(float(t), 0.0) + x
        return sorted(total.items())

    def firing(self, alertname: str) -> list[dict[str, str]] | None:
        """Label sets of firing alerts with this name (Prometheus' ALERTS series)."""
        res = self.query(f'ALERTS{{alertname="{alertname}",alertstate="firing"}}')
        if res is None:
            return None
        return [dict(r.get("metric", {})) for r in res]
