#!/usr/bin/env bash
# The Turtle Recall 5th place's inference, as the original's run_inference.sh ran it: each trained run predicts the
# test set with `--job test --batch_size 16` (one V100 or P100 GPU at 512 px), which also writes the run's own
# submission, then the ensemble of every run's test predictions (the original's ensemble.py) writes submission.csv.
# With the hidden truth (DATA_DIR/test_labels.csv) the submission is scored.
#
# Settings (environment variables):
#   DATA_DIR, GS_BUCKET, TFREC_DIR, RUNS_DIR, TPU_NAME, RECIPES, EXTRA_ARGS   as in run_training.sh
#   BATCH_SIZE      prediction batch size (default 16, the original's)
#   OUT             the submission file to write (default submission.csv; a gs:// URL too)
#   ENSEMBLE_ARGS   more `photoid ensemble` options, e.g. "--allow_partial" for runs whose folds are not all trained
set -euo pipefail
cd "$(dirname "$0")"

DATA_DIR="${DATA_DIR:-data}"
GS_BUCKET="${GS_BUCKET:-}"
GS_BUCKET="${GS_BUCKET%/}"
TFREC_DIR="${TFREC_DIR:-${GS_BUCKET:+$GS_BUCKET/tfrec}}"
TFREC_DIR="${TFREC_DIR:-$DATA_DIR/tfrec}"
RUNS_DIR="${RUNS_DIR:-${GS_BUCKET:+$GS_BUCKET/runs}}"
RUNS_DIR="${RUNS_DIR:-runs}"
TPU_NAME="${TPU_NAME:-}"
BATCH_SIZE="${BATCH_SIZE:-16}"
RECIPES="${RECIPES:-ef1b7 beitl ef1l2 ef2xl ef1l2b ef2l}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
ENSEMBLE_ARGS="${ENSEMBLE_ARGS:-}"
OUT="${OUT:-submission.csv}"
PYTHON="${PYTHON:-python3}"

device=()
[ -n "$TPU_NAME" ] && device+=(--tpu_ip_or_name "$TPU_NAME")
runs=()
for recipe in $RECIPES; do
    echo "=== predicting with $recipe: $RUNS_DIR/$recipe"
    # shellcheck disable=SC2086  # EXTRA_ARGS and ENSEMBLE_ARGS are lists of options
    "$PYTHON" run.py --model "$recipe" --data_dir "$DATA_DIR" --data_tfrec_dir "$TFREC_DIR" \
        --run_dir "$RUNS_DIR/$recipe" --job test --batch_size "$BATCH_SIZE" "${device[@]}" $EXTRA_ARGS
    runs+=("$RUNS_DIR/$recipe")
done
echo "=== ensemble of ${#runs[@]} runs: $OUT"
# shellcheck disable=SC2086
"$PYTHON" -m photoid.cli ensemble "${runs[@]}" --data_dir "$DATA_DIR" --out "$OUT" $ENSEMBLE_ARGS
if [ -f "$DATA_DIR/test_labels.csv" ]; then
    "$PYTHON" -m photoid.cli score --data_dir "$DATA_DIR" --submission "$OUT"
fi
