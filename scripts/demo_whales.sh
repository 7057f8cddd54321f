#!/usr/bin/env bash
# The Where's Whale-do winner's system on built-in synthetic belugas, on a CPU, in minutes: synthetic data → records
# (top photos only; top photos paired with a lateral photo of the same whale) → the winner's three families on the
# whale-cpu-demo recipe (ArcFace): top and top2 (BatchNorm neck, another seed) on the top photos, lateral on the pairs
# (both photos of a pair through one network, CE(top) + CE(lateral)) → rank every query with the winner's routing →
# mAP per route, against a random ranking and the same networks untrained.
#
# The winner's lateral model started from ImageNet weights, which cannot be downloaded here: the demo's lateral family
# starts from the top family's fold-0 weights instead (the top family never saw an evaluation whale either).
#
# Sizes (environment variables): N_WHALES (default 120), LATERAL_SHARE (0.7 of them with side views too; the real set
# 280 of 788), FOLDS (3), EPOCHS (top families, 12), LATERAL_EPOCHS (10).
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO="${1:-demo/whales}"
DATA="$DEMO/data"
SCENARIOS="$DEMO/scenarios"
RUNS="$DEMO/runs"
N_WHALES="${N_WHALES:-120}"
FOLDS="${FOLDS:-3}"
EPOCHS="${EPOCHS:-12}"
LATERAL_SHARE="${LATERAL_SHARE:-0.7}"
LATERAL_EPOCHS="${LATERAL_EPOCHS:-10}"
SYNTH=(--seed 0 --n-whales "$N_WHALES" --lateral-share "$LATERAL_SHARE" --images-per-whale 8 --size 128)
started=$(date +%s)

# Two evaluations, neither trained on: whales never seen in training (a whole-whale fifth of the photos: the scenarios
# the generator draws for that subset, same seed and --max-images, plus the two cross-view routes over the same
# photos), and new encounters of known whales (for each whale, its last encounter whose view, top or lateral,
# another of its encounters also has, searched among the known whales' training photos: the catalogue a new
# sighting is matched against). `whale-records` keeps every scenario photo out of training; the new encounters are
# left out of the training folder's metadata.
ALL="$DEMO/all"
KNOWN="$DEMO/known"
if [ ! -f "$ALL/metadata.csv" ]; then
    photoid synth belugas --out "$ALL" "${SYNTH[@]}"
fi
if [ ! -f "$SCENARIOS/example_labels.csv" ]; then
    max_images=$(( $(wc -l < "$ALL/metadata.csv") / 5 ))
    photoid synth belugas --out "$SCENARIOS" "${SYNTH[@]}" --max-images "$max_images" --force
fi
python - "$ALL" "$SCENARIOS" "$DATA" "$KNOWN" <<'PY'
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

every, unseen_dir, data, known = (Path(p) for p in sys.argv[1:])


def write_folder(root: Path, metadata: pd.DataFrame, scenarios: list) -> None:
    """A Where's Whale-do folder: metadata, the photos (a link to every photo), scenarios and their truth
    (example_labels.csv, written last: it marks the folder complete)."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "queries").mkdir(parents=True)
    (root / "databases").mkdir()
    os.symlink(os.path.relpath(every / "images", root), root / "images")
    metadata.to_csv(root / "metadata.csv", index=False)
    listing, truth = [], []
    for sid, queries, database in scenarios:
        q = pd.DataFrame({"query_id": sid + "-" + queries["image_id"], "query_image_id": queries["image_id"]})
        q.to_csv(root / f"queries/{sid}.csv", index=False)
        database[["image_id"]].rename(columns={"image_id": "database_image_id"}).to_csv(
            root / f"databases/{sid}.csv", index=False)
        listing.append((sid, f"queries/{sid}.csv", f"databases/{sid}.csv"))
        pairs = q.assign(whale_id=queries["whale_id"].to_numpy()).merge(database, on="whale_id")
        truth.append(pairs[pairs["image_id"] != pairs["query_image_id"]][["query_id", "image_id"]])
    pd.DataFrame(listing, columns=["scenario_id", "queries_path", "database_path"]).to_csv(
        root / "query_scenarios.csv", index=False)
    pd.concat(truth).rename(columns={"image_id": "database_image_id"}).to_csv(root / "example_labels.csv",
                                                                             index=False)


def cross_view(meta: pd.DataFrame, queries: pd.DataFrame, database: pd.DataFrame, name: str) -> list:
    """Lateral queries against the top photos and top queries against the lateral photos (whales in both)."""
    out = []
    for sid, lateral_queries in ((f"{name}-lateral-to-top", True), (f"{name}-top-to-lateral", False)):
        q = queries[(queries["viewpoint"] != "top") == lateral_queries]
        db = database[(database["viewpoint"] != "top") != lateral_queries]
        out.append((sid, q[q["whale_id"].isin(db["whale_id"])], db))
    return out


if not (data / "example_labels.csv").exists() or not (known / "example_labels.csv").exists():
    meta = pd.read_csv(every / "metadata.csv", dtype=str)
    unseen = meta[meta["image_id"].isin(pd.read_csv(unseen_dir / "metadata.csv", dtype=str)["image_id"])]
    known_rows = meta[~meta["whale_id"].isin(unseen["whale_id"])]
    encounters = known_rows.assign(lateral=known_rows["viewpoint"] != "top").groupby("encounter_id").agg(
        whale_id=("whale_id", "first"), lateral=("lateral", "first"), time=("timestamp", "min"))
    new = set()
    for _, group in encounters.sort_values("time").groupby("whale_id"):
        repeated = group[group["lateral"].map(group["lateral"].value_counts()) > 1]
        if len(repeated):
            new.add(repeated.index[-1])
    field = known_rows[known_rows["encounter_id"].isin(new)]
    catalogue = known_rows[~known_rows["encounter_id"].isin(new)]
    # The generator's scenarios for the unseen whales (top, top across years, lateral, mixed), then cross-view.
    by_id = unseen.set_index("image_id")
    generated = []
    for sid, qpath, dbpath in pd.read_csv(unseen_dir / "query_scenarios.csv").itertuples(index=False):
        q = by_id.loc[pd.read_csv(unseen_dir / qpath, dtype=str)["query_image_id"]].reset_index()
        db = by_id.loc[pd.read_csv(unseen_dir / dbpath, dtype=str)["database_image_id"]].reset_index()
        generated.append((f"unseen-{sid}", q, db))
    write_folder(data, meta[~meta["image_id"].isin(field["image_id"])],
                 generated + cross_view(meta, unseen, unseen, "unseen"))
    top = catalogue[catalogue["viewpoint"] == "top"]
    known_scenarios = [("known-top", field[field["viewpoint"] == "top"], top),
                       ("known-mixed", field, catalogue)] + cross_view(meta, field, catalogue, "known")
    # The known whales' photos without their labels: what a researcher has when new photos come in.
    write_folder(known, pd.concat([field, catalogue]).drop(columns=["whale_id", "encounter_id"]), known_scenarios)
PY

records=(--data_dir "$DATA" --dim_pre 64 --n_folds "$FOLDS")
photoid whale-records "${records[@]}" --views top --out_dir "$DATA/tfrec-top"
photoid whale-records "${records[@]}" --pair_lateral --out_dir "$DATA/tfrec-pairs"
train=(--model whale-cpu-demo --data_dir "$DATA" --n_folds "$FOLDS" --verbose 2)
photoid train "${train[@]}" --data_tfrec_dir "$DATA/tfrec-top" --views top --n_epochs "$EPOCHS" --run_dir "$RUNS/top"
photoid train "${train[@]}" --data_tfrec_dir "$DATA/tfrec-top" --views top --n_epochs "$EPOCHS" --neck bn \
    --embedding_size 0 --seed 34 --run_dir "$RUNS/top2"
photoid train "${train[@]}" --data_tfrec_dir "$DATA/tfrec-pairs" --paired true --batch_size 16 \
    --weights "$RUNS/top/fold_0/best.weights.h5" --n_epochs "$LATERAL_EPOCHS" --run_dir "$RUNS/lateral"
families=(--run_top "$RUNS/top" --run_top2 "$RUNS/top2" --run_lateral "$RUNS/lateral")
photoid rank "${families[@]}" --data_dir "$DATA" --records_dir "$DATA/tfrec-top" --out "$DEMO/submission.csv"
photoid whale-records --data_dir "$KNOWN" --dim_pre 64
photoid rank "${families[@]}" --data_dir "$KNOWN" --out "$DEMO/submission-known.csv"

python - "$DEMO" "$started" <<'PY'
import sys, time
from pathlib import Path

import numpy as np
import pandas as pd

from photoid.core.quiet import quiet_tensorflow_start

quiet_tensorflow_start()  # as the photoid commands do: no TensorFlow start-up lines in the report
import tf_keras  # noqa: E402

from photoid.core.io import read_json
from photoid.core.retrieval import join_embeddings
from photoid.models.factory import build_models_from_config
from photoid.runs.loaded import load_run
from photoid.whales.data import load_belugas, load_truth
from photoid.whales.embed import embed_files, records_and_ids
from photoid.whales.rank import RANDOM_DRAWS, random_ranking
from photoid.whales.routing import Families, rank_routed, route_of_queries
from photoid.whales.scoring import score_ranking

demo, started = Path(sys.argv[1]), float(sys.argv[2])
families = ("top", "top2", "lateral")
runs = {family: load_run(demo / "runs" / family, records_dir=str(demo / "data/tfrec-top")) for family in families}
evaluations = [("whales never seen in training", demo / "data", demo / "data/tfrec-top", demo / "submission.csv"),
               ("known whales, a new encounter", demo / "known", demo / "known/tfrec", demo / "submission-known.csv")]


def untrained_embeddings(records):
    """Each family's networks before training (weights drawn from its seed), embedded and joined alike."""
    files, ids = records_and_ids(str(records))
    joined = {}
    for family, run in runs.items():
        parts = []
        for fold in run.folds:
            tf_keras.backend.clear_session()
            tf_keras.utils.set_random_seed(run.config.seed + fold)
            model = build_models_from_config(run.config, len(run.classes)).embed
            parts.append(embed_files(model, files, dim=run.config.dim, dim_pre=run.config.dim_pre, batch_size=64,
                                     flip=True, normalize=False))
        joined[family] = join_embeddings(parts, "concat")
    return Families(ids, joined["top"], joined["lateral"], joined["top2"])


top_folds = pd.read_csv(demo / "data/tfrec-top/folds.csv", dtype=str)
pair_folds = pd.read_csv(demo / "data/tfrec-pairs/folds.csv", dtype=str)
print()
print("photoid whale demo report")
print(f"  trained on {len(top_folds)} top photos of {top_folds['whale_id'].nunique()} whales (top, top2) and "
      f"{len(pair_folds)} (top, lateral) pairs of {pair_folds['whale_id'].nunique()} whales (lateral)")
for title, folder, records, submission in evaluations:
    data = load_belugas(folder, check_images=False)
    truth = load_truth(folder / "example_labels.csv")
    viewpoint_of = dict(zip(data.metadata["image_id"], data.metadata["viewpoint"]))
    routes = route_of_queries(data.scenarios, viewpoint_of)

    def scores(ranking):
        """Overall and per-route mAP (official) of a submission."""
        result = score_ranking(ranking, truth, routes)
        return result["map"], {route: part["map"] for route, part in result["by_viewpoint"].items()}

    trained = scores(pd.read_csv(submission, dtype={"query_id": str, "database_image_id": str}))
    before = scores(rank_routed(data.scenarios, untrained_embeddings(records), viewpoint_of))
    chance = [scores(random_ranking(data.scenarios, 20, seed)) for seed in range(RANDOM_DRAWS)]
    order = sorted(trained[1])
    searched = {i for _, q, d in data.scenarios for i in (*q["query_image_id"], *d["database_image_id"])}
    counts = pd.Series(routes).value_counts()
    print(f"  {title}: {len(routes)} queries in {len(data.scenarios)} scenarios, {len(searched)} photos searched")
    print(f"    {'mAP (official)':<26}{'overall':>9}" + "".join(f"{r:>16}" for r in order))
    for name, (overall, per_route) in [("trained, winner's routing", trained), ("untrained networks", before),
                                       (f"random (mean of {RANDOM_DRAWS})",
                                        (np.mean([c[0] for c in chance]),
                                         {r: np.mean([c[1][r] for c in chance]) for r in order}))]:
        print(f"    {name:<26}{overall:>9.3f}" + "".join(f"{per_route[r]:>16.3f}" for r in order))
    print(f"    {'queries':<26}{len(routes):>9d}" + "".join(f"{counts[r]:>16d}" for r in order))
for family in families:
    kept = [read_json(p)["epoch"] for p in sorted((demo / "runs" / family).glob("fold_*/best.json"))]
    print(f"  {family}: epoch kept per fold {kept} (by {runs[family].config.monitor})")
print(f"  time: {time.time() - started:.0f} s")
print(f"  outputs: data {demo / 'data'}, runs {demo / 'runs'}, submissions {demo / 'submission.csv'}, "
      f"{demo / 'submission-known.csv'}")
PY

# --- Local matching and fusion (docs/local-matching.md) ---------------------------------------------------------
# The same families, each query's 20 candidates re-ranked by the winner's score fused with local matching
# (RootSIFT, verified geometrically; only comparable views), calibrated out of fold on the training photos. Its mAP
# per route beside the winner's routing, whichever is higher.
photoid rank "${families[@]}" --data_dir "$DATA" --records_dir "$DATA/tfrec-top" \
    --out "$DEMO/submission-local.csv" --local > "$DEMO/rank-local.txt"
grep "^local matching\|pseudo-query" "$DEMO/rank-local.txt"
python - "$DEMO" <<'PY'
import sys
from pathlib import Path

import pandas as pd

from photoid.whales.data import load_belugas, load_truth
from photoid.whales.routing import route_of_queries
from photoid.whales.scoring import score_ranking

demo = Path(sys.argv[1])
data = load_belugas(demo / "data", check_images=False)
truth = load_truth(demo / "data/example_labels.csv")
routes = route_of_queries(data.scenarios, dict(zip(data.metadata["image_id"], data.metadata["viewpoint"])))
read = lambda name: pd.read_csv(demo / name, dtype={"query_id": str, "database_image_id": str})
results = {name: score_ranking(read(f), truth, routes) for name, f in
           [("winner's routing", "submission.csv"), ("fused with local", "submission-local.csv")]}
names = sorted(next(iter(results.values()))["by_viewpoint"])
print()
print("photoid whale demo: local matching")
print(f"  {'mAP (official)':<26}{'overall':>9}" + "".join(f"{r:>16}" for r in names))
for name, r in results.items():
    print(f"  {name:<26}{r['map']:>9.3f}" + "".join(f"{r['by_viewpoint'][v]['map']:>16.3f}" for v in names))
PY
