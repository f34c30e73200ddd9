"""Your own CT: `reg2rg import-ct`, `reg2rg regions`, `reg2rg report` (notebook 08 runs the same three steps).

    reg2rg import-ct DICOM_DIR --out DATA --name valid_9001_a_1 [--series UID]
    reg2rg regions --from totalsegmentator SEG \
        --ct DATA/valid_preprocessed/.../valid_9001_a_1.nii.gz --out MASKS
    reg2rg report --checkpoint outputs/demo/runs/full --ct CT --regions MASKS/seg_valid_9001_a_1 --out REPORT
    reg2rg report --official Reg2RG.bin --llm-path Llama-2-7b-chat-hf \
        --ct CT --regions SEG_DIR --out REPORT  # GPU
"""

from __future__ import annotations

import argparse
import json
import sys

from reg2rg_lib.errors import KitError
from reg2rg_lib.profiles import load_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-ct", help="a DICOM series or a NIfTI / NRRD / MHA file -> one volume of the layout"
    )
    p.add_argument("src", help="DICOM folder (one or several series) or a .nii(.gz) / .nrrd / .mha file")
    p.add_argument("--out", required=True, help="dataset folder; the volume goes where the layout keeps NAME")
    p.add_argument(
        "--name", required=True, help="volume name <split>_<patient>_<scan>_<recon>, e.g. valid_9001_a_1"
    )
    p.add_argument(
        "--series", default=None, help="SeriesInstanceUID to import when the folder holds several CTs"
    )
    p.set_defaults(func=_import_ct)

    p = sub.add_parser(
        "regions", help="a segmentation (TotalSegmentator, SAT, any label map) -> the region masks"
    )
    p.add_argument("--from", dest="source", required=True, choices=["totalsegmentator", "sat", "labelmap"],
                   help="what SEG is")
    p.add_argument(
        "seg", help="TotalSegmentator multi-label NIfTI or per-class folder; SAT folder; a label map"
    )
    p.add_argument("--ct", required=True, help="the imported volume (NIfTI) the masks must lie on")
    p.add_argument(
        "--out", required=True, help="mask folder: seg_<NAME>/<region>.nii.gz is written inside it"
    )
    p.add_argument("--mapping", default=None, help="labelmap only: YAML '<region>: [label values]'")
    p.add_argument(
        "--classes",
        default="v2",
        choices=["v1", "v2"],
        help="TotalSegmentator class ids of a multi-label file: v2 (117 classes, default) or v1 (104)",
    )
    p.set_defaults(func=_regions)

    p = sub.add_parser("report", help="one CT + its region masks -> report.md, report.json, report.png")
    p.add_argument("--checkpoint", default=None, help="a run folder, checkpoint or model folder trained here")
    p.add_argument("--official", default=None, metavar="CKPT", help="the authors' released checkpoint (GPU)")
    p.add_argument("--llm-path", default=None, help="LLaMA-2-7B-chat folder for --official")
    p.add_argument("--ct", required=True, help="the volume (NIfTI, e.g. written by import-ct)")
    p.add_argument(
        "--regions", required=True, help="its mask folder seg_<NAME>/ (e.g. written by `reg2rg regions`)"
    )
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--profile", default=None, help="take the decoding from this profile's generate section")
    p.add_argument(
        "--paper-decoding", action="store_true", help="the paper's sampling (top_k=30, top_p=0.9, T=0.6)"
    )
    p.add_argument("--image-contrast", type=float, default=None, metavar="C",
                   help="image-contrastive greedy search with contrast C (0: plain greedy; default: the "
                        "profile's, else 0)")
    p.add_argument(
        "--labeler", default="rules", help="'rules' (default) or a local RadBERT-style classifier folder"
    )
    p.add_argument("--device", default=None, help="cpu | cuda (default: CUDA when present)")
    p.set_defaults(func=_report)


def _import_ct(args: argparse.Namespace) -> int:
    from reg2rg_lib.data.importer import import_ct

    res = import_ct(args.src, args.out, args.name, series=args.series)
    shape = "x".join(map(str, res.record["shape"]))
    print(f"[import-ct] {res.name}: {shape} voxels, spacing {res.record['spacing_mm']} mm -> {res.volume}")
    for s in res.record.get("skipped", [])[:5]:
        print(f"  skipped {s['file']}: {s['reason']}")
    if len(res.record.get("skipped", [])) > 5:
        print(f"  ... {len(res.record['skipped']) - 5} more in {res.record_path}")
    return 0


def _regions(args: argparse.Namespace) -> int:
    from reg2rg_lib.data.segmentation import map_regions

    result, folder = map_regions(
        args.source, args.seg, args.ct, args.out, mapping=args.mapping, classes=args.classes
    )
    print(f"[regions] {len(result.masks)} region(s): {', '.join(result.masks)} -> {folder}")
    if result.absent:
        print(f"  absent (no voxel, not written): {', '.join(result.absent)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from reg2rg_lib.infer.generate import DecodeSettings, load_model, load_official_model
    from reg2rg_lib.infer.report import generate_case
    from reg2rg_lib.report.case_report import report_warnings, write_case_report

    if (args.checkpoint is None) == (args.official is None):
        raise KitError(
            "give exactly one of --checkpoint (a model trained here) and --official (with --llm-path)"
        )
    if args.official and not args.llm_path:
        raise KitError("--official needs --llm-path (LLaMA-2-7B-chat)")
    section = load_profile(args.profile).generate if args.profile else None
    decode = (DecodeSettings.paper() if args.paper_decoding
              else DecodeSettings.from_profile(section, image_contrast=args.image_contrast))
    if args.official:
        model = load_official_model(args.official, args.llm_path, device=args.device)
    else:
        model = load_model(args.checkpoint, device=args.device)
    gen = generate_case(model, args.ct, args.regions, decode=decode)
    files = write_case_report(gen, args.out, labeler=args.labeler,
                              inputs={"checkpoint": str(args.official or args.checkpoint)})
    print(f"[report] {gen.case}: {len(gen.regions)} region paragraph(s) -> {files['md'].parent}")
    if gen.absent:
        print(f"  absent: {', '.join(gen.absent)}")
    # what the model got wrong is said in the report, and here: a report with a missing paragraph is still a
    # report (exit 0), but a user must not take its silence for a normal region
    report = json.loads(files["json"].read_text(encoding="utf-8"))
    for warning in report_warnings(report):
        print(f"[report] warning: case {gen.case}: {warning}", file=sys.stderr)
    return 0
