"""Fault, load and hostile-input tests against real processes (issue 6)."""
