"""The `photoid` command: one sub-command per stage, each implemented in its own module.

A sub-command module exposes `configure_parser(parser)` and `run(args) -> int`. Modules are imported only when
their command runs, so `photoid --help` answers without loading TensorFlow.
"""

from __future__ import annotations

import _thread
import argparse
import importlib
import os
import signal
import sys
import threading
import warnings

from photoid.core.quiet import VERBOSE_ENV, quiet_tensorflow_start

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("photoid.synth.cli", "write a synthetic data set in a competition's exact format"),
    "tfrecords": ("photoid.turtles.records", "validate a Turtle Recall folder, write folds.csv and TFRecords"),
    "records": ("photoid.commands.records", "validate any task's folder (the task found from its files), write its records"),
    "recipes": ("photoid.commands.recipes", "list the built-in recipes (models/*.toml)"),
    "train": ("photoid.commands.train", "train, predict and score a recipe k-fold (same as run.py)"),
    "ensemble": ("photoid.turtles.ensemble", "average runs' test predictions into a submission"),
    "score": ("photoid.turtles.scoring", "score a Turtle Recall submission against test_labels.csv (MAP@5)"),
    "identify": ("photoid.commands.identify", "name the individual in new photos with trained runs"),
    "export": ("photoid.commands.export", "export a run's fold ensemble as one self-contained model"),
    "whale-records": ("photoid.whales.records", "validate a Where's Whale-do folder and write its TFRecords"),
    "embed": ("photoid.whales.embed", "write every scenario image's embedding from trained whale runs (.npz)"),
    "rank": ("photoid.whales.rank", "rank each query against its scenario's database (Where's Whale-do)"),
    "score-ranking": ("photoid.whales.scoring", "score a ranking submission with the organisers' mAP"),
    "catalog": ("photoid.commands.catalog", "build, grow and list an embedding catalogue of known individuals"),
    "calibrate": ("photoid.commands.calibrate", "choose the new-individual threshold and blend weight on held-out data"),
    "serve": ("photoid.serve", "a web page to identify photos, confirm matches and grow a catalogue"),
    "survey": ("photoid.commands.survey", "import a survey's photos, identify them in one batch job, export the "
                                          "reviewed sightings"),
    "import": ("photoid.importers", "write a generic folder (metadata.csv, images/) from a wildlife-datasets data "
                                    "set or a Turtle Recall folder"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="photoid", description="Photo-identification of individual animals.")
    parser.add_argument("--version", action="version", version=f"photoid {_version()}")
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's own start-up messages (or set PHOTOID_VERBOSE=1); "
                             "give it before the command: photoid --verbose train ...")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _version() -> str:
    from photoid._version import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = argv[:1] == ["--verbose"] or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    if argv[:1] == ["--verbose"]:
        argv = argv[1:]
    if not verbose:
        quiet_tensorflow_start()
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.parse_args(argv)
        parser.print_help()
        return 0 if not argv else 2
    # Warnings meant for users (e.g. ids with fewer images than folds) read as one plain line.
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    sub_parser = argparse.ArgumentParser(prog=f"photoid {name}", description=COMMANDS[name][1])
    module.configure_parser(sub_parser)
    args = sub_parser.parse_args(rest)
    return run_guarded(module.run, args)


INTERRUPTED = "interrupted: stopped by the user; finished outputs are complete, nothing half-written was kept"
# Ctrl-C ends a command through KeyboardInterrupt, raised where Python checks for signals. Raised while TensorFlow
# traces a function (the first batch of training, a data set's map), it can leave TensorFlow's C++ state broken: seen
# with TF 2.21 as a segmentation fault a moment later, as a RuntimeError, or as a tracer looping forever. So a Ctrl-C
# that lands inside a trace is held, and raised as soon as the trace is over (polled every RETRY_S). In case
# TensorFlow still mishandles it, after a Ctrl-C any exception is the interruption, and the first Ctrl-C starts a
# clock: a command still running when it runs out ends there, as a second Ctrl-C ends it at once.
# Outputs are written under temporary names, so ending abruptly keeps the old files.
INTERRUPT_GRACE_S = 30.0
RETRY_S = 0.05


def run_guarded(fn, *args) -> int:
    """Run a command; user errors and Ctrl-C become one line on stderr and a non-zero exit code."""
    from photoid.core.errors import PhotoidError

    with _CtrlC() as ctrl_c:
        try:
            return int(fn(*args) or 0)
        except PhotoidError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return 130
        except Exception:
            if not ctrl_c.pressed:
                raise
            print(INTERRUPTED, file=sys.stderr)
            return 130


class _CtrlC:
    """While a command runs: the first Ctrl-C raises KeyboardInterrupt (once outside any TensorFlow trace) and arms
    INTERRUPT_GRACE_S; a second exits.

    Only where Python handles Ctrl-C itself (the main thread, the default handler): a caller that ignores or
    handles it keeps its own way.
    """

    def __init__(self) -> None:
        self.pressed = False
        self._timer: threading.Timer | None = None
        self._retry: threading.Timer | None = None
        self._retrying = False
        self._closed = False
        self._active = (threading.current_thread() is threading.main_thread()
                        and signal.getsignal(signal.SIGINT) is signal.default_int_handler)

    def __enter__(self) -> "_CtrlC":
        if self._active:
            signal.signal(signal.SIGINT, self._on_ctrl_c)
        return self

    def __exit__(self, *exc_info) -> None:
        self._closed = True
        for timer in (self._timer, self._retry):
            if timer is not None:
                timer.cancel()
        if self._active:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _on_ctrl_c(self, signum, frame) -> None:
        if self._retrying:  # not a press: the poll of a held Ctrl-C (see _raise_when_safe)
            self._retrying = False
            self._raise_when_safe()
            return
        if self.pressed:
            _exit_interrupted()
        self.pressed = True
        self._timer = threading.Timer(INTERRUPT_GRACE_S, _exit_interrupted)
        self._timer.daemon = True
        self._timer.start()
        self._raise_when_safe()

    def _raise_when_safe(self) -> None:
        if not _inside_a_trace():
            raise KeyboardInterrupt
        self._retry = threading.Timer(RETRY_S, self._poll)
        self._retry.daemon = True
        self._retry.start()

    def _poll(self) -> None:
        # Runs the SIGINT handler in the main thread at its next signal check, without sending a real signal
        # (a real one would interrupt TensorFlow's system calls).
        if self._closed:
            return
        self._retrying = True
        _thread.interrupt_main(signal.SIGINT)


def _inside_a_trace() -> bool:
    """Whether the main thread is tracing a TensorFlow function now (TensorFlow is never imported to answer)."""
    tf = sys.modules.get("tensorflow")
    inside_function = getattr(tf, "inside_function", None)
    return bool(inside_function is not None and inside_function())


def _exit_interrupted() -> None:
    print(INTERRUPTED, file=sys.stderr, flush=True)
    os._exit(130)


if __name__ == "__main__":
    sys.exit(main())
