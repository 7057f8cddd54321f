#!/usr/bin/env bash
# The whole Where's Whale-do pipeline on built-in synthetic belugas, on a CPU, in minutes: synthetic data →
# records (every view, and top photos only) → the winner's three families on the whale-cpu-demo recipe (ArcFace):
# top (top photos), top2 (top photos, BatchNorm neck, another seed) and lateral (every photo), 5 folds each →
# rank every query with the winner's routing → mAP per route, against a random ranking and untrained networks.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO="${1:-demo/whales}"
DATA="$DEMO/data"
SCENARIOS="$DEMO/scenarios"
RUNS="$DEMO/runs"
SYNTH=(--seed 0 --n-whales 60 --images-per-whale 8 --size 128)
started=$(date +%s)

# The generator's scenarios name every photo of its folder, which would leave nothing to train on. The evaluation
# scenarios are therefore those it draws for a whole-whale subset of the same photos (same seed, --max-images):
# `whale-records` keeps the scenario images out of training, so these 16 or so whales are never seen in training
# and are searched for among each other.
if [ ! -f "$DATA/metadata.csv" ]; then
    photoid synth belugas --out "$DATA" "${SYNTH[@]}"
fi
if [ ! -f "$SCENARIOS/example_labels.csv" ]; then
    photoid synth belugas --out "$SCENARIOS" "${SYNTH[@]}" --max-images 120 --force
fi
# The generator's scenarios route as all-top or mixed; two more over the same photos take the winner's cross-view
# routes: lateral photos searched among top photos, top photos among lateral ones (truth: the same whale).
python - "$SCENARIOS" <<'PY'
import sys
from pathlib import Path

import pandas as pd

root = Path(sys.argv[1])
listing = pd.read_csv(root / "query_scenarios.csv")
if "lateral-to-top" not in set(listing["scenario_id"]):
    meta = pd.read_csv(root / "metadata.csv")
    lateral = meta["viewpoint"] != "top"
    both = set(meta.loc[lateral, "whale_id"]) & set(meta.loc[~lateral, "whale_id"])
    truth = [pd.read_csv(root / "example_labels.csv")]
    for sid, queries, database in [("lateral-to-top", meta[lateral & meta["whale_id"].isin(both)], meta[~lateral]),
                                   ("top-to-lateral", meta[~lateral & meta["whale_id"].isin(both)], meta[lateral])]:
        q = pd.DataFrame({"query_id": sid + "-" + queries["image_id"], "query_image_id": queries["image_id"]})
        q.to_csv(root / f"queries/{sid}.csv", index=False)
        database[["image_id"]].rename(columns={"image_id": "database_image_id"}).to_csv(
            root / f"databases/{sid}.csv", index=False)
        listing.loc[len(listing)] = [sid, f"queries/{sid}.csv", f"databases/{sid}.csv"]
        pairs = q.assign(whale_id=queries["whale_id"].to_numpy()).merge(database, on="whale_id")
        truth.append(pairs[["query_id", "image_id"]].rename(columns={"image_id": "database_image_id"}))
    listing.to_csv(root / "query_scenarios.csv", index=False)
    pd.concat(truth).to_csv(root / "example_labels.csv", index=False)   # last: marks the scenarios complete
PY
if ! cmp -s "$SCENARIOS/example_labels.csv" "$DATA/example_labels.csv"; then
    rm -rf "$DATA/queries" "$DATA/databases"
    cp -r "$SCENARIOS/queries" "$SCENARIOS/databases" "$SCENARIOS/query_scenarios.csv" "$DATA/"
    cp "$SCENARIOS/example_labels.csv" "$DATA/"   # last: it marks the replacement as complete
fi

photoid whale-records --data_dir "$DATA" --dim_pre 64
photoid whale-records --data_dir "$DATA" --dim_pre 64 --views top --out_dir "$DATA/tfrec-top"
photoid train --model whale-cpu-demo --data_dir "$DATA" --data_tfrec_dir "$DATA/tfrec-top" --views top \
    --run_dir "$RUNS/top" --verbose 2
photoid train --model whale-cpu-demo --data_dir "$DATA" --data_tfrec_dir "$DATA/tfrec-top" --views top \
    --neck bn --embedding_size 0 --seed 34 --run_dir "$RUNS/top2" --verbose 2
photoid train --model whale-cpu-demo --data_dir "$DATA" --run_dir "$RUNS/lateral" --verbose 2
photoid rank --run_top "$RUNS/top" --run_top2 "$RUNS/top2" --run_lateral "$RUNS/lateral" --data_dir "$DATA" \
    --out "$DEMO/submission.csv"
photoid score-ranking --submission "$DEMO/submission.csv" --truth "$DATA/example_labels.csv" \
    --metadata "$DATA/metadata.csv" --json > "$DEMO/score.json"

python - "$DEMO" "$started" <<'PY'
import dataclasses, json, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import tf_keras

from photoid.core.io import read_json
from photoid.models.factory import build_models_from_config
from photoid.runs.loaded import load_run
from photoid.whales.data import load_belugas, load_truth
from photoid.whales.embed import embed_files, join_embeddings, records_and_ids
from photoid.whales.rank import RANDOM_DRAWS, random_ranking
from photoid.whales.routing import Families, rank_routed, route_of_queries
from photoid.whales.scoring import score_ranking

demo, started = Path(sys.argv[1]), float(sys.argv[2])
data = load_belugas(demo / "data", check_images=False)
truth = load_truth(demo / "data/example_labels.csv")
viewpoint_of = dict(zip(data.metadata["image_id"], data.metadata["viewpoint"]))
routes = route_of_queries(data.scenarios, viewpoint_of)
families = ("top", "top2", "lateral")


def scores(submission):
    """Overall and per-route mAP (official) of a submission."""
    result = score_ranking(submission, truth, routes)
    return result["map"], {route: part["map"] for route, part in result["by_viewpoint"].items()}


# The same networks before training: each family's recipe, weights drawn from its seed, embedded and routed alike.
files, ids = records_and_ids(str(demo / "data/tfrec"))
untrained = {}
for family in families:
    run = load_run(demo / "runs" / family, records_dir=str(demo / "data/tfrec"))
    parts = []
    for fold in run.folds:
        tf_keras.backend.clear_session()
        tf_keras.utils.set_random_seed(run.config.seed + fold)
        model = build_models_from_config(run.config, len(run.classes)).embed
        parts.append(embed_files(model, files, dim=run.config.dim, dim_pre=run.config.dim_pre, batch_size=64,
                                 flip=True, normalize=False))
    untrained[family] = join_embeddings(parts, "concat")
untrained_ranking = rank_routed(data.scenarios, Families(ids, untrained["top"], untrained["lateral"],
                                                         untrained["top2"]), viewpoint_of)

trained = scores(pd.read_csv(demo / "submission.csv", dtype={"query_id": str, "database_image_id": str}))
before = scores(untrained_ranking)
chance = [scores(random_ranking(data.scenarios, 20, seed)) for seed in range(RANDOM_DRAWS)]
searched = {i for _, q, d in data.scenarios for i in (*q["query_image_id"], *d["database_image_id"])}
trained_whales = set((demo / "runs/lateral/classes.txt").read_text().split())
searched_whales = set(data.metadata.loc[data.metadata["image_id"].isin(searched), "whale_id"])
print()
print("photoid whale demo report")
print(f"  trained on {len(trained_whales)} whales; {len(routes)} queries in {len(data.scenarios)} scenarios search "
      f"{len(searched)} photos of {len(searched_whales)} whales, {len(searched_whales - trained_whales)} of them "
      "never seen in training")
print(f"  {'mAP (official)':<26}{'overall':>9}" + "".join(f"{r:>16}" for r in sorted(trained[1])))
for name, (overall, per_route) in [("trained, winner's routing", trained), ("untrained networks", before),
                                   (f"random (mean of {RANDOM_DRAWS})",
                                    (np.mean([c[0] for c in chance]),
                                     {r: np.mean([c[1][r] for c in chance]) for r in trained[1]}))]:
    print(f"  {name:<26}{overall:>9.3f}" + "".join(f"{per_route[r]:>16.3f}" for r in sorted(trained[1])))
for family in families:
    kept = [read_json(p)["epoch"] for p in sorted((demo / "runs" / family).glob("fold_*/best.json"))]
    monitor = read_json(demo / "runs" / family / "config.json")["monitor"]
    print(f"  {family}: epoch kept per fold {kept} (by {monitor})")
print(f"  time: {time.time() - started:.0f} s")
print(f"  outputs: data {demo / 'data'}, runs {demo / 'runs'}, submission {demo / 'submission.csv'}")
PY

# --- Local matching and fusion (docs/local-matching.md) ---------------------------------------------------------
# The same families, each query's 20 candidates re-ranked by the winner's score fused with local matching
# (RootSIFT, verified geometrically; only comparable views), calibrated out of fold on the training photos. Its mAP
# per route beside the winner's routing, whichever is higher.
photoid rank --run_top "$RUNS/top" --run_top2 "$RUNS/top2" --run_lateral "$RUNS/lateral" --data_dir "$DATA" \
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
