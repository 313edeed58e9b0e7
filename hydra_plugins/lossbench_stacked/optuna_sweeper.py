"""`hparams_search=optuna`: hydra-optuna-sweeper's sweeper, which also ends a study whose trials all diverged.

hydra-optuna-sweeper 1.3.0 asks Optuna for the best trial when the study ends; with no trial completed (every one
diverged or failed: each returned None, a FAIL trial) Optuna raises `ValueError: No trials are completed yet`,
and the sweep would end in a traceback without its status file. That is a result: the sweep ends normally, says
so in one line, and Hydra's callbacks write `sweep_status.json` with every trial's status.
"""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except ValueError as e:
            if "No trials are completed yet" not in str(e):
                raise
            print("lossbench sweep: no trial completed (each one diverged or failed), so Optuna has no best "
                  "value; every trial's status is in sweep_status.json")
            return None
