"""`photoid survey import|identify|export`: a field season's photos imported into a catalogue, identified in one
batch job, and exported once reviewed (the review itself happens in `photoid serve`, at /surveys/NAME).

    photoid survey import   --catalog C --name NAME (--folder DIR | --csv FILE --columns path=COL,date=COL,...)
    photoid survey identify --catalog C --name NAME        resumable: only photos without an answer are sent
    photoid survey export   --catalog C --name NAME --out FILE.csv [--decisions FILE.csv]
"""

from __future__ import annotations

import argparse
import time

from photoid.core.errors import PhotoidError
from photoid.core.labels import NEW_INDIVIDUAL
from photoid.survey.store import METADATA


def configure_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    imports = actions.add_parser("import", help="import a folder of photos, or a CSV listing them, as a survey")
    source = imports.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="folder of photos, read recursively (station: the sub-folder; date: EXIF)")
    source.add_argument("--csv", help="CSV listing the photos (paths relative to the CSV's folder, or absolute)")
    imports.add_argument("--columns", help=f"with --csv: which column holds what, e.g. path=file,date=timestamp; "
                                           f"fields: path (required), {', '.join(METADATA)}")
    identify = actions.add_parser("identify", help="identify every photo of a survey with the catalogue's models "
                                                   "(a batch job; resumes where it stopped)")
    identify.add_argument("--run", dest="runs", action="append", metavar="RUN_DIR",
                          help="where the catalogue's runs are now, if they moved (default: as recorded)")
    identify.add_argument("--records_dir", help="records folder the runs were trained from (default: config.json's)")
    identify.add_argument("--batch_size", type=int, default=16, help="photos per model call (and per result file)")
    identify.add_argument("--top", type=int, default=5, help="candidates kept per photo")
    identify.add_argument("--blend_weight", type=float, help="weight of the probabilities (default: calibrated)")
    identify.add_argument("--threshold", type=float, help="normalised score at or below which a photo is new "
                                                          "(default: calibrated)")
    export = actions.add_parser("export", help="write the survey's sightings table (and its decisions) as CSV")
    export.add_argument("--out", required=True, help="sightings CSV to write")
    export.add_argument("--decisions", help="also write the decisions about the survey's photos to this CSV")
    for sub in (imports, identify, export):
        sub.add_argument("--catalog", required=True, help="catalogue folder (the survey is kept inside it)")
        sub.add_argument("--name", required=True, help="the survey's name (letters, digits, '.', '_', '-')")


def run(args: argparse.Namespace) -> int:
    started = time.time()
    if args.action == "import":
        from photoid.catalog.store import read_catalog
        from photoid.survey.importer import import_csv, import_folder, parse_columns

        read_catalog(args.catalog)  # a survey belongs to a catalogue: refuse a folder that is not one
        if args.csv:
            if not args.columns:
                raise PhotoidError("--csv needs --columns path=COLUMN,... (which column holds what)")
            report = import_csv(args.catalog, args.name, args.csv, parse_columns(args.columns), progress=True)
        else:
            if args.columns:
                raise PhotoidError("--columns maps a CSV's columns; give it with --csv, not --folder")
            report = import_folder(args.catalog, args.name, args.folder, progress=True)
        print(report.summary() + f"\nin {time.time() - started:.1f}s")
    elif args.action == "identify":
        _identify(args, started)
    else:
        from photoid.catalog.store import read_catalog
        from photoid.survey.export import export_survey
        from photoid.survey.store import Survey

        survey = Survey(args.catalog, args.name)
        new_label = (survey.job() or {}).get("new_label", NEW_INDIVIDUAL)
        n, n_decisions = export_survey(read_catalog(args.catalog), survey, new_label, args.out, args.decisions)
        print(f"wrote {n} sightings to {args.out}"
              + (f" and {n_decisions} decisions to {args.decisions}" if args.decisions else ""))
    return 0


def _identify(args: argparse.Namespace, started: float) -> None:
    from tqdm import tqdm

    from photoid.catalog.identify import load_catalog_embedder
    from photoid.catalog.store import read_catalog
    from photoid.survey.job import embedder_features, identify_survey, job_status
    from photoid.survey.matching import Scorer
    from photoid.survey.store import Survey

    if args.batch_size < 1 or args.top < 1:
        raise PhotoidError("--batch_size and --top must be positive")
    survey = Survey(args.catalog, args.name)
    before = job_status(survey)
    if before["done"] == before["total"]:
        print(f"survey {args.name}: all {before['total']} readable photos are identified already")
        return
    catalog = read_catalog(args.catalog)
    scorer_options = {"top": args.top, "blend_weight": args.blend_weight, "threshold": args.threshold}
    Scorer(None, NEW_INDIVIDUAL, **scorer_options).operating_point(catalog)  # uncalibrated: refused before loading
    embedder = load_catalog_embedder(catalog, args.runs, args.records_dir)
    scorer = Scorer.from_embedder(embedder, **scorer_options)
    bar = tqdm(total=before["total"], initial=before["done"], desc=f"identifying survey {args.name}", unit="photo")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        status = identify_survey(args.catalog, args.name, embedder_features(embedder, args.batch_size), scorer,
                                 batch_size=args.batch_size, progress=progress)
    finally:
        bar.close()
    results = Survey(args.catalog, args.name).results()
    unreadable = [(name, error) for name, error, done in zip(survey.photos()["file_name"], results.errors,
                                                             results.done) if done and error]
    resumed = f" ({before['done']} were identified before)" if before["done"] else ""
    print(f"survey {args.name}: {status['done']} of {status['total']} photos identified{resumed} in "
          f"{time.time() - started:.1f}s")
    for name, error in unreadable:
        print(f"  not readable by the models: {name}: {error}")
