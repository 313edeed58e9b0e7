"""`python -m lossbench.studies`: a study's tables and plots. The code is lossbench/analysis/studies.py; this command runs it as
`__main__`, so that `--help` answers before torch is imported."""

import runpy

if __name__ == "__main__":
    runpy.run_module("lossbench.analysis.studies", run_name="__main__", alter_sys=True)
