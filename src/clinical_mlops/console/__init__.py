"""The clinician and governance console: a server-rendered web app over the library.

Pages: the escalation queue and case view with a one-step override (R-H1, R-H2),
the alerts inbox with drill-down plots, release approval with the validation
evidence and release notes (R-L3 gate 4), periodic reviews (R-H3), the incident
workflow (R-H4), the audit search with verification and auditor export (R-A1), and
model status with suspension and rollback. Every form calls one use case of
:mod:`clinical_mlops.application` (governance acts, case decisions, the release dossier,
audit bundles); pages read through library queries. The console adds sign-in, roles,
one-time form tokens and HTML. Forms work without JavaScript.

``clinical-mlops serve`` mounts it at ``/console``; ``clinical-mlops console`` runs
it alone. See docs/CONSOLE.md.
"""

from clinical_mlops.console.app import close_console, create_console_app, standalone_app

__all__ = ["close_console", "create_console_app", "standalone_app"]
