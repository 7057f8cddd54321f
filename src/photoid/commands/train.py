"""`photoid train` (and `run.py`): train, predict, score and submit a recipe, k-fold."""

from __future__ import annotations

import argparse

from photoid.runs.config import add_config_arguments
from photoid.training.kfold import resolve_run_config, run_config


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_config(resolve_run_config(args))
