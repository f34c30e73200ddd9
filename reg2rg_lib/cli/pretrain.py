"""`reg2rg pretrain-vision`: pretrain the CPU preset's ViT3D on the train split (the stand-in for RadFM's)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain-vision", help="pretrain the ViT3D on the train split -> DIR/RadFM_vit3d.pth "
                                               "(loaded, frozen, through model.vision_checkpoint)")
    p.add_argument("--profile", default="demo", help="smoke | demo | paper (default: demo)")
    p.add_argument("--out", required=True, help="output folder, e.g. outputs/demo/vision (the profile's "
                                                "`vision_checkpoint: pretrained` reads OUT/vision/)")
    p.add_argument("--cache", default=None, help="prep cache (default: the profile folder's, OUT/../cache)")
    p.add_argument("--objective", default=None, choices=["findings", "findings+organ", "simmim"],
                   help="default: the profile's pretrain.objective")
    p.add_argument("--epochs", type=int, default=None, help="default: the profile's pretrain.epochs")
    p.add_argument("--seed", type=int, default=None, help="default: the profile's pretrain.seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    # heavy imports when the command runs, so `reg2rg --help` stays fast
    from reg2rg_lib.metrics.labeler import RuleLabeler
    from reg2rg_lib.train.pretrain_vision import pretrain_for_profile

    labeler = RuleLabeler()
    report = pretrain_for_profile(args.profile, args.out, lambda texts: labeler.label(texts).to_numpy(),
                                  cache_dir=args.cache, progress=not args.quiet, objective=args.objective,
                                  epochs=args.epochs, seed=args.seed)
    probe = report["probe_validation"]
    print(
        f"[pretrain-vision] {report['objective']}: validation probe findings micro-F1 "
        f"{probe['random_init']['findings_micro_f1']:.3f} (random ViT) -> "
        f"{probe['pretrained']['findings_micro_f1']:.3f}, organ accuracy "
        f"{probe['random_init']['organ_accuracy']:.3f} -> {probe['pretrained']['organ_accuracy']:.3f} "
        f"({report['seconds']:.0f} s) -> {args.out}"
    )
    return 0
