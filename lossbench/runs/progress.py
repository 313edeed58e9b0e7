"""Progress of a training run or a stack of runs, shown at log points (where the loop reads the device anyway:
no extra host sync).

On a terminal: a live tqdm bar on stderr (step, train loss, the last validation metric, ETA). Elsewhere (a log
file, a launcher's worker, CI): a plain line on stdout about every tenth of the run and at least every
LINE_EVERY_S seconds, so that a log shows the run is alive without flooding it.
"""

from __future__ import annotations

import math
import sys
import time

LINE_EVERY_S = 30.0
LINES = 10  # plain lines over a whole run (at most, besides the time-based ones)


def _fmt(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.4g}"


class Progress:
    """Shows one loop's progress: a run alone, or a stack (its members summarised)."""

    def __init__(self, label: str, start: int, total: int, metric: str | None, bar: bool | None = None):
        self.label, self.start, self.total, self.metric = label, start, total, metric
        self.t0 = self.t_line = time.perf_counter()
        self.next_line = start + max(1, (total - start) // LINES)
        self.bar = None
        if bar if bar is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=label, unit="step", dynamic_ncols=True, leave=False)

    def update(self, step: int, losses: list[float], values: list[float | None], running: int) -> None:
        """At a log point: the step reached, each running member's window train loss and last metric value."""
        loss = _mean(losses)
        shown = [v for v in values if v is not None and math.isfinite(v)]
        metric = "" if not shown or not self.metric else (
            f" {self.metric} {_fmt(shown[0])}" if len(shown) == 1 else
            f" {self.metric} {_fmt(min(shown))}..{_fmt(max(shown))}")
        members = f" ({running} running)" if running > 1 or len(losses) > 1 else ""
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {_fmt(loss)}{metric}{members}", refresh=False)
            self.bar.update(step - self.bar.n)
            return
        now = time.perf_counter()
        if step >= self.total or (step < self.next_line and now - self.t_line < LINE_EVERY_S):
            return  # the run's own result line follows its last step
        self.next_line = step + max(1, (self.total - self.start) // LINES)
        self.t_line = now
        done = step - self.start
        eta = (now - self.t0) / done * (self.total - step) if done else math.nan
        print(f"lossbench: {self.label}: step {step}/{self.total} ({step / self.total:.0%}) loss {_fmt(loss)}{metric}"
              f"{members}, eta {eta:.0f} s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None
