"""Finished runs read back as data: every summary.json under some paths (`find_runs`), checked before it is
trusted, and grouped into runs that differ only in their seeds (`group_runs`). The report, the comparisons, the
plots and the studies all start here."""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench import config
from lossbench.config import flatten, keys
from lossbench.engine import diagnosis
from lossbench.errors import LossbenchError
from lossbench.store import SUMMARY, read_regular

# Config keys that do not change what a run computes (seeds, paths, resuming, bookkeeping): runs that differ
# only in these belong to one group.
IGNORED = set(keys.keys_with(keys.Role.REPLICATE))


NO_RUNS = "no runs found under {}: expected summary.json files written by python -m lossbench"


class ReportError(LossbenchError):
    """Nothing to report on (bad path, no runs, a key that cannot be compared); the CLI prints it, exits 2."""


@dataclass
class Run:
    dir: Path
    summary: dict
    params: dict[str, Any]  # flattened config, IGNORED keys removed

    @property
    def status(self) -> str:
        return self.summary.get("status") or "unknown"


@dataclass
class Group:
    label: str
    runs: list[Run] = field(default_factory=list)

    def statuses(self) -> str:
        """'5 completed', '5 completed (2 stalled): split'. A group whose runs ended differently is split: its
        mean is of runs that did not behave alike (the per-run table shows each)."""
        text = ", ".join(f"{n} {s}" for s, n in Counter(r.status for r in self.runs).items())
        diagnosed = Counter(d for r in self.runs if (d := diagnosis.name(r.summary)))
        if diagnosed:
            text += f" ({', '.join(f'{n} {d}' for d, n in diagnosed.items())})"
        return text + (": split" if self.split() else "")

    def split(self) -> str | None:
        """'2 of 5 stalled' when some of the group's runs but not all ended alike (status and diagnosis)."""
        outcomes = Counter(diagnosis.name(r.summary) or r.status for r in self.runs)
        if len(outcomes) < 2:
            return None
        odd = min(outcomes, key=lambda k: (k == "completed", outcomes[k], k))  # name what went wrong
        return f"{outcomes[odd]} of {len(self.runs)} {odd}"

    def legend(self) -> str:
        bad = {s: n for s, n in Counter(diagnosis.name(r.summary) or r.status for r in self.runs).items()
               if s != "completed"}
        return self.label + (f" ({', '.join(f'{n} {s}' for s, n in bad.items())})" if bad else "")


def natural_key(path: Path) -> list:
    """Sort job dirs 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(paths: list[Path]) -> list[Run]:
    runs: list[Run] = []
    for root in paths:
        if not root.is_dir():
            raise ReportError(f"{root} is not a directory. Pass sweep or run directories (e.g. outputs/multirun/<dir>).")
        found = sorted(root.rglob(SUMMARY), key=natural_key)
        if not found:
            raise ReportError(NO_RUNS.format(root))
        for path in found:
            try:
                s = json.loads(read_regular(path, follow=True))  # never a FIFO or device: nothing blocks
                problem = not_a_run(s)
            except (OSError, UnicodeDecodeError, ValueError) as e:
                s, problem = None, f"cannot read it as JSON ({type(e).__name__})"
            except LossbenchError as e:  # a FIFO, device or directory named summary.json
                s, problem = None, str(e).split(";")[0]
            if problem:
                print(f"lossbench.report: warning: skipping {path}: {problem}", file=sys.stderr)
                continue
            params = {k: v for k, v in flatten(s["config"]).items() if k not in IGNORED}
            if params.get("model.init_from"):  # one start per seed (<dir>/seed<k>): runs group by where they come from
                params["model.init_from"] = str(Path(params["model.init_from"]).parent)
            runs.append(Run(path.parent, s, params))
    if not runs:
        raise ReportError(f"no usable runs under {', '.join(map(str, paths))}: every {SUMMARY} found was skipped "
                          "(see the warnings)")
    seen, unique = set(), []
    for r in runs:  # overlapping paths (a sweep and its parent) list a run once
        if r.dir.resolve() not in seen:
            seen.add(r.dir.resolve())
            unique.append(r)
    return unique


def not_a_run(s: Any) -> str | None:
    """Why a parsed summary.json is not a lossbench run summary (None if it is one)."""
    if not isinstance(s, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(s), "null")
        return f"not a run summary (the JSON is {kind}, not an object)"
    if not isinstance(s.get("config"), dict) or not isinstance(s.get("status"), str):
        return "not a run summary (no 'config' object and 'status' string)"
    bad = [k for k, t in (("final", dict), ("best", dict), ("numerics", dict), ("convergence", dict),
                          ("history", list)) if s.get(k) is not None and not isinstance(s[k], t)]
    if bad or not all(isinstance(h, dict) and isinstance(h.get("step"), (int, float)) for h in s.get("history") or []):
        return f"not a run summary (malformed {', '.join(bad) or 'history'})"
    return None


def short_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None or isinstance(v, (list, dict, bool)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def short_key(k: str) -> str:
    """loss.name -> loss (the config group choice); everything else stays a dotted key."""
    return k.removesuffix(".name") if k.count(".") == 1 and k.endswith(".name") else k


def differing_keys(params: list[dict]) -> list[str]:
    """The keys present in every one of params whose values differ, in config order (data, model, loss, ...)."""
    if not params:
        return []
    common = set.intersection(*(set(p) for p in params))
    return [k for k in params[0] if k in common and len({json.dumps(p[k], default=str) for p in params}) > 1]


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with equal configs (seeds and IGNORED keys aside) form a group, labelled by the keys that differ
    between groups, e.g. "loss=bce data.scale=50". Groups keep the order of their first run."""
    by_key: dict[str, list[Run]] = {}
    for r in runs:
        by_key.setdefault(json.dumps(r.params, sort_keys=True, default=str), []).append(r)
    members = list(by_key.values())
    differing = differing_keys([m[0].params for m in members])
    groups, labels = [], Counter()
    for m in members:
        p = m[0].params
        if differing:
            label = " ".join(f"{short_key(k)}={short_value(p[k])}" for k in differing)
        else:
            label = " ".join(f"{g}={p[f'{g}.name']}" for g in ("data", "loss") if f"{g}.name" in p) or "all runs"
        labels[label] += 1
        groups.append(Group(label if labels[label] == 1 else f"{label} #{labels[label]}", m))
    return groups


def finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def get(summary: dict, *keys: str) -> Any:
    for k in keys:
        summary = summary.get(k) if isinstance(summary, dict) else None
    return summary


METRICS = tuple(m for m in config.METRICS if m != "loss")  # the report's columns: what each loss is scored by


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
