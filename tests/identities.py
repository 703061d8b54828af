"""Verified identities for tests that act through the library as a signed-in person would.

A console or API front end hands the library the identity its session proved; these build
the same for a test acting in-process: a console user, by their user name.
"""

from __future__ import annotations

from clinical_mlops.governance.identity import VerifiedIdentity


def console(person: str) -> VerifiedIdentity:
    """Return the identity of ``person`` signed in to the console with their password."""
    return VerifiedIdentity(person=person, method="console-password", subject=person)
