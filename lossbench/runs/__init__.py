"""A run's records: its directory (rundir), atomic files and untrusted-input checks (store), TensorBoard
(logger), stop signals (signals), console progress (progress), and what code produced it (provenance)."""
