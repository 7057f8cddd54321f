"""The results table for the terminal and `benchmarks/results.md`."""

from __future__ import annotations

import re
from pathlib import Path

from _common import Result

SECTION_PREFIX = "## Run alone: "


def _figure(value: float, unit: str) -> str:
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
    return f"{value:,.{digits}f} {unit}"


def table(results: list[Result]) -> str:
    """A Markdown table: id, what, ours, baseline, ratio, goal, met."""
    lines = ["| id | what | ours | baseline | ratio | goal | met |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.id} | {r.what} | {_figure(r.ours, r.unit)} ({r.ours_label}) | "
                     f"{_figure(r.baseline, r.unit)} ({r.baseline_label}) | {r.ratio:.2f}× | {r.goal} | "
                     f"{'yes' if r.met else '**no**'} |")
    return "\n".join(lines)


def failures_section(failures: dict[str, str]) -> str:
    if not failures:
        return ""
    lines = ["## Benchmarks that did not finish", ""]
    lines += [f"- {bench_id}: {message}" for bench_id, message in failures.items()]
    return "\n".join(lines) + "\n\n"


def markdown(results: list[Result], failures: dict[str, str], header: dict[str, str],
             versions: dict[str, str]) -> str:
    """The whole results page: how it was made, the table, growth figures and notes per benchmark."""
    out = ["# Benchmarks", "",
           "Written by `benchmarks/run_all.py` (`make bench`); rerun it rather than editing this page. Every figure is "
           "the median of several runs on synthetic data the benchmarks generate (generation is not timed). "
           "Ratios read as the goal does: higher is better for speed-ups, lower for memory growth.", ""]
    out += ["## Machine and run", ""]
    out += [f"- {key}: {value}" for key, value in header.items()]
    out += ["- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()), ""]
    out += ["## Results", "", table(results), ""]
    out += [failures_section(failures)] if failures else []
    out += ["## How each cost grows, and what each figure means", ""]
    out += _explained(results)
    return "\n".join(out).rstrip() + "\n"


def _explained(results: list[Result]) -> list[str]:
    """Each row's heading, then its details and notes as a list."""
    out = []
    for r in results:
        out += [f"### {r.id} — {r.what}", ""]
        out += [f"- {line}" for line in r.details]
        out += [f"- {line}" for line in r.notes]
        out.append("")
    return out


def section(selected: list[str], results: list[Result], failures: dict[str, str], header: dict[str, str],
            versions: dict[str, str]) -> str:
    """A partial run's page as one section of the results page: its machine and run, table and notes."""
    out = [f"{SECTION_PREFIX}{', '.join(selected)}", "",
           "Benchmarks too long for the full run, run alone with the command below; the rest of this page does not "
           "include them.", ""]
    out += [f"- {key}: {value}" for key, value in header.items()]
    out += ["- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()), ""]
    out += [table(results), ""]
    out += [failures_section(failures).replace("## ", "### ")] if failures else []
    out += _explained(results)
    return "\n".join(out).rstrip() + "\n"


def replace_section(results: Path, heading: str, text: str) -> None:
    """Put `text` (starting with the line `heading`) into the page `results` in place of an earlier section under
    that heading, or at its end (atomically); the rest of the page stays as it is."""
    from photoid.core.io import write_text

    page = results.read_text(encoding="utf-8") if results.exists() else ""
    pattern = re.compile(re.escape(heading) + r"\n.*?(?=^## |\Z)", flags=re.S | re.M)
    text = text.rstrip("\n") + "\n\n"
    page = pattern.sub(lambda _: text, page) if pattern.search(page) else page.rstrip("\n") + "\n\n" + text
    write_text(results, page.rstrip("\n") + "\n")
