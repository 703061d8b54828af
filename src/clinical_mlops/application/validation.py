"""External validation use cases (R-V1): validate a release on other data, list the evidence.

The command line (``clinical-mlops validate``), ``registry show`` and the console's
release page call these functions. Recording an external validation needs a person in
the engineering or clinical role (``RoleRequired``, recorded as a
``governance_refused`` event); a refusal of the data themselves
(``ExternalValidationRefused``: another task or feature contract, stays seen in
development, an overlapping site and period, no events, a repeat) names the option and
records nothing (:mod:`clinical_mlops.registry.external`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from clinical_mlops.governance.board import Governance
from clinical_mlops.vocabulary import Role

if TYPE_CHECKING:
    from clinical_mlops.registry.external import ExternalValidation

__all__ = [
    "VALIDATING_ROLES",
    "external_validation_report",
    "external_validations",
    "validate_externally",
]

#: the roles whose holders may record an external validation of a release
VALIDATING_ROLES: tuple[Role, ...] = (Role.ENGINEERING, Role.CLINICAL)


def validate_externally(
    governance: Governance,
    version: str,
    *,
    on: str,
    sites: Sequence[str] | None = None,
    actor: str,
    role: str | None = None,
) -> ExternalValidation:
    """Return the external validation of ``version`` on snapshot ``on`` (``sites``), recorded.

    The report (same schema as development, with the comparison section) is stored
    under ``artifacts/validations/``, with a registry row and an
    ``external_validation_recorded`` ledger entry.
    """
    from clinical_mlops.registry.external import validate_on

    with governance.governed(action="external validation", actor=actor, version=version):
        governance.require(
            actor,
            allowed=VALIDATING_ROLES,
            action=f"record an external validation of {version}",
            role=role,
        )
    return validate_on(governance.registry, version, on=on, sites=sites, actor=actor)


def external_validations(governance: Governance, version: str) -> list[ExternalValidation]:
    """Return the external validations recorded for ``version``, oldest first."""
    from clinical_mlops.registry.external import external_validations as listed

    return listed(governance.registry, version)


def external_validation_report(governance: Governance, version: str, validation_id: str) -> str:
    """Return the HTML report of external validation ``validation_id`` of ``version``.

    The file is checked against the SHA-256 recorded with the validation (and in the
    ledger): a report changed since is refused (``WorkspaceError``), never shown.
    """
    from clinical_mlops.errors import ReleaseNotFound, WorkspaceError
    from clinical_mlops.hashing import sha256_file

    found = next(
        (v for v in external_validations(governance, version) if v.id == validation_id), None
    )
    if found is None:
        raise ReleaseNotFound(f"{version} has no external validation {validation_id!r}")
    html = found.path / "report.html"
    if not html.is_file() or sha256_file(html) != found.html_sha256:
        raise WorkspaceError(
            f"external validation {validation_id} of {version}: report.html is missing or does "
            "not match the SHA-256 recorded with it; refusing to show it"
        )
    return html.read_text(encoding="utf-8")
