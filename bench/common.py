"""What every benchmark shares: repeats with min/median/max, and one results format.

Each benchmark script measures a ratio against a baseline *in the same run* (the machine is
shared and noisy), then calls :func:`save` with rows; ``bench/run.py`` gathers the saved
JSON into ``bench/RESULTS.md`` and a chart.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Row:
    """One measured ratio: ``value`` over ``baseline``, against a target ratio.

    With ``target_on="value"`` the target applies to ``value`` itself (seconds, GiB), and
    ``baseline`` (0 for none) is only shown for reference.

    >>> Row("startup", "--help", 0.2, 0.03, "s", target=0.5, lower_is_better=True,
    ...     target_on="value").met
    True
    >>> Row("batch", "x", 3.0, 2.0, "inst/s", target=2.0).met
    False
    """

    benchmark: str
    measure: str
    value: float
    baseline: float
    unit: str
    target: float | None = None  # the ratio value/baseline must reach (or stay under: lower)
    lower_is_better: bool = False
    spread: str = ""  # "min / median / max" of value over repeats
    target_on: str = "ratio"  # or "value": the target applies to value itself

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")

    @property
    def achieved(self) -> float:
        """What the target is checked against: the ratio, or the value itself."""
        return self.value if self.target_on == "value" else self.ratio

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        got = self.achieved
        return got <= self.target if self.lower_is_better else got >= self.target


def repeat(fn: Callable[[], float], times: int = 3) -> tuple[float, str]:
    """Run ``fn`` (returning a measurement) ``times`` times: the median and a spread text."""
    values = [fn() for _ in range(times)]
    med = statistics.median(values)
    return med, f"{min(values):.4g} / {med:.4g} / {max(values):.4g}"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def markdown(rows: list[Row]) -> str:
    lines = [
        "| benchmark | measure | value | baseline | ratio | target | met | min / median / max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = (
            "" if r.target is None else ("<= " if r.lower_is_better else ">= ") + f"{r.target:g}"
        )
        if r.target is not None and r.target_on == "value":
            target += f" {r.unit}"
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        baseline = f"{r.baseline:.4g} {r.unit}" if r.baseline else "-"
        ratio = f"{r.ratio:.3g}" if r.baseline else "-"
        lines.append(
            f"| {r.benchmark} | {r.measure} | {r.value:.4g} {r.unit} | {baseline} "
            f"| {ratio} | {target} | {met} | {r.spread} |"
        )
    return "\n".join(lines) + "\n"


def save(name: str, rows: list[Row], notes: str = "") -> str:
    """Write ``results/<name>.json`` and ``results/<name>.md``; return the Markdown."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    payload = [asdict(r) | {"ratio": r.ratio, "met": r.met} for r in rows]
    with open(os.path.join(RESULTS_DIR, f"{name}.json"), "w") as f:
        json.dump({"rows": payload, "notes": notes}, f, indent=2)
    text = markdown(rows) + (f"\n{notes}\n" if notes else "")
    with open(os.path.join(RESULTS_DIR, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)
    return text
