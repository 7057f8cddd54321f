"""TFRecords: the resumable writer (`writer`), the folder and its manifest (`folder`), folds.csv (`folds`), the one
tf.data reader (`reader`), the paired reader (`pairs`) and the image transforms every task's TTA applies
(`transforms`)."""


def __getattr__(name: str):  # `from photoid.records import write_records`, as when this was one module
    from photoid._moved import forward_attribute

    return forward_attribute(__name__, name)
