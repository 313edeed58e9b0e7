"""`python -m lossbench.check`: the identities behind the studies, checked numerically. The code is lossbench/tools/check.py; this command runs it as
`__main__`, so that `--help` answers before torch is imported."""

import runpy

if __name__ == "__main__":
    runpy.run_module("lossbench.tools.check", run_name="__main__", alter_sys=True)
