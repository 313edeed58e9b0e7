"""`python -m lossbench.doctor`: a user's loss set-up, checked (lossbench/tools/doctor.py)."""

from lossbench.tools.doctor import main

if __name__ == "__main__":
    raise SystemExit(main())
