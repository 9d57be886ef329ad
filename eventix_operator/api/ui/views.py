"""How the dashboard shows values: times, durations, counts, JSON, and its charts.

The charts are SVG drawn here, on the server, and sent inside the page: nothing
to fetch, no script to run, so they work offline and under a CSP that allows no
inline script. Every number in them is formatted by this module and every text
escaped, so data cannot inject markup.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from eventix_operator.db.dashboard import PoolSample, Throughput


def utc(value: datetime | None) -> str:
    """A time as people compare it across machines: UTC, to the second."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def in_zone(value: datetime, zone: str) -> str:
    """A time in a schedule's zone, with its offset (so daylight saving shows)."""
    return value.astimezone(ZoneInfo(zone)).isoformat()


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``: two units at most."""
    if seconds is None:
        return "—"
    s = abs(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    minutes, sec = divmod(int(s), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(value: datetime | None, now: datetime) -> str:
    """``5 min ago`` or ``in 30 s``."""
    if value is None:
        return "—"
    delta = (value - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(delta)} ago"


def rate(count: int | None, per_seconds: float | None) -> str:
    """A rate limit as ``eventix queue set --rate`` takes it, spaced: ``10 / 1 s``,
    ``5 / 2.5 s``, ``600 / 1 min``; ``—`` for none."""
    if count is None or per_seconds is None:
        return "—"
    per = f"{per_seconds:g} s" if per_seconds < 60 else duration(per_seconds)
    return f"{count:,} / {per}"


def count(value: int) -> str:
    return f"{value:,}"


def approx(value: int) -> str:
    """An estimate, rounded as one: ``≈ 312k``, ``≈ 1.2M``."""
    if value >= 1_000_000:
        return f"≈ {value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"≈ {value / 1000:.0f}k"
    return f"≈ {value:,}"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def short(uid: str) -> str:
    return uid[:8]


# -- charts -------------------------------------------------------------------------------

WIDTH, HEIGHT = 1100, 200
LEFT, BOTTOM, TOP = 44, 20, 10


def _nice_ceiling(value: float) -> int:
    """The axis maximum: 1, 2 or 5 times a power of ten, at least ``value``."""
    if value <= 1:
        return 1
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def _frame(title: str, ymax: int, first: datetime, last: datetime, unit: str) -> list[str]:
    plot_h = HEIGHT - BOTTOM - TOP
    return [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH}" y2="{TOP}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP + plot_h / 2:.1f}" x2="{WIDTH}" '
        f'y2="{TOP + plot_h / 2:.1f}"/>',
        f'<text class="label" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{ymax:,}</text>',
        f'<text class="label" x="{LEFT - 4}" y="{TOP + plot_h / 2 + 4:.1f}" '
        f'text-anchor="end">{ymax // 2:,}</text>'
        if ymax % 2 == 0
        else "",
        f'<text class="label" x="{LEFT - 4}" y="{TOP + plot_h + 4}" text-anchor="end">0</text>',
        f'<text class="label" x="{LEFT}" y="{HEIGHT - 4}">{first:%H:%M} UTC</text>',
        f'<text class="label" x="{WIDTH}" y="{HEIGHT - 4}" text-anchor="end">'
        f"{last:%H:%M} UTC · {escape(unit)}</text>",
    ]


def throughput_chart(data: Throughput, queue: str = "") -> Markup:
    """Done (below) and failed (stacked above) tasks per minute, one bar a minute,
    each with a tooltip; failures in the danger colour."""
    done = data.done.get(queue, [0] * len(data.minutes))
    failed = data.failed.get(queue, [0] * len(data.minutes))
    if not data.minutes:
        return Markup("")
    ymax = _nice_ceiling(max((d + f for d, f in zip(done, failed, strict=True)), default=0))
    first = data.minutes[0].astimezone(UTC)
    last = data.minutes[-1].astimezone(UTC)
    parts = _frame("Tasks finished per minute, last hour", ymax, first, last, "per minute")
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / len(data.minutes)
    for i, (minute, d, f) in enumerate(zip(data.minutes, done, failed, strict=True)):
        x = LEFT + i * slot + 1
        w = max(1.0, slot - 2)
        hd = plot_h * d / ymax
        hf = plot_h * f / ymax
        label = f"{minute.astimezone(UTC):%H:%M} UTC: {d:,} done, {f:,} failed"
        parts.append(f"<g><title>{escape(label)}</title>")
        parts.append(
            f'<rect class="bar-bg" x="{x:.1f}" y="{TOP}" width="{w:.1f}" height="{plot_h}"/>'
        )
        if d:
            parts.append(
                f'<rect class="bar-done" x="{x:.1f}" y="{TOP + plot_h - hd:.1f}" '
                f'width="{w:.1f}" height="{hd:.1f}"/>'
            )
        if f:
            parts.append(
                f'<rect class="bar-failed" x="{x:.1f}" y="{TOP + plot_h - hd - hf:.1f}" '
                f'width="{w:.1f}" height="{hf:.1f}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def pool_chart(samples: Sequence[PoolSample], minutes: Sequence[datetime]) -> Markup:
    """A pool's last hour: queue depth as bars (its own scale, named under the plot),
    desired and current replicas as step lines (left scale)."""
    if not minutes:
        return Markup("")
    by_minute = {s.minute.astimezone(UTC): s for s in samples}
    rows = [by_minute.get(m.astimezone(UTC)) for m in minutes]
    replicas = [
        v
        for s in rows
        if s is not None
        for v in (s.desired_replicas, s.current_replicas)
        if v is not None
    ]
    ymax = _nice_ceiling(max(replicas, default=1))
    depth_max = _nice_ceiling(max((s.queue_depth for s in rows if s is not None), default=1))
    first, last = minutes[0].astimezone(UTC), minutes[-1].astimezone(UTC)
    parts = _frame("Replicas and queue depth, last hour", ymax, first, last, "replicas")
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / len(minutes)
    parts.append(
        f'<text class="label depth" x="{(LEFT + WIDTH) / 2:.0f}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">queue depth: top of the scale is {depth_max:,}</text>'
    )
    for i, s in enumerate(rows):
        if s is None or not s.queue_depth:
            continue
        h = plot_h * s.queue_depth / depth_max
        x = LEFT + i * slot + 1
        label = f"{minutes[i].astimezone(UTC):%H:%M} UTC: depth {s.queue_depth:,}"
        parts.append(
            f'<rect class="bar-depth" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{max(1.0, slot - 2):.1f}" height="{h:.1f}"><title>{escape(label)}</title>'
            "</rect>"
        )
    for name, css in (("desired_replicas", "line-desired"), ("current_replicas", "line-current")):
        points: list[str] = []
        for i, s in enumerate(rows):
            value = None if s is None else getattr(s, name)
            if value is None:
                if len(points) > 1:
                    parts.append(f'<polyline class="{css}" points="{" ".join(points)}"/>')
                points = []
                continue
            y = TOP + plot_h - plot_h * value / ymax
            points.append(f"{LEFT + i * slot:.1f},{y:.1f}")
            points.append(f"{LEFT + (i + 1) * slot:.1f},{y:.1f}")
        if len(points) > 1:
            parts.append(f'<polyline class="{css}" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
