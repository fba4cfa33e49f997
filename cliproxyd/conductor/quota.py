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

import re
from typing import TYPE_CHECKING, Iterable

from attrs import frozen

from cliproxyd.config.model import QuotaGroupConfig
from cliproxyd.modelnames import compile_exclusions, is_excluded

from cliproxyd.service import Periodic

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from cliproxyd.state import StateStore

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


#: How often expired automatic quota-group suspensions are reaped.
REAPER_INTERVAL = 30.0


def reap_expired(state: "StateStore", now: float) -> int:
    """
    Forget automatic suspensions that have ended, so the store does not
    keep them (requests never pay for this: an ended suspension blocks
    nothing). Manual suspensions stay. Returns how many were reaped.
    """
    reaped = 0
    for cred_id, group_id, group in state.group_states():
        if group.auto_until is not None and not group.auto_active(now):
            state.set_group_state(cred_id, group_id, group.cleared_auto())
            reaped += 1
    return reaped


def reaper(state: "StateStore", clock: "IReactorTime", interval: float = REAPER_INTERVAL) -> Periodic:
    """The C{quota-reaper} job: L{reap_expired} every C{interval} seconds."""
    return Periodic("quota-reaper", interval, lambda: reap_expired(state, clock.seconds()), clock)
