"""`reg2rg bench generate`: batched greedy generation against batch size 1 on the same cases, as a ratio.

It runs as `reg2rg generate` does (cached frozen-ViT features, the kit's greedy loop) and reports reports/s of
each arm and their ratio, the arms alternating batch by batch so that a change in the machine's load falls on
both.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from reg2rg_lib.bench.common import bench_inputs, common_flags, report
from reg2rg_lib.env.doctor import machine
from reg2rg_lib.paths import RunPaths, default_out_dir


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="batched generation vs batch size 1 (reports/s, ratio)")
    common_flags(p)
    p.add_argument(
        "--checkpoint",
        default=None,
        help="trained run/checkpoint (default: OUT/runs/full if it exists, else an untrained model)",
    )
    p.add_argument("--cases", type=int, default=8, help="test cases to generate (default 8)")
    p.add_argument("--batch-size", type=int, default=None, help="batched size (default: the profile's)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's")
    p.add_argument("--engine", choices=("auto", "hf", "kit"), default="auto",
                   help="auto (default): the kit's greedy loop where it applies; hf: Hugging Face generate")
    p.add_argument("--repeat", type=int, default=3,
                   help="rounds of both arms; the figures are the median round's (default 3)")
    p.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                   help="run the frozen ViT inside the timed generation (default: cached features, as "
                        "`reg2rg generate`)")
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from reg2rg_lib.infer.generate import DecodeSettings, batch_groups, decode_engine, load_model
    from reg2rg_lib.model import Reg2RG, Reg2RGConfig
    from reg2rg_lib.samples.features import feature_cache_for, use_feature_cache
    from reg2rg_lib.train.loop import seed_everything

    with tempfile.TemporaryDirectory(prefix="reg2rg-bench-") as tmp:
        profile, cache, tok, where = bench_inputs(args.profile, args.out, Path(tmp))
        ckpt = args.checkpoint or RunPaths(args.out or default_out_dir(args.profile)).run("full")
        trained = Path(ckpt).is_dir() and profile.name == args.profile
        if trained:
            model = load_model(ckpt, device="cpu")
        else:
            seed_everything(0)
            model = Reg2RG(Reg2RGConfig.from_profile(profile), tok)
        decode = DecodeSettings.from_profile(profile.generate, max_new_tokens=args.max_new_tokens)
        batch = args.batch_size or profile.generate.batch_size
        records = cache.cases("test")[: args.cases]
        # as `reg2rg generate`: the frozen ViT's features from the cache, built before the clock
        features = None
        if use_feature_cache(model, None if args.feature_cache else False):
            features = feature_cache_for(model, cache, [r.name for r in records], progress=False)
        figures: dict[str, Any] = {"profile": profile.name, "inputs": where, "model": str(ckpt) if trained
                                   else "untrained", "cases": len(records), "decoding": decode.describe(),
                                   "engine": decode_engine(model, decode, args.engine),
                                   "feature_cache": features is not None}
        groups = batch_groups([r.name for r in records], [len(r.regions) for r in records], batch)
        figures.update(generate_bench(model, cache, groups, decode, batch, Path(tmp), repeat=args.repeat,
                                      features=features, engine=args.engine))
    figures.update(machine())
    return report(figures, args.json)


def generate_bench(model: Any, cache: Any, groups: list[list[str]], decode: Any, batch_size: int, tmp: Path,
                   repeat: int = 3, **kwargs: Any) -> dict[str, Any]:
    """Time `generate_predictions` at `batch_size` and at 1 on the same cases, batch by batch, the two arms
    alternating (which goes first alternates too), so a change in the machine's load falls on both; `repeat`
    rounds, the figures of the round with the median speedup (every round's speedup in `speedup_rounds`).
    Untimed first: a 2-token pass over every batch, so both arms find the cases' files in the page cache and
    the first calls' allocations done. `groups`: the batched arm's batches (`batch_groups`); `kwargs` go to
    `generate_predictions`."""
    from reg2rg_lib.infer.generate import generate_predictions
    from reg2rg_lib.infer.predictions import read_predictions

    warm = dataclasses.replace(decode, max_new_tokens=2)
    for k, group in enumerate(groups):
        generate_predictions(model, cache, tmp / f"warm-up-{k}.csv", decode=warm, batch_size=batch_size,
                             names=group, progress=False, **kwargs)
    generate_predictions(model, cache, tmp / "warm-up.csv", decode=warm, batch_size=1, names=groups[0][:1],
                         progress=False, **kwargs)
    arms = (("batched", batch_size), ("single", 1))
    rounds, texts = [], {"batched": {}, "single": {}}
    load = [os.getloadavg()[0]]
    for r in range(max(1, repeat)):
        seconds = {"batched": 0.0, "single": 0.0}
        for k, group in enumerate(groups):
            for label, size in arms if (k + r) % 2 == 0 else arms[::-1]:
                out = tmp / f"{label}-{r}-{k}.csv"
                t0 = time.perf_counter()
                generate_predictions(model, cache, out, decode=decode, batch_size=size, names=group,
                                     progress=False, **kwargs)
                seconds[label] += time.perf_counter() - t0
                texts[label].update(
                    {row["AccNum"]: row["Pred_combined_report"] for row in read_predictions(out)}
                )
        rounds.append(seconds)
    load.append(os.getloadavg()[0])
    speedups = [sec["single"] / sec["batched"] for sec in rounds]
    median = rounds[sorted(range(len(rounds)), key=speedups.__getitem__)[len(rounds) // 2]]
    n = sum(len(g) for g in groups)
    figures: dict[str, Any] = {}
    for label, size in arms:
        figures[f"{label}_batch_size"] = size
        figures[f"{label}_seconds"] = median[label]
        figures[f"{label}_reports_per_s"] = n / median[label]
    figures["speedup_batched"] = median["single"] / median["batched"]
    figures["speedup_rounds"] = [round(x, 3) for x in speedups]
    figures["same_text_fraction"] = sum(
        texts["batched"][c] == texts["single"].get(c) for c in texts["batched"]
    ) / max(1, len(texts["batched"]))
    figures["load_avg_1min"] = [round(x, 2) for x in load]  # before, after: other work on the machine
    return figures
