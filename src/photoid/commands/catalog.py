"""`photoid catalog build|add|list`: a catalogue of known individuals, built from trained runs, grown and listed."""

from __future__ import annotations

import argparse
import json
import time

from photoid.api import DEFAULT_BATCH, add_photos, build_catalog, catalog_summary
from photoid.records.folder import VIEWPOINTS
from photoid.runs.config import parse_folds


def format_summary(info: dict) -> str:
    lines = [f"catalogue {info['catalog']} (updated {info['updated']})",
             f"  {info['images']} photos of {info['individuals']} individuals "
             f"({info['single_photo_individuals']} with a single photo); embeddings of {info['dim']} dimensions"]
    lines += [f"  source {name}: {s['images']} photos, {s['individuals']} individuals"
              for name, s in info["sources"].items()]
    lines += [f"  run {r['run']} ({r['recipe']}, {r['image_size']} px): folds {r['folds']}, "
              f"{r['embedding_size']} dimensions per fold, {r['run_dir']}" for r in info["runs"]]
    c = info["calibration"]
    lines.append("  calibration: none (photoid calibrate chooses the new-individual threshold)" if not c else
                 f"  calibration: threshold {c['threshold']:.4f}, blend weight {c['blend_weight']}, out-of-fold "
                 f"MAP@5 {c['metrics']['map5']:.4f} ({c['calibrated']})")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="embed every labelled photo of a data folder with trained runs")
    build.add_argument("--run", dest="runs", nargs="+", action="extend", required=True, metavar="RUN_DIR",
                       help="trained run folder(s); their fold models make the embeddings")
    build.add_argument("--data_dir", required=True,
                       help="the runs' data folder (Turtle Recall, Where's Whale-do or generic): its labelled photos")
    build.add_argument("--out", required=True, help="catalogue folder to write")
    build.add_argument("--folds", type=parse_folds, help="folds to use, e.g. 0,1 (default: every trained fold)")
    build.add_argument("--force", action="store_true", help="replace an existing catalogue")
    add = actions.add_parser("add", help="add photos of a known or a new individual, without retraining")
    add.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG photos of that individual")
    add.add_argument("--id", dest="individual_id", required=True, help="the individual's id")
    add.add_argument("--catalog", required=True, help="catalogue folder")
    add.add_argument("--run", dest="runs", nargs="+", action="extend", metavar="RUN_DIR",
                     help="where the catalogue's runs are now, if they moved (default: as recorded)")
    add.add_argument("--viewpoint", choices=VIEWPOINTS,
                     help="the viewpoint of every photo given: right views are mirrored, as whale records store "
                          "them (default: unknown, not mirrored; refused for models whose records never mirror)")
    show = actions.add_parser("list", help="summarise a catalogue")
    show.add_argument("--catalog", required=True, help="catalogue folder")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    for sub in (build, add):
        sub.add_argument("--records_dir", help="records folder the runs were trained from (default: config.json's)")
        sub.add_argument("--batch_size", type=int, default=DEFAULT_BATCH, help="photos embedded at once")


def run(args: argparse.Namespace) -> int:
    started = time.time()
    if args.action == "build":
        catalog = build_catalog(args.runs, args.data_dir, args.out, folds=args.folds, records_dir=args.records_dir,
                                batch_size=args.batch_size, force=args.force)
        print(f"catalogue {catalog.path}: {len(catalog.table)} photos of {catalog.table['individual_id'].nunique()} "
              f"individuals from {len(catalog.models)} model(s) in {time.time() - started:.0f}s")
    elif args.action == "add":
        catalog, known = add_photos(args.catalog, args.images, args.individual_id, run_dirs=args.runs,
                                    records_dir=args.records_dir, batch_size=args.batch_size,
                                    viewpoint=args.viewpoint)
        count = int((catalog.table["individual_id"] == args.individual_id).sum())
        print(f"added {len(args.images)} photo(s) of {'known' if known else 'new'} individual {args.individual_id} "
              f"(now {count} photo(s)) to {catalog.path} in {time.time() - started:.1f}s")
    else:
        info = catalog_summary(args.catalog)
        print(json.dumps(info, indent=2) if args.json else format_summary(info))
    return 0
