"""Does a Prometheus histogram tell the truth? Scrape before and after, compare the delta.

Works with whatever buckets the process exports: the quantile is estimated the way
Prometheus' ``histogram_quantile`` does (linear inside the bucket that holds the rank), and
the comparison is made against that bucket's bounds widened by a stated tolerance, so a
coarse bucket layout cannot make a true metric fail, nor a lying one pass inside a narrow
bucket.
"""

from __future__ import annotations

import math
import re
import urllib.request
from dataclasses import dataclass

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound -> count, +Inf included), count and sum."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    total: float

    def minus(self, before: Histogram | None) -> Histogram:
        if before is None:
            return self
        prev = dict(before.buckets)
        return Histogram(
            tuple((le, c - prev.get(le, 0.0)) for le, c in self.buckets),
            self.count - before.count,
            self.total - before.total,
        )

    def quantile(self, q: float) -> tuple[float, float, float]:
        """(estimate, bucket lower bound, bucket upper bound) of the q-quantile."""
        if self.count <= 0:
            return math.nan, math.nan, math.nan
        rank = q * self.count
        lo, below = 0.0, 0.0
        for le, cum in self.buckets:
            if cum >= rank:
                if math.isinf(le):
                    return lo, lo, le  # as Prometheus: the highest finite bound
                inside = cum - below
                frac = (rank - below) / inside if inside else 1.0
                return lo + (le - lo) * frac, lo, le
            lo, below = le, cum
        return lo, lo, math.inf


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bytes(resp.read()).decode()
    except OSError:
        return ""


def parse(text: str, name: str, labels: dict[str, str] | None = None) -> Histogram | None:
    """The histogram ``name`` summed over the series whose labels include ``labels``."""
    want = labels or {}
    buckets: dict[float, float] = {}
    count = total = 0.0
    seen = False
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or not m.group(1).startswith(name):
            continue
        metric, raw_labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        got = dict(_LABEL.findall(raw_labels))
        if any(got.get(k) != v for k, v in want.items()):
            continue
        if metric == f"{name}_bucket":
            le = float(got["le"])
            buckets[le] = buckets.get(le, 0.0) + value
            seen = True
        elif metric == f"{name}_count":
            count += value
        elif metric == f"{name}_sum":
            total += value
    if not seen:
        return None
    return Histogram(tuple(sorted(buckets.items())), count, total)


@dataclass(frozen=True)
class Source:
    """Where one stage's histogram lives; the first name found wins (new names first)."""

    stage: str
    url: str
    candidates: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

    def read(self) -> tuple[str, Histogram] | None:
        text = scrape(self.url)
        for name, labels in self.candidates:
            h = parse(text, name, dict(labels))
            if h is not None:
                shown = name + (
                    "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""
                )
                return shown, h
        return None


@dataclass(frozen=True)
class Tolerance:
    absolute: float = 0.15
    relative: float = 0.25

    def of(self, value: float) -> float:
        return max(self.absolute, self.relative * value)

    def __str__(self) -> str:
        return f"±max({self.absolute:.2f} s, {self.relative:.0%}) beyond the bucket's bounds"


@dataclass(frozen=True)
class Verdict:
    stage: str
    metric: str
    what: str
    ok: bool
    text: str


def compare_count(stage: str, metric: str, delta: Histogram, expected: int) -> Verdict:
    ok = round(delta.count) == expected
    return Verdict(
        stage, metric, "count", ok, f"histogram +{delta.count:.0f}, benchmark {expected}"
    )


def compare_quantile(
    stage: str, metric: str, delta: Histogram, q: float, measured: float, tol: Tolerance
) -> Verdict:
    est, lo, hi = delta.quantile(q)
    if math.isnan(est):
        return Verdict(stage, metric, f"p{q * 100:.0f}", False, "histogram has no samples")
    t = tol.of(measured)
    ok = lo - t <= measured <= hi + t
    return Verdict(
        stage,
        metric,
        f"p{q * 100:.0f}",
        ok,
        f"histogram {est:.3f} s (bucket {lo:g}-{hi:g} s), benchmark {measured:.3f} s, "
        f"tolerance {t:.3f} s",
    )
