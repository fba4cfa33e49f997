"""
The account side of a simulated Code Assist endpoint (Gemini CLI): which
Google Cloud project each account (bearer token) has, C{loadCodeAssist}
and C{onboardUser} as Google answers them, onboarding as a long-running
operation that answers C{done: false} a few times first.

An account is one of:

- set up: C{projects[token]} is its project; loadCodeAssist names it;
- new, with a project to be provisioned: C{provision[token]}; loadCodeAssist
  names none, onboardUser without a project provisions it;
- new, with nothing to provision: onboardUser finishes with no project.

Generation requests that name no project are refused (400), as Google
refuses them.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field


@define
class CodeAssistAccounts:
    #: token -> the project of an account that is set up
    projects: dict[str, str] = field(factory=dict)
    #: token -> the project onboardUser provisions for a new account
    provision: dict[str, str] = field(factory=dict)
    #: how many onboardUser calls of an operation answer done: false before it is done
    pending_polls: int = 1
    #: (method, token, body) of every call, in order
    calls: list[tuple[str, str, dict[str, Any]]] = field(factory=list)
    _polls: dict[str, int] = field(factory=dict)

    def load(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("loadCodeAssist", token, body))
        answer: dict[str, Any] = {"allowedTiers": [{"id": "legacy-tier"}, {"id": "free-tier", "isDefault": True}]}
        if token in self.projects:
            answer["cloudaicompanionProject"] = self.projects[token]
            answer["currentTier"] = {"id": "free-tier"}
        return answer

    def onboard(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("onboardUser", token, body))
        asked = body.get("cloudaicompanionProject") or ""
        key = f"{token}\0{asked}"
        polls = self._polls.get(key, 0)
        if polls < self.pending_polls:
            self._polls[key] = polls + 1
            return {"name": f"operations/onboard-{len(self.calls)}", "done": False}
        self._polls.pop(key, None)
        project = asked or self.provision.get(token, "")
        if not project:
            return {"name": "operations/onboard", "done": True, "response": {}}
        self.projects[token] = project
        return {"name": "operations/onboard", "done": True,
                "response": {"cloudaicompanionProject": {"id": project, "name": project}}}
