"""`python -m lossbench.report`: the report of runs or a sweep (lossbench/analysis/report.py)."""

from lossbench.analysis.report import main

if __name__ == "__main__":
    raise SystemExit(main())
