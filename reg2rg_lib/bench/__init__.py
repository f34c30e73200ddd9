"""`reg2rg bench ...`: benchmarks that print the kit against a reference recipe as a ratio (never timed tests).

    common.py      printing the figures (a table, or one JSON line)
    preprocess.py  the cached preprocessing vs the straightforward per-sample recipe (`recipe.py`)
    train.py       train-step, generate and gpu-step
    metrics.py     the offline metrics
"""
