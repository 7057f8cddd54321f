"""B5-catalogue — the catalogue's search: each query's best similarity to every individual, against faiss.

Ours: `photoid.catalog.openset.individual_similarities` with its default backend "auto": the faster, on this machine, of
two exact searches (numpy's blocked product with a per-individual maximum; faiss' nearest images completed by the
product where they leave an individual's best unknown), raced on the first search of each size and remembered.
Reference: faiss' exact inner-product index (`IndexFlatIP`) retrieving each query's `openset.NEIGHBOURS` nearest
gallery images, the retrieval the catalogue's approximate backend stands on; ours should stay within 1.2× of it.
Run by B5 (`run_all.py --only B5`), whose rows these are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from _common import Goal, Result, interleaved_medians, seconds

GOAL_VS_FAISS = Goal(1.2, higher_is_better=False)


@dataclass(frozen=True)
class Settings:
    gallery_sizes: tuple[int, ...]
    queries: int
    width: int
    photos_per_individual: int
    rounds: int


PRESETS = {
    # 490 queries: the Turtle Recall test set; 5 photos per individual on average.
    "full": Settings(gallery_sizes=(100_000, 10_000), queries=490, width=512, photos_per_individual=5, rounds=3),
    "tiny": Settings(gallery_sizes=(2000, 500), queries=50, width=64, photos_per_individual=5, rounds=1),
}


@dataclass
class Catalogue:
    queries: np.ndarray
    gallery: np.ndarray
    codes: np.ndarray
    n_individuals: int
    exclude: np.ndarray  # half the queries are gallery photos, left out of their own scores


def make_catalogue(n_gallery: int, settings: Settings, seed: int = 0) -> Catalogue:
    """Photos scattered around their individual's centre; half the queries are gallery photos."""
    rng = np.random.default_rng(seed)
    n_individuals = max(1, n_gallery // settings.photos_per_individual)
    centres = rng.standard_normal((n_individuals, settings.width), dtype=np.float32)
    codes = rng.integers(0, n_individuals, n_gallery)
    gallery = centres[codes] + rng.standard_normal((n_gallery, settings.width), dtype=np.float32)
    half = settings.queries // 2
    queries = np.concatenate([gallery[:half], centres[rng.integers(0, n_individuals, settings.queries - half)]
                              + rng.standard_normal((settings.queries - half, settings.width), dtype=np.float32)])
    exclude = np.r_[np.arange(half), np.full(settings.queries - half, -1)]
    return Catalogue(queries, gallery, codes, n_individuals, exclude)


def search(c: Catalogue, backend: str):
    from photoid.catalog.openset import individual_similarities

    return individual_similarities(c.queries, c.gallery, c.codes, c.n_individuals, exclude=c.exclude,
                                   backend=backend)


def faiss_retrieval(c: Catalogue):
    """faiss' exact index over the unit gallery rows, each query's NEIGHBOURS + 1 nearest (one is its own)."""
    import faiss

    from photoid.catalog.openset import NEIGHBOURS
    from photoid.core.retrieval import normalize_rows

    index = faiss.IndexFlatIP(c.gallery.shape[1])
    index.add(normalize_rows(c.gallery))
    return index.search(normalize_rows(c.queries), NEIGHBOURS + 1)


def measure_size(n_gallery: int, settings: Settings) -> dict[str, float]:
    import photoid.catalog.openset as openset

    c = make_catalogue(n_gallery, settings)
    openset._FASTER.clear()
    first = seconds(lambda: search(c, "auto"))  # the race of this size class
    answers = {backend: search(c, backend) for backend in ("auto", "numpy", "faiss")}
    for backend, scores in answers.items():
        if not np.allclose(scores, answers["numpy"], atol=1e-5):
            raise RuntimeError(f"the catalogue's {backend} search disagrees with numpy's")
    measures = {
        "ours": lambda: seconds(lambda: search(c, "auto")),
        "faiss": lambda: seconds(lambda: faiss_retrieval(c)),
        "numpy": lambda: seconds(lambda: search(c, "numpy")),
        "faiss_exact": lambda: seconds(lambda: search(c, "faiss")),
        "faiss_approximate": lambda: seconds(lambda: search(c, "faiss_approximate")),
    }
    figures = interleaved_medians(settings.rounds, measures)
    figures["first"] = first
    figures["winner"] = next(iter(openset._FASTER.values()), "numpy")
    return figures


def run(preset: str) -> list[Result]:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return []
    settings = PRESETS[preset]
    rows = []
    for n in settings.gallery_sizes:
        f = measure_size(n, settings)
        rows.append(Result(
            id=f"B5-catalogue-{n // 1000}k" if n >= 1000 else f"B5-catalogue-{n}",
            what=f"catalogue search: {settings.queries} queries vs {n:,} photos of "
                 f"{n // settings.photos_per_individual:,} individuals ({settings.width}-d), best per individual, "
                 "vs faiss",
            ours=f["ours"], baseline=f["faiss"], unit="s", ratio=f["ours"] / f["faiss"], goal=GOAL_VS_FAISS,
            ours_label="individual_similarities (auto)", baseline_label="faiss IndexFlatIP, 1000 nearest",
            details=[f"auto chose {f['winner']}; its first search of this size, racing both, took {f['first']:.3f} s; "
                     f"backend numpy {f['numpy']:.3f} s, faiss (exact) {f['faiss_exact']:.3f} s, faiss_approximate "
                     f"{f['faiss_approximate']:.3f} s; all exact ones give the same scores (checked)"],
            notes=[f"median of {settings.rounds} alternating rounds after the race; half the queries are gallery "
                   "photos (left out of their own scores). Times include normalising the embeddings. "
                   "ratio = our time / faiss' time: lower is better."]))
    return rows
