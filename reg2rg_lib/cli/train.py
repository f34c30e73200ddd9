"""`reg2rg train` and `reg2rg generate`: the training loop (`reg2rg_lib.train`) and batched generation
(`reg2rg_lib.infer`).

    reg2rg train --profile demo --out outputs/demo/runs/full [--max-steps N] [--save-every K] [--resume]
    torchrun --nproc_per_node 2 -m reg2rg_lib.cli train --profile smoke --max-steps 4 --out RUN
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml \
        -m reg2rg_lib.cli train --profile paper --out RUN
    reg2rg generate --checkpoint outputs/demo/runs/full --data outputs/demo/cache \
        --out outputs/demo/runs/full/predictions.csv
    reg2rg generate --official Reg2RG.bin --llm-path Llama-2-7b-chat-hf \
        --data CACHE --out P.csv --paper-decoding  # GPU
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reg2rg_lib.errors import BadInputError, KitError
from reg2rg_lib.io import folder_lock, one_writer
from reg2rg_lib.paths import RunPaths
from reg2rg_lib.profiles import load_profile, parse_assignments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train Reg2RG on the prep cache (resumable; runs under torchrun / accelerate launch)",
        description="Train the profile's Reg2RG into the run folder OUT (checkpoints/, train_log.csv, "
        "tensorboard/). Inputs default to the profile folder the run belongs to: for OUT = X/runs/NAME, "
        "X/cache and X/tokenizer; otherwise OUT/cache and OUT/tokenizer (built automatically for --profile "
        "smoke).",
    )
    p.add_argument("--profile", default="demo", help="smoke | demo | paper (default: demo)")
    p.add_argument("--out", required=True, help="run folder, e.g. outputs/demo/runs/full")
    p.add_argument("--cache", default=None, help="prep cache folder (default: see above)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: see above)")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: the profile's)")
    p.add_argument(
        "--save-every", type=int, default=None, help="checkpoint every K steps (default: the profile's)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest complete checkpoint in OUT"
    )
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="model config change for an ablation, e.g. --set rra=false, or with a section a "
                        "profile setting, e.g. --set train.label_weight=0 (value parsed as YAML)")
    p.add_argument(
        "--llm",
        default=None,
        help=(
            "LLM architecture: scratch-2x64 | scratch-2x128 | scratch-4x256 | llama2-7b (default: the "
            "preset's)"
        ),
    )
    p.add_argument("--no-feature-cache", action="store_true",
                   help="recompute the frozen ViT at every step instead of caching its outputs per case")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "generate",
        help="write predictions (released CSV format) for the test cases; reruns resume",
        description="Generate reports with a trained checkpoint, batched with the KV cache; greedy "
        "decoding by "
        "default, --paper-decoding for the paper's sampling settings (top_k=30, max_new_tokens=500).",
    )
    p.add_argument("--checkpoint", default=None,
                   help="run folder (newest checkpoint), checkpoint folder, or save_pretrained folder")
    p.add_argument(
        "--official",
        default=None,
        metavar="CKPT",
        help="instead of --checkpoint: the authors' released Reg2RG checkpoint (paper preset, GPU; "
        "needs --llm-path)",
    )
    p.add_argument("--llm-path", default=None, help="LLaMA-2-7B-chat folder for --official")
    p.add_argument(
        "--data",
        default=None,
        help="prep cache folder or profile output folder (default: the cache of the checkpoint's run)",
    )
    p.add_argument("--out", required=True, help="predictions CSV (AccNum, Question, GT_combined_report, "
                   "Pred_combined_report)")
    p.add_argument(
        "--profile", default=None, help="take batch size and decoding from this profile's generate section"
    )
    p.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="train | validation | test (default: test; choose settings on validation)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="reports per batch (default: profile's, else 8)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=None, help="tokens per report (default: profile's, else 320)"
    )
    p.add_argument("--paper-decoding", action="store_true",
                   help="sample as the paper: top_k=30, top_p=0.9, temperature=0.6, max_new_tokens=500")
    p.add_argument("--num-beams", type=int, default=None,
                   help="beam search with N hypotheses (default: profile's, else 1 = greedy)")
    p.add_argument("--image-contrast", type=float, default=None, metavar="C",
                   help="image-contrastive greedy search with contrast C (0: plain greedy; default: the "
                        "profile's, else 0)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (only with sampling)")
    p.add_argument("--limit", type=int, default=None, help="only the first N cases of the split")
    p.set_defaults(func=_generate)


# held from the start: a second writer is refused before the inputs are built (train_run's own lock nests)
@one_writer(lambda bound: bound["args"].out, "train")
def _train(args: argparse.Namespace) -> int:
    # each handler imports its stage when it runs, so `reg2rg --help` stays fast
    from reg2rg_lib.samples.inputs import ensure_inputs_once
    from reg2rg_lib.train.run import train_run

    assigned = parse_assignments(args.set)
    changes = {k: v for k, v in assigned.items() if "." not in k}  # model config fields
    profile = load_profile(args.profile, {k: v for k, v in assigned.items() if "." in k})  # profile settings
    # the inputs first (the smoke profile builds its own; under torchrun rank 0 builds, the others wait)
    ensure_inputs_once(profile, RunPaths.of_run(args.out), args.cache, args.tokenizer)
    train_run(profile, args.out, cache_dir=args.cache, tokenizer_dir=args.tokenizer,
              max_steps=args.max_steps, save_every=args.save_every, resume=args.resume, model_changes=changes,
              llm_arch=args.llm, feature_cache=False if args.no_feature_cache else None)
    return 0


def _generate(args: argparse.Namespace) -> int:
    # one writer per output folder: a second generate into the same folder is refused before anything loads
    with folder_lock(Path(args.out).expanduser().parent, "generate"):
        return _generate_unlocked(args)


def _generate_unlocked(args: argparse.Namespace) -> int:
    from reg2rg_lib.infer.generate import DecodeSettings, generate_run, resolve_checkpoint

    section = load_profile(args.profile).generate if args.profile else None
    if args.paper_decoding:
        decode = DecodeSettings.paper(seed=args.seed)
    else:
        decode = DecodeSettings.from_profile(section, max_new_tokens=args.max_new_tokens, seed=args.seed,
                                             num_beams=args.num_beams, image_contrast=args.image_contrast)
    batch_size = args.batch_size or (section.batch_size if section is not None else 8)

    if (args.checkpoint is None) == (args.official is None):
        raise KitError(
            "give exactly one of --checkpoint (a model trained here) and --official (with --llm-path)"
        )
    if args.official and not (args.llm_path and args.data):
        raise KitError(
            "--official needs --llm-path (LLaMA-2-7B-chat) and --data (a prep cache at 256x256x64)"
        )
    for given in (args.checkpoint, args.official, args.llm_path, args.data):
        if given and not Path(given).expanduser().exists():
            raise BadInputError(given, "does not exist")
    data = Path(args.data) if args.data else None
    if data is None:  # <profile out>/runs/<name>/checkpoints/step-N/model -> <profile out>/cache
        profile_dir = RunPaths.of_checkpoint(resolve_checkpoint(args.checkpoint))
        data = profile_dir.cache if profile_dir else None
        if data is None:
            raise KitError("--data is needed: the checkpoint is not inside a profile folder's runs/")
    if not (data / "manifest.json").is_file() and (data / "cache" / "manifest.json").is_file():
        data = data / "cache"  # a profile output folder
    print(f"[generate] decoding: {decode.describe()}, batch size {batch_size}")
    if args.official:
        from reg2rg_lib.infer.generate import load_official_model

        source = load_official_model(args.official, args.llm_path)
    else:
        source = args.checkpoint
    out = generate_run(source, data, args.out, decode=decode, batch_size=batch_size, split=args.split,
                       limit=args.limit)
    print(f"[generate] predictions in {out}")
    return 0

