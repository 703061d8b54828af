"""Application fixtures (see tests/registry_helpers.py)."""

from registry_helpers import fresh_workspace, trained  # noqa: F401
