"""The client-facing HTTP surface."""

from cliproxyd.frontend.access import ClientAccess
from cliproxyd.frontend.app import Frontend, end_stream
from cliproxyd.frontend.site import InFlight, QuietSite, TrackingSite

__all__ = ["ClientAccess", "Frontend", "InFlight", "QuietSite", "TrackingSite", "end_stream"]
