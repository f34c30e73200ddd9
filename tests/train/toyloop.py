"""A toy regression model for testing the training-loop machinery only (never a stand-in for Reg2RG).

Run as a script, it trains the toy with `reg2rg_lib.train.loop.fit` (used by the kill -9 test):
    python toyloop.py RUN_DIR MAX_STEPS SAVE_EVERY [--resume] [--sleep S]
"""

from __future__ import annotations

import sys
import time

import torch

from reg2rg_lib.train.loop import TrainSettings, fit, seed_everything


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n: int = 10) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        # the epoch changes the sample (as region shuffling does), so the data order must be restored exactly
        return {"name": f"case{i}", "x": self.x[i] * (1 + 0.1 * self.epoch), "y": self.y[i]}


def collate(items):
    return {"names": [it["name"] for it in items], "x": torch.stack([it["x"] for it in items]),
            "y": torch.stack([it["y"] for it in items])}


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(4, 1))


def step_fn(model, batch, sleep: float = 0.0):
    if sleep:
        time.sleep(sleep)
    core = model.module if hasattr(model, "module") else model
    pred = core.head(core.frozen(batch["x"]) + batch["x"]).squeeze(-1)
    return torch.nn.functional.mse_loss(pred, batch["y"])


def run(run_dir, max_steps, save_every, resume=False, sleep=0.0, grad_accum=2, **kw):
    seed_everything(0)
    settings = TrainSettings(seed=0, max_steps=max_steps, batch_size=3, grad_accum=grad_accum, lr=0.05,
                             warmup_steps=2, save_every=save_every, **kw)
    return fit(Toy(), ToyData(), collate, lambda m, b: step_fn(m, b, sleep), settings, run_dir, resume=resume,
               progress=False)


if __name__ == "__main__":
    args = sys.argv[1:]
    sleep = float(args[args.index("--sleep") + 1]) if "--sleep" in args else 0.0
    run(args[0], int(args[1]), int(args[2]), resume="--resume" in args, sleep=sleep)
