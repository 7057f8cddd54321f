"""Recipes and the command line: defaults ← recipe ← options; bad keys, types and values are refused clearly."""

import argparse

import pytest

from photoid.models.backbones import BACKBONES
from photoid.runs.config import RECIPES_DIR, Config, add_config_arguments, read_recipe, resolve_config
from photoid.core.errors import PhotoidError

ORIGINAL = {  # DESIGN.md: the six runs of the original, all at 512 px
    "ef1b7": ("efficientnet-b7", "imagenet", 64, 5e-4, "val_acc"),
    "beitl": ("beit-large-patch16", "imagenet21k-ft1k", 32, 5e-5, "val_loss"),
    "ef1l2": ("efficientnet-v1-l2", "noisy_student", 32, 5e-5, "val_loss"),
    "ef1l2b": ("efficientnet-v1-l2", "noisy_student", 32, 5e-5, "val_loss"),
    "ef2xl": ("efficientnet-v2-xl", "imagenet21k-ft1k", 64, 1e-4, "val_acc"),
    "ef2l": ("efficientnet-v2-l", "imagenet", 64, 5e-4, "val_loss"),
}


def parse(*argv: str) -> Config:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return resolve_config(parser.parse_args(list(argv)))


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
def test_every_recipe_resolves_to_a_registered_backbone(recipe):
    cfg = parse("--model", recipe)
    assert cfg.model == recipe
    assert cfg.backbone in BACKBONES
    assert cfg.weights == "none" or cfg.weights in BACKBONES[cfg.backbone].pretrained


@pytest.mark.parametrize("recipe", sorted(ORIGINAL))
def test_original_recipes_keep_the_original_settings(recipe):
    cfg = parse("--model", recipe)
    assert (cfg.backbone, cfg.weights, cfg.batch_size, cfg.lr, cfg.monitor) == ORIGINAL[recipe]
    assert cfg.dim == cfg.dim_pre == 512
    assert (cfg.aug_number, cfg.aug_percentage, cfg.n_folds, cfg.buffer_size) == (9, 0.5, 5, 256)


def test_the_two_l2_runs_differ_only_by_seed():
    a, b = parse("--model", "ef1l2").to_dict(), parse("--model", "ef1l2b").to_dict()
    assert {k for k in a if a[k] != b[k]} == {"model", "seed"}


def test_command_line_beats_recipe():
    cfg = parse("--model", "ef2l", "--lr", "0.01", "--batch_size", "8", "--monitor", "val_acc", "--mixed_precision", "mixed_float16")
    assert (cfg.lr, cfg.batch_size, cfg.monitor, cfg.mixed_precision) == (0.01, 8, "val_acc", "mixed_float16")
    assert cfg.backbone == "efficientnet-v2-l"  # untouched recipe values stay


def test_original_none_literals_are_accepted():
    cfg = parse("--model", "cpu-demo", "--final_fold", "None", "--tpu_ip_or_name", "None")
    assert cfg.folds_to_run == list(range(cfg.n_folds)) and cfg.tpu_ip_or_name == ""


def test_wrong_type_on_the_command_line_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        parse("--lr", "fast")
    assert "expected a number, got 'fast'" in capsys.readouterr().err


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(PhotoidError, match="unknown recipe 'nope'.*cpu-demo"):
        parse("--model", "nope")


def test_recipe_with_unknown_key_and_wrong_type_lists_both(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('backbone = "simple-cnn"\nlearning_rate = 0.1\ndim = "large"\n')
    with pytest.raises(PhotoidError) as err:
        read_recipe(path)
    assert "2 problems" in str(err.value)
    assert "unknown key 'learning_rate'" in str(err.value) and "key 'dim' must be an integer" in str(err.value)


def test_invalid_values_are_refused_together():
    with pytest.raises(PhotoidError) as err:
        parse("--n_folds", "1", "--pooling", "max", "--job", "train_fly")
    text = str(err.value)
    assert "n_folds must be at least 2" in text and "pooling must be one of" in text and "job 'train_fly'" in text


def test_fold_range_follows_the_original_semantics():
    cfg = parse("--n_folds", "5", "--initial_fold", "1", "--final_fold", "3")
    assert cfg.folds_to_run == [1, 2]


def test_every_option_of_the_originals_run_py_is_taken():
    original = ["data_tfrec_dir", "data_dir", "data_preds_dir", "tpu_ip_or_name", "mixed_precision", "job",
                "metric_name", "monitor", "n_folds", "initial_fold", "final_fold", "n_channels", "auto", "dim",
                "dim_pre", "image_inverted", "n_examples_total", "n_epochs", "batch_size", "drop_remainder", "lr",
                "weights", "aug_percentage", "aug_number", "tta_number", "n_classes", "buffer_size"]
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    known = {action.dest for action in parser._actions}
    assert set(original) <= known
    # At the original's defaults they are accepted; other values of the fixed ones are refused with the reason.
    cfg = parse("--data_preds_dir", "preds", "--metric_name", "acc", "--n_channels", "3", "--auto", "-1",
                "--drop_remainder", "False", "--image_inverted", "True", "--n_examples_total", "12803",
                "--n_classes", "2265")
    assert (cfg.image_inverted, cfg.n_examples_total, cfg.n_classes) == (True, 12803, 2265)
    for option, value, reason in [("--data_preds_dir", "out", "RUN_DIR/preds"), ("--n_channels", "1", "RGB"),
                                  ("--drop_remainder", "True", "every image"), ("--auto", "4", "AUTOTUNE"),
                                  ("--metric_name", "loss", "accuracy")]:
        with pytest.raises(PhotoidError, match=f"{option} .*only .*{reason}"):
            parse(option, value)


def test_skip_trains_every_fold_but_the_first_to_run():
    cfg = parse("--job", "skip_val_test", "--n_folds", "5", "--initial_fold", "1")
    assert [cfg.trains(fold) for fold in cfg.folds_to_run] == [False, True, True, True]
    assert not any(parse("--job", "val_test").trains(fold) for fold in range(5))
    with pytest.raises(PhotoidError, match="'skip' replaces 'train'"):
        parse("--job", "train_skip")
