"""`reg2rg model summary --preset P [--json]`: parameter counts per component, built on the meta device."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="inspect the Reg2RG model (parameter counts, official key names)")
    model_sub = p.add_subparsers(dest="model_command", metavar="ACTION")
    model_sub.required = True
    s = model_sub.add_parser(
        "summary", help="parameter counts per component (meta device: no weights, no memory)"
    )
    s.add_argument("--preset", default="cpu-tiny", help="cpu-tiny | cpu-small | paper (default: cpu-tiny)")
    s.add_argument("--image-size", type=int, nargs=3, metavar=("H", "W", "D"), default=None,
                   help="model input size (default: the preset's; profiles use data.image_size)")
    s.add_argument("--json", action="store_true", help="print one JSON line")
    s.set_defaults(func=_summary)


def summary_for_preset(preset: str, image_size: list[int] | None = None) -> dict:
    """`Reg2RG.parameter_summary()` of a preset built on the meta device (the LLM's base vocabulary is the
    preset's `llm_vocab`: 32000 for the paper's LLaMA-2, 2048 for the CPU presets)."""
    # each handler imports its stage when it runs, so `reg2rg --help` stays fast
    from reg2rg_lib.model import Reg2RG, Reg2RGConfig

    cfg = Reg2RGConfig.preset(preset, image_size=image_size)
    return Reg2RG(cfg, None, device="meta").parameter_summary()


def _summary(args: argparse.Namespace) -> int:
    summary = summary_for_preset(args.preset, args.image_size)
    if args.json:
        print(json.dumps(summary))
        return 0
    comps = summary["components"]
    print(f"Reg2RG preset {args.preset!r}: parameters per component")
    for name, n in comps.items():
        print(f"  {name:<16} {n:>15,}")
    print(f"  {'structure tokens':<16} {summary['total'] - sum(comps.values()):>15,}   (<image> </image> "
          "<region> </region>)")
    print(f"  {'trainable':<16} {summary['trainable']:>15,}")
    print(f"  {'total':<16} {summary['total']:>15,}")
    print(f"  official embedding-layer tensors: {len(summary['official_keys'])} (see --json)")
    return 0
