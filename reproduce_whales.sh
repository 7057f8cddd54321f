#!/usr/bin/env bash
# The Where's Whale-do 1st place from one command: records with the winner's data and split, its three embedding
# families trained with its settings, their embeddings, the ranking with its routing (submissions/score_4887_final),
# and the submission's mAP when the truth is given.
#
#   1. records (photoid whale-records), every labelled photo trained on (--train_on_scenarios), the winner's
#      StratifiedKFold(5, shuffle, 42) (--no-grouped), its 788 classes (every whale of metadata.csv):
#      TFREC_DIR/top   top photos only (its top models' rows);
#      TFREC_DIR/pairs each top photo paired with a lateral photo of the same whale (its lateral model's rows);
#   2. whale-top (EfficientNet-B5, 5 folds), whale-top-v2 (EfficientNetV2, folds TOP2_FOLDS) and whale-lateral
#      (B5 on the pairs, folds LATERAL_FOLDS) in RUNS_DIR/<recipe>: the folds the winner trained and ranked with;
#   3. photoid rank with the winner's routing (every trained fold of each family, flip TTA, folds concatenated) →
#      OUT, each family's embeddings of the images QUERY_DIR's scenarios name in RUNS_DIR/embeddings/<family>.npz
#      (rank --top/--top2/--lateral FILE reproduces the ranking from them); with the truth (TRUTH), its score.
#
# Settings (environment variables; the defaults reproduce the winner's system):
#   DATA_DIR        the competition's training folder (metadata.csv, images/, query_scenarios.csv, ...).
#   QUERY_DIR       the folder whose query scenarios are ranked (default DATA_DIR: its example scenarios; for the
#                   competition's test set, the runtime's data folder with its metadata and scenarios).
#   GS_BUCKET       e.g. gs://my-bucket/whales: records go to GS_BUCKET/tfrec, runs to GS_BUCKET/runs.
#   TFREC_DIR       the records' parent folder (default GS_BUCKET/tfrec, else DATA_DIR/tfrec-winner).
#   RUNS_DIR        where run folders go (default GS_BUCKET/runs, else runs).
#   TPU_NAME        TPU name, grpc://address, or "local" on a TPU VM; empty = GPUs or CPU (the winner: one GPU).
#   BATCH_SIZE      override the recipes' batch sizes (12 top, 6 pairs); SCALE_LR=1 scales their rates linearly.
#   TOP2_FOLDS      folds of whale-top-v2 to train and rank with (the winner's "0 2 4"; empty = all).
#   LATERAL_FOLDS   folds of whale-lateral to train and rank with (the winner's "0 1 2 4"; empty = all).
#   TOP2=0          leave out the second top family.
#   RECORD_ARGS     more whale-records options, e.g. "--n_folds 2 --dim_pre 32".
#   EXTRA_ARGS      more photoid train options for every recipe, e.g. "--n_folds 2 --n_epochs 1".
#   OUT             the submission (default RUNS_DIR/submission.csv; a gs:// URL too).
#   TRUTH           the true matches (default QUERY_DIR/example_labels.csv when it exists).
# Records are resumed and finished folds skipped when the script runs again: an interrupted session is restarted as is.
set -euo pipefail
cd "$(dirname "$0")"

DATA_DIR="${DATA_DIR:-data}"
QUERY_DIR="${QUERY_DIR:-$DATA_DIR}"
GS_BUCKET="${GS_BUCKET:-}"
GS_BUCKET="${GS_BUCKET%/}"
TFREC_DIR="${TFREC_DIR:-${GS_BUCKET:+$GS_BUCKET/tfrec}}"
TFREC_DIR="${TFREC_DIR:-$DATA_DIR/tfrec-winner}"
RUNS_DIR="${RUNS_DIR:-${GS_BUCKET:+$GS_BUCKET/runs}}"
RUNS_DIR="${RUNS_DIR:-runs}"
TPU_NAME="${TPU_NAME:-}"
BATCH_SIZE="${BATCH_SIZE:-}"
SCALE_LR="${SCALE_LR:-}"
TOP2_FOLDS="${TOP2_FOLDS-0 2 4}"
LATERAL_FOLDS="${LATERAL_FOLDS-0 1 2 4}"
TOP2="${TOP2:-1}"
RECORD_ARGS="${RECORD_ARGS:-}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
OUT="${OUT:-$RUNS_DIR/submission.csv}"
TRUTH="${TRUTH:-$QUERY_DIR/example_labels.csv}"
PYTHON="${PYTHON:-python3}"
photoid() { "$PYTHON" -m photoid.cli "$@"; }

device=()
[ -n "$TPU_NAME" ] && device+=(--tpu_ip_or_name "$TPU_NAME")
[ -n "$BATCH_SIZE" ] && device+=(--batch_size "$BATCH_SIZE")
[ "$SCALE_LR" = 1 ] && device+=(--scale_lr true)
winner_data=(--train_on_scenarios --no-grouped)

# shellcheck disable=SC2086  # RECORD_ARGS and EXTRA_ARGS are lists of options (here and below)
echo "=== records: $TFREC_DIR/top (top photos) and $TFREC_DIR/pairs (top photos with a lateral partner)"
photoid whale-records --data_dir "$DATA_DIR" --out_dir "$TFREC_DIR/top" --views top "${winner_data[@]}" $RECORD_ARGS
photoid whale-records --data_dir "$DATA_DIR" --out_dir "$TFREC_DIR/pairs" --pair_lateral "${winner_data[@]}" \
    $RECORD_ARGS
query_records="$TFREC_DIR/top"   # its test records are the images DATA_DIR's scenarios name
if [ "$QUERY_DIR" != "$DATA_DIR" ]; then
    query_records="$TFREC_DIR/query"
    photoid whale-records --data_dir "$QUERY_DIR" --out_dir "$query_records" "${winner_data[@]}" $RECORD_ARGS
fi

# train RECIPE RECORDS FOLDS: every fold, or only FOLDS (one call each: the winner trained and used those).
train() {
    local recipe=$1 records=$2 folds=$3
    echo "=== training $recipe: $RUNS_DIR/$recipe${folds:+ (folds $folds)}"
    local common=(--model "$recipe" --data_dir "$DATA_DIR" --data_tfrec_dir "$records" --run_dir "$RUNS_DIR/$recipe")
    if [ -z "$folds" ]; then
        photoid train "${common[@]}" "${device[@]}" $EXTRA_ARGS
    else
        for fold in $folds; do
            photoid train "${common[@]}" --initial_fold "$fold" --final_fold "$((fold + 1))" "${device[@]}" $EXTRA_ARGS
        done
    fi
}
train whale-top "$TFREC_DIR/top" ""
[ "$TOP2" = 1 ] && train whale-top-v2 "$TFREC_DIR/top" "$TOP2_FOLDS"
train whale-lateral "$TFREC_DIR/pairs" "$LATERAL_FOLDS"

echo "=== ranking with the winner's routing: $OUT (embeddings in $RUNS_DIR/embeddings)"
families=(--run_top "$RUNS_DIR/whale-top" --run_lateral "$RUNS_DIR/whale-lateral")
[ "$TOP2" = 1 ] && families+=(--run_top2 "$RUNS_DIR/whale-top-v2")
photoid rank --data_dir "$QUERY_DIR" --records_dir "$query_records" "${families[@]}" \
    --save_embeddings "$RUNS_DIR/embeddings" --out "$OUT"
# rank prints the score against QUERY_DIR's example_labels.csv itself; other truth is scored here.
if [ -f "$TRUTH" ] && [ "$TRUTH" != "$QUERY_DIR/example_labels.csv" ]; then
    echo "=== score against $TRUTH"
    photoid score-ranking --submission "$OUT" --truth "$TRUTH" --metadata "$QUERY_DIR/metadata.csv"
fi
