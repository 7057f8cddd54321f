"""The last differences from the Where's Whale-do winner's code, closed: its 788-class label space, its ArcFace
centres, CLAHE's clip limit drawn per call, and no lateral scenario ranked silently without a lateral model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import REAL_BELUGAS

needs_real_data = pytest.mark.skipif(not (REAL_BELUGAS / "metadata.csv").is_file(),
                                     reason="the real Where's Whale-do metadata is not here")


@needs_real_data
def test_the_lateral_models_classes_are_the_winners_788_whales_and_its_labels():
    from sklearn.model_selection import StratifiedKFold

    from photoid.whales.data import load_belugas
    from photoid.whales.pairs import pair_lateral_rows
    from photoid.whales.records import split_training_and_evaluation, whale_classes, whale_folds_table

    data = load_belugas(REAL_BELUGAS, check_images=False)
    training, _ = split_training_and_evaluation(data, train_on_scenarios=True)   # the winner trained on every row
    tops, _ = pair_lateral_rows(training, seed=42)
    classes = whale_classes(data, tops, "metadata")
    assert len(classes) == 788 and tops["whale_id"].nunique() == 280   # 508 classes without a pair: negatives
    table = whale_folds_table(tops, 5, 42, grouped=False, classes=classes)
    # train_literal/train.py: labels = sorted(set(metadata.whale_id)); label = labels.index(whale_id) ...
    labels = sorted(set(pd.read_csv(REAL_BELUGAS / "metadata.csv")["whale_id"]))
    winner = tops.assign(label=[labels.index(w) for w in tops["whale_id"]]).reset_index()
    assert table["label"].tolist() == winner["label"].tolist()
    # ... then StratifiedKFold(5, shuffle=True, random_state=42) over the paired top rows on that label.
    for n, (_, val) in enumerate(StratifiedKFold(5, shuffle=True, random_state=42).split(winner, winner["label"])):
        winner.loc[val, "fold"] = n
    assert table["fold"].tolist() == winner["fold"].astype(int).tolist()
    assert len(whale_classes(data, tops, "training")) == 280   # --label_space training: photoid's earlier head


def test_whale_records_and_runs_name_every_whale_of_the_metadata(beluga_dir, whale_records, whale_run, tmp_path):
    from photoid.records.folder import RecordsDir
    from photoid.whales.records import build_whale_records, read_whale_folds
    from photoid.whales.task import TASK

    whales = sorted(pd.read_csv(beluga_dir / "metadata.csv", dtype=str)["whale_id"].unique())
    folds = read_whale_folds(whale_records / "folds.csv")
    assert set(folds["whale_id"]) < set(whales)   # the scenario whales are held out of training ...
    assert RecordsDir(whale_records).classes() == whales   # ... and still classes, as in the winner's head
    assert TASK.label_space(folds, str(whale_records))[0] == whales
    assert (whale_run / "classes.txt").read_text().split() == whales
    assert (folds["label"] == [whales.index(w) for w in folds["whale_id"]]).all()

    summary = build_whale_records(beluga_dir, tmp_path / "restricted", n_folds=2, dim_pre=16, workers=1,
                                  label_space="training")
    restricted = read_whale_folds(tmp_path / "restricted" / "folds.csv")
    assert RecordsDir(tmp_path / "restricted").classes() is None
    assert TASK.label_space(restricted, str(tmp_path / "restricted"))[0] == sorted(restricted["whale_id"].unique())
    assert summary["n_classes"] == summary["n_trained_classes"] < len(whales)


def test_arcface_centres_start_from_the_winners_normal_with_std_0_01():
    from photoid.models.factory import build_models
    from photoid.runs.config import Config

    def centres(std):
        models = build_models(backbone="simple-cnn", dim=32, n_classes=788, pooling="gem", head="arcface",
                              embedding_size=64, arcface_init_std=std)
        return models.train.get_layer("arcface").kernel.numpy()

    winner = centres(Config.arcface_init_std)   # ElasticArcFace: nn.init.normal_(self.kernel, std=0.01)
    assert winner.shape == (64, 788)
    assert winner.std() == pytest.approx(0.01, rel=0.03) and abs(winner.mean()) < 3e-4
    assert stats.normaltest(winner.ravel()).pvalue > 1e-4
    assert centres(0.0).std() == pytest.approx((2 / (64 + 788)) ** 0.5, rel=0.03)   # 0: Glorot uniform


def test_clahe_clip_limit_is_drawn_from_u_1_4_at_each_call():
    import tensorflow as tf

    from photoid.whales.augment import apply_whaledo, clahe, whaledo_draws

    draws = tf.function(lambda k: whaledo_draws(tf.stack([tf.constant(3, tf.int64), k]))["clahe_clip"])
    clips = np.array([draws(tf.constant(k, tf.int64)).numpy() for k in range(1000)])
    assert clips.min() >= 1.0 and clips.max() <= 4.0
    assert stats.kstest(clips, stats.uniform(loc=1, scale=3).cdf).pvalue > 1e-3   # albumentations: uniform(1, 4)

    # The chain applies CLAHE with its own draw: forced to choose CLAHE alone, it is CLAHE at that clip limit. At
    # 256 px a tile holds 1024 pixels, so the limit counts ⌊4·clip⌋ per level: seeds 0 and 1 draw different ones.
    assert int(4 * clips[0]) != int(4 * clips[1])
    rng = np.random.default_rng(2)
    image = np.clip(np.linspace(90, 140, 256)[None, :, None] + rng.normal(0, 6, (256, 256, 3)), 0, 255).astype(np.uint8)
    outputs = []
    for k in (0, 1):
        d = dict(whaledo_draws(tf.constant([3, k], tf.int64)), triangle=tf.constant(False), flip=tf.constant(False),
                 one_of=tf.constant(True), which=tf.constant(2), shift_scale_rotate=tf.constant(False),
                 jitter=tf.constant(False))
        out = apply_whaledo(image, d).numpy()
        assert np.array_equal(out, clahe(image, d["clahe_clip"]).numpy())
        outputs.append(out)
    assert not np.array_equal(*outputs)   # two draws, two clip limits, two results


def test_rank_refuses_lateral_scenarios_without_a_lateral_family(beluga_dir, whale_run, tmp_path, capsys):
    from photoid.cli import main
    from photoid.whales.data import load_belugas
    from photoid.whales.rank import scenarios_needing_lateral

    data = load_belugas(beluga_dir, check_images=False)
    viewpoint_of = dict(zip(data.metadata["image_id"], data.metadata["viewpoint"]))
    needing = scenarios_needing_lateral(data.scenarios, viewpoint_of, "winner")
    assert needing, "the tiny set's scenarios need a lateral photo"
    out = tmp_path / "submission.csv"
    base = ["rank", "--run_top", str(whale_run), "--data_dir", str(beluga_dir), "--out", str(out)]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "hold lateral photos" in err and "--run_lateral" in err and "--lateral_from_top" in err
    assert not out.exists()
    assert main([*base, "--lateral_from_top"]) == 0
    assert f"warning: no lateral family: {len(needing)} of {len(data.scenarios)} scenarios" in capsys.readouterr().out
