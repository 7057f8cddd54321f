"""The original solution's published weights (`ef1b7-fold0.h5`) load into the `ef1b7` recipe as they are.

The original built `Sequential([efn.EfficientNetB7(include_top=False), GlobalAveragePooling2D(),
Dense(2265, softmax)], name="model")` and saved it with `save_weights` to .h5. Here that model is built the same
way at 32 px with the synthetic data's class count and random weights, saved, loaded through the recipe and
`photoid identify --weights`, and must predict the same. A file of another architecture or class count is refused
without loading anything. B7 takes ~15 s to build, so each B7 is built once for the module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import photoid  # noqa: F401
import tensorflow as tf
import tf_keras

from photoid.cli import main
from photoid.turtles.data import load_turtles
from photoid.core.errors import PhotoidError
from photoid.inference.identify import ensemble_from_weights, identify_paths
from photoid.models.factory import load_weights_file
from photoid.records.reader import preprocess_image_bytes

pytestmark = pytest.mark.slow  # builds EfficientNets, B7 among them

DIM = 32


def build_the_original_way(builder: str, n_classes: int, seed: int) -> tf_keras.Model:
    """As the original's run.py and notebook: efficientnet's constructor in a Sequential named "model".

    The session is cleared first so that Keras names the head layers as in the original's fresh process. Every
    weight is then randomised (batch-norm statistics too), so a weight loaded into the wrong place shows.
    """
    import efficientnet.tfkeras as efn

    tf_keras.backend.clear_session()
    model = tf_keras.Sequential([
        getattr(efn, builder)(input_shape=(DIM, DIM, 3), weights=None, include_top=False),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Dense(n_classes, activation="softmax"),
    ], name="model")
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape) if "variance" in v.name else w + rng.normal(0, 0.05, w.shape)
                       for v, w in zip(model.weights, model.get_weights())])
    return model


@pytest.fixture(scope="module")
def classes(turtle_dir) -> list[str]:
    return load_turtles(turtle_dir, check_images=False).classes


@pytest.fixture(scope="module")
def original_b7(tmp_path_factory, classes):
    model = build_the_original_way("EfficientNetB7", len(classes), seed=0)
    path = tmp_path_factory.mktemp("original") / "ef1b7-fold0.h5"
    model.save_weights(str(path))
    return model, path


@pytest.fixture(scope="module")
def recipe_b7(original_b7, turtle_dir):
    """The published file loaded through the ef1b7 recipe at 32 px, as `photoid identify --weights` does."""
    return ensemble_from_weights(original_b7[1], "ef1b7", turtle_dir, dim=DIM, dim_pre=DIM)


@pytest.fixture(scope="module")
def b0_recipe(tmp_path_factory):
    """A recipe like ef1b7 with the small EfficientNet-B0, for the command-line checks."""
    path = tmp_path_factory.mktemp("recipes") / "ef1b0.toml"
    path.write_text(f'backbone = "efficientnet-b0"\nweights = "imagenet"\ndim = {DIM}\ndim_pre = {DIM}\n')
    return path


def test_recipe_builds_the_original_layer_for_layer(original_b7, recipe_b7):
    original, ours = original_b7[0], recipe_b7.members[0].model
    assert ours.name == original.name == "model"
    names = ["efficientnet-b7", "global_average_pooling2d", "dense"]
    assert [layer.name for layer in ours.layers] == [layer.name for layer in original.layers] == names
    # Inside the backbone (its input layer aside, whose name counts the models built so far in the process).
    inner = [[layer.name for layer in model.layers[0].layers[1:]] for model in (ours, original)]
    assert inner[0] == inner[1] and len(inner[0]) > 500
    assert [(w.name, w.shape) for w in ours.weights] == [(w.name, w.shape) for w in original.weights]


def test_published_file_gives_the_originals_predictions(original_b7, recipe_b7):
    images = np.random.default_rng(3).random((4, DIM, DIM, 3), dtype=np.float32)
    expected = original_b7[0](images, training=False).numpy()  # eager: no graph to trace for B7
    assert expected.std(axis=1).min() > 1e-3  # the random weights give distinct, non-uniform probabilities
    np.testing.assert_allclose(recipe_b7.members[0].predict(images), expected, atol=1e-6)


def test_identify_with_the_published_file_prepares_photos_as_the_original(original_b7, recipe_b7, turtle_dir):
    photos = sorted((turtle_dir / "images").glob("*.JPG"))[:3]
    # The original's records held the JPEG files as they were; its reader decoded, resized, cast to uint8.
    inputs = np.stack([preprocess_image_bytes(p.read_bytes(), DIM, DIM).numpy() for p in photos])
    expected = original_b7[0](inputs, training=False).numpy()
    results = list(identify_paths(recipe_b7, [str(p) for p in photos]))
    np.testing.assert_allclose(np.stack([r.probabilities for r in results]), expected, atol=1e-5)
    assert recipe_b7.original_ids == sorted(load_turtles(turtle_dir, check_images=False).train["turtle_id"].unique())


def test_a_file_of_another_architecture_is_refused_without_loading_anything(recipe_b7, classes, tmp_path):
    b0_file = tmp_path / "b0.h5"
    build_the_original_way("EfficientNetB0", len(classes), seed=1).save_weights(str(b0_file))
    model = recipe_b7.members[0].model
    before = [float(tf.reduce_sum(v)) for v in model.weights]
    with pytest.raises(PhotoidError, match="does not fit this recipe's model"):
        load_weights_file(model, b0_file, len(classes))
    assert [float(tf.reduce_sum(v)) for v in model.weights] == before


def test_identify_command_with_weights_and_refusal_of_another_class_count(classes, turtle_dir, b0_recipe, tmp_path,
                                                                          capsys):
    original = build_the_original_way("EfficientNetB0", len(classes), seed=2)
    weights = tmp_path / "ef1b0-fold0.h5"
    original.save_weights(str(weights))
    photo = sorted((turtle_dir / "images").glob("*.JPG"))[0]
    expected = original(preprocess_image_bytes(photo.read_bytes(), DIM, DIM)[None], training=False).numpy()[0]
    argv = ["identify", str(photo), "--weights", str(weights), "--model", str(b0_recipe), "--data_dir",
            str(turtle_dir), "--json"]
    assert main(argv) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    for candidate in result["candidates"]:
        if candidate["label"] != "new_turtle":
            assert candidate["probability"] == pytest.approx(expected[classes.index(candidate["label"])], abs=1e-5)

    other = tmp_path / "seven-classes.h5"
    build_the_original_way("EfficientNetB0", 7, seed=3).save_weights(str(other))
    argv[argv.index(str(weights))] = str(other)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not fit this recipe's model" in err and f"{len(classes)} classes" in err
