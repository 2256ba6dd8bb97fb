"""Reliability tests: hostile inputs, faults and fuzzing. A package, so that its conftest does not shadow
tests/conftest.py (which tests import as ``conftest``)."""
