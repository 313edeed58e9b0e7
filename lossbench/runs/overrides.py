"""A job's and its sweep's Hydra records, read back: the overrides a job was given (``.hydra/overrides.yaml``),
the keys its sweep varies (the sweep's ``multirun.yaml`` and the sweeper's params), each file read once per
version. The logger's HPARAMS columns and the sweep's job names and progress read them here."""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lossbench.config import keys

# Overrides that say where or how a job runs, not what it trains: never part of what a job is called
BOOKKEEPING = keys.keys_with(keys.Role.BOOKKEEPING)

_records: dict[tuple, Any] = {}  # (path, key, mtime, size) -> the value read (record_select)


def record_select(path: Path, key: str, default: Any = None) -> Any:
    """OmegaConf.select(OmegaConf.load(path), key) as a plain container, read once per version of the file:
    a sweep's multirun.yaml is asked for by every job (its directory name, its HPARAMS, the progress line)."""
    try:
        st = Path(path).stat()
    except OSError:
        return default
    stamp = (str(path), key, st.st_mtime_ns, st.st_size, st.st_ino)
    if stamp not in _records:
        value = OmegaConf.select(OmegaConf.load(path), key, default=None)
        if len(_records) > 256:
            _records.clear()
        _records[stamp] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    value = _records[stamp]
    return default if value is None else copy.deepcopy(value)


def _frozen(params: dict | None) -> tuple | None:
    return None if params is None else tuple((str(k), str(v)) for k, v in params.items())


def job_overrides(job_dir: Path) -> list[str]:
    """The overrides a job was given: its .hydra/overrides.yaml (what Hydra keeps in memory for the job it runs
    in this process, once that file is written)."""
    if (hc := _running(job_dir)) is not None:
        return [str(o) for o in hc.overrides.task]
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.exists() else []


@functools.lru_cache(maxsize=1024)
def _parse(line: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([line])[0]  # Hydra's ANTLR grammar in pure Python: once a line


def _parsed(overrides: list[str]) -> list:
    parsed = (_parse(str(o)) for o in overrides)
    return [o for o in parsed if o.key_or_group not in BOOKKEEPING and not o.is_delete()]


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """(key, value) of each override that says what a job trains: `+regime=scale50` -> ("regime", "scale50")."""
    return [(o.key_or_group, copy.deepcopy(o.value())) for o in _parsed(overrides) if not o.is_sweep_override()]


def sweep_axes(given: list[str], params: dict | None) -> list[str]:
    return list(_sweep_axes(tuple(map(str, given)), _frozen(params)))


@functools.lru_cache(maxsize=64)
def _sweep_axes(given: tuple[str, ...], params: tuple | None) -> tuple[str, ...]:
    """The keys a sweep varies: its sweep overrides (`loss=bce,ce`, `seed=range(3)`) among the overrides given on
    its command line, and the keys of its sweeper's params (hydra.sweeper.params: a preset's axes, Optuna's
    search space)."""
    lines = [*given, *(f"{k}={v}" for k, v in (params or ()))]
    return tuple(dict.fromkeys(o.key_or_group for o in _parsed(lines) if o.is_sweep_override()))


_UNKNOWN = object()


def _running(job_dir: Path) -> Any:
    """The hydra node of the job Hydra runs in this process, when job_dir is its directory and run_job has saved
    its .hydra/ records there (what they hold; read back, they cost a YAML parse each); else None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    out = OmegaConf.select(hc, "runtime.output_dir", default=None)
    if not out or os.path.abspath(str(out)) != os.path.abspath(job_dir) or \
            not (Path(job_dir) / ".hydra" / "hydra.yaml").exists():
        return None
    return hc


def _running_params(job_dir: Path) -> Any:
    """hydra.sweeper.params of the job Hydra runs in this process when job_dir is its directory (_running)."""
    if (hc := _running(job_dir)) is None:
        return _UNKNOWN
    params = OmegaConf.select(hc, "sweeper.params", default=None)
    return OmegaConf.to_container(params) if OmegaConf.is_config(params) else params


def varied_keys(job_dir: Path) -> list[str] | None:
    """The keys the sweep of this job varies, from the job's records: the multirun.yaml that Hydra's sweeper
    writes into the sweep directory (the command's overrides) and the job's .hydra/hydra.yaml (the sweeper's
    params). None for a single run."""
    multirun, hydra_yaml = Path(job_dir).parent / "multirun.yaml", Path(job_dir) / ".hydra" / "hydra.yaml"
    given = record_select(multirun, "hydra.overrides.task", [])
    params = _running_params(job_dir)
    if params is _UNKNOWN:
        params = record_select(hydra_yaml, "hydra.sweeper.params")
    if not multirun.exists() and not params:
        return None
    return sweep_axes(given, params or None)
