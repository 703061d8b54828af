"""One router per page of the console; each route parses the form and calls the library."""

from clinical_mlops.console.pages import (
    alerts,
    audit,
    cases,
    evidence,
    incidents,
    models,
    releases,
    reviews,
    signin,
)

ROUTERS = [
    signin.router,
    cases.router,
    alerts.router,
    releases.router,
    evidence.router,
    models.router,
    reviews.router,
    incidents.router,
    audit.router,
]

__all__ = ["ROUTERS"]
