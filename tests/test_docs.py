"""The manual (`docs/`, `mkdocs.yml`) builds with `mkdocs build --strict`: a broken link, a missing anchor, a page
left out of the nav, an API page whose object is gone or a missing included file fails; the README's links into
the manual lead to its pages; and the design page's map names every module of the package."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import photoid
from conftest import REPO

MKDOCS = Path(sys.executable).with_name("mkdocs")
# The types the API returns, documented where they are defined.
TYPES = {"RunInfo": "photoid.runs.loaded", "Catalog": "photoid.catalog.store",
         "Identification": "photoid.core.results"}


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(MKDOCS), "build", "--strict", "--config-file", str(root / "mkdocs.yml"),
                           "--site-dir", str(site)], cwd=root, capture_output=True, text=True, timeout=120)


def test_the_manual_builds_strictly_with_its_api_pages(tmp_path):
    result = _build(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-4000:]
    # Every name the package exports (photoid.train, photoid.Catalog, ...) has its generated entry.
    api_page = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    documented = set(re.findall(r'id="(photoid\.[\w.]+)"', api_page))
    for name in photoid._API:
        place = TYPES.get(name, "photoid.api")
        assert f"{place}.{name}" in documented, name
    benchmarks = (tmp_path / "site" / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "Machine and run" in benchmarks  # benchmarks/results.md, included where make bench writes it


def test_a_broken_link_fails_the_build(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copytree(REPO / "benchmarks", root / "benchmarks", ignore=shutil.ignore_patterns("*.py", ".cache"))
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    (root / "src").symlink_to(REPO / "src")
    page = root / "docs" / "records.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [the lost page](no-such-page.md).\n", encoding="utf-8")
    result = _build(root, tmp_path / "site")
    assert result.returncode != 0 and "no-such-page.md" in result.stderr


def test_the_readmes_links_into_the_manual_lead_to_its_pages():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 10
    for path, anchor in links:
        target = REPO / path
        assert target.is_file(), path
        if anchor and target.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), flags=re.M)
            slugs = {re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", h).strip().lower()) for h in headings}
            assert anchor in slugs, f"{path}#{anchor}"


def test_the_readmes_comparison_with_matchypatchy_and_wildbook_is_the_manuals():
    """The table stands in both (the README's front door and the review page): the two never drift apart."""
    def table(text: str) -> list[str]:
        start = text.index("| | MatchyPatchy | Wildbook | photoid | shown by |")
        return text[start:text.index("\n\n", start)].splitlines()

    readme = table((REPO / "README.md").read_text(encoding="utf-8"))
    manual = table((REPO / "docs" / "review.md").read_text(encoding="utf-8"))
    assert len(manual) > 20 and readme == [re.sub(r"\]\((?!http)([\w-]+\.md)", r"](docs/\1", row) for row in manual]


def _layout_entries(design: str) -> dict[str, str]:
    """The design page's layout tree: each top-level entry of `src/photoid/` with the text of its lines."""
    block = design.split("## The layout", 1)[1].split("```", 2)[1]
    entries, current = {}, None
    for line in block.splitlines():
        top = re.match(r"^  (\S+)", line)
        if top:
            current = top.group(1)
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += "\n" + line
    return entries


def test_the_design_pages_map_names_every_module():
    entries = _layout_entries((REPO / "docs" / "design.md").read_text(encoding="utf-8"))
    package = REPO / "src" / "photoid"
    missing = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if path.name == "__init__.py" and len(relative.parts) > 1:
            continue  # a sub-package is its folder's line
        if len(relative.parts) == 1:
            found = relative.name in entries
        else:
            found = re.search(rf"\b{re.escape(path.name)}\b", entries.get(f"{relative.parts[0]}/", "")) is not None
        if not found:
            missing.append(str(relative))
    assert not missing, f"docs/design.md's layout does not name: {', '.join(missing)}"
