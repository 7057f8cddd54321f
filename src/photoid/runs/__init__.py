"""A run: its configuration (`config`: defaults ← recipe ← command line), its folder (`folder.RunDir`: every file a
trained run holds) and the run loaded back for inference (`loaded.RunInfo`, with how it prepares a photo)."""


def __getattr__(name: str):  # `from photoid.runs import load_run`, as when this was one module
    from photoid._moved import forward_attribute

    return forward_attribute(__name__, name)
