"""Tools beside training: numerical identity checks (check), benchmarks (bench), the monitors in a user's
own loop (watcher: lossbench.watch) and a set-up check (doctor: lossbench.check_setup)."""
