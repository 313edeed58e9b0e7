"""`python -m lossbench [overrides]`: one run, or a sweep with -m. Hydra composes configs/."""

from __future__ import annotations

import gc
import os
import signal
import sys

from lossbench.runs.signals import install_cli_handlers

# The stop signals before anything heavy is imported: a Ctrl-C while torch imports is handled too (`python -m
# lossbench` installed them already, in the package's __init__; runpy.run_module reaches here first). A submitit
# job never imports this module (its task is pickled by value): `main` takes them there (take_in_submitit_job).
if __name__ == "__main__":
    gc.disable()  # until the imports are done: see import_ahead()
    install_cli_handlers(multirun=any(a in ("-m", "--multirun") for a in sys.argv[1:]))

import atexit
import contextlib
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lossbench.config import CONFIGS, ahead, fastconfig
from lossbench.config.preflight import preflight
from lossbench.errors import LossbenchError
from lossbench.runs.signals import Interrupted, hand_over, loading, note, stop_requested, take_in_submitit_job
from lossbench.store import DiskFull
from lossbench.sweeps.launch import result_line, sweep_value
from lossbench.sweeps.sweep import refuse_job

fastconfig.install()  # each set of group choices composed once, each job once (here, and in a launcher's workers)


def trains_here(argv: list[str]) -> bool:
    """Whether this command line trains in this process: not a help, info or config print, and not a sweep
    whose launcher trains in other processes (joblib, submitit)."""
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    if flags & {"-h", "--help", "--hydra-help", "-i", "--info", "-c", "--cfg", "-sc", "--shell-completion",
                "--experimental-rerun"}:
        return False
    return not any(a.startswith("hydra/launcher=") and ("joblib" in a or "submitit" in a) for a in argv)


def parallel_jobs(hc) -> int:
    """How many jobs of this sweep share the machine; each job uses cores // jobs torch threads.

    basic launcher: 1 (jobs run one after another). joblib: n_jobs, negative counting back from the cores as
    joblib does (-1, its default, = one job per core). submitit: every job gets cpus_per_task cores (SLURM's
    allocation; submitit_local starts all jobs at once), so cores // cpus_per_task; unset = 1 core per job.
    """
    if hc.mode != RunMode.MULTIRUN:
        return 1
    launcher = hc.launcher
    target = str(launcher.get("_target_") or "")
    cores = os.cpu_count() or 1
    if "joblib" in target:
        n = int(launcher.get("n_jobs") or 1)
        return max(1, n if n > 0 else cores + 1 + n)
    if "submitit" in target:
        cpus = launcher.get("cpus_per_task")
        return max(1, cores // int(cpus)) if cpus else cores
    return 1


def resume_command(overrides: list[str], out_dir: Path) -> str:
    """The command that continues this run: its own overrides, its directory, trainer.resume=true."""
    import shlex

    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("hydra.run.dir", "trainer.resume")]
    return shlex.join(["python", "-m", "lossbench", *keep, f"hydra.run.dir={out_dir}", "trainer.resume=true"])


@hydra.main(config_path=str(CONFIGS), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    take_in_submitit_job()  # a submitit job's Ctrl-C is taken from here on
    from lossbench.runs import rundir

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun and stop_requested():
        print(f"lossbench sweep: job {hc.job.num} not started: the sweep was interrupted first", file=sys.stderr)
        return None
    try:
        with loading():  # torch is imported here, after Hydra has parsed the command line
            from lossbench.engine import train
            from lossbench.engine.plan import record_failure

        if not multirun and stop_requested():  # its Interrupted was lost on the way (an import's bare `except:`)
            raise Interrupted(stop_requested())
        summary = train.run(cfg, out_dir, jobs=parallel_jobs(hc), record=multirun)  # a sweep job's failure: recorded
    except (Interrupted, KeyboardInterrupt) as e:
        if isinstance(e, Interrupted) and not multirun:  # a single run stopped before training: nothing left behind
            rundir.discard(out_dir, hc.output_subdir)
            raise
        # a worker of a parallel sweep stopped before its run trained: joblib's (a KeyboardInterrupt), a submitit
        # job's while loading (signals.take_in_submitit_job)
        print("lossbench: interrupted before training started; nothing to resume", file=sys.stderr)
        if not multirun:
            sys.exit(130)
        if stop_requested() is None:
            note(signal.SIGINT)  # this worker starts no further job; the sweep goes on to record its status
        return None
    except LossbenchError as e:
        print(f"lossbench: error: {e}", file=sys.stderr)
        # A single run refused before training leaves no directory behind; a sweep job's says failed, unless the
        # directory holds another run: then it is left as it was (.hydra/ too) and the job is listed as refused.
        if multirun:
            if isinstance(e, train.Refused):
                refuse_job(out_dir, hc, str(e))
            return None  # a sweep goes on (see sweep_value)
        if not rundir.discard(out_dir, hc.output_subdir):
            record_failure(out_dir, cfg, str(e))
        sys.exit(1 if isinstance(e, DiskFull) else 2)  # a full disk is no bad input
    except Exception:
        if not multirun:
            raise
        traceback.print_exc()  # its summary says failed (train.run_jobs recorded it)
        return None
    if multirun and summary.get("skipped"):
        rundir.restore_job(out_dir, hc.output_subdir)  # the directory keeps the record of the run it holds
    out_dir = Path(summary.get("out_dir", out_dir))  # trainer.resume=<run dir> continues in that dir
    code = summary.get("exit_code")
    if code and summary["status"] == "interrupted":
        how = ("a sweep continues it when rerun with trainer.skip_completed=true" if multirun else
               f"continue it with: {resume_command(list(hc.overrides.task), out_dir)}")
        print(f"lossbench: interrupted at step {summary['steps']}; checkpoint in {out_dir}; {how}", file=sys.stderr)
    elif code:
        print(f"lossbench: a stop signal came after the last step; the {summary['status']} run's results were "
              f"written first [{out_dir}]", file=sys.stderr)
    if code:
        hand_over(code - 128)  # under submitit: its handler requeues the job, and exits
        if multirun:
            return None  # the launcher starts no further job; the sweep records its status and exits with code
        sys.exit(code)
    print(result_line(summary, out_dir))
    return sweep_value(summary, cfg.objective_metric)


def import_ahead(argv: list[str]) -> bool:
    """For a command that trains in this process: import torch (and the torch._dynamo that torch.optim imports)
    while a forked child runs the preflight and composes the configs Hydra will ask for (lossbench.config.ahead).
    Returns whether the child's preflight passed on files still as they are.

    No garbage collection meanwhile: the imports make ~0.4 million objects that live as long as the process, and
    no garbage, and six full collections would scan them (~0.5 s). They are then frozen out of the collector's
    sight, so that a full collection scans only what the runs make."""
    gc.disable()
    imported = False
    try:
        if "torch" in sys.modules or not trains_here(argv):
            return False
        child = ahead.start(lambda: preflight(argv, main, str(CONFIGS), "config", prefetch=True),
                            check=lambda: preflight(argv, main, str(CONFIGS), "config"))
        if child is None:
            return False
        try:
            import torch._dynamo  # noqa: F401

            import lossbench.engine.train  # noqa: F401
        except BaseException:
            child.cancel()
            raise
        imported = True
        return child.collect()
    finally:
        if imported:  # a process that has just started: what it holds is what it keeps
            gc.freeze()
        gc.enable()


def cli() -> None:
    """`python -m lossbench`: a command line Hydra or lossbench would refuse is refused here, in one line with
    exit 2, before Hydra creates any directory (config.preflight); then Hydra runs `main`. A stop signal before
    training ends it with one line (signals.install_cli_handlers)."""
    from lossbench.runs import signals
    from lossbench.sweeps import sweep

    sweep.refused = 0  # set by this command's sweep, if it runs one
    try:
        signals.guard()
        checked = import_ahead(sys.argv[1:])  # the preflight passed in the child, on the files as they still are
        try:
            if not checked:
                preflight(sys.argv[1:], main, str(CONFIGS), "config")
        except LossbenchError:
            if stop_requested() is not None:  # a signal inside Hydra's composition: what it broke is no bad input
                raise Interrupted(stop_requested()) from None
            raise
        main()
    except LossbenchError as e:
        print(f"lossbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        if "lossbench.runs.rundir" in sys.modules:  # stopped while Hydra set up the run: it leaves nothing behind
            from lossbench.runs import rundir

            rundir.discard_current()
        print(e.message(), file=sys.stderr)
        sys.exit(128 + e.signum)
    except SystemExit:
        # A launcher that raised after a stop signal (submitit's, for a job it was still starting): the jobs
        # already wrote their statuses; the sweep's status file and exit code say the sweep was interrupted.
        if not (stop_requested() and sweep.current):
            raise
        sweep.write_status(sweep.current)
    if stop_requested():  # a sweep that a stop signal ended: its jobs and status file are written
        sys.exit(128 + stop_requested())
    if sweep.refused:  # jobs this sweep did not run: its exit code says so
        sys.exit(2)


def exit_without_teardown(run: Callable[[], None]) -> NoReturn:
    """run(), then end the process as Python's exit does, in its order -- threads' exit hooks and non-daemon
    threads joined (threading._shutdown), exit handlers run (logging's flush, weakref finalizers, ...), output
    flushed -- but without the interpreter's teardown: with torch loaded, freeing its modules object by object
    takes ~0.2-0.7 s after the results are written. Only for a command that trained in this process (no worker
    processes); for any exception other than SystemExit, or without those CPython hooks, Python exits as usual."""
    try:
        run()
        code = None
    except SystemExit as e:
        code = e.code
    if not trains_here(sys.argv[1:]) or not hasattr(threading, "_shutdown") or not hasattr(atexit, "_run_exitfuncs"):
        sys.exit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    exit_without_teardown(cli)
