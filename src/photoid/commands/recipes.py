"""`photoid recipes`: list the built-in recipes."""

from __future__ import annotations

import argparse
from pathlib import Path

from photoid.runs.config import RECIPES_DIR, Config, read_recipe


def recipe_summary(path: Path) -> str:
    """One line: the recipe's name, backbone, weights and size, then the first line of its leading comment."""
    values = read_recipe(path)
    comment = next((line.lstrip("# ").strip() for line in path.read_text(encoding="utf-8").splitlines()
                    if line.startswith("#")), "")
    defaults = Config()
    size = values.get("dim", defaults.dim)
    return (f"{path.stem:<16} {values.get('backbone', defaults.backbone):<22} "
            f"{values.get('weights', defaults.weights):<17} {size:>4} px  {comment}")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = f"The built-in recipes ({RECIPES_DIR}); `photoid train --model NAME` trains one."


def run(args: argparse.Namespace) -> int:
    print(f"{'recipe':<16} {'backbone':<22} {'weights':<17} {'size':>7}  about")
    for path in sorted(RECIPES_DIR.glob("*.toml")):
        print(recipe_summary(path))
    return 0
