"""`reg2rg bench ...`: benchmarks that print the kit against a reference recipe as a ratio (never timed tests).

    common.py      printing the figures (a table, or one JSON line)
    preprocess.py  the cached preprocessing vs the straightforward per-sample recipe (`recipe.py`)
    train.py       train-step, generate and gpu-step
    train_demo.py  train-demo: today's training loop vs the fast path (`train/fast.py`), samples/s and both losses
    metrics.py     the offline metrics
"""
