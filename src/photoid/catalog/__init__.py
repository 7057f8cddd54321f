"""The catalogue of known individuals, one embedding per photo, that grows without retraining: its files and
transactions (`store`), building and growing it (`build`), identifying photos against it (`identify`), open-set
scoring (`openset`) and calibration of the new-individual threshold (`calibrate`)."""


def __getattr__(name: str):  # `from photoid.catalog import build_catalog`, as when this was one module
    from photoid._moved import forward_attribute

    return forward_attribute(__name__, name)
