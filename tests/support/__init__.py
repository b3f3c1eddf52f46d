"""Helpers shared by the test suite (seeded weights, tiny images)."""
