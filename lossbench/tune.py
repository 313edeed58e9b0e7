"""`python -m lossbench.tune`: each method of a study at its own learning rate, chosen on validation, reported on test. The code is lossbench/tools/tune.py; this command runs it as
`__main__`, so that `--help` answers before torch is imported."""

import runpy

if __name__ == "__main__":
    runpy.run_module("lossbench.tools.tune", run_name="__main__", alter_sys=True)
