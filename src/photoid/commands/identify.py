"""`photoid identify`: which individual is in each photo, by trained runs (their fold ensemble) or a catalogue.

The command reads its options, identifies through the API (`photoid.api.identifications`: trained runs, a weight
file or a catalogue), and prints a table, CSV or JSON, and optionally a gallery PNG."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Iterator

from photoid.core.errors import PhotoidError
from photoid.core.results import Identification
from photoid.api import DEFAULT_BATCH, fold_ensemble, identifications, open_catalog
from photoid.records.folder import VIEWPOINTS
from photoid.runs.config import parse_folds


def candidate_rows(result: Identification) -> list[dict]:
    return [{"image": result.path, "rank": rank, "label": label, "probability": score}
            for rank, (label, score) in enumerate(zip(result.labels, result.scores), start=1)]


def format_table(result: Identification) -> str:
    lines = [result.path, "  rank  label                        probability"]
    lines += [f"  {row['rank']:>4}  {row['label']:<28} {row['probability']:>11.4f}" for row in candidate_rows(result)]
    if result.search:  # an approximate catalogue index ranked these: the verdict may differ from the exact search's
        lines.append(f"  search: {result.search}")
    return "\n".join(lines)


class Output:
    """Writes results to stdout as they come: a table per photo, CSV rows, or one JSON document at the end.

    Results of an approximate catalogue search say so: a `search` line per photo in the table, a `search` column
    in the CSV, a `search` entry per photo in the JSON (absent for the exact search)."""

    def __init__(self, kind: str, stream=None):
        self.kind, self.stream = kind, stream or sys.stdout
        self.collected: list[dict] = []
        self.csv: csv.DictWriter | None = None  # its header waits for the first result (a search column or not)

    def _csv_writer(self, search: str | None) -> csv.DictWriter:
        if self.csv is None:
            fields = ["image", "rank", "label", "probability"] + (["search"] if search else [])
            self.csv = csv.DictWriter(self.stream, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
            self.csv.writeheader()
        return self.csv

    def add(self, result: Identification) -> None:
        if self.kind == "json":
            entry = {"image": result.path, "candidates": [
                {k: v for k, v in row.items() if k != "image"} for row in candidate_rows(result)]}
            self.collected.append({**entry, "search": result.search} if result.search else entry)
        elif self.kind == "csv":
            writer = self._csv_writer(result.search)
            for row in candidate_rows(result):
                writer.writerow({**row, "probability": f"{row['probability']:.6g}", "search": result.search})
        else:
            print(format_table(result) + "\n", file=self.stream)
        self.stream.flush()

    def close(self, failed: list[Identification]) -> None:
        if self.kind == "csv":
            self._csv_writer(None)  # the header, even when no photo could be read
        if self.kind == "json":
            document = {"results": self.collected,
                        "failed": [{"image": r.path, "reason": r.error} for r in failed]}
            json.dump(document, self.stream, indent=2)
            self.stream.write("\n")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photos (JPEG) to identify")
    parser.add_argument("--run", dest="runs", action="append", metavar="RUN_DIR",
                        help="trained run folder (repeat to average several runs)")
    parser.add_argument("--folds", type=parse_folds, help="folds to use, e.g. 0,1 (default: every trained fold)")
    parser.add_argument("--top", type=int, default=5, help="candidates per photo")
    parser.add_argument("--tta", type=int, help="average TTA transforms 0..N (default: the run's tta_number)")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH, help="photos read and predicted at once")
    parser.add_argument("--records_dir", help="records folder the run was trained from (default: from config.json)")
    parser.add_argument("--viewpoint", choices=VIEWPOINTS,
                        help="the viewpoint of every photo given: right views are mirrored, as whale records store "
                             "them (default: unknown, not mirrored; refused for runs whose records never mirror)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    form.add_argument("--csv", action="store_true", help="print CSV rows (image, rank, label, probability)")
    parser.add_argument("--gallery", metavar="PNG", help="also draw each photo beside its candidates into this PNG")
    parser.add_argument("--data_dir", help="competition folder: the labels for --weights, reference photos for "
                                           "--gallery (default: the run's data_dir)")
    weights = parser.add_argument_group("a published weight file instead of a run")
    weights.add_argument("--weights", help="whole-model .h5 weight file (e.g. the original's ef1b7-fold0.h5)")
    weights.add_argument("--model", help="recipe the weight file was trained with (e.g. ef1b7)")
    weights.add_argument("--dim", type=int, help="override the recipe's image size")
    weights.add_argument("--dim_pre", type=int, help="override the recipe's pre-augmentation size")
    catalog = parser.add_argument_group("against a catalogue of known individuals (photoid catalog build)")
    catalog.add_argument("--catalog", help="catalogue folder: rank its individuals by similarity, blended with the "
                                           "runs' probabilities; new below the threshold (runs: the catalogue's)")
    catalog.add_argument("--blend_weight", type=float, help="weight of the probabilities (default: calibrated)")
    catalog.add_argument("--threshold", type=float, help="normalised score at or below which a photo is new "
                                                         "(default: calibrated)")
    catalog.add_argument("--faiss_above", type=int,
                         help="deprecated and ignored: the catalogue's search is chosen by its measured cost")
    catalog.add_argument("--local", action=argparse.BooleanOptionalAction, default=None,
                         help="fuse the global score with local matching of the shortlist (default: as calibrated; "
                              "--no-local: the global score alone)")
    catalog.add_argument("--shortlist", type=int, metavar="B",
                         help="individuals matched locally per photo (default: as calibrated)")
    catalog.add_argument("--explain", metavar="OUT_DIR",
                         help="write, per top candidate, a PNG of the photo beside the candidate's best photo with "
                              "the verified local matches drawn (and a JSON of them)")


def run(args: argparse.Namespace) -> int:
    options = dict(runs=args.runs, weights=args.weights, recipe=args.model, data_dir=args.data_dir, folds=args.folds,
                   tta=args.tta, top=args.top, viewpoint=args.viewpoint, records_dir=args.records_dir, dim=args.dim,
                   dim_pre=args.dim_pre, batch_size=args.batch_size)
    if args.top < 1:
        raise PhotoidError(f"--top must be at least 1, got {args.top}")
    if args.catalog:
        results, data_dir, subtitle = _catalog_results(args, options)
    else:
        for option in ("local", "shortlist", "explain"):
            if getattr(args, option) is not None:
                raise PhotoidError(f"--{option} applies with --catalog (local features are kept in a catalogue)")
        ensemble = fold_ensemble(**{k: v for k, v in options.items() if k not in ("top", "batch_size")})
        print(f"identifying {len(args.images)} photo(s) with {len(ensemble.members)} model(s), "
              f"{ensemble.n_predictions} prediction(s) averaged per photo", file=sys.stderr)
        results = identifications(args.images, ensemble=ensemble, **options)
        data_dir, subtitle = ensemble.data_dir, f"mean of {ensemble.n_predictions} prediction(s) per photo"
    data_dir = Path(args.data_dir) if args.data_dir else data_dir
    output = Output("json" if args.json else "csv" if args.csv else "table")
    identified, failed = [], []
    for result in results:
        if result.error is not None:
            print(f"error: {result.path}: {result.error}; skipped", file=sys.stderr)
            failed.append(result)
            continue
        output.add(result)
        for note in result.notes:
            print(f"note: {result.path}: {note}", file=sys.stderr)
        if args.explain:
            _write_explanations(args, result, Path(args.catalog))
        if args.gallery:
            identified.append(Identification(result.path, labels=result.labels, scores=result.scores))
    output.close(failed)
    if args.gallery:
        _write_gallery(args.gallery, identified, data_dir, subtitle)
    if failed:
        print(f"{len(failed)} of {len(args.images)} photo(s) could not be read: "
              f"{', '.join(r.path for r in failed)}", file=sys.stderr)
        return 1
    return 0


def _viewpoints(args: argparse.Namespace) -> list[str] | None:
    """--viewpoint, one per photo (None: not given)."""
    return None if args.viewpoint is None else [args.viewpoint] * len(args.images)


def _catalog_results(args: argparse.Namespace, options: dict) -> tuple[Iterator[Identification], Path | None, str]:
    """`--catalog`: the catalogue's own models embed the photos and give the probabilities to blend."""
    results = identifications(args.images, catalog=args.catalog, blend_weight=args.blend_weight,
                              threshold=args.threshold, **options)  # the options are checked before any work
    if args.faiss_above is not None:
        print("--faiss_above is deprecated and ignored: the catalogue is searched the faster exact way for its size",
              file=sys.stderr)
    if args.shortlist is not None and args.shortlist < 1:
        raise PhotoidError(f"--shortlist must be at least 1, got {args.shortlist}")
    if args.local is not None or args.shortlist is not None or args.explain:
        # The options of local matching, which the API's `identifications` does not take (yet): its catalogue path
        # with them (the call above checked every other option).
        from photoid.catalog.identify import identify_paths_with_catalog

        results = identify_paths_with_catalog(
            args.catalog, args.images, run_dirs=args.runs, records_dir=args.records_dir, top=args.top,
            batch_size=args.batch_size, blend_weight=args.blend_weight, threshold=args.threshold,
            viewpoints=None if args.viewpoint is None else [args.viewpoint] * len(args.images), local=args.local,
            shortlist=args.shortlist, explain=bool(args.explain))
    catalog = open_catalog(args.catalog)
    print(f"identifying {len(args.images)} photo(s) against catalogue {args.catalog}", file=sys.stderr)
    data_dir = catalog.manifest.get("data_dir")
    fused = bool((catalog.calibration or {}).get("fusion")) and args.local is not False
    return results, Path(data_dir) if data_dir else None, (
        "scores: global and local scores fused" if fused else "scores: similarity to the catalogue, blended")


def _write_explanations(args: argparse.Namespace, result: Identification, catalog_dir: Path) -> None:
    from photoid.catalog.explain import write_explanations
    from photoid.catalog.local import local_settings
    from photoid.catalog.store import read_catalog

    written = write_explanations(result, local_settings(read_catalog(catalog_dir)), args.explain, args.viewpoint)
    missing = [label for label in result.labels if label not in (result.evidence or {})]
    print(f"explained {result.path}: {len(written)} picture(s) in {args.explain}"
          + (f" (no local match to draw for {', '.join(missing)})" if missing else ""), file=sys.stderr)


def _write_gallery(path: str, results: list[Identification], data_dir: Path | None, subtitle: str) -> None:
    from photoid.inference.gallery import MAX_ROWS, draw_gallery, reference_photos

    references = reference_photos(data_dir) if data_dir else {}
    if not references:
        print("note: no training data folder found (pass --data_dir): candidates are drawn without a "
              "reference photo", file=sys.stderr)
    if len(results) > MAX_ROWS:
        print(f"note: the gallery shows the first {MAX_ROWS} of {len(results)} photos", file=sys.stderr)
    rows = [(r.path, list(zip(r.labels, r.scores))) for r in results[:MAX_ROWS]]
    if not rows:
        print("no gallery written: no photo could be identified", file=sys.stderr)
        return
    draw_gallery(rows, references, path, subtitle=subtitle)
    print(f"gallery written to {path}", file=sys.stderr)
