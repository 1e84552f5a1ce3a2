"""The report's picture: the target's signature error rate over the incident window, the alert
threshold as a dashed line, and one numbered vertical line per signed action.

matplotlib is an optional extra (``sigops[report]``): :func:`available` says whether it is
installed, and nothing here imports it before it is needed. The figure is built without
pyplot (no display, no global state). Each artist that carries meaning has a ``gid``
(``rate``, ``threshold``, ``action-<n>``); :func:`figure_data` reads them back, and the PNG
carries that reading as a text chunk (``sigops:figure``) so a saved picture can be checked
from its data rather than its pixels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["available", "figure", "findings_figure", "figure_data", "save_png",
           "read_png_figure_data", "PNG_KEY"]

PNG_KEY = "sigops:figure"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figure(points: Sequence[tuple[float, float]], threshold: float,
           actions: Sequence[tuple[datetime, str]], title: str,
           span: tuple[datetime, datetime] | None = None) -> Any:
    """A matplotlib Figure (Agg canvas) of the rate ``points`` (unix time, errors/s), the
    threshold, one vertical line per action and, shaded, ``span`` (the incident open)."""
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # x in matplotlib's date numbers (days since its epoch, 1970 by default)
    times = [_num(datetime.fromtimestamp(t, UTC)) for t, _ in points]
    values = [v for _, v in points]
    ax.plot(times, values, color="#1f5fa8", linewidth=1.8, gid="rate",
            label="signature errors/s")
    ax.axhline(threshold, color="#c0392b", linestyle="--", linewidth=1.2, gid="threshold",
               label=f"alert threshold {threshold:g}/s")
    top = max([threshold, *values]) * 1.15 or 1.0
    if span is not None:
        ax.axvspan(_num(span[0]), _num(span[1]), color="#f0c040", alpha=0.12, gid="incident",
                   label="incident open")
    groups: dict[float, list[int]] = {}  # actions in the same second share one number label
    for i, (t, _label) in enumerate(actions):
        x = _num(t)
        ax.axvline(x, color="#2e8b57", linewidth=1.0, alpha=0.85, gid=f"action-{i}",
                   label="sigops action (numbered as in the report)" if i == 0 else None)
        groups.setdefault(round(x * 86400), []).append(i)
    for key, idx in groups.items():
        # above the frame, in axes height: never hidden by the curve or the legend
        ax.annotate(",".join(str(i + 1) for i in idx), (key / 86400, 1.01),
                    xycoords=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8,
                    color="#2e8b57", gid=f"action-label-{idx[0]}")
    ax.set_ylim(0, top)
    ax.set_ylabel("signature errors / s")
    ax.set_xlabel("time (UTC)")
    ax.set_title(title, fontsize=10, pad=14)
    ax.xaxis.set_major_formatter(
        mdates.DateFormatter("%H:%M:%S", tz=UTC))  # type: ignore[no-untyped-call]
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=8,
              frameon=False)
    fig.tight_layout()
    return fig


_FINDING_COLORS = ("#c0392b", "#1f5fa8", "#8e44ad", "#2e8b57")


def findings_figure(series: Mapping[str, Sequence[tuple[datetime, int]]], title: str) -> Any:
    """A matplotlib Figure (Agg canvas) of an audit's findings per hour received: one step
    line per finding (``series``: name -> (hour, count)), gid ``finding-<name>``."""
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    top = 1
    for i, (name, points) in enumerate(series.items()):
        if not points:
            continue
        hours = [_num(t) for t, _ in points]
        counts = [c for _, c in points]
        top = max(top, *counts)
        ax.plot(hours, counts, drawstyle="steps-post", marker="o", markersize=3,
                linewidth=1.6, color=_FINDING_COLORS[i % len(_FINDING_COLORS)],
                gid=f"finding-{name}", label=f"{name} (per hour)")
    ax.set_ylim(0, top * 1.15)
    ax.set_ylabel("findings per hour received")
    ax.set_xlabel("time the backend received the record (UTC)")
    ax.set_title(title, fontsize=10, pad=14)
    ax.xaxis.set_major_formatter(
        mdates.DateFormatter("%m-%d %H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8,
              frameon=False)
    fig.tight_layout()
    return fig


def _num(t: datetime) -> float:
    import matplotlib.dates as mdates

    return float(mdates.date2num(t))  # type: ignore[no-untyped-call]


def _rfc3339_ms(t: datetime) -> str:
    """UTC to the millisecond (date numbers are floats: a second may come back as .999999),
    without a fraction when it is a whole second, as sigops' records write times."""
    ms = round(t.timestamp() * 1000)
    whole = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{ms % 1000:03d}Z" if ms % 1000 else f"{whole}Z"


def figure_data(fig: Any) -> dict[str, Any]:
    """What the figure shows, read from its artists: the threshold line's y values, each
    action line's x (as RFC 3339 UTC) and the number of rate points; for an audit's chart,
    each finding's plotted total (``findings``)."""
    import matplotlib.dates as mdates

    out: dict[str, Any] = {"threshold": None, "actions": [], "rate_points": 0}
    for ax in fig.axes:
        for line in ax.get_lines():
            gid = line.get_gid() or ""
            if gid == "threshold":
                out["threshold"] = sorted({float(y) for y in line.get_ydata()})
            elif gid.startswith("action-"):
                xs = {_num(x) if isinstance(x, datetime) else float(x)
                      for x in line.get_xdata()}
                x = mdates.num2date(next(iter(xs))).astimezone(UTC)  # type: ignore[no-untyped-call]
                out["actions"].append({"gid": gid, "x": _rfc3339_ms(x),
                                       "vertical": len(xs) == 1})
            elif gid == "rate":
                out["rate_points"] = len(line.get_xdata())
            elif gid.startswith("finding-"):
                out.setdefault("findings", {})[gid[len("finding-"):]] = int(
                    sum(line.get_ydata()))
    out["actions"].sort(key=lambda a: int(a["gid"].split("-")[1]))
    return out


def save_png(fig: Any, path: Path) -> dict[str, Any]:
    """Write the PNG with the figure's data as a text chunk; returns that data."""
    data = figure_data(fig)
    fig.savefig(str(path), format="png", metadata={PNG_KEY: json.dumps(data, sort_keys=True)})
    return data


def read_png_figure_data(path: Path) -> dict[str, Any] | None:
    """The ``sigops:figure`` text chunk of a PNG written by :func:`save_png` (None if absent).
    Reads PNG chunks directly: no image library needed."""
    import struct

    raw = Path(path).read_bytes()
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    pos = 8
    while pos + 8 <= len(raw):
        (length,), ctype = struct.unpack(">I", raw[pos:pos + 4]), raw[pos + 4:pos + 8]
        body = raw[pos + 8:pos + 8 + length]
        if ctype == b"tEXt":
            key, _, text = body.partition(b"\x00")
            if key.decode("latin-1") == PNG_KEY:
                doc: dict[str, Any] = json.loads(text.decode("latin-1"))
                return doc
        pos += 12 + length
    return None
