"""
Pure selection policy: no clock, no I/O, no state of its own.

A route (the model name a client asks for) has a fixed list of targets,
computed at config load and grouped into priority tiers. A request tries the
targets in an order that these functions derive from a cursor.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

from attrs import frozen

from cliproxyd.credentials import Credential

T = TypeVar("T")


@frozen
class Target:
    """One credential and the upstream model name to ask it for."""

    cred: Credential
    upstream_model: str


def build_routes(creds: Sequence[Credential]) -> dict[str, tuple[tuple[Target, ...], ...]]:
    """
    Route name -> priority tiers of targets, highest priority first.

    Within a tier targets keep config order, which makes the rotation
    predictable: with two keys, requests alternate key 1, key 2, key 1...
    """
    flat: dict[str, list[Target]] = {}
    for cred in creds:
        for route, upstream_models in cred.models:
            for upstream in upstream_models:
                flat.setdefault(route, []).append(Target(cred, upstream))
    routes = {}
    for route, targets in flat.items():
        priorities = sorted({t.cred.priority for t in targets}, reverse=True)
        routes[route] = tuple(
            tuple(t for t in targets if t.cred.priority == p) for p in priorities
        )
    return routes


def rotate(items: Sequence[T], start: int) -> list[T]:
    """C{items} starting at index C{start} (mod its length), wrapping around."""
    if not items:
        return []
    start %= len(items)
    return [*items[start:], *items[:start]]


def attempt_order(tiers: Sequence[Sequence[T]], strategy: str, cursor: int) -> list[T]:
    """
    The order in which one request tries the targets of a route.

    The top tier comes first, rotated by C{cursor} for round-robin or from
    its first member for fill-first; lower tiers follow as fallbacks in the
    same way.
    """
    start = cursor if strategy == "round-robin" else 0
    order: list[T] = []
    for tier in tiers:
        order.extend(rotate(tier, start))
    return order
