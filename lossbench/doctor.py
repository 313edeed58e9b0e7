"""`python -m lossbench.doctor`: a user's loss set-up, checked. The code is lossbench/tools/doctor.py; this command runs it as
`__main__`, so that `--help` answers before torch is imported."""

import runpy

if __name__ == "__main__":
    runpy.run_module("lossbench.tools.doctor", run_name="__main__", alter_sys=True)
