"""`python -m lossbench.studies`: a study's tables and plots (lossbench/analysis/studies.py)."""

from lossbench.analysis.studies import main

if __name__ == "__main__":
    raise SystemExit(main())
