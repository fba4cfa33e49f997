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


@frozen
class Reasoning:
    """
    What a request asks of the model's thinking, in whichever form it came:
    a level (C{minimal} .. C{max}, C{none}, C{auto}) or a token budget
    (C{0} is off, C{-1} is dynamic). Targets ask for the form they speak:
    L{effort} for level-style fields, L{tokens} for budget-style ones.
    """

    level: str | None = None
    budget: int | None = None

    @property
    def off(self) -> bool:
        return self.level == "none" or self.budget == 0

    @property
    def auto(self) -> bool:
        return self.level == "auto" or self.budget == -1

    def effort(self) -> str | None:
        """A level for C{reasoning_effort}-style fields; None means leave the field out."""
        if self.off:
            return "none"
        if self.auto:
            return None
        if self.level is not None:
            return "xhigh" if self.level == "max" else self.level
        if self.budget is not None:
            for level in ("minimal", "low", "medium", "high"):
                if self.budget <= LEVEL_BUDGETS[level]:
                    return level
            return "xhigh"
        return None

    def tokens(self) -> int | None:
        """A budget for C{budget_tokens}-style fields: 0 off, -1 dynamic, None leave it out."""
        if self.off:
            return 0
        if self.auto:
            return -1
        if self.budget is not None:
            return self.budget
        if self.level is not None:
            return LEVEL_BUDGETS.get(self.level)
        return None


def parse_reasoning(text: str) -> Reasoning | None:
    """
    A thinking suffix (or a level/budget field) as L{Reasoning}: a level
    name, C{none}, C{auto}, or an integer budget (C{0} off, C{-1} auto).
    Anything else is None: nothing asked.
    """
    s = text.strip().lower()
    if not s:
        return None
    if s in ("none", "auto") or s in LEVEL_BUDGETS:
        return Reasoning(level=s)
    if s.isdigit() or s == "-1":
        return Reasoning(budget=int(s))
    return None


def suffix_effort(suffix: str) -> str | None:
    """
    The reasoning level a suffix asks for: a level name, or a budget mapped
    to the level whose budget covers it. C{none}/C{0} mean no reasoning
    (C{"none"}); C{auto}/C{-1} and anything unknown mean "leave it" (C{None}).
    """
    reasoning = parse_reasoning(suffix)
    return reasoning.effort() if reasoning is not None else None


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


# -- model ids in Claude model lists -------------------------------------------

#: What a model whose name does not start with C{claude-} is listed as to Claude clients
#: (C{claude-code.disable-cloaking-model-list} off): this prefix and its name reversed.
CLAUDE_LIST_PREFIX = "claude-fable-5-dd-"


def claude_listed_id(name: str) -> str:
    """
    How a Claude model list names C{name}, as CLIProxyAPI names it: as it is
    when it starts with C{claude-}, else L{CLAUDE_LIST_PREFIX} and the name
    reversed, so that clients that accept only Claude model ids (Claude Code)
    can pick it.
    """
    if not name or name.startswith("claude-"):
        return name
    return CLAUDE_LIST_PREFIX + name[::-1]


def claude_listed_name(model: str) -> str:
    """The model a listed id stands for (L{claude_listed_id} undone; a thinking suffix kept); others as they are."""
    base, suffix = model, ""
    if model.endswith(")") and "(" in model:
        cut = model.rindex("(")
        base, suffix = model[:cut], model[cut:]
    if not base.startswith(CLAUDE_LIST_PREFIX) or base == CLAUDE_LIST_PREFIX:
        return model
    return base[len(CLAUDE_LIST_PREFIX):][::-1] + suffix
