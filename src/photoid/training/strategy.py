"""Distribution strategy, chosen from the hardware and the settings, with TensorFlow's own engines only.

TPU when a TPU name is given (`local` on a TPU VM); `MultiWorkerMirroredStrategy` when `TF_CONFIG` is set;
`MirroredStrategy` with several GPUs (or several logical CPU devices, for tests); the default strategy
otherwise. A TPU that was asked for and cannot be reached is an error, never a silent fallback.
"""

from __future__ import annotations

import os

import tensorflow as tf

from photoid.core.errors import PhotoidError


def split_cpu(n_devices: int) -> None:
    """Expose the CPU as `n_devices` logical devices; must run before TensorFlow initialises its devices."""
    if n_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n_devices)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != n_devices:
            raise PhotoidError(f"cannot split the CPU into {n_devices} devices: TensorFlow already started") from None


def choose_strategy(kind: str = "auto", tpu: str = "", cpu_devices: int = 1) -> tf.distribute.Strategy:
    split_cpu(cpu_devices)
    if kind == "tpu" or (kind == "auto" and tpu):
        return _tpu_strategy(tpu or "local")
    if kind == "multi_worker" or (kind == "auto" and os.environ.get("TF_CONFIG")):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if kind == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tpu_strategy(name: str) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as err:  # noqa: BLE001  the resolver's errors range from ValueError to urllib's and Google's
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise PhotoidError(f"TPU {name!r} was asked for but cannot be used: {reason}. On a TPU VM pass "
                           "--tpu_ip_or_name local; elsewhere the TPU's name (found through gcloud's project and zone) "
                           "or its grpc://ADDRESS:8470") from None
    return tf.distribute.TPUStrategy(resolver)
