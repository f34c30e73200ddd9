"""`reg2rg evaluate nlg|ce|region|region-ce|grounded|model-based|image-use|compare|all`: the paper's
metrics and the kit's additions (CRG, region-level CE, grounded findings, BERTScore from local weights) on any
predictions CSV, and the image-use instrument on a trained model and its prep cache (does the model read the
image?).

Column names default to the released formats (GT_combined_report/Pred_combined_report, else
GT_whole_report/Pred_whole_report) and can be named with --gt-column/--pred-column. Bad input (a missing file
or column, no rows, duplicate ids, empty cells, non-UTF-8 text, not a CSV) is one line `error: FILE: ...`,
exit 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reg2rg_lib.io import atomic_path, write_json_atomic
from reg2rg_lib.paths import MetricsFolder
from reg2rg_lib.regions import strip_region_prefix


def _report_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt-column", default=None, help="reference report column (default: auto-detect)")
    p.add_argument("--pred-column", default=None, help="predicted report column (default: auto-detect)")
    p.add_argument("--allow-empty-predictions", action="store_true",
                   help="score empty predicted reports as empty (0) instead of refusing the file")


def _pairs(args: argparse.Namespace, path: str | None = None):
    from reg2rg_lib.metrics.csv_inputs import read_report_pairs

    return read_report_pairs(path or args.predictions, args.gt_column, args.pred_column,
                             allow_empty_predictions=args.allow_empty_predictions)


def _resampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate",
                       help="NLG, clinical-efficacy and region metrics as the paper computed them")
    ev = p.add_subparsers(dest="evaluate", metavar="WHAT")
    ev.required = True

    q = ev.add_parser("nlg", help="BLEU-1..4, METEOR, ROUGE-1/2/L, CIDEr -> DIR/nlg_evaluation_results.csv")
    q.add_argument("--predictions", required=True, help="CSV with reference and predicted reports")
    _report_columns(q)
    q.add_argument("--strip-region-prefix", action="store_true",
                   help='remove "The region i is X:" prefixes and unwrap "{region: ...}" blocks first')
    q.add_argument("--by-region", action="store_true",
                   help="also score each region's paragraphs separately -> DIR/nlg_by_region.csv")
    q.add_argument("--out", required=True, help="output folder")
    _resampling(q)
    q.set_defaults(func=_nlg)

    q = ev.add_parser("ce", help="clinical efficacy over the 18 CT-RATE labels -> DIR/ce_metrics.csv")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels",
                     help="label table with GT_<label>/Pred_<label> columns (e.g. label_inferred.csv)")
    src.add_argument("--predictions", help="predictions CSV: both reports are labelled with --labeler")
    _report_columns(q)
    q.add_argument("--labeler", default="rules",
                   help="'rules' (offline, default) or a local classifier folder")
    q.add_argument("--gt-prefix", default="GT_", help="label-table column prefix of the references")
    q.add_argument("--pred-prefix", default="Pred_", help="label-table column prefix of the predictions")
    q.add_argument("--out", required=True, help="output folder")
    _resampling(q)
    q.set_defaults(func=_ce)

    _register_beyond_the_paper(ev)

    q = ev.add_parser("region",
                      help="region-recognition accuracy and per-region P/R/F1 -> DIR/region_metrics.json")
    q.add_argument("--predictions", required=True,
                   help="CSV with reports that carry 'The region i is X:' prefixes")
    _report_columns(q)
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=_region)

    q = ev.add_parser("compare", help="paired bootstrap test of B against A (same cases)")
    q.add_argument("a", help="predictions CSV of system A (the baseline)")
    q.add_argument("b", help="predictions CSV of system B")
    _report_columns(q)
    q.add_argument("--no-strip-region-prefix", dest="strip", action="store_false",
                   help="score whole reports with their region prefixes (default: strip them, as the paper)")
    q.add_argument("--labeler", default="rules",
                   help="labeler for the CE rows ('rules' or a classifier folder)")
    q.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    q.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    q.add_argument("--out", default=None, help="also write DIR/compare.csv and DIR/compare.json")
    q.add_argument("--json", action="store_true", help="print one JSON line")
    q.set_defaults(func=_compare)

    q = ev.add_parser("all", help="everything notebooks 04/05 report, in one call (evaluate_predictions)")
    q.add_argument("--predictions", required=True, help="predictions CSV")
    _report_columns(q)
    q.add_argument("--labels", default=None,
                   help="exact reference labels (id column + 18 labels) or a GT_/Pred_ label table")
    q.add_argument("--labeler", default="rules", help="'rules' (default) or a local classifier folder")
    q.add_argument("--by-region", action="store_true", help="also write DIR/nlg_by_region.csv")
    q.add_argument("--data", default=None,
                   help="the embedded benchmark folder (or its manifest.json): also score grounded findings")
    q.add_argument("--bertscore-model", default=None, help="local encoder folder: also compute BERTScore")
    q.add_argument("--checkpoint", default=None,
                   help="the model that wrote the predictions (run folder, checkpoint or model folder): "
                        "with --cache, also run the image-use instrument -> DIR/image_use.csv")
    q.add_argument("--cache", default=None,
                   help="the prep cache the predictions were generated from (with --checkpoint)")
    q.add_argument("--split", default="test",
                   help="the split the predictions are of, for image use (default test)")
    q.add_argument("--out", required=True, help="output folder")
    _resampling(q)
    q.set_defaults(func=_all)


def _register_beyond_the_paper(ev: argparse._SubParsersAction) -> None:
    """`grounded`, `region-ce`, `model-based`: evaluation the paper did not report."""
    q = ev.add_parser("grounded",
                      help="grounded finding accuracy on the embedded benchmark -> DIR/grounded_by_kind.csv")
    q.add_argument("--predictions", required=True, help="predictions CSV on the benchmark's test cases")
    q.add_argument("--data", required=True,
                   help="the benchmark folder (or its manifest.json) with the ground truth")
    _report_columns(q)
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=_grounded)

    q = ev.add_parser("region-ce",
                      help="clinical efficacy per region paragraph -> DIR/all_regions_macro_avg_results.csv")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="predictions CSV with 'The region i is X:' paragraphs")
    src.add_argument("--release-dir",
                     help="a folder of <region>_reports.csv files (the authors' release format)")
    _report_columns(q)
    q.add_argument("--labeler", default="rules",
                   help="'rules' (offline, default) or a local classifier folder")
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=_region_ce)

    q = ev.add_parser("model-based",
                      help="BERTScore from a local model folder (never downloads) -> DIR/bertscore.csv")
    q.add_argument("--predictions", required=True, help="predictions CSV")
    _report_columns(q)
    q.add_argument("--bertscore-model", default=None, help="local transformers encoder folder for BERTScore")
    q.add_argument("--bertscore-layers", type=int, default=None,
                   help="encoder layer to use (default: the last)")
    q.add_argument("--no-strip-region-prefix", dest="strip", action="store_false",
                   help="score whole reports with their region prefixes (default: strip them, as the paper)")
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=_model_based)

    q = ev.add_parser(
        "image-use",
        help="does the model read the image? per label: what the spliced region vectors "
        "carry vs what the LLM uses -> DIR/image_use.csv",
    )
    _image_use_args(q)
    q.add_argument("--split", default="test",
                   help="the split to evaluate (default test; probes fit on train)")
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=_image_use)


def _image_use_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--checkpoint", required=True,
                   help="run folder, checkpoint or model folder (as `reg2rg generate`)")
    q.add_argument("--cache", required=True,
                   help="the prep cache (the embedded benchmark's, with its labels)")
    q.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="only these CT-RATE labels (default: every label the benchmark inserts)")
    q.add_argument("--batch-size", type=int, default=16, help="teacher-forced samples per forward pass")
    q.add_argument("--seed", type=int, default=0, help="probe and control-shift seed")


def _print_row(title: str, row: dict[str, str]) -> None:
    print(title)
    width = max(map(len, row))
    for k, v in row.items():
        print(f"  {k:<{width}}  {v}")


def _nlg(args: argparse.Namespace) -> int:
    # each handler imports its stage when it runs, so `reg2rg --help` stays fast
    from reg2rg_lib.metrics.nlg import evaluate_nlg, evaluate_nlg_by_region, write_nlg_outputs

    pairs = _pairs(args)
    refs, hyps = pairs.references, pairs.predictions
    if args.strip_region_prefix:
        refs, hyps = [strip_region_prefix(t) for t in refs], [strip_region_prefix(t) for t in hyps]
    result = evaluate_nlg(
        refs, hyps, ids=pairs.ids, bootstrap=args.bootstrap, seed=args.seed, show_progress=True
    )
    paths = write_nlg_outputs(result, args.out)
    if args.by_region:
        with atomic_path(MetricsFolder(args.out).nlg_by_region) as tmp:
            evaluate_nlg_by_region(pairs.references, pairs.predictions).to_csv(tmp, index=False)
    _print_row(f"NLG on {result.n} pairs ({pairs.gt_column} vs {pairs.pred_column}):", result.summary_row())
    print(f"wrote {paths['results']}")
    return 0


def _ce(args: argparse.Namespace) -> int:
    from reg2rg_lib.metrics.ce import evaluate_ce, label_reports, read_label_table, write_ce_outputs
    from reg2rg_lib.metrics.crg import crg_score, write_crg
    from reg2rg_lib.metrics.labeler import get_labeler

    if args.labels:
        y_true, y_pred, _ = read_label_table(
            args.labels, gt_prefix=args.gt_prefix, pred_prefix=args.pred_prefix
        )
    else:
        pairs = _pairs(args)
        table = label_reports([strip_region_prefix(t) for t in pairs.references],
                              [strip_region_prefix(t) for t in pairs.predictions], get_labeler(args.labeler))
        y_true = table.filter(like="GT_").to_numpy()
        y_pred = table.filter(like="Pred_").to_numpy()

        with atomic_path(MetricsFolder(args.out).ce_labels) as tmp:
            table.insert(0, "AccNum", pairs.ids)
            table.to_csv(tmp, index=False)
    # A = 0: an error before any metric file
    crg = crg_score(y_true, y_pred, source=args.labels or args.predictions)
    metrics = evaluate_ce(y_true, y_pred, bootstrap=args.bootstrap, seed=args.seed)
    paths = write_ce_outputs(metrics, args.out)
    crg_path = write_crg(crg, args.out)
    print(metrics["report"], end="")
    print(
        f"CRG {crg['CRG']:.4f} (TP {crg['TP']}, FN {crg['FN']}, FP {crg['FP']}, X {crg['X']}, A {crg['A']})"
    )
    print(f"wrote {paths['csv']} and {crg_path}")
    return 0


def _grounded(args: argparse.Namespace) -> int:
    from reg2rg_lib.metrics.grounded import evaluate_grounded

    s = evaluate_grounded(args.predictions, args.data, args.out, args.gt_column, args.pred_column,
                          allow_empty_predictions=args.allow_empty_predictions)
    fmt = {k: "n/a" if s[k] is None else f"{s[k]:.4f}" for k in
           ("grounded_recall", "attribute_accuracy", "false_findings_per_case")}
    print(
        f"{s['n_cases']} cases, {s['inserted']} inserted findings, {s['reported']} reported in their region"
    )
    print(f"grounded recall {fmt['grounded_recall']}, attribute accuracy {fmt['attribute_accuracy']} "
          f"({s['attributes_checked']} checks), false findings per case {fmt['false_findings_per_case']}")
    print(f"wrote {MetricsFolder(args.out).grounded_by_kind}")
    return 0


def _region_ce(args: argparse.Namespace) -> int:
    from reg2rg_lib.metrics.labeler import get_labeler
    from reg2rg_lib.metrics.region_ce import (
        region_ce,
        region_ce_from_folder,
        region_report_tables,
        write_region_ce_outputs,
    )

    tables = None
    if args.release_dir:
        result = region_ce_from_folder(args.release_dir, get_labeler(args.labeler))
    else:
        pairs = _pairs(args)
        tables = region_report_tables(pairs.references, pairs.predictions, pairs.ids)
        result = region_ce(tables, get_labeler(args.labeler))
    paths = write_region_ce_outputs(result, args.out, tables)
    print(result["macro"].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"wrote {paths['macro']}")
    return 0


def _model_based(args: argparse.Namespace) -> int:
    from reg2rg_lib.metrics.model_based import evaluate_model_based

    pairs = _pairs(args)
    refs, hyps = pairs.references, pairs.predictions
    if args.strip:
        refs, hyps = [strip_region_prefix(t) for t in refs], [strip_region_prefix(t) for t in hyps]
    res = evaluate_model_based(pairs.ids, refs, hyps, args.out, bertscore_model=args.bertscore_model,
                               bertscore_layers=args.bertscore_layers)
    print(f"BERTScore on {res['n']} pairs: P {res['BERTScore_P']:.4f} R {res['BERTScore_R']:.4f} "
          f"F1 {res['BERTScore_F1']:.4f}")
    print(f"wrote {MetricsFolder(args.out).bertscore}")
    return 0


def _region(args: argparse.Namespace) -> int:
    from reg2rg_lib.metrics.region import region_recognition, write_region_outputs

    pairs = _pairs(args)
    m = region_recognition(pairs.references, pairs.predictions, pairs.ids)
    paths = write_region_outputs(m, args.out)
    topic = m["topic"]
    share = "n/a" if topic["share"] is None else f"{topic['share']:.4f}"
    print(
        f"region accuracy {m['accuracy']:.4f}±{m['accuracy_std']:.4f} over {m['n_scored']} samples; "
        f"topic consistency {share} ({topic['consistent']} of {topic['paragraphs']} generated paragraphs on "
        "their organ's topic)"
    )
    print(f"macro F1: all regions {m['macro_all']['f1']:.4f}; without lung/pleura "
          f"{m['macro_without_lung_pleura']['f1']:.4f}")
    print(f"wrote {paths['json']}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from reg2rg_lib.metrics.pipeline import compare_predictions

    table = compare_predictions(
        args.a,
        args.b,
        gt_column=args.gt_column,
        pred_column=args.pred_column,
        strip_region_prefix=args.strip,
        labeler=args.labeler,
        n_resamples=args.resamples,
        seed=args.seed,
        allow_empty_predictions=args.allow_empty_predictions,
    )
    record = {**table.attrs, "metrics": table.to_dict(orient="records")}
    if args.out:
        with atomic_path(MetricsFolder(args.out).compare_csv) as tmp:
            table.to_csv(tmp, index=False)
        write_json_atomic(MetricsFolder(args.out).compare_json, record)
    if args.json:
        print(json.dumps(record, default=float))
        return 0
    print(f"B = {table.attrs['B']}\nA = {table.attrs['A']}\n{table.attrs['n']} shared cases, "
          f"{table.attrs['resamples']} paired resamples")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0


def _check_paths(**paths: str) -> None:
    from reg2rg_lib.errors import BadInputError

    for what, path in paths.items():
        if not Path(path).expanduser().exists():
            raise BadInputError(path, f"{what} not found")


def _image_use(args: argparse.Namespace) -> int:
    from reg2rg_lib.metrics.image_use import evaluate_image_use, image_use_text

    _check_paths(checkpoint=args.checkpoint, **{"prep cache": args.cache})
    table = evaluate_image_use(args.checkpoint, args.cache, args.out, args.split, labels=args.labels,
                               batch_size=args.batch_size, seed=args.seed)
    print(image_use_text(table))
    print(f"wrote {MetricsFolder(args.out).image_use_csv}")
    return 0


def _all(args: argparse.Namespace) -> int:
    from reg2rg_lib.errors import KitError
    from reg2rg_lib.metrics.pipeline import evaluate_predictions

    if (args.checkpoint is None) != (args.cache is None):
        raise KitError("evaluate all: the image-use instrument needs both --checkpoint and --cache")
    if args.checkpoint is not None:
        _check_paths(checkpoint=args.checkpoint, **{"prep cache": args.cache})

    headline = evaluate_predictions(
        args.predictions,
        args.out,
        labels=args.labels,
        gt_column=args.gt_column,
        pred_column=args.pred_column,
        labeler=args.labeler,
        by_region=args.by_region,
        bootstrap=args.bootstrap,
        seed=args.seed,
        show_progress=True,
        ground_truth=args.data,
        bertscore_model=args.bertscore_model,
        allow_empty_predictions=args.allow_empty_predictions,
    )
    _print_row(
        "headline numbers:", {k: f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in headline.items()}
    )
    print(f"wrote {MetricsFolder(args.out).summary}")
    if args.checkpoint is not None:
        from reg2rg_lib.metrics.image_use import evaluate_image_use, image_use_text

        table = evaluate_image_use(args.checkpoint, args.cache, args.out, args.split, seed=args.seed)
        print(image_use_text(table))
        print(f"wrote {MetricsFolder(args.out).image_use_csv}")
    return 0
