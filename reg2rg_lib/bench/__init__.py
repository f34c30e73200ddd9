"""`reg2rg bench ...`: benchmarks that print the kit against a reference recipe as a ratio (never timed
tests).

    common.py          printing the figures (a table, or one JSON line); the model benchmarks' inputs
    preprocess.py      the cached preprocessing vs the straightforward per-sample recipe (`recipe.py`)
    train_step.py      train-step: the kit's training step vs the paper code's recipe
    batch_generate.py  generate: batched generation vs batch size 1
    gpu_step.py        gpu-step: the paper preset on one GPU (step time, memory, MFU)
    train_demo.py      train-demo: today's training loop vs the fast path (`train/fast.py`), samples/s and
                       both losses
    metrics.py         the offline metrics
"""
