"""Inference with trained runs: fold models built and loaded, and the predictor over photo files (`fold_models`),
photos → catalogue embeddings (`embedder`), a run's fold ensemble naming individuals (`identify`), the ensemble as
one model file (`export`) and the candidates' gallery (`gallery`)."""


def __getattr__(name: str):  # `from photoid.inference import load_fold_models`, as when this was one module
    from photoid._moved import forward_attribute

    return forward_attribute(__name__, name)
