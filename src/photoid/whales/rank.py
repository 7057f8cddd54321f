"""`photoid rank`: embedding families → a Where's Whale-do submission, routed per scenario as the winner routed.

Three families (see `photoid.whales.routing`): `top` (the B5 top runs), `top2` (the EfficientNetV2 top runs,
optional, blended 0.75 / 0.25 with the first family) and `lateral` (the paired lateral runs). Scenarios holding a
lateral photo need the lateral family: without one they are refused, unless `--lateral_from_top` ranks them with the
top family (with a warning: that is not the winner's system). Each comes either from trained runs (`--run_top`, `--run_top2`, `--run_lateral`; their folds joined as
`photoid embed` joins them, by default the winner's raw concatenation) or from an embeddings file of `photoid
embed` (`--top`, `--top2`, `--lateral`), so a ranking can be reproduced or checked from embeddings made anywhere.

`--routing by_query` is photoid's earlier rule instead: a top query ranked with the top family against its whole
database, a lateral query with the lateral family, query expansion only with `--query_expansion`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from photoid.core import fs
from photoid.core.errors import PhotoidError
from photoid.core.io import write_csv
from photoid.core.retrieval import JOINS
from photoid.runs.config import parse_folds
from photoid.whales.embed import load_embeddings
from photoid.whales.ranking import BACKENDS, SUBMISSION_COLUMNS, rank_scenarios
from photoid.whales.routing import (
    LATERAL_VIEWPOINTS,
    Families,
    rank_routed,
    route_of_queries,
    scenario_route,
)

TRUTH_FILE = "example_labels.csv"  # the organisers' name for the true matches of their example scenarios
RANDOM_DRAWS = 10  # random rankings averaged for the chance-level reference
FAMILIES = ("top", "top2", "lateral")


def random_ranking(scenarios: Iterable, top_k: int, seed: int) -> pd.DataFrame:
    """A ranking by chance over the same candidates: for each query, `top_k` of its database images (its own
    image excluded) in random order, with decreasing random scores in [0, 1)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _, queries, database in scenarios:
        db = database["database_image_id"].to_numpy(dtype=object)
        for query_id, image_id in zip(queries["query_id"], queries["query_image_id"]):
            candidates = db[db != image_id]
            chosen = candidates[rng.permutation(len(candidates))[:top_k]]
            scores = np.sort(rng.random(len(chosen)))[::-1]
            frames.append(pd.DataFrame({"query_id": query_id, "database_image_id": chosen, "score": scores}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SUBMISSION_COLUMNS)


def rank_by_view(scenarios: list, image_ids: list[str], viewpoint_of: dict[str, str],
                 embeddings_top: np.ndarray, embeddings_lateral: np.ndarray, **options) -> pd.DataFrame:
    """One submission: top queries ranked with `embeddings_top`, lateral queries with `embeddings_lateral`
    (rows of both aligned with `image_ids`), queries in their scenario files' order."""
    parts = []
    for lateral, embeddings in ((False, embeddings_top), (True, embeddings_lateral)):
        chosen = [(sid, q[q["query_image_id"].map(viewpoint_of).isin(LATERAL_VIEWPOINTS) == lateral], db)
                  for sid, q, db in scenarios]
        parts.append(rank_scenarios([s for s in chosen if len(s[1])], image_ids, embeddings, **options))
    order = {qid: i for i, qid in enumerate(qid for _, q, _ in scenarios for qid in q["query_id"])}
    ranked = pd.concat(parts, ignore_index=True)
    position = ranked["query_id"].map(order)
    return ranked.iloc[np.argsort(position.to_numpy(), kind="stable")].reset_index(drop=True)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", nargs="+", default=[], metavar="RUN_DIR",
                        help="trained runs of the top family (same as --run_top)")
    for family, what in (("top", "the top family (B5 top runs)"), ("top2", "the second top family (EffV2 runs), "
                         "blended 0.25"), ("lateral", "the lateral family (paired lateral runs; default: top)")):
        parser.add_argument(f"--run_{family}", nargs="+", default=None, metavar="RUN_DIR", help=f"trained runs of {what}")
        parser.add_argument(f"--{family}", default=None, metavar="NPZ",
                            help=f"embeddings file of {what}, from photoid embed")
    parser.add_argument("--data_dir", required=True, help="Where's Whale-do folder with metadata and query scenarios")
    parser.add_argument("--records_dir", default=None, help="its records (default: DATA_DIR/tfrec)")
    parser.add_argument("--out", required=True, help="submission CSV to write (a gs:// URL too)")
    parser.add_argument("--routing", choices=("winner", "by_query"), default="winner",
                        help="winner: one route per scenario, query expansion always on; by_query: photoid's rule")
    parser.add_argument("--folds", type=parse_folds, default=None, help="folds to use, e.g. 0,1 (default: all trained)")
    parser.add_argument("--join", choices=JOINS, default="concat",
                        help="how runs' folds are joined (concat: the winner's raw concatenation; mean_cosine)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="flip TTA: mean of the image's and its mirror's embeddings (--no-flip: image only)")
    parser.add_argument("--query_expansion", action="store_true", help="by_query routing: the winner's expansion")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="by_query routing: similarity search (auto: the faster of numpy and faiss here)")
    parser.add_argument("--save_embeddings", default=None, metavar="DIR",
                        help="write each family embedded from runs to DIR/<family>.npz (as photoid embed writes it), "
                             "so the ranking can be reproduced from its embeddings")
    parser.add_argument("--lateral_from_top", action="store_true",
                        help="without a lateral family, rank scenarios holding lateral photos with the top family "
                             "(refused by default: the winner ranked them with its paired lateral model)")
    parser.add_argument("--top_k", type=int, default=20, help="database images per query (the competition: 20)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per prediction batch")
    parser.add_argument("--local", action="store_true",
                        help="re-rank each query's shortlist with the winner's score fused with local matching, "
                             "calibrated out of fold on the training photos (needs the families as runs)")
    parser.add_argument("--shortlist", type=int, default=None, metavar="B",
                        help="with --local: database images matched locally per query (default: all submitted)")


def _family_sources(args) -> dict[str, tuple[str, object]]:
    """Each family given: ("file", path) or ("runs", run folders)."""
    sources = {}
    runs = {"top": args.run_top or args.run or None, "top2": args.run_top2, "lateral": args.run_lateral}
    for family in FAMILIES:
        given = getattr(args, family)
        if given is not None and runs[family]:
            raise PhotoidError(f"--{family} and runs for the {family} family were both given: choose one")
        if given is not None:
            sources[family] = ("file", given)
        elif runs[family]:
            sources[family] = ("runs", runs[family])
    if "top" not in sources:
        raise PhotoidError("name the top family: --run_top (or --run) RUN_DIR..., or --top EMBEDDINGS.npz")
    return sources


def scenarios_needing_lateral(scenarios: list, viewpoint_of: dict[str, str], routing: str) -> list[str]:
    """The scenarios a lateral family ranks: with the winner's routing every scenario holding a lateral photo (all
    but the all-top route), by query those with a lateral query."""
    needing = []
    for sid, queries, database in scenarios:
        query_views = [viewpoint_of[i] for i in queries["query_image_id"]]
        if routing == "winner":
            lateral = scenario_route(query_views, [viewpoint_of[i] for i in database["database_image_id"]]) != "top"
        else:
            lateral = any(view in LATERAL_VIEWPOINTS for view in query_views)
        if lateral:
            needing.append(str(sid))
    return needing


def check_lateral_family(args, scenarios: list, viewpoint_of: dict[str, str]) -> None:
    """Refuse scenarios with lateral photos when no lateral family is given, unless --lateral_from_top (then warn):
    ranking them with the top family silently would not be the winner's system."""
    if args.lateral is not None or args.run_lateral:
        return
    needing = scenarios_needing_lateral(scenarios, viewpoint_of, args.routing)
    if not needing:
        return
    which = f"{len(needing)} of {len(scenarios)} scenarios ({', '.join(needing[:3])}{', ...' if len(needing) > 3 else ''})"
    if not args.lateral_from_top:
        raise PhotoidError(f"{which} hold lateral photos, which the winner ranked with its lateral model (trained on "
                           "paired top and lateral photos), and no lateral family was given: pass --run_lateral "
                           "RUN_DIR... (records of photoid whale-records --pair_lateral, recipe whale-lateral) or "
                           "--lateral FILE.npz, or --lateral_from_top to rank them with the top family")
    print(f"warning: no lateral family: {which} are ranked with the top family (--lateral_from_top), not with a "
          "lateral model as the winner ranked them")


def gather_families(args, needed: set[str]) -> tuple[Families, list[str]]:
    """Every family's embeddings of the scenario images, aligned on one list of ids; lines describing them."""
    sources = _family_sources(args)
    records_dir = args.records_dir or fs.join(args.data_dir, "tfrec")
    arrays, lines, records = {}, [], None
    for family, (kind, source) in sources.items():
        if kind == "file":
            ids, embeddings = load_embeddings(source)
            lines.append(f"{family}: {source} ({len(ids)} images × {embeddings.shape[1]})")
        else:
            from photoid.whales.embed import family_embeddings, records_and_ids

            if records is None:
                records = records_and_ids(records_dir)
            files, ids = records
            embeddings, infos = family_embeddings(source, files, records_dir, folds=args.folds,
                                                  batch_size=args.batch_size, flip=args.flip, join=args.join)
            lines += [f"{family}: run {i['run']} ({i['recipe']}), folds {i['folds']}, {i['size']} per fold"
                      for i in infos]
            if args.save_embeddings:
                from photoid.whales.embed import save_embeddings

                path = fs.join(args.save_embeddings, f"{family}.npz")
                save_embeddings(path, ids, embeddings)
                lines.append(f"{family}: {len(ids)} images × {embeddings.shape[1]} ({args.join}) written to {path}")
        row_of = pd.Index(ids)
        missing = sorted(needed - set(ids))
        if missing:
            where = source if kind == "file" else f"the test records of {records_dir}"
            raise PhotoidError(f"{family} family: {len(missing)} scenario images have no embedding in {where} (e.g. "
                               f"{', '.join(missing[:5])}); rebuild them with photoid whale-records / photoid embed")
        arrays[family] = embeddings[row_of.get_indexer(sorted(needed))]
    order = sorted(needed)
    return Families(order, top=arrays["top"], lateral=arrays.get("lateral", arrays["top"]),
                    top2=arrays.get("top2")), lines


def run(args: argparse.Namespace) -> int:
    from photoid.whales.data import load_belugas

    started = time.perf_counter()
    if args.top_k < 1 or args.batch_size < 1:
        raise PhotoidError(f"--top_k and --batch_size must be at least 1, got {args.top_k} and {args.batch_size}")
    data = load_belugas(args.data_dir, check_images=False)
    if not data.scenarios:
        raise PhotoidError(f"{args.data_dir} has no query scenarios (query_scenarios.csv) to rank")
    needed = {i for _, q, d in data.scenarios for i in (*q["query_image_id"], *d["database_image_id"])}
    viewpoint_of = dict(zip(data.metadata["image_id"], data.metadata["viewpoint"]))
    check_lateral_family(args, data.scenarios, viewpoint_of)
    families, lines = gather_families(args, needed)
    if args.routing == "winner":
        submission = rank_routed(data.scenarios, families, viewpoint_of, top_k=args.top_k)
    else:
        options = dict(top_k=args.top_k, query_expansion=args.query_expansion, backend=args.backend)
        submission = rank_by_view(data.scenarios, list(families.image_ids), viewpoint_of, families.top,
                                  families.lateral, **options)
    fused_lines, winner = [], None
    if args.local:
        winner = submission
        submission, fused_lines = _local_rerank(args, data, submission, viewpoint_of)
    write_csv(args.out, submission)

    n_queries = sum(len(q) for _, q, _ in data.scenarios)
    print("\n".join(lines + fused_lines))
    expansion = "always (winner routing)" if args.routing == "winner" else "on" if args.query_expansion else "off"
    print(f"ranked {n_queries} queries in {len(data.scenarios)} scenarios ({len(needed)} images, routing "
          f"{args.routing}, query expansion {expansion}): {len(submission)} rows written to {args.out} in "
          f"{time.perf_counter() - started:.1f} s")
    truth_path = Path(args.data_dir) / TRUTH_FILE
    if truth_path.exists():
        if winner is not None:
            print(f"without local matching ({args.routing} routing):")
            print(evaluation_report(winner, truth_path, data.scenarios, viewpoint_of, args.top_k))
            print("fused with local matching (written):")
        print(evaluation_report(submission, truth_path, data.scenarios, viewpoint_of, args.top_k))
    return 0


def _local_rerank(args, data, submission: pd.DataFrame, viewpoint_of: dict) -> tuple[pd.DataFrame, list[str]]:
    """`--local`: the fusion calibrated on the training photos, then every query's shortlist re-ranked."""
    from photoid.whales.local_rank import (
        DEFAULT_SHORTLIST,
        WhalePhotos,
        calibrate_on_training,
        feature_settings,
        rerank,
    )

    shortlist = min(args.shortlist or DEFAULT_SHORTLIST, args.top_k)
    if shortlist < 1:
        raise PhotoidError(f"--shortlist must be at least 1, got {args.shortlist}")
    sources = _family_sources(args)
    runs = [r for kind, given in sources.values() if kind == "runs" for r in given]
    photos = WhalePhotos(data, feature_settings(runs))
    records_dir = args.records_dir or str(Path(args.data_dir) / "tfrec")
    fusion = calibrate_on_training(data, data.scenarios, sources, records_dir, photos, args, shortlist=shortlist)
    r = fusion.record
    lines = [f"local matching: calibrated on {r['pseudo_queries']} training photos as out-of-fold pseudo-queries "
             f"({r['pairs']} pairs, {r['same_pairs']} of the same whale; calibrations {r['calibration_kinds']}) in "
             f"{r['seconds']:.0f} s: weights global {r['weights']['global']} / local {r['weights']['local']}, "
             f"shortlist {shortlist}",
             "  pseudo-query mAP by local weight: " + ", ".join(f"{w}: {m:.4f}"
                                                              for w, m in r["map_by_local_weight"].items())]
    return rerank(submission, data.scenarios, fusion, photos, shortlist), lines


def evaluation_report(submission: pd.DataFrame, truth_path: Path, scenarios: list, viewpoint_of: dict[str, str],
                      top_k: int) -> str:
    """mAP of the submission against the truth, and of random rankings of the same candidates."""
    from photoid.whales.data import load_truth
    from photoid.whales.scoring import score_ranking

    truth = load_truth(truth_path)
    query_view = {qid: viewpoint_of[img] for _, q, _ in scenarios
                  for qid, img in zip(q["query_id"], q["query_image_id"])}
    result = score_ranking(submission, truth, query_view)
    chance = [score_ranking(random_ranking(scenarios, top_k, seed), truth) for seed in range(RANDOM_DRAWS)]
    lines = [f"against {truth_path}: mAP {result['map']:.4f} (official), {result['map_strict']:.4f} (strict), "
             f"top-1 {result['top1']:.4f}, {result['n_queries']} queries",
             f"random ranking of the same candidates (mean of {RANDOM_DRAWS}): mAP "
             f"{np.mean([c['map'] for c in chance]):.4f} (official), "
             f"{np.mean([c['map_strict'] for c in chance]):.4f} (strict)"]
    for view, part in result["by_viewpoint"].items():
        lines.append(f"  {view:<6} mAP {part['map']:.4f}  top-1 {part['top1']:.4f}  ({part['n_queries']} queries)")
    by_route = score_ranking(submission, truth, route_of_queries(scenarios, viewpoint_of))["by_viewpoint"]
    for route, part in by_route.items():
        lines.append(f"  route {route:<14} mAP {part['map']:.4f}  top-1 {part['top1']:.4f}  "
                     f"({part['n_queries']} queries)")
    return "\n".join(lines)
