"""`python -m lossbench.compare`: paired comparisons of two groups of runs (lossbench/analysis/compare.py)."""

from lossbench.analysis.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
