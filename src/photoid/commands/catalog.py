"""`photoid catalog build|add|list`: a catalogue of known individuals, built from trained runs, grown and listed."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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
    if info.get("zero_shot"):
        z = info["zero_shot"]
        lines.append(f"  no trained model (zero-shot, {z['task']} folder): embeddings are VLAD of the local features "
                     f"over {z['clusters']} visual words" + (f", projected to {z['pca_dim']} dimensions"
                                                              if z.get("pca_dim") else ""))
    local = info.get("local_features")
    lines.append("  local features: none (photoid catalog build --local --out CATALOG adds them)" if not local else
                 f"  local features: {local['settings']['extractor']} at {local['settings']['working_size']} px, "
                 f"{local['keypoints_per_photo']} keypoints per photo (at most {local['settings']['max_keypoints']}), "
                 f"{local['bytes_per_photo'] / 1024:.1f} KiB per photo; {local['photos']} photos"
                 + (f", {local['photos_too_few_keypoints']} with too few keypoints"
                    if local.get("photos_too_few_keypoints") else ""))
    c = info["calibration"]
    lines.append("  calibration: none (photoid calibrate chooses the new-individual threshold)" if not c else
                 f"  calibration: threshold {c['threshold']:.4f}, blend weight {c['blend_weight']}, out-of-fold "
                 f"MAP@5 {c['metrics']['map5']:.4f} ({c['calibrated']})")
    fusion = (c or {}).get("fusion")
    if fusion:
        lines.append(f"  fusion: local weight {fusion['weights']['local']}, shortlist {fusion['shortlist']}, fused "
                     f"threshold {fusion['threshold']:.4f}, out-of-fold MAP@5 {fusion['metrics']['map5']:.4f}")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", help="embed every labelled photo of a data folder with trained runs (without --run: zero-shot)",
        description="With --run: the runs' fold models embed every labelled photo of --data_dir, and each photo's "
                    "local features are kept beside (--no-local: not). Without --run: a zero-shot catalogue of "
                    "local features and a descriptor learnt from them, for any task's folder, no training. Without "
                    "--data_dir, --local adds the local features an existing catalogue --out lacks.")
    build.add_argument("--run", dest="runs", nargs="+", action="extend", metavar="RUN_DIR",
                       help="trained run folder(s); their fold models make the embeddings (none: zero-shot)")
    build.add_argument("--data_dir",
                       help="the data folder (Turtle Recall, Where's Whale-do or generic): its labelled photos")
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
    build.add_argument("--local", action=argparse.BooleanOptionalAction, default=None,
                       help="keep every photo's local features (default: yes); without --data_dir, add the ones "
                            "the existing catalogue --out lacks")
    build.add_argument("--task", help="zero-shot: the folder's task (default: found from its files)")
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
        from photoid.catalog.stream import holds_finished_catalogue

        # Looked at first: processes started together to share a build may find it finished by a quicker one.
        joined = not holds_finished_catalogue(Path(args.out))
        catalog = _build(args, joined)
        if catalog.building:
            b = catalog.building
            print(f"catalogue {catalog.path}: {len(catalog.table)} of {b['total']} photos embedded so far "
                  f"({len(b['done'])} of {b['chunks']} chunks) in {time.time() - started:.0f}s")
            return 0
        local = catalog.manifest.get("local_features")
        made = (f"{len(catalog.models)} model(s)" if catalog.models else
                f"no trained model (zero-shot: VLAD of local features, {catalog.dim} dimensions)")
        print(f"catalogue {catalog.path}: {len(catalog.table)} photos of {catalog.table['individual_id'].nunique()} "
              f"individuals from {made}"
              + (f"; local features: {local['keypoints_per_photo']} keypoints and "
                 f"{local['bytes_per_photo'] / 1024:.1f} KiB per photo" if local else "")
              + f" in {time.time() - started:.0f}s")
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


def _build(args: argparse.Namespace, joined: bool):
    from photoid.catalog.build import add_local_features
    from photoid.catalog.zeroshot import build_zero_shot_catalog
    from photoid.core.errors import PhotoidError

    if args.data_dir is None:
        if args.runs or not args.local:
            raise PhotoidError("--data_dir is required (without it, only --local adds the local features an existing "
                               "catalogue --out lacks)")
        catalog, added = add_local_features(args.out)
        print(f"local features of {added} photo(s) added to {catalog.path}; run photoid calibrate again to fit the "
              "fusion")
        return catalog
    if args.task and args.runs:
        raise PhotoidError("--task applies to a zero-shot catalogue (no --run): runs know their task")
    if not args.runs:
        if args.local is False:
            raise PhotoidError("a catalogue without --run is made of local features alone: --no-local leaves it "
                               "nothing; give --run RUN_DIR, or leave --no-local out")
        if args.folds is not None:
            raise PhotoidError("--folds applies to --run folders")
        if args.storage != "float32" or args.index != "exact" or args.chunk != PART_ROWS:
            raise PhotoidError("--storage, --index and --chunk apply to catalogues of trained runs (--run)")
        return build_zero_shot_catalog(args.data_dir, args.out, force=args.force, task=args.task)
    return build_catalog(args.runs, args.data_dir, args.out, folds=args.folds, records_dir=args.records_dir,
                         batch_size=args.batch_size, force=args.force, storage=args.storage, index=args.index,
                         nlist=args.nlist, nprobe=args.nprobe, ef_search=args.ef_search, chunk_rows=args.chunk,
                         progress=True, note=lambda line: print(line, flush=True), local=args.local is not False,
                         joined=joined)
