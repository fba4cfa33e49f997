"""
OAuth quota groups (CLIProxyAPI PR #2885, in its final reviewed form).

Some providers meter several models against one quota: on Antigravity the
Claude models share one, the Gemini models another. A 429 that exhausts the
quota on one model then holds for the whole family, and trying the family's
other models on that credential only collects more 429s. A quota group names
such a family: C{{id, providers, models}} with C{*} wildcards.

State per (credential, group) lives in the StateStore: an automatic
suspension (until the upstream's reset time, or the backoff) set by a 429,
and a manual one set over the management API. Either keeps the group's
models of that credential out of selection. This module is pure: matching
and the state record.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

from attrs import evolve, frozen

from cliproxyd.config.model import QuotaGroupConfig
from cliproxyd.modelnames import compile_exclusions, is_excluded

#: The groups used when config.yaml has no C{oauth-quota-groups} key.
DEFAULT_GROUPS = (
    QuotaGroupConfig(id="antigravity-claude", providers=("antigravity",), models=("claude-*", "*-claude-*")),
    QuotaGroupConfig(id="antigravity-gemini", providers=("antigravity",), models=("gemini-*",)),
)


@frozen
class QuotaGroup:
    id: str
    providers: frozenset[str]
    patterns: tuple[str, ...]
    _regex: re.Pattern[str] | None

    @classmethod
    def from_config(cls, g: QuotaGroupConfig) -> "QuotaGroup":
        return cls(g.id, frozenset(p.lower() for p in g.providers), tuple(g.models), compile_exclusions(g.models))

    def covers(self, provider: str, model: str) -> bool:
        return provider.lower() in self.providers and is_excluded(self._regex, model)

    def as_json(self) -> dict:
        return {"id": self.id, "providers": sorted(self.providers), "models": list(self.patterns)}


def compile_groups(groups: Iterable[QuotaGroupConfig]) -> tuple[QuotaGroup, ...]:
    return tuple(QuotaGroup.from_config(g) for g in groups)


def group_for(groups: Iterable[QuotaGroup], provider: str, model: str) -> QuotaGroup | None:
    """The first group that covers C{model} of C{provider}."""
    for group in groups:
        if group.covers(provider, model):
            return group
    return None


@frozen
class GroupState:
    """One credential's state for one quota group."""

    auto_until: float | None = None
    auto_reason: str = ""
    manual: bool = False
    manual_reason: str = ""
    updated_by: str = ""
    updated_at: float | None = None

    def auto_active(self, now: float) -> bool:
        return self.auto_until is not None and self.auto_until > now

    def blocked_until(self, now: float) -> float | None:
        """Until when the group is out of selection: C{inf} while manually suspended."""
        if self.manual:
            return math.inf
        return self.auto_until if self.auto_active(now) else None

    @property
    def empty(self) -> bool:
        return not self.manual and self.auto_until is None and not self.manual_reason

    def cleared_auto(self) -> "GroupState":
        return evolve(self, auto_until=None, auto_reason="")
