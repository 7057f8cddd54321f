"""photoid: photo-identification of individual animals.

kecam builds its models with the Keras 2 API; under Keras 3 model building fails. Selecting tf-keras must happen
before TensorFlow is first imported, so it is done here, once, at the package's import. Every module uses
`tf_keras`, never `tf.keras` or `keras`.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter hides the messages researchers need to read; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from photoid import _moved  # noqa: E402  (old import paths keep working)

_moved.install()
