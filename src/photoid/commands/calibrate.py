"""`photoid calibrate`: choose the new-individual threshold and blend weight out of fold; `--evaluate` scores a test set."""

from __future__ import annotations

import argparse
import time

from photoid.api import calibrate, open_catalog
from photoid.catalog.calibrate import DEFAULT_NEW_FRACTION, DEFAULT_REPEATS, DEFAULT_SEED, LABEL_SPACES, evaluate
from photoid.catalog.fusion import DEFAULT_SHORTLIST


def format_calibration(c: dict) -> str:
    def line(name, m):
        return (f"  {name:<26} MAP@5 {m['map5']:.4f}  AUC new-vs-known {m['auc_known_vs_new']:.4f}  "
                f"acc@1 known {m['known_accuracy']:.4f}  new {m['new_accuracy']:.4f}  "
                f"balanced {m['balanced_accuracy']:.4f}")

    m = c["metrics"]
    fusion = c.get("fusion")
    fused_lines = [] if not fusion else [
        f"  fusion (shortlist {fusion['shortlist']}, {fusion['queries']} queries, {fusion['pairs']} pairs matched "
        f"locally, {fusion['seconds']:.0f}s): weights global {fusion['weights']['global']} / local "
        f"{fusion['weights']['local']}, fused threshold {fusion['threshold']:.4f}; calibrations "
        + ", ".join(f"{name} {kind} (out-of-fold log-loss " + " vs ".join(
            f"{k} {v:.4f}" for k, v in fusion["log_loss_out_of_fold"][name].items()) + ")"
            for name, kind in fusion["calibration_kinds"].items()),
        line(f"fused (local w={fusion['weights']['local']})", fusion["metrics"]),
        line("global only, calibrated", fusion["global_only"]["metrics"]),
        *([line("local only (shortlist)", fusion["local_only"]["metrics"])] if fusion.get("local_only") else []),
    ]
    return "\n".join([
        f"out-of-fold calibration: {m['n_queries']} queries ({m['n_new']} new), folds {c['folds']}, "
        f"{c['repeats']} draw(s) of {c['new_fraction']:.0%} individuals held out",
        f"  chosen: blend weight {c['blend_weight']}, threshold {c['threshold']:.4f} (labels: {c['label_space']})",
        line(f"blend (w={c['blend_weight']})", m),
        line(f"similarity only (t={c['similarity_only']['threshold']:.4f})", c["similarity_only"]["metrics"]),
        *fused_lines,
    ])


def format_table(result: dict) -> str:
    lines = [f"test set {result['data_dir']}: {result['n_test']} photos, {result['n_new_turtle']} of them "
             f"new_turtle (MAP@5 over the 101 labels)", "",
             "| method | MAP@5 | acc@1 | acc@1 known | acc@1 new_turtle |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['map5']:.4f} | {r['acc1']:.4f} | {r['acc1_known']:.4f} | {r['acc1_new']:.4f} |"
              for r in result["rows"]]
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", required=True, help="catalogue folder (photoid catalog build)")
    parser.add_argument("--run", dest="runs", nargs="+", action="extend", metavar="RUN_DIR",
                        help="the catalogue's runs, if they moved (default: as recorded in the catalogue)")
    parser.add_argument("--records_dir", help="records folder the runs were trained from (default: config.json's)")
    parser.add_argument("--new_fraction", type=float, default=DEFAULT_NEW_FRACTION,
                        help="share of individuals held out to play new ones (expected share of new in the field)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="draws of held-out individuals")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seeds the draws")
    parser.add_argument("--label_space", choices=LABEL_SPACES, default="catalog",
                        help="catalog: any catalogue individual can be named (identify --catalog); original: only the "
                             "runs' original ids, others are new (Turtle Recall's 101 labels)")
    parser.add_argument("--similarity_only", action="store_true",
                        help="ignore the classifier's probabilities (blend weight 0)")
    parser.add_argument("--local", action=argparse.BooleanOptionalAction, default=None,
                        help="also fit the fusion of global and local scores (default: when the catalogue has local "
                             "features; --local requires them)")
    parser.add_argument("--shortlist", type=int, default=DEFAULT_SHORTLIST, metavar="B",
                        help=f"individuals matched locally per query (default: {DEFAULT_SHORTLIST})")
    parser.add_argument("--evaluate", action="store_true",
                        help="then score the test set (test_labels.csv): classifier rule vs catalogue vs blend")
    parser.add_argument("--data_dir", help="with --evaluate: the Turtle Recall folder (default: the catalogue's)")
    parser.add_argument("--out", help="with --evaluate: also write the table as JSON here")


def run(args: argparse.Namespace) -> int:
    started = time.time()
    calibration = calibrate(args.catalog, args.runs, new_fraction=args.new_fraction, repeats=args.repeats,
                            seed=args.seed, use_probabilities=not args.similarity_only,
                            label_space=args.label_space, records_dir=args.records_dir, local=args.local,
                            shortlist=args.shortlist)
    catalog = open_catalog(args.catalog)  # the generation the calibration was committed to, or a later one
    print(format_calibration(calibration))
    print(f"written to {catalog.path / 'manifest.json'} in {time.time() - started:.0f}s")
    if args.evaluate:
        result = evaluate(catalog, args.runs, args.data_dir or catalog.manifest["data_dir"], out=args.out,
                          records_dir=args.records_dir)
        print(format_table(result))
    return 0
