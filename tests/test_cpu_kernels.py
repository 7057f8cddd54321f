"""photoid asks TensorFlow for oneDNN's CPU kernels on every x86 CPU, unless the user chose (docs/speed.md)."""

import os
import subprocess
import sys

import pytest

SHOW = "import os, photoid; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"


@pytest.mark.parametrize("given, expected", [(None, "1"), ("0", "0"), ("1", "1")])
def test_onednn_kernels_are_asked_for_unless_the_user_chose(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    done = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_the_setting_reaches_tensorflow():
    import tensorflow  # noqa: F401  (photoid, imported by conftest, came first)
    from tensorflow.python.util import _pywrap_util_port

    expected = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() not in ("0", "false")
    assert _pywrap_util_port.IsMklEnabled() == expected
