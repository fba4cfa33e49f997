"""Runtime state: cooldowns, counters, cursors and affinity, with snapshots to disk."""

from cliproxyd.state.store import CredentialStats, MemoryStateStore, ModelUsage, StateStore

__all__ = ["CredentialStats", "MemoryStateStore", "ModelUsage", "StateStore"]
