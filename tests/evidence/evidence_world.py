"""Times shared by the evidence tests."""

from __future__ import annotations

from datetime import timedelta

from registry_helpers import T0

#: a few hours after the demo release was governed (at T0), before any monitored window
EARLY = T0 + timedelta(hours=12)
