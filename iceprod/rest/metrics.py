"""Prometheus metrics in the text exposition format, with bounded labels: route templates
(never raw paths), methods and status codes."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Request counters and latency histograms, plus gauges set by the server's loops."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency_buckets: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_count: dict[tuple[str, str], int] = defaultdict(int)
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.help: dict[str, str] = {}

    def observe_request(self, method: str, route: str, code: int, seconds: float) -> None:
        route = route or "unmatched"
        self.requests[(method, route, str(code))] += 1
        key = (method, route)
        buckets = self.latency_buckets.setdefault(key, [0] * len(BUCKETS))
        i = bisect.bisect_left(BUCKETS, seconds)
        if i < len(BUCKETS):
            buckets[i] += 1
        self.latency_sum[key] += seconds
        self.latency_count[key] += 1

    def inc(self, name: str, amount: float = 1.0, help: str = "", **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += amount
        if help:
            self.help.setdefault(name, help)

    def render(self, gauges: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]
               ) -> str:
        lines = [
            "# HELP iceprod_http_requests_total HTTP requests by route template and code.",
            "# TYPE iceprod_http_requests_total counter",
        ]
        for (method, route, code), n in sorted(self.requests.items()):
            lbl = _labels([("method", method), ("route", route), ("code", code)])
            lines.append(f"iceprod_http_requests_total{lbl} {n}")
        lines += [
            "# HELP iceprod_http_request_seconds HTTP request latency by route template.",
            "# TYPE iceprod_http_request_seconds histogram",
        ]
        for (method, route), counts in sorted(self.latency_buckets.items()):
            cumulative = 0
            for bound, n in zip(BUCKETS, counts, strict=True):
                cumulative += n
                lbl = _labels([("method", method), ("route", route), ("le", str(bound))])
                lines.append(f"iceprod_http_request_seconds_bucket{lbl} {cumulative}")
            total = self.latency_count[(method, route)]
            base = [("method", method), ("route", route)]
            lines.append(
                f"iceprod_http_request_seconds_bucket{_labels(base + [('le', '+Inf')])} {total}"
            )
            lines.append(f"iceprod_http_request_seconds_sum{_labels(base)} "
                         f"{self.latency_sum[(method, route)]:.6f}")
            lines.append(f"iceprod_http_request_seconds_count{_labels(base)} {total}")
        names = sorted({name for name, _ in self.counters})
        for name in names:
            lines.append(f"# HELP {name} {self.help.get(name, name)}")
            lines.append(f"# TYPE {name} counter")
            for (counter, lbls), v in sorted(self.counters.items()):
                if counter == name:
                    lines.append(f"{name}{_labels(lbls)} {v:g}")
        for name, (help_text, values) in sorted(gauges.items()):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            for lbls, v in sorted(values.items()):
                lines.append(f"{name}{_labels(lbls)} {v:g}")
        return "\n".join(lines) + "\n"
