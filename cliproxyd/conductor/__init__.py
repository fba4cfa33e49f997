"""The conductor: which credential serves a request, and what happens when it fails."""

from cliproxyd.conductor.conductor import AllAttemptsFailed, Conductor, UnknownModel
from cliproxyd.conductor.selection import Target

__all__ = ["AllAttemptsFailed", "Conductor", "Target", "UnknownModel"]
