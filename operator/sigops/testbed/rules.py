"""The ``FLKSignatureFailuresSpike`` alerting rule, as upstream ships it, parameterized.

Upstream: ``rate(flk_signature_err[5m]) > 10`` for 5m, labels ``severity=warning`` and
``component=backend``. Tests and drills shrink the window and ``for`` to seconds.

>>> rule = signature_failure_rule(window="10s", for_="5s", threshold=1)
>>> r = rule["groups"][0]["rules"][0]
>>> r["alert"], r["expr"], r["for"]
('FLKSignatureFailuresSpike', 'rate(flk_signature_err[10s]) > 1', '5s')
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["ALERT_NAME", "RUNBOOK_URL", "signature_failure_rule", "write_rule_file",
           "duration"]

ALERT_NAME = "FLKSignatureFailuresSpike"
RUNBOOK_URL = "https://docs.fractal-lba.example.com/runbooks/signature-failures-spike"
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def duration(value: str | float) -> str:
    """A Prometheus duration from ``"5m"`` or a number of seconds (``10`` -> ``"10s"``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return f"{int(value)}s" if float(value).is_integer() else f"{int(value * 1000)}ms"
    if not isinstance(value, str) or not _DURATION.fullmatch(value):
        raise ValueError(f"invalid Prometheus duration {str(value)[:20]!r}; e.g. 5m, 30s")
    return value


def signature_failure_rule(metric: str = "flk_signature_err", window: str | float = "5m",
                           for_: str | float = "5m", threshold: float = 10,
                           runbook_url: str = RUNBOOK_URL, group: str = "flk-backend",
                           interval: str | float | None = None) -> dict[str, Any]:
    """The Prometheus rule-file document (a dict; YAML or JSON of it is a valid rule file)."""
    if not _METRIC.fullmatch(metric):
        raise ValueError(f"invalid metric name {metric[:40]!r}")
    window, for_ = duration(window), duration(for_)
    grp: dict[str, Any] = {"name": group}
    if interval is not None:
        grp["interval"] = duration(interval)
    grp["rules"] = [{
        "alert": ALERT_NAME,
        "expr": f"rate({metric}[{window}]) > {threshold:g}",
        "for": for_,
        "labels": {"severity": "warning", "component": "backend"},
        "annotations": {
            "summary": "Signature verification failures spike",
            "description": (f"{metric} is increasing at {{{{ $value | humanize }}}}/s over "
                            f"{window} (threshold {threshold:g}/s): legitimate PCS "
                            "submissions may be rejected with 401."),
            "runbook_url": runbook_url,
        },
    }]
    return {"groups": [grp]}


def write_rule_file(path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`signature_failure_rule` (``kwargs``) as YAML to ``path``; returns it."""
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(signature_failure_rule(**kwargs), sort_keys=False))
    return p
