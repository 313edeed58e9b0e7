"""`python -m lossbench.check`: the identities behind the studies, checked numerically (lossbench/tools/check.py)."""

from lossbench.tools.check import main

if __name__ == "__main__":
    raise SystemExit(main())
