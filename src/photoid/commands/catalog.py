"""`photoid catalog build|add|list`: a catalogue of known individuals, built from trained runs, grown and listed."""

from __future__ import annotations

import argparse
import json
import time

from photoid.api import DEFAULT_BATCH, add_photos, build_catalog, catalog_summary
from photoid.catalog.approximate import DEFAULT_EF_SEARCH, DEFAULT_NPROBE, KINDS
from photoid.catalog.store import PART_ROWS, STORAGES
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
    search = f"  search: {info['search']}; embeddings stored as {info['storage']} in {info['parts']} part(s)"
    effect = info.get("float16_effect")
    if effect:
        search += (f" (float16 vs float32 on {effect['queries']} photos of the first {effect['gallery']}: scores "
                   f"differ by at most {effect['max_abs_score_difference']:.2g}, top 5 changed for "
                   f"{100 * effect['top5_changed']:.1f}% of the photos)")
    lines.append(search)
    if info.get("building"):
        b = info["building"]
        lines.append(f"  still being built: {len(b['done'])} of {b['chunks']} chunks of {b['chunk_rows']} photos "
                     "committed; run the same photoid catalog build command to finish")
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
    build.add_argument("--force", action="store_true",
                       help="replace an existing catalogue (or start a build in progress over)")
    build.add_argument("--storage", choices=STORAGES, default="float32",
                       help="how embeddings are stored: float16 halves memory and disk; its effect on scores is "
                            "measured and printed (default: float32)")
    build.add_argument("--index", choices=KINDS, default="exact",
                       help="search index: exact (default, every photo compared) or an approximate faiss index "
                            "(ivf, hnsw), whose recall against the exact search is measured and printed")
    build.add_argument("--nlist", type=int, help="ivf: lists the photos are grouped into (default: about √photos)")
    build.add_argument("--nprobe", type=int, help=f"ivf: lists read per query (default: {DEFAULT_NPROBE})")
    build.add_argument("--ef_search", type=int, help=f"hnsw: candidates kept per query (default: {DEFAULT_EF_SEARCH})")
    build.add_argument("--chunk", type=int, default=PART_ROWS,
                       help="photos embedded and committed at a time; a killed build resumes at the last chunk "
                            f"committed, and several processes running the command share the chunks "
                            f"(default: {PART_ROWS})")
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
                                batch_size=args.batch_size, force=args.force, storage=args.storage,
                                index=args.index, nlist=args.nlist, nprobe=args.nprobe, ef_search=args.ef_search,
                                chunk_rows=args.chunk, progress=True, note=lambda line: print(line, flush=True))
        if catalog.building:
            b = catalog.building
            print(f"catalogue {catalog.path}: {len(catalog.table)} of {b['total']} photos embedded so far "
                  f"({len(b['done'])} of {b['chunks']} chunks) in {time.time() - started:.0f}s")
            return 0
        print(f"catalogue {catalog.path}: {len(catalog.table)} photos of {catalog.table['individual_id'].nunique()} "
              f"individuals from {len(catalog.models)} model(s) in {time.time() - started:.0f}s")
        _print_search(catalog)
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


def _print_search(catalog) -> None:
    """What a build measured: float16 storage's effect on scores, the approximate index's recall."""
    effect = catalog.manifest.get("float16_effect")
    if effect:
        print(f"float16 storage: against float32, {effect['queries']} photos searched among {effect['gallery']} "
              f"(each left out of its own search): scores differ by at most {effect['max_abs_score_difference']:.2g} "
              f"(mean {effect['mean_abs_score_difference']:.2g}); the top 5 individuals changed (in order) for "
              f"{100 * effect['top5_changed']:.1f}% of them, the best one for {100 * effect['top1_changed']:.1f}%")
    entry = catalog.manifest.get("index") or {}
    if entry.get("kind", "exact") != "exact":
        recall = entry.get("recall") or {}
        measured = (f"recall@5 {recall['recall_at_5']:.3f}, recall@1 {recall['recall_at_1']:.3f} against the exact "
                    f"search over {recall['queries']} catalogue photos (each left out of its own search)"
                    if recall else "recall not measured (fewer than 2 photos)")
        print(f"approximate index {entry['factory']} built in {entry['seconds_to_build']:.1f}s: {measured}; "
              "identification will say that its search was approximate")
