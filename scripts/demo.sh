#!/usr/bin/env bash
# The whole Turtle Recall pipeline on built-in synthetic data, on a CPU, in minutes:
# synthetic data → records → cpu-demo recipe, 3 folds, each until early stopping → test predictions → ensemble →
# submission → score, then a calibrated catalogue, and the one command that opens the identification page on it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO="${1:-demo}"
DATA="$DEMO/data"
RUNS="$DEMO/runs"
started=$(date +%s)

if [ ! -f "$DATA/train.csv" ]; then
    photoid synth turtles --out "$DATA" --seed 0
fi
# run_training.sh builds the records first: the cpu-demo recipe's 3 folds at 48 px.
RECIPES=cpu-demo DATA_DIR="$DATA" RUNS_DIR="$RUNS" PYTHON=python RECORD_ARGS="--dim_pre 48 --n_folds 3" \
    EXTRA_ARGS="--verbose 2" bash run_training.sh
RECIPES=cpu-demo DATA_DIR="$DATA" RUNS_DIR="$RUNS" PYTHON=python BATCH_SIZE=64 OUT="$DEMO/submission.csv" bash run_inference.sh
photoid score --data_dir "$DATA" --submission "$DEMO/submission.csv" --json > "$DEMO/test_score.json"
# The catalogue that `photoid serve` opens: every labelled photo embedded by the fold models, then calibrated.
photoid catalog build --run "$RUNS/cpu-demo" --data_dir "$DATA" --out "$DEMO/catalog" --force
photoid calibrate --catalog "$DEMO/catalog"

python - "$DEMO" "$started" <<'PY'
import json, sys, time
from pathlib import Path

demo, started = Path(sys.argv[1]), float(sys.argv[2])
cv = json.loads((demo / "runs/cpu-demo/cv_scores.json").read_text())["all"]
test = json.loads((demo / "test_score.json").read_text())
n_classes = len((demo / "runs/cpu-demo/classes.txt").read_text().split())
print()
print("photoid demo report")
print(f"  CV  (out-of-fold, {cv['n']} images, {n_classes} ids): acc {cv['acc']:.3f}  MAP@5 {cv['map5']:.3f}"
      f"  (chance MAP@5 ~ {sum(1 / r for r in range(1, 6)) / n_classes:.3f})")
print(f"  CV  MAP@5 over 101-style labels (original ids + new_turtle): {cv['map5_101']:.3f}")
print(f"  test ({test['n']} images, hidden truth): MAP@5 {test['map5']:.3f}  acc@1 {test['acc1']:.3f}")
print(f"  time: {time.time() - started:.0f} s")
print(f"  outputs: data {demo / 'data'}, runs {demo / 'runs'}, submission {demo / 'submission.csv'}, "
      f"catalogue {demo / 'catalog'}")
PY
echo
echo "Identify photos, confirm matches and grow the catalogue in your browser (then open the address it prints):"
echo "  $(command -v photoid) serve --catalog $DEMO/catalog"

# --- Local matching and fusion (docs/local-matching.md) ---------------------------------------------------------
# The catalogue above keeps every photo's local features (RootSIFT) beside its embeddings, and `photoid calibrate`
# fused the two scores out of fold. Its figures beside the global ones: out of fold, then on the test set.
python - "$DEMO" <<'PY'
import sys

from photoid.api import evaluate, open_catalog
from photoid.core.quiet import quiet_tensorflow_start

quiet_tensorflow_start()  # as the photoid commands do: no TensorFlow start-up lines in the report

catalog = open_catalog(f"{sys.argv[1]}/catalog")
c = catalog.calibration
fusion = c.get("fusion")
local = catalog.manifest.get("local_features") or {}
print()
print("photoid demo: local matching and fusion")
if not fusion:
    print("  the catalogue has no fusion (built without local features?)")
    sys.exit(0)
print(f"  local features: {local['keypoints_per_photo']} keypoints, {local['bytes_per_photo'] / 1024:.1f} KiB per "
      f"photo; fusion weights global {fusion['weights']['global']} / local {fusion['weights']['local']}, shortlist "
      f"{fusion['shortlist']}" + (" (fusion did not beat the global score: identify ranks by it alone)"
                                  if fusion.get("global_score_kept") else ""))
for name, m in [("global (calibrated blend)", c["metrics"]), ("local only (shortlist)", fusion["local_only"]["metrics"]),
                ("fused", fusion["metrics"])]:
    print(f"  out of fold  {name:<26} MAP@5 {m['map5']:.3f}  new-individual balanced accuracy "
          f"{m['balanced_accuracy']:.3f}")
for row in evaluate(catalog).itertuples():
    print(f"  test  {row.method:<58} MAP@5 {row.map5:.3f}  acc@1 {row.acc1:.3f}")
PY
