"""Registry and governance fixtures (see tests/registry_helpers.py)."""

from registry_helpers import clock, fresh_workspace, meta_backend, trained  # noqa: F401
