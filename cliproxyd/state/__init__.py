"""Runtime state: cursors and per-credential counters (memory only for now)."""

from cliproxyd.state.store import CredentialStats, MemoryStateStore, StateStore

__all__ = ["CredentialStats", "MemoryStateStore", "StateStore"]
