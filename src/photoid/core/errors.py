"""Errors a user can act on. The CLI prints them as one clear message, never as a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class PhotoidError(Exception):
    """A problem with the user's input, files or settings, explained in the message."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file: where (file and CSV line, header = line 1) and why."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file} line {self.line}"
        return f"{where}: {self.reason}"


class ValidationError(PhotoidError):
    """Every problem found in the input, listed at once (up to `limit`), so one run shows them all."""

    def __init__(self, problems: list[Problem], limit: int = 50, title: str = "invalid input"):
        self.problems = list(problems)
        shown = [f"  - {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            shown.append(f"  ... and {len(self.problems) - limit} more")
        n = len(self.problems)
        super().__init__(f"{title}: {n} problem{'s' if n != 1 else ''}\n" + "\n".join(shown))


class ProblemList:
    """Collects problems while validating; `raise_if_any` raises them all together."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, file: str, line: int | None, reason: str) -> None:
        self.items.append(Problem(str(file), line, reason))

    def __len__(self) -> int:
        return len(self.items)

    def raise_if_any(self, title: str = "invalid input") -> None:
        if self.items:
            raise ValidationError(self.items, title=title)
