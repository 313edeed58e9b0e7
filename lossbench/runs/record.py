"""What a run directory's records must hold to be trusted: summary.json (SUMMARY_SCHEMA) and the checkpoint
(CHECKPOINT_SCHEMA, loaded as data with ``torch.load(weights_only=True)``, store.py). A record that fails is
refused naming the file and the entry; nothing in the directory is changed."""

from __future__ import annotations

from pathlib import Path

import torch

from lossbench.errors import ConfigError
from lossbench.store import load_checkpoint

# final results: trainer.skip_completed does not train them again ("pruned": stopped by successive halving)
FINISHED = ("completed", "diverged", "pruned")


# Config keys a resume may change: they do not change what is trained (max_steps/epochs: train longer).
CHECKPOINT_FORMAT = 2  # 2: loaded with weights_only=True; 1 (no "format" key): lossbench 0.1, also loads


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_history(x) -> bool:
    return isinstance(x, list) and all(isinstance(h, dict) and _is_int(h.get("step")) for h in x)


def _is_number_dict(x) -> bool:
    return isinstance(x, dict) and all(isinstance(v, (int, float)) or v is None for v in x.values())


STATUSES = ("running", "completed", "diverged", "pruned", "interrupted", "failed")


# What a summary.json must hold to be taken as a run's record: entry -> (check, what it must be).
SUMMARY_SCHEMA = {
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "steps": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0"),
    "final": (_is_number_dict, "an object of metric values"),
    "best": (_is_number_dict, "an object of metric values"),
    "history": (_is_history, "a list of evaluations with integer steps"),
}


REQUIRED_WHEN_FINISHED = ("config", "steps", "final", "history")


def summary_problem(s) -> str | None:
    """Why a parsed summary.json cannot be taken as a run's record (naming the entry), or None."""
    if not isinstance(s, dict):
        return "truncated, not JSON, or not an object"
    for key, (ok, what) in SUMMARY_SCHEMA.items():
        if key in s and not (s[key] is None and key != "status") and not ok(s[key]):
            return f"its {key!r} is not {what}"
        if key not in s and (key == "status" or (key in REQUIRED_WHEN_FINISHED and s.get("status") in FINISHED)):
            return f"it has no {key!r}"
    if s.get("status") in FINISHED and not isinstance(s.get("final"), dict):
        return "its 'final' is not an object of metric values"
    return None


def _is_tensor_dict(x) -> bool:
    return isinstance(x, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in x.items())


# What a checkpoint must hold to be resumed or rebuilt from: entry -> (check, what it must be). "format" and
# the entries of older formats (the torch RNG state) are not checked.
CHECKPOINT_SCHEMA = {
    "step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "model": (_is_tensor_dict, "a dict of tensors (a state_dict)"),
    "optimizer": (lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list), "an optimiser state_dict (state, param_groups)"),
    "scaler": (lambda v: isinstance(v, dict), "a GradScaler state_dict"),
    "generator": (lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8, "a generator state (uint8 tensor)"),
    "perm": (lambda v: v is None or (isinstance(v, torch.Tensor) and not v.is_floating_point()),
             "an integer tensor or null"),
    "best": (lambda v: isinstance(v, dict), "a dict"),
    "steps_to_target": (lambda v: v is None or _is_int(v), "an integer or null"),
    "monitor": (lambda v: isinstance(v, dict), "a numerics monitor state (a dict)"),
    "history": (_is_history, "a list of evaluations with integer steps"),
    "config": (lambda v: isinstance(v, dict) and isinstance(v.get("trainer"), dict)
               and isinstance(v.get("model"), dict), "a resolved config (a dict with trainer and model)"),
    "device": (lambda v: isinstance(v, str), "a device type (a string)"),
}


def read_checkpoint(path: Path) -> dict:
    """A checkpoint loaded as data and checked against CHECKPOINT_SCHEMA: a ConfigError names the file and the
    first entry that is missing or of the wrong type."""
    ck = load_checkpoint(path)  # ConfigError naming the file if damaged or not plain data
    if not isinstance(ck, dict):
        problem = f"it holds a {type(ck).__name__}, not a dict"
    else:
        problem = next((f"its {key!r} entry is missing" if key not in ck else f"its {key!r} entry is not {what}"
                        for key, (ok, what) in CHECKPOINT_SCHEMA.items() if key not in ck or not ok(ck[key])), None)
    if problem:
        raise ConfigError(
            f"{path} is not a lossbench checkpoint ({problem}). Nothing was changed; point trainer.resume at a "
            "lossbench run directory, or move the file aside and start afresh."
        )
    return ck


def load_entry(path: Path, entry: str, load) -> None:
    """Load one checkpoint entry into the run; a ConfigError naming the file and entry if it does not fit."""
    try:
        load()
    except Exception as e:
        first = " ".join(str(e).split())[:200]
        raise ConfigError(
            f"{path}: its {entry!r} entry does not fit this run ({type(e).__name__}: {first}). Nothing was "
            "changed; the checkpoint is damaged or was not written by this run."
        ) from None
