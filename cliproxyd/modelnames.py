"""
Model names: the thinking suffix, and C{excluded-models} patterns.

Pure functions of strings, used at config load (exclusions) and by the
executors (the suffix).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable

from attrs import frozen

# -- thinking suffix -----------------------------------------------------------

#: Reasoning levels a suffix may name, with the budget each stands for.
LEVEL_BUDGETS = {
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 32768,
    "max": 128000,
}


@frozen
class ModelName:
    """C{gpt-5(high)}: the base name used for matching, and the suffix kept for the executor."""

    base: str
    suffix: str = ""  # without the parentheses; "" when there is none

    def with_base(self, base: str) -> str:
        """C{base} carrying this name's suffix."""
        return f"{base}({self.suffix})" if self.suffix else base


def parse_model(name: str) -> ModelName:
    """Split C{model(x)} on the last C{(} of a name that ends in C{)}."""
    name = name.strip()
    if name.endswith(")"):
        i = name.rfind("(")
        if i > 0:
            return ModelName(name[:i], name[i + 1 : -1].strip())
    return ModelName(name)


def suffix_effort(suffix: str) -> str | None:
    """
    The reasoning level a suffix asks for: a level name, or a budget mapped
    to the level whose budget covers it. C{none}/C{0} mean no reasoning
    (C{"none"}); C{auto}/C{-1} and anything unknown mean "leave it" (C{None}).
    """
    s = suffix.strip().lower()
    if not s or s in ("auto", "-1"):
        return None
    if s in ("none", "0"):
        return "none"
    if s in LEVEL_BUDGETS:
        return s
    if s.isdigit():
        budget = int(s)
        for level in ("minimal", "low", "medium", "high"):
            if budget <= LEVEL_BUDGETS[level]:
                return level
        return "xhigh"
    return None


# -- exclusions ----------------------------------------------------------------


def compile_exclusions(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """
    One regex for a list of C{excluded-models} patterns: exact names, or
    C{*} at the start, the end or both (C{gpt-4*}, C{*-preview}, C{*mini*});
    case-insensitive. Compiled at config load, matched per request.
    """
    parts = [fnmatch.translate(p.strip().lower()) for p in patterns if p.strip()]
    if not parts:
        return None
    return re.compile("|".join(f"(?:{p})" for p in parts))


def is_excluded(exclusions: re.Pattern[str] | None, model: str) -> bool:
    return exclusions is not None and exclusions.match(model.lower()) is not None
