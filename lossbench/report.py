"""`python -m lossbench.report`: the report of runs or a sweep. The code is lossbench/analysis/report.py; this command runs it as
`__main__`, so that `--help` answers before torch is imported."""

import runpy

if __name__ == "__main__":
    runpy.run_module("lossbench.analysis.report", run_name="__main__", alter_sys=True)
