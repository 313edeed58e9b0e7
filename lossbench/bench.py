"""`python -m lossbench.bench`: the benchmarks. The code is lossbench/tools/bench.py; this command runs it as
`__main__`, so that `--help` answers before torch is imported."""

import runpy

if __name__ == "__main__":
    runpy.run_module("lossbench.tools.bench", run_name="__main__", alter_sys=True)
