"""A photo's local features: keypoints and descriptors, extracted once and kept compactly.

The photo is prepared as its run prepares it for the models (`photoid.records.writer.prepare_image_bytes`): a photo
wider than tall is turned 90° clockwise where the run turns them (Where's Whale-do's `rotate_wide`), and a right
view is mirrored where the run's records mirror right views; then it is read in grey, its long side reduced to the
working size (`Settings.working_size`; never enlarged: a smaller photo has no more detail to give) with the aspect
kept. Unlike the models' input it is not squashed to a square: keypoints keep the photo's geometry.

The extractor is OpenCV's SIFT, described as RootSIFT (Arandjelović & Zisserman 2012: each descriptor L1-normalised,
then its square root, so that the Euclidean distance compares the descriptors as the Hellinger kernel does). OpenCV
computes SIFT descriptors as integers 0..255, so they are kept as they come, one uint8 per value (lossless), and
turned into RootSIFT where they are compared (`rootsift`). The keypoints of strongest response are kept, at most
`Settings.max_keypoints`; their coordinates (pixels of the prepared photo) as float16, exact to a quarter of a pixel
below 512 px and half a pixel up to 1024. A photo costs 4 + 128 bytes per keypoint, plus 16 bytes.

SIFT was measured against OpenCV's ORB on the same photos (B10): see `docs/local-matching.md`. AKAZE is not in
OpenCV 5's main modules; the learned extractors OpenCV 5 ships (DISK, ALIKED, XFeat) need weight files that photoid
never downloads, so they are left out, though `Settings.extractor` leaves room for one.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from photoid.core.errors import PhotoidError

EXTRACTORS = ("rootsift",)
WORKING_SIZE = 512  # long side of the photo features are extracted from (px); B10 measured 384-768
MAX_KEYPOINTS = 400  # strongest keypoints kept per photo; B10 measured 200-800
MIN_KEYPOINTS = 8  # a photo with fewer cannot be matched (blank, tiny, overexposed): its local scores are 0
DESCRIPTOR_SIZE = 128
MAX_PIXELS = 100_000_000  # a header claiming more is refused before decoding (as `photoid.core.images` refuses)


@dataclass(frozen=True)
class Settings:
    """How features are extracted; a catalogue records them and extracts every photo (and query) alike."""

    extractor: str = "rootsift"
    working_size: int = WORKING_SIZE
    max_keypoints: int = MAX_KEYPOINTS
    rotate_wide: bool = False  # turn photos wider than tall 90° clockwise (the run's records did)
    mirror_right: bool = False  # mirror right views (the run's records did)

    def __post_init__(self):
        if self.extractor not in EXTRACTORS:
            raise PhotoidError(f"unknown local feature extractor {self.extractor!r}; known: {', '.join(EXTRACTORS)}")
        if self.working_size < 32 or self.max_keypoints < MIN_KEYPOINTS:
            raise PhotoidError(f"working size {self.working_size} px and {self.max_keypoints} keypoints are too "
                               f"small (at least 32 px and {MIN_KEYPOINTS} keypoints)")

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(entry: dict) -> "Settings":
        known = {k: entry[k] for k in ("extractor", "working_size", "max_keypoints", "rotate_wide", "mirror_right")
                 if k in entry}
        return Settings(**known)


@dataclass
class Features:
    """One photo's features: `xy` float32 (n, 2) pixels of the prepared photo (x right, y down), `descriptors`
    uint8 (n, 128) SIFT, `size` (width, height) of the prepared photo; `note` says why it has too few."""

    xy: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]
    note: str | None = None

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def usable(self) -> bool:
        return len(self.xy) >= MIN_KEYPOINTS


def empty_features(note: str, size: tuple[int, int] = (0, 0)) -> Features:
    return Features(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_SIZE), np.uint8), size, note)


# ----------------------------------------------------------------------------- preparation


def prepared_grey(path: str | os.PathLike, settings: Settings, viewpoint: str | None = None) -> np.ndarray:
    """The photo as features see it: turned and mirrored as the run prepares it, grey, long side at most the
    working size. uint8 (height, width). PhotoidError when the file cannot be read as an image."""
    from PIL import Image, UnidentifiedImageError

    size = settings.working_size
    mirror = settings.mirror_right and viewpoint == "right"
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise PhotoidError(f"{path}: {image.width} x {image.height} pixels, more than photoid reads "
                                   f"({MAX_PIXELS:,})")
            image.draft("L", (size, size))  # JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 when that stays >= size
            grey = image.convert("L")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise PhotoidError(f"{path}: cannot be read as an image ({err})") from None
    wide = settings.rotate_wide and grey.width > grey.height
    # The order of `prepare_image_bytes`: a wide photo is mirrored, then turned; a tall one mirrored as it is.
    if mirror:
        grey = grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if wide:
        grey = grey.transpose(Image.Transpose.ROTATE_270)  # 90° clockwise
    scale = size / max(grey.width, grey.height)
    if scale < 1.0:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.uint8)


# ----------------------------------------------------------------------------- extraction

_SIFT: dict[int, object] = {}


def _sift(max_keypoints: int):
    import cv2

    if max_keypoints not in _SIFT:
        # nfeatures keeps the strongest responses; a keypoint with two orientations counts twice there, so the
        # cap is applied again below.
        _SIFT[max_keypoints] = cv2.SIFT_create(nfeatures=max_keypoints)
    return _SIFT[max_keypoints]


def extract(grey: np.ndarray, settings: Settings = Settings()) -> Features:
    """Keypoints and SIFT descriptors of a prepared grey photo, the `max_keypoints` strongest kept."""
    size = (int(grey.shape[1]), int(grey.shape[0]))
    if min(size) < 16:
        return empty_features(f"the photo is {size[0]} x {size[1]} px, too small for local features", size)
    if int(grey.max()) - int(grey.min()) < 8:
        return empty_features("the photo is blank (one flat tone): no local features", size)
    keypoints, descriptors = _sift(settings.max_keypoints).detectAndCompute(grey, None)
    if descriptors is None or len(keypoints) == 0:
        return empty_features("no keypoint found (a blank, blurred or overexposed photo?)", size)
    order = np.argsort([-k.response for k in keypoints], kind="stable")[:settings.max_keypoints]
    xy = np.array([keypoints[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
    features = Features(xy, np.clip(np.rint(descriptors[order]), 0, 255).astype(np.uint8), size)
    if not features.usable:
        features.note = (f"only {len(features)} keypoint(s) found, fewer than {MIN_KEYPOINTS} (a blank, tiny, "
                         "blurred or overexposed photo?): local score 0")
    return features


def photo_features(path: str | os.PathLike, settings: Settings = Settings(), viewpoint: str | None = None
                   ) -> Features:
    """`extract` of `prepared_grey`; PhotoidError when the file cannot be read as an image."""
    return extract(prepared_grey(path, settings, viewpoint), settings)


def rootsift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT of SIFT descriptors: L1-normalised, square-rooted; float32 rows of unit length (zero rows stay 0)."""
    d = np.asarray(descriptors, dtype=np.float32)
    total = d.sum(axis=1, keepdims=True)
    return np.sqrt(np.divide(d, total, out=np.zeros_like(d), where=total > 0))


# ----------------------------------------------------------------------------- many photos, packed


@dataclass
class FeatureSet:
    """The features of many photos, packed: photo i's keypoints are rows offsets[i]:offsets[i+1].

    `image_ids` name the photos (a catalogue's image ids), so the set stays valid when rows are added to or removed
    from a catalogue's table by a writer that does not extract features (a photo without features scores 0).
    `descriptors` may be a read-only memory map: only the photos compared are read from disk.
    """

    image_ids: np.ndarray  # str (photos,)
    offsets: np.ndarray  # int64 (photos + 1,)
    xy: np.ndarray  # float16 (keypoints, 2)
    descriptors: np.ndarray  # uint8 (keypoints, 128)
    sizes: np.ndarray  # int32 (photos, 2): width, height of each prepared photo

    def __post_init__(self):
        self._row = {str(image_id): i for i, image_id in enumerate(self.image_ids)}

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._row

    def row(self, image_id: str) -> int | None:
        return self._row.get(image_id)

    def get(self, image_id: str) -> Features | None:
        """The features of one photo (None when the set has none for it)."""
        i = self._row.get(image_id)
        if i is None:
            return None
        begin, end = int(self.offsets[i]), int(self.offsets[i + 1])
        features = Features(self.xy[begin:end].astype(np.float32), np.asarray(self.descriptors[begin:end]),
                            (int(self.sizes[i, 0]), int(self.sizes[i, 1])))
        if not features.usable:
            features.note = f"the catalogue holds only {len(features)} keypoint(s) for {image_id}: local score 0"
        return features

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def bytes_per_photo(self) -> float:
        """Stored bytes per photo: descriptors, coordinates, offsets, sizes (image ids aside)."""
        total = self.descriptors.nbytes + self.xy.nbytes + self.offsets.nbytes + self.sizes.nbytes
        return total / max(1, len(self))

    @staticmethod
    def pack(image_ids, features: list[Features]) -> "FeatureSet":
        counts = np.array([len(f) for f in features], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        xy = np.concatenate([f.xy for f in features]) if features else np.zeros((0, 2))
        descriptors = (np.concatenate([f.descriptors for f in features]) if features
                       else np.zeros((0, DESCRIPTOR_SIZE), np.uint8))
        sizes = np.array([f.size for f in features], dtype=np.int32).reshape(-1, 2)
        return FeatureSet(np.asarray(list(image_ids), dtype=str), offsets, xy.astype(np.float16),
                          descriptors.astype(np.uint8), sizes)

    def select(self, image_ids) -> "FeatureSet":
        """The features of `image_ids` (in that order) that this set holds."""
        kept = [i for i in image_ids if i in self._row]
        return FeatureSet.pack(kept, [self.get(i) for i in kept])

    @staticmethod
    def join(first: "FeatureSet", second: "FeatureSet") -> "FeatureSet":
        """Both sets' photos; a photo in both keeps `second`'s features."""
        kept = [i for i in first.image_ids if i not in second]
        return FeatureSet.pack([*kept, *second.image_ids], [first.get(i) for i in kept]
                               + [second.get(i) for i in second.image_ids])
