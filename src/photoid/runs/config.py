"""One typed configuration: built-in defaults ← recipe file (`models/<name>.toml`) ← command line.

Every field has a default and a one-line reason. Recipes hold only what differs from the defaults. Unknown keys
and values of the wrong type are refused with a message naming the file or option. The resolved configuration
is saved as `config.json` in every run folder, so a run can be rebuilt from its folder alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from photoid.core.errors import PhotoidError, ProblemList
from photoid.tasks import AUGMENTATION_MODULES, TASK_MODULES

REPO_ROOT = Path(__file__).resolve().parents[3]
# Recipes are the repository's models/*.toml; an installed photoid carries them as package data (photoid/recipes).
_PACKAGED_RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RECIPES_DIR = _PACKAGED_RECIPES if _PACKAGED_RECIPES.is_dir() else REPO_ROOT / "models"
# The tasks the registry names (a command takes the task from its data with photoid.training.kfold.resolve_run_config).
TASK_NAMES = tuple(TASK_MODULES)


@dataclass
class Config:
    # --- recipe: what the model is -------------------------------------------------------------------------
    model: str = "cpu-demo"  # recipe name (models/<name>.toml) or path to a .toml file
    backbone: str = "efficientnet-b0"  # registry name, see photoid.models.backbones.BACKBONES
    weights: str = "none"  # none | a named pretrained set (imagenet, noisy_student, ...) | a local weights file
    dim: int = 512  # side of the square image the model sees (the original: 512)
    dim_pre: int = 512  # side images are resized to before augmentation (the original: 512)
    pooling: str = "avg"  # avg | gem: how the feature map becomes one vector
    head: str = "softmax"  # softmax (Turtle Recall) | arcface (Where's Whale-do)
    embedding_size: int = 0  # >0 adds an embedding layer of this width between pooling and head (winner: 2048)
    neck: str = "dense_bn"  # dense_bn: Dense→BN (photoid) | bn_dense: 3 copies→BN→Dense (winner's B5) | bn: BN (EffV2)
    drop_connect_rate: float = -1.0  # stochastic depth of kecam EfficientNets; -1: kecam's default (V1 0.2, V2 0)
    input_norm: str = "unit"  # unit: [0, 1] | imagenet: ImageNet mean/std (winner's Normalize()) | tf: [-1, 1]
    arcface_scale: float = 30.0  # ArcFace s (Where's Whale-do winner: 30)
    arcface_margin: float = 0.5  # ArcFace m (winner: 0.5)
    arcface_margin_std: float = 0.0  # >0: per-sample margin ~ N(m, std), ElasticFace-Arc (winner: 0.0125)
    arcface_sub_centers: int = 1  # sub-centres per class (1 = plain ArcFace)
    arcface_init_std: float = 0.01  # ArcFace class centres start ~ N(0, std) (the winner's 0.01); 0: Glorot uniform
    dropout: float = 0.0  # dropout before the head (the original: none)
    # --- optimisation -----------------------------------------------------------------------------------------
    batch_size: int = 64  # global batch size across replicas (the original: 64 on a TPUv3-8)
    lr: float = 5e-4  # Adam learning rate (the original ef1b7: 5e-4)
    scale_lr: bool = False  # a --batch_size other than the recipe's scales the recipe's lr linearly (lr × new / old)
    optimizer: str = "adam"  # adam: TF 2.8's Adam kernel, as the original ran (legacy) | adam_keras: Keras' newer Adam
    n_epochs: int = 200  # upper bound; early stopping ends most folds long before
    monitor: str = "val_acc"  # metric for the best checkpoint, ReduceLROnPlateau and EarlyStopping; last: last epoch
    monitor_grouped: str = ""  # whales: the monitor instead when the records' folds are grouped by encounter
    lr_schedule: str = "plateau"  # plateau (Turtle Recall) | whaledo (Where's Whale-do winner) | warmup_decay (photoid)
    warmup_epochs: int = 7  # warmup_decay: epochs of the linear ramp from lr/100 to lr
    lr_decay: float = 0.64  # warmup_decay: factor per epoch after the ramp; whaledo: per schedule step (winner 0.8)
    lr_start: float = 1e-5  # whaledo: learning rate of the first epoch (winner: 1e-5)
    lr_min: float = 9e-6  # whaledo: additive floor of the decay (winner: 9e-6 top, 1e-6 lateral)
    lr_ramp_steps: int = 15  # whaledo: schedule steps of the linear ramp from lr_start to lr (winner: 15)
    patience_lr: int = 4  # ReduceLROnPlateau patience (the original: 4)
    patience_stop: int = 8  # EarlyStopping patience (the original: 8)
    steps_per_epoch: int = 0  # 0: one pass over the training folds (n_train // batch_size), as the original
    n_examples_total: int = 0  # >0: an epoch is (n - n // n_folds) // batch_size steps (the original: 12803)
    divergence_factor: float = 1000.0  # stop a fold whose loss exceeds this many times its first batch's (0 = never)
    # --- data ---------------------------------------------------------------------------------------------------
    task: str = "turtles"  # turtles | whales | generic (photoid.tasks); not set: the data's (its records, else its files)
    data_dir: str = "data"  # competition folder (CSV files and images/)
    data_tfrec_dir: str = ""  # TFRecords folder; empty = <data_dir>/tfrec
    n_folds: int = 5  # must match the records' folds.csv
    n_classes: int = 0  # 0: from the records' folds.csv; otherwise must equal it (the original: 2265)
    initial_fold: int = 0  # first fold to run (from 0)
    final_fold: int = -1  # one past the last fold to run (from 1); -1 = n_folds
    aug_number: int = 9  # train-time transforms (0 = no augmentation)
    aug_percentage: float = 0.5  # probability of any transform; each one gets aug_percentage / aug_number
    augment: str = "original"  # original (Turtle Recall, aug_number) | whaledo | whaledo_triangle (Where's Whale-do)
    aug_draw: str = "original"  # original: drawn ids 0..8 are transforms 1..9 | first: only transforms 1..aug_number
    image_inverted: bool = False  # the original's option: the model sees 1 - image
    tta_number: int = 0  # extra test-time transforms: predictions for TTA 0..tta_number
    buffer_size: int = 256  # shuffle buffer of training records (0 or None: no shuffle, as the original's None)
    cache: bool = False  # cache decoded training and validation images in memory (only for data sets that fit)
    views: str = ""  # whales: viewpoints the records must hold, comma-separated (winner's top models: "top"); "" = any
    paired: bool = False  # whales: train on (top, lateral) pairs of whale-records --pair_lateral (winner's lateral)
    # --- run ------------------------------------------------------------------------------------------------------
    job: str = "train_val_test_score_subm"  # words joined by _: train, val, test, score, subm
    run_dir: str = ""  # output folder; empty = runs/<model>
    seed: int = 33  # seeds shuffling, augmentation and weight initialisation
    deterministic: bool = False  # TensorFlow op determinism: byte-identical predictions, slower
    force: bool = False  # retrain folds that are already finished
    predict_folds_at_once: int = 0  # test prediction by groups of this many folds; 0: what fits the device's memory
    mixed_precision: str = ""  # "" | mixed_float16 | mixed_bfloat16; the head stays float32
    tpu_ip_or_name: str = ""  # TPU name, grpc address or "local" (TPU VM); empty = no TPU
    strategy: str = "auto"  # auto | default | mirrored | multi_worker | tpu
    cpu_devices: int = 1  # >1 splits the CPU into logical devices (to test MirroredStrategy without GPUs)
    verbose: int = 1  # Keras progress: 1 = bar, 2 = one line per epoch, 0 = silent

    # ---------------------------------------------------------------------------------------------------------------
    @property
    def records_dir(self) -> str:
        return self.data_tfrec_dir or os.path.join(self.data_dir, "tfrec")

    @property
    def output_dir(self) -> str:
        return self.run_dir or os.path.join("runs", Path(self.model).stem)

    @property
    def folds_to_run(self) -> list[int]:
        final = self.n_folds if self.final_fold < 0 else self.final_fold
        return list(range(self.initial_fold, final))

    @property
    def jobs(self) -> set[str]:
        return set(self.job.split("_"))

    def trains(self, fold: int) -> bool:
        """Whether fold `fold` trains: with `train`, or with the original's `skip` (every fold but the first to run:
        `skip` stands in for `train` and leaves the first fold's trained weights as they are)."""
        return "train" in self.jobs or ("skip" in self.jobs and fold != self.folds_to_run[0])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SETTABLE = list(fields(Config))
JOB_WORDS = {"train", "skip", "val", "test", "score", "subm"}
CHOICES = {
    "pooling": {"avg", "gem"},
    "neck": {"dense_bn", "bn_dense", "bn"},
    "input_norm": {"unit", "imagenet", "tf"},
    "augment": set(AUGMENTATION_MODULES),
    "head": {"softmax", "arcface"},
    "lr_schedule": {"plateau", "warmup_decay", "whaledo"},
    "task": set(TASK_NAMES),
    "mixed_precision": {"", "mixed_float16", "mixed_bfloat16"},
    "strategy": {"auto", "default", "mirrored", "multi_worker", "tpu"},
    "aug_draw": {"original", "first"},
    "optimizer": {"adam", "adam_keras"},
}
# Options of the original's run.py that photoid takes only at the original's value: (that value, why no other).
FIXED_OPTIONS: dict[str, tuple[Any, str]] = {
    "data_preds_dir": ("preds", "predictions are written to RUN_DIR/preds; choose the run folder with --run_dir"),
    "metric_name": ("acc", "the models are compiled with accuracy, 'acc' (monitor it as val_acc)"),
    "n_channels": (3, "photos are decoded to 3 channels (RGB), as the original's decode_jpeg(channels=3)"),
    "auto": (-1, "the reader's parallelism is tf.data.AUTOTUNE (-1), which tunes itself"),
    "drop_remainder": (False, "training batches are always full, because the stream repeats before it is batched, "
                              "and prediction must keep every image"),
}


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _field_type(f: dataclasses.Field):
    return {"int": int, "float": float, "bool": bool, "str": str}.get(str(f.type), str)


def find_recipe(name: str) -> Path:
    """A recipe is a path to a .toml file, or a name: `models/<name>.toml` in the working folder, else a built-in
    recipe (`RECIPES_DIR`)."""
    candidates = [Path(name)] if name.endswith(".toml") else [Path("models") / f"{name}.toml", RECIPES_DIR / f"{name}.toml"]
    for path in candidates:
        if path.is_file():
            return path
    known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
    raise PhotoidError(f"unknown recipe {name!r}: no file {candidates[-1]}; known recipes: {known}")


def read_recipe(path: Path) -> dict[str, Any]:
    """Read and type-check a recipe file; every unknown key or wrong type is reported at once."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PhotoidError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise PhotoidError(f"{path}: not valid TOML ({err})") from None
    problems = ProblemList()
    by_name = {f.name: f for f in SETTABLE}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in by_name or key == "model":
            problems.add(str(path), None, f"unknown key {key!r} (known keys: {', '.join(sorted(by_name))})")
            continue
        expected = _field_type(by_name[key])
        ok = isinstance(value, expected) and not (expected in (int, float) and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > sys.float_info.max:  # TOML integers have no size limit in Python; floats do
                problems.add(str(path), None, f"key {key!r} is too large for a number")
                continue
            value, ok = float(value), True
        if not ok:
            problems.add(str(path), None, f"key {key!r} must be {_type_name(expected)}, got {value!r}")
            continue
        values[key] = value
    problems.raise_if_any(title="invalid recipe")
    return values


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_str(text: str) -> str:
    # The original accepted the literal None for "not set"; keep that spelling working.
    return "" if text == "None" else text


def _parse_int(text: str) -> int:
    if text == "None":
        return -1
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


PARSERS = {int: _parse_int, float: _parse_float, bool: _parse_bool, str: _parse_str}


def field_help() -> dict[str, str]:
    """Each field's one-line reason, read from its comment in the class body (the single place it is written)."""
    source = inspect.getsource(Config)
    return dict(re.findall(r"^    (\w+): \w+ = [^#\n]*#\s*(.+)$", source, flags=re.MULTILINE))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per field, with the original's names; help shows the reason and the built-in default."""
    defaults, reasons = Config(), field_help()
    for f in SETTABLE:
        tp = _field_type(f)
        parser.add_argument(
            f"--{f.name}",
            type=PARSERS[tp],
            default=None,
            metavar=tp.__name__.upper(),
            help=f"{reasons.get(f.name, '')} (default: {getattr(defaults, f.name)!r}"
            + (", or the recipe's value)" if f.name != "model" else ")"),
        )
    for name, (value, why) in FIXED_OPTIONS.items():
        tp = type(value)
        parser.add_argument(f"--{name}", type=PARSERS[tp], default=None, metavar=tp.__name__.upper(),
                            help=f"the original's option, taken only as {value!r}: {why}")


def resolve_config(args: argparse.Namespace) -> Config:
    """Defaults ← recipe ← command line, then cross-field checks."""
    model = getattr(args, "model", None) or Config.model
    recipe_path = find_recipe(model)
    values = read_recipe(recipe_path)
    recipe = dict(values)
    values["model"] = recipe_path.stem if not model.endswith(".toml") else model
    for f in SETTABLE:
        given = getattr(args, f.name, None)
        if given is not None and f.name != "model":
            values[f.name] = given
    if values.get("buffer_size") == -1:   # the original's `--buffer_size None`: no shuffle buffer
        values["buffer_size"] = 0
    if values.get("scale_lr"):
        if getattr(args, "lr", None) is not None:
            raise PhotoidError("--scale_lr scales the recipe's learning rate to the batch size; with --lr, give the "
                               "rate you want and leave --scale_lr out")
        values["lr"] = scaled_lr(recipe, values.get("batch_size", Config.batch_size))
    problems = ProblemList()
    for name, (value, why) in FIXED_OPTIONS.items():
        given = getattr(args, name, None)
        if given is not None and given != value:
            problems.add("command line", None, f"--{name} {given!r}: only {value!r} is possible; {why}")
    problems.raise_if_any(title="unsupported option values")
    cfg = Config(**values)
    validate_config(cfg)
    return cfg


def validate_config(cfg: Config) -> None:
    problems = ProblemList()
    for f in SETTABLE:
        value = getattr(cfg, f.name)
        # TOML and float() both accept nan and inf; neither is a usable rate, margin or probability.
        if _field_type(f) is float and not math.isfinite(value):
            problems.add("config", None, f"{f.name} must be a finite number, got {value}")
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            problems.add("config", None, f"{name} must be one of {sorted(allowed)}, got {getattr(cfg, name)!r}")
    unknown_jobs = set(cfg.job.split("_")) - JOB_WORDS
    if unknown_jobs or not cfg.job:
        problems.add("config", None, f"job {cfg.job!r}: use words {sorted(JOB_WORDS)} joined by '_'")
    for name in ("dim", "dim_pre", "batch_size", "n_epochs", "cpu_devices"):
        if getattr(cfg, name) < 1:
            problems.add("config", None, f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.n_folds < 2:
        problems.add("config", None, f"n_folds must be at least 2, got {cfg.n_folds}")
    final = cfg.n_folds if cfg.final_fold < 0 else cfg.final_fold
    if not 0 <= cfg.initial_fold < final <= cfg.n_folds:
        problems.add("config", None, f"folds: need 0 <= initial_fold ({cfg.initial_fold}) < final_fold ({final}) <= n_folds ({cfg.n_folds})")
    if not 0.0 < cfg.aug_percentage <= 1.0:
        problems.add("config", None, f"aug_percentage must be in (0, 1], got {cfg.aug_percentage}")
    if not 0 <= cfg.aug_number <= 9:
        problems.add("config", None, f"aug_number must be 0..9, got {cfg.aug_number}")
    if not 0 <= cfg.tta_number <= 9:
        problems.add("config", None, f"tta_number must be 0..9, got {cfg.tta_number}")
    if cfg.lr <= 0:
        problems.add("config", None, f"lr must be positive, got {cfg.lr}")
    if cfg.buffer_size < 0:
        problems.add("config", None, f"buffer_size must be 0 or more (0 or None: no shuffle), got {cfg.buffer_size}")
    if cfg.monitor == "last" and cfg.lr_schedule == "plateau":
        problems.add("config", None, "monitor 'last' keeps the last epoch; it cannot drive the plateau schedule")
    if cfg.lr_schedule == "whaledo" and (cfg.lr_ramp_steps < 1 or min(cfg.lr_start, cfg.lr_min) < 0):
        problems.add("config", None, "whaledo schedule: lr_ramp_steps must be at least 1 and lr_start, lr_min >= 0")
    unknown_views = set(view_list(cfg.views)) - {"top", "left", "right"}
    if unknown_views:
        problems.add("config", None, f"views: unknown viewpoint(s) {sorted(unknown_views)}; use top, left, right")
    if cfg.neck == "bn_dense" and cfg.embedding_size < 1:
        problems.add("config", None, "neck bn_dense needs embedding_size (the Dense layer's width)")
    if cfg.drop_connect_rate >= 1:
        problems.add("config", None, f"drop_connect_rate must be below 1 (-1: the library's default), got {cfg.drop_connect_rate}")
    if "train" in cfg.jobs and "skip" in cfg.jobs:
        problems.add("config", None, f"job {cfg.job!r}: 'skip' replaces 'train' (it skips the first fold's training)")
    for name in ("n_classes", "n_examples_total", "steps_per_epoch", "predict_folds_at_once"):
        if getattr(cfg, name) < 0:
            problems.add("config", None, f"{name} must be 0 or more, got {getattr(cfg, name)}")
    if cfg.divergence_factor != 0 and cfg.divergence_factor <= 1:
        problems.add("config", None, f"divergence_factor must be above 1 (or 0: no divergence guard), got "
                                     f"{cfg.divergence_factor}")
    if cfg.arcface_init_std < 0:
        problems.add("config", None, f"arcface_init_std must be 0 (Glorot) or more, got {cfg.arcface_init_std}")
    if cfg.head == "arcface" and cfg.arcface_sub_centers < 1:
        problems.add("config", None, "arcface_sub_centers must be at least 1")
    problems.raise_if_any(title="invalid configuration")


def scaled_lr(recipe: dict[str, Any], batch_size: int) -> float:
    """The recipe's learning rate scaled linearly to `batch_size` from the recipe's batch size (Goyal et al. 2017)."""
    recipe_lr, recipe_batch = recipe.get("lr", Config.lr), recipe.get("batch_size", Config.batch_size)
    return recipe_lr * batch_size / recipe_batch


def batch_size_note(cfg: Config) -> str | None:
    """What a batch size other than the recipe's does to the learning rate, in one line (None: the recipe's batch).

    The originals' rates were tuned for their batches (Turtle Recall: the global batch of a TPUv3-8): a smaller batch
    on one GPU keeps that rate unless `scale_lr` scales it."""
    if cfg.model.endswith(".toml") and not Path(cfg.model).is_file():
        return None
    recipe = read_recipe(find_recipe(cfg.model))
    recipe_batch, recipe_lr = recipe.get("batch_size", Config.batch_size), recipe.get("lr", Config.lr)
    if cfg.batch_size == recipe_batch:
        return None
    head = f"batch size {cfg.batch_size}, not the recipe's {recipe_batch}:"
    if cfg.scale_lr:
        return f"{head} learning rate {cfg.lr:g}, the recipe's {recipe_lr:g} scaled linearly (--scale_lr)"
    if cfg.lr == recipe_lr:
        return (f"{head} the learning rate stays the recipe's {cfg.lr:g} (set for batch {recipe_batch}); "
                f"--scale_lr true scales it linearly to {scaled_lr(recipe, cfg.batch_size):g}")
    return f"{head} learning rate {cfg.lr:g} as given (the recipe's is {recipe_lr:g} for batch {recipe_batch})"


def view_list(text: str) -> list[str]:
    """The viewpoints of a comma-separated `views` value ("" = none named, i.e. every view)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_folds(text: str) -> list[int]:
    """The command-line form of a fold list: comma-separated fold numbers such as `0,1`."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fold numbers such as 0,1, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected fold numbers such as 0,1, got {text!r}")
    return values


# ----------------------------------------------------------------------------- `photoid recipes`





