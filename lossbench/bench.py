"""`python -m lossbench.bench`: the benchmarks (lossbench/tools/bench.py)."""

from lossbench.tools.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
