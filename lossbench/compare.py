"""`python -m lossbench.compare`: paired comparisons of two groups of runs. The code is lossbench/analysis/compare.py; this command runs it as
`__main__`, so that `--help` answers before torch is imported."""

import runpy

if __name__ == "__main__":
    runpy.run_module("lossbench.analysis.compare", run_name="__main__", alter_sys=True)
