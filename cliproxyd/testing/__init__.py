"""Test doubles that ship with cliproxyd: used by its tests, benchmarks and --demo."""
