"""Sweeps on Hydra: job directory names and the sweep's status (sweep), jobs run one by one or as stacks
(launch, used by the launchers in hydra_plugins/)."""
