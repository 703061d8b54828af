"""Defaults of the training protocol that front ends show before any training runs.

Kept apart from ``modeling.train`` so that a command's ``--help`` can state them
without importing the numerical stack.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SEARCH_ITERATIONS"]

#: random-search budget per candidate model (the full published protocol uses 100)
DEFAULT_SEARCH_ITERATIONS = 20
