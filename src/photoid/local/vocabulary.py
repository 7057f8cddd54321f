"""A global descriptor without training: VLAD of a photo's RootSIFT over a vocabulary learnt from the catalogue.

A catalogue with no trained model still needs a shortlist (local matching against every photo costs O(catalogue)).
Its own features give one (Jégou et al. 2010, "Aggregating local descriptors into a compact image
representation"; Arandjelović & Zisserman 2013, "All about VLAD"):
1. Vocabulary: k-means (faiss, seeded) of up to `SAMPLE` RootSIFT descriptors drawn from the catalogue's photos
   into `CLUSTERS` visual words.
2. VLAD: each descriptor is assigned to its nearest word; per word, the sum of the residuals (descriptor − word),
   normalised per word (intra-normalisation), then the signed square root of every value and an L2 norm of the whole.
3. Projection, for a catalogue of at least `PHOTOS_PER_DIMENSION` × `PCA_DIM` photos: the VLADs centred and
   projected on their `PCA_DIM` principal directions, rows of unit length again; compact (PCA_DIM floats per photo
   instead of 128 × CLUSTERS). A smaller catalogue keeps the VLADs whole: directions learnt from about as many
   photos as there are directions fit those photos, not new ones — on B10's catalogues of 76-91 photos, a
   projection on all their principal directions made a new photo's best cosine 0.42 (median) where the
   catalogue's own photos scored 0.12 against each other, so a threshold calibrated on the catalogue's own photos
   called no new photo new; without it, 0.13 and 0.13, and the right individual first as often or more often.
   Learnt from the catalogue's own photos, as the vocabulary is: no labels are used.
Cosine similarity of these vectors (faiss, as the catalogue searches embeddings) ranks the catalogue's photos.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from photoid.local.features import Features, rootsift

CLUSTERS = 64  # visual words (B10 measured 16-128)
SAMPLE = 100_000  # descriptors the vocabulary is learnt from, at most
PCA_SAMPLE = 5000  # photos the projection is learnt from, at most (an SVD of 5000 x 8192 takes seconds)
PHOTOS_PER_DIMENSION = 10  # a projection is learnt only from this many photos per dimension kept, or more
PCA_DIM = 256  # dimensions kept by the projection, at most (0: none; B10 measured)
KMEANS_ITERATIONS = 20
SEED = 0


@dataclass
class Vocabulary:
    """Visual words and the projection learnt from one catalogue; `describe` gives unit rows of `dim` floats."""

    words: np.ndarray  # float32 (clusters, 128), RootSIFT space
    mean: np.ndarray  # float32 (clusters * 128,), the VLADs' mean (zeros: no projection)
    components: np.ndarray  # float32 (dim, clusters * 128); (0, 0) when there is no projection

    @property
    def dim(self) -> int:
        return int(self.components.shape[0]) if self.components.size else int(self.words.size)

    def vlad(self, features: list[Features]) -> np.ndarray:
        """Unprojected VLAD rows (photos, clusters * 128); a photo without keypoints gets a zero row."""
        from photoid.core.threads import one_blas_thread

        with one_blas_thread():  # small products, one per photo
            return self._vlad(features)

    def _vlad(self, features: list[Features]) -> np.ndarray:
        out = np.zeros((len(features), self.words.size), dtype=np.float32)
        word_norms = (self.words ** 2).sum(axis=1)
        for i, f in enumerate(features):
            if len(f) == 0:
                continue
            d = rootsift(f.descriptors)
            nearest = np.argmin(word_norms[None, :] - 2.0 * d @ self.words.T, axis=1)
            residuals = np.zeros_like(self.words)
            np.add.at(residuals, nearest, d - self.words[nearest])
            norms = np.linalg.norm(residuals, axis=1, keepdims=True)
            residuals = np.divide(residuals, norms, out=np.zeros_like(residuals), where=norms > 0)
            v = residuals.reshape(-1)
            v = np.sign(v) * np.sqrt(np.abs(v))
            total = np.linalg.norm(v)
            out[i] = v / total if total > 0 else v
        return out

    def describe(self, features: list[Features]) -> np.ndarray:
        """The global descriptors of photos: float32 (photos, dim), unit rows (zero for a photo without features)."""
        v = self.vlad(features)
        if self.components.size:
            v = (v - self.mean) @ self.components.T
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        empty = np.array([len(f) == 0 for f in features], dtype=bool)
        v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
        v[empty] = 0.0
        return v.astype(np.float32)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, words=self.words, mean=self.mean, components=self.components)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> "Vocabulary":
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return Vocabulary(arrays["words"].astype(np.float32), arrays["mean"].astype(np.float32),
                              arrays["components"].astype(np.float32))


def learn_vocabulary(features: list[Features], clusters: int = CLUSTERS, pca_dim: int = PCA_DIM,
                     sample: int = SAMPLE, seed: int = SEED) -> Vocabulary:
    """Words by k-means of (a sample of) the photos' RootSIFT, then the VLAD projection, from these photos alone."""
    import faiss

    descriptors = [f.descriptors for f in features if len(f)]
    if not descriptors:
        raise ValueError("no photo has local features to learn a vocabulary from")
    pool = np.concatenate(descriptors)
    rng = np.random.default_rng(seed)
    if len(pool) > sample:
        pool = pool[np.sort(rng.choice(len(pool), sample, replace=False))]
    root = np.ascontiguousarray(rootsift(pool))
    clusters = max(1, min(clusters, len(root) // 39))  # faiss wants 39 descriptors per word at least
    kmeans = faiss.Kmeans(root.shape[1], clusters, niter=KMEANS_ITERATIONS, seed=seed, verbose=False,
                          max_points_per_centroid=max(256, len(root) // clusters + 1))
    kmeans.train(root)
    words = np.asarray(kmeans.centroids, dtype=np.float32).reshape(clusters, -1)
    unprojected = Vocabulary(words, np.zeros(words.size, np.float32), np.zeros((0, 0), np.float32))
    if pca_dim <= 0:
        return unprojected
    chosen = features if len(features) <= PCA_SAMPLE else [
        features[i] for i in np.sort(rng.choice(len(features), PCA_SAMPLE, replace=False))]
    v = unprojected.vlad(chosen)
    v = v[np.linalg.norm(v, axis=1) > 0]
    dim = min(pca_dim, len(v) // PHOTOS_PER_DIMENSION)
    if dim < pca_dim:  # too few photos to learn a projection that fits new photos as well as these
        return unprojected
    mean = v.mean(axis=0)
    _, _, vt = np.linalg.svd(v - mean, full_matrices=False)
    return Vocabulary(words, mean.astype(np.float32), vt[:dim].astype(np.float32))
