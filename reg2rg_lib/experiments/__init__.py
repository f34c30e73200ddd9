"""Experiments: the ablation grid of Tables 4-7 and the run's `summary.json` (notebook 05).

    grid.py     which runs exist (`full`, `no_lfd`, ..., `llm_<arch>`) and what each changes
    runner.py   train -> generate -> evaluate each run, resumably, optionally in worker processes
    summary.py  `summary.json` (headline metrics per run)
    ablation_stats.py bootstrap CIs and paired tests against `full` (`ablation_stats.csv`), verdicts
    baselines.py constant-report baselines, distinct reports per run, full's shuffled-region-order probe
    curves.py   region accuracy against training step, from a run's checkpoints (notebook 03)
"""
