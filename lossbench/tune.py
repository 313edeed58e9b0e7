"""`python -m lossbench.tune`: each method of a study at its own learning rate, chosen on validation, reported
on test (lossbench/tools/tune.py)."""

from lossbench.tools.tune import main

if __name__ == "__main__":
    raise SystemExit(main())
