"""The catalogue of known individuals, one embedding per photo, that grows without retraining: its files and
transactions (`store`), building and growing it (`build`; in chunks that resume: `stream`), identifying photos
against it (`identify`) through its prepared search (`index`; opt-in approximate indexes: `approximate`), open-set
scoring (`openset`), calibration of the new-individual threshold (`calibrate`), the photos' local features
(`local`), their fusion with the global score (`fusion`), catalogues with no trained model (`zeroshot`), the
picture of a match (`explain`), the decision log and quality-control changes (`decisions`) and the scores that
flag likely wrong assignments (`quality`)."""


def __getattr__(name: str):  # `from photoid.catalog import build_catalog`, as when this was one module
    from photoid._moved import forward_attribute

    return forward_attribute(__name__, name)
