"""Helpers shared by the robustness tests: a small valid Turtle Recall folder, running `photoid`, listing outputs.

Kept out of a `conftest.py` on purpose: tests elsewhere import `conftest` by name, and a second module of that name
in this folder would shadow theirs.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from photoid import cli

# Running `python -m photoid.cli` is what the `photoid` script does, without depending on where it is installed.
PHOTOID = [sys.executable, "-m", "photoid.cli"]
TRAIN_IDS = [f"ID_TR{i:04d}" for i in range(12)]
EXTRA_IDS = [f"ID_EX{i:04d}" for i in range(8)]
TEST_IDS = [f"ID_TE{i:04d}" for i in range(3)]
N_LABELLED = len(TRAIN_IDS) + len(EXTRA_IDS)


def jpeg_bytes(width: int = 16, height: int = 12, seed: int = 0) -> bytes:
    """A small noisy JPEG (noise keeps every image distinct, so records differ photo by photo)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def jpeg_declaring_size(width: int, height: int) -> bytes:
    """A real JPEG whose header claims `width` x `height` pixels: what a decompression bomb looks like."""
    data = bytearray(jpeg_bytes(8, 8))
    sof = data.index(b"\xff\xc0")  # baseline start-of-frame: FFC0, length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def write_turtle_folder(root: Path) -> Path:
    """A valid competition folder small enough to build in a second.

    train.csv: 12 images of 4 turtles (t_id_A..D, three each, locations in mixed case); extra_images.csv: 8 images
    of t_id_A, t_id_E, t_id_F; test.csv and sample_submission.csv: 3 images. CSV line k + 2 holds row k.
    """
    root.mkdir(parents=True, exist_ok=True)
    train = ["image_id,image_location,turtle_id"] + [
        f"{image_id},{['Top', 'left', 'RIGHT'][i % 3]},t_id_{'ABCD'[i % 4]}" for i, image_id in enumerate(TRAIN_IDS)]
    extra = ["image_id,turtle_id"] + [f"{image_id},t_id_{'AEF'[i % 3]}" for i, image_id in enumerate(EXTRA_IDS)]
    test = ["image_id,image_location"] + [f"{image_id},top" for image_id in TEST_IDS]
    sample = ["image_id,prediction1,prediction2,prediction3,prediction4,prediction5"] + [
        f"{image_id},t_id_A,t_id_B,t_id_C,t_id_D,new_turtle" for image_id in TEST_IDS]
    for name, lines in (("train.csv", train), ("extra_images.csv", extra), ("test.csv", test),
                        ("sample_submission.csv", sample)):
        (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "images").mkdir(exist_ok=True)
    for seed, image_id in enumerate([*TRAIN_IDS, *EXTRA_IDS, *TEST_IDS]):
        (root / "images" / f"{image_id}.JPG").write_bytes(jpeg_bytes(seed=seed))
    return root


def edit_lines(path: Path, edit: Callable[[list[str]], list[str] | None]) -> None:
    """Rewrite a CSV line by line; `edit` changes the list in place or returns a new one."""
    lines = path.read_text(encoding="utf-8").splitlines()
    changed = edit(lines)
    path.write_text("\n".join(lines if changed is None else changed) + "\n", encoding="utf-8")


def run_photoid(capsys, *argv: str) -> tuple[int, str, str]:
    """Run a command in this process, as the `photoid` script does; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def files_under(path: Path) -> list[str]:
    """Every file below `path`, relative and sorted ([] when `path` does not exist)."""
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def file_bytes(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in files_under(path)}


def temporary_files(path: Path) -> list[str]:
    """Files left under a temporary name by `photoid.core.io.atomic_path` (".NAME.XXXX.tmpSUFFIX")."""
    return [name for name in files_under(path) if Path(name).name.startswith(".") and ".tmp" in Path(name).name]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a child that crashes writes where (every thread's Python stack) to its stderr
    return env


# Signals whose disposition a child inherits from whatever started pytest. A background job of a non-interactive
# shell (`make test &`, nohup) starts with SIGINT and SIGQUIT ignored; a child that inherits SIG_IGN for SIGINT gets no
# KeyboardInterrupt from Python, so a Ctrl-C test would then check the shell, not photoid.
INHERITED_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)


def restore_default_signals() -> None:
    """Runs in the child between fork and exec: every signal a test sends gets its default disposition."""
    for sig in INHERITED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def spawn(argv: list, stdout, stderr) -> subprocess.Popen:
    """Start a child as a user's shell would, however pytest itself was started.

    Default signal dispositions (see INHERITED_SIGNALS), no inherited stdin (a terminal, a closed descriptor or a
    pipe the child could block on), and the environment of `subprocess_env`.
    """
    return subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            env=subprocess_env(), preexec_fn=restore_default_signals)


def start_photoid(*argv: str, log_dir: Path, name: str) -> tuple[subprocess.Popen, Path, Path]:
    """Start `photoid ARGV` in a subprocess, its output going to files (a full pipe would block it)."""
    out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with open(out, "wb") as out_file, open(err, "wb") as err_file:
        process = spawn([*PHOTOID, *argv], stdout=out_file, stderr=err_file)
    return process, out, err


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, timeout: float, what: str,
               interval: float = 0.01) -> None:
    """Poll `condition` while `process` runs; fail if it ends or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def kill(process: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
    """Send `sig` to a process this test started, wait for it, and return its exit code.

    A process still running after `timeout` is killed (never left behind) and the test fails.
    """
    process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the process did not end within {timeout:.0f} s of signal {sig}") from None


@contextlib.contextmanager
def reaped(*processes: subprocess.Popen) -> Iterator[None]:
    """Kill any of these processes still running when the block ends, so a failing test leaves none behind."""
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
