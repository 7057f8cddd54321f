#!/usr/bin/env bash
# The Turtle Recall 5th place, trained as the original's run_training.sh trained it: the records (built, or checked and
# completed, by create_tfrecords.py), then each of the six recipes with the original's default job
# (train_val_test_score_subm: every fold trained, its out-of-fold and test predictions, the CV scores and the run's own
# submission). The original ran `python3 run.py --tpu_ip_or_name=node-01 --data_tfrec_dir=gs://bucket/dir` per recipe.
#
# Settings (environment variables; the defaults reproduce the original's six runs):
#   DATA_DIR        competition folder (CSV files + images/), read on this machine.
#   GS_BUCKET       e.g. gs://my-bucket/turtle-recall: records go to GS_BUCKET/tfrec and runs to GS_BUCKET/runs
#                   (a TPU reads its records from Cloud Storage; a TPU node also writes its checkpoints there).
#   TFREC_DIR       the records folder (default GS_BUCKET/tfrec, else DATA_DIR/tfrec).
#   RUNS_DIR        where run folders go, RUNS_DIR/<recipe>/ (default GS_BUCKET/runs, else runs).
#   TPU_NAME        TPU name, grpc://address, or "local" on a TPU VM; empty = GPUs or CPU.
#   BATCH_SIZE      override every recipe's batch size (e.g. 16 on one 16 GB GPU); empty = the recipe's own. The
#                   recipe's learning rate is kept (each run says so) unless SCALE_LR=1 scales it linearly.
#   RECIPES         recipes to train (models/*.toml); RECIPES=cpu-demo runs the small CPU recipe.
#   RECORD_ARGS     more create_tfrecords.py options, e.g. "--n_folds 2 --dim_pre 48".
#   EXTRA_ARGS      more run.py options for every recipe, e.g. "--n_folds 2 --n_epochs 1".
# Records are resumed and finished folds skipped when the script runs again: an interrupted session is restarted as is.
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
BATCH_SIZE="${BATCH_SIZE:-}"
SCALE_LR="${SCALE_LR:-}"
RECIPES="${RECIPES:-ef1b7 beitl ef1l2 ef2xl ef1l2b ef2l}"
RECORD_ARGS="${RECORD_ARGS:-}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
PYTHON="${PYTHON:-python3}"

device=()
[ -n "$TPU_NAME" ] && device+=(--tpu_ip_or_name "$TPU_NAME")
[ -n "$BATCH_SIZE" ] && device+=(--batch_size "$BATCH_SIZE")
[ "$SCALE_LR" = 1 ] && device+=(--scale_lr true)

echo "=== records: $TFREC_DIR"
# shellcheck disable=SC2086  # RECORD_ARGS and EXTRA_ARGS are lists of options
"$PYTHON" create_tfrecords.py --data_dir "$DATA_DIR" --out_dir "$TFREC_DIR" $RECORD_ARGS
for recipe in $RECIPES; do
    echo "=== training $recipe: $RUNS_DIR/$recipe"
    # shellcheck disable=SC2086
    "$PYTHON" run.py --model "$recipe" --data_dir "$DATA_DIR" --data_tfrec_dir "$TFREC_DIR" \
        --run_dir "$RUNS_DIR/$recipe" "${device[@]}" $EXTRA_ARGS
done
