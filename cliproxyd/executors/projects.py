"""
The Google Cloud project of a Gemini CLI account whose file names none,
found the way Gemini CLI (and CLIProxyAPI's login) finds it on the Code
Assist endpoint:

1. C{loadCodeAssist} with Gemini CLI's client metadata: the account's
   default tier (C{allowedTiers[].isDefault}, else C{legacy-tier}) and, for
   an account already set up, its project (C{cloudaicompanionProject}, a
   string or C{{"id"}}).
2. No project yet: C{onboardUser} with the tier and no project, which lets
   Google provision one (a Google One / free-tier account). Onboarding is a
   long-running operation: the call is repeated every L{AUTO_POLL} seconds
   until it answers C{done}, for at most L{AUTO_TIMEOUT} seconds; its
   C{response.cloudaicompanionProject} is the project.
3. C{onboardUser} with the tier and that project, repeated every
   L{ONBOARD_POLL} seconds until C{done} (at most L{ONBOARD_TIMEOUT}
   seconds: CLIProxyAPI waits without end); the project it answers with
   wins over the one asked for.

Everything waits on the injected clock; the calls themselves are made by
the executor (its headers, proxy and timeouts).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

#: The client metadata Gemini CLI sends with loadCodeAssist and onboardUser.
CLIENT_METADATA = {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}
#: The tier an account without a default one is onboarded to.
LEGACY_TIER = "legacy-tier"
#: Seconds between onboardUser calls while Google provisions a project, and how long that may take.
AUTO_POLL = 2.0
AUTO_TIMEOUT = 30.0
#: Seconds between onboardUser calls while an account is onboarded to its project, and how long that may take.
ONBOARD_POLL = 5.0
ONBOARD_TIMEOUT = 60.0

#: Calls one Code Assist method with a JSON body; fires with the answer (a JSON object).
Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class NoProject(Exception):
    """The account has no project and onboarding gave it none; C{str()} says why."""


def project_of(answer: Any) -> str:
    """The C{cloudaicompanionProject} of a loadCodeAssist answer or an onboarding response ("" for none)."""
    if not isinstance(answer, dict):
        return ""
    value = answer.get("cloudaicompanionProject")
    if isinstance(value, dict):
        value = value.get("id")
    return value.strip() if isinstance(value, str) else ""


def default_tier(answer: dict[str, Any]) -> str:
    """The id of the account's default tier in a loadCodeAssist answer, else L{LEGACY_TIER}."""
    for tier in answer.get("allowedTiers") or ():
        if isinstance(tier, dict) and tier.get("isDefault") is True:
            tier_id = tier.get("id")
            if isinstance(tier_id, str) and tier_id.strip():
                return tier_id.strip()
    return LEGACY_TIER


async def _onboard(call: Call, clock: IReactorTime, body: dict[str, Any], interval: float, timeout: float) -> str:
    """onboardUser until its operation is done: the project it answers with ("" for none)."""
    deadline = clock.seconds() + timeout
    while True:
        answer = await call("onboardUser", body)
        if answer.get("done") is True:
            return project_of(answer.get("response"))
        if clock.seconds() + interval > deadline:
            raise NoProject(f"onboarding did not finish within {timeout:g}s")
        await deferLater(clock, interval, lambda: None)


async def discover(call: Call, clock: IReactorTime) -> str:
    """The account's project, onboarding it where needed (see the module); L{NoProject} if there is none."""
    loaded = await call("loadCodeAssist", {"metadata": CLIENT_METADATA})
    tier = default_tier(loaded)
    project = project_of(loaded)
    if not project:
        project = await _onboard(call, clock, {"tierId": tier, "metadata": CLIENT_METADATA}, AUTO_POLL, AUTO_TIMEOUT)
        if not project:
            raise NoProject("Code Assist provisioned no project for it; give the file a project_id")
    body = {"tierId": tier, "metadata": CLIENT_METADATA, "cloudaicompanionProject": project}
    return await _onboard(call, clock, body, ONBOARD_POLL, ONBOARD_TIMEOUT) or project
