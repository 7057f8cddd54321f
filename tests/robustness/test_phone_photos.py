"""Photos as phones write them: data after the JPEG stream (motion-photo video, vendor trailers) is accepted by the
commands that check folders, while a truncated JPEG, or one cut inside its EXIF block, is still refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from photoid.core.images import jpeg_stream_end
from robustness_support import N_LABELLED, TEST_IDS, TRAIN_IDS, run_photoid, write_turtle_folder

TFRECORDS = ("--n_folds", "2", "--dim_pre", "16", "--workers", "1", "--keep_original")


def phone_jpeg(seed: int) -> bytes:
    """A 64 x 48 photo with an EXIF block of about 3 KB that holds text and its own small JPEG thumbnail."""
    rng = np.random.default_rng(seed)
    thumbnail = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(thumbnail, "JPEG")
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x9286] = "note " * 400  # UserComment: a long EXIF block, as phones write
    photo = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
        photo, "JPEG", quality=90, exif=exif.tobytes() + thumbnail.getvalue())
    return photo.getvalue()


def trailer(n_bytes: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()


# image id -> what follows the JPEG stream
TRAILERS = {
    TRAIN_IDS[0]: trailer(300_000, 1),  # a vendor trailer of 300 KB
    TRAIN_IDS[1]: b"\x00\x00\x00\x18ftypmp42" + trailer(5_000_000, 2),  # a motion photo's 5 MB video
    TRAIN_IDS[2]: b"\xff\xd9" + trailer(1000, 3) + b"\xff\xd9\xff\xd8" + trailer(50, 4) + b"\xff\xd9",
}


def test_photos_with_trailing_data_are_accepted_and_keep_only_their_jpeg(tmp_path, capsys):
    folder = write_turtle_folder(tmp_path / "data")
    photos = {image_id: phone_jpeg(seed) for seed, image_id in enumerate(TRAILERS)}
    for image_id, data in photos.items():
        assert jpeg_stream_end(data) == len(data)
        (folder / "images" / f"{image_id}.JPG").write_bytes(data + TRAILERS[image_id])
        tf.io.decode_jpeg(data + TRAILERS[image_id])  # TensorFlow decodes each of them
    code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", folder, *TFRECORDS)
    assert code == 0, err
    # The records keep each photo's own JPEG stream, without its trailer.
    kept = {}
    for shard in sorted((folder / "tfrec").glob("*.tfrecord-*")):
        for record in tf.data.TFRecordDataset(str(shard)):
            features = tf.train.Example.FromString(record.numpy()).features.feature
            kept[features["image_id"].bytes_list.value[0].decode()] = features["image"].bytes_list.value[0]
    assert len(kept) == N_LABELLED + len(TEST_IDS)
    for image_id, data in photos.items():
        assert kept[image_id] == data


@pytest.mark.parametrize("cut, reason", [
    (lambda data: data[:(data.rfind(b"\xff\xda") + len(data)) // 2], "the file ends inside the compressed image data"),
    (lambda data: data[:-2], "the file ends inside the compressed image data"),
    (lambda data: data[:2000], "the file ends inside the APP1 (EXIF) segment"),
], ids=["truncated half-way", "end marker missing", "cut inside its EXIF block"])
def test_a_truncated_photo_is_still_refused(tmp_path, capsys, cut, reason):
    folder = write_turtle_folder(tmp_path / "data")
    data = phone_jpeg(5)
    (folder / "images" / f"{TRAIN_IDS[3]}.JPG").write_bytes(cut(data))
    code, _, err = run_photoid(capsys, "tfrecords", "--data_dir", folder, *TFRECORDS)
    assert code == 2 and "Traceback" not in err
    assert f"  - train.csv line 5: image images/{TRAIN_IDS[3]}.JPG: JPEG is truncated or damaged: {reason}" in err
    assert not (folder / "tfrec").exists()
