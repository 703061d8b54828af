"""Standard evidence documents of a release (R-I7): each field points at its evidence.

``FORMATS`` maps a format name to the function building its :class:`Document` from
the :class:`ReleaseFacts` of a release, in the order the documents are listed:
CHAI Applied Model Card, ONC HTI-1 source attributes, TRIPOD+AI, EU AI Act Annex IV,
the Art. 72 post-market monitoring plan and the FDA PCCP. A format registers itself
here when its module exists; :func:`build_documents` builds the ones asked for and
refuses a name that is not registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from clinical_mlops.errors import ValueInvalid
from clinical_mlops.evidence.facts import ReleaseFacts
from clinical_mlops.evidence.fields import Document

__all__ = ["ALL_FORMATS", "FORMATS", "build_documents", "resolve_formats"]

#: every format the evidence command knows of, in document order (some may not be built yet)
ALL_FORMATS = ("chai", "hti1", "tripod-ai", "annex-iv", "pmm-plan", "pccp")

#: the formats that can be built, in document order
FORMATS: dict[str, Callable[[ReleaseFacts], Document]] = {}


def _register() -> None:
    """Fill :data:`FORMATS` with the builders whose modules exist, in :data:`ALL_FORMATS` order."""
    import importlib

    modules = {
        "chai": ("clinical_mlops.evidence.chai", "build_chai"),
        "hti1": ("clinical_mlops.evidence.hti1", "build_hti1"),
        "tripod-ai": ("clinical_mlops.evidence.tripod", "build_tripod"),
        "annex-iv": ("clinical_mlops.evidence.annex_iv", "build_annex_iv"),
        "pmm-plan": ("clinical_mlops.evidence.pmm_plan", "build_pmm_plan"),
        "pccp": ("clinical_mlops.evidence.pccp", "build_pccp"),
    }
    for name in ALL_FORMATS:
        module, function = modules[name]
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        FORMATS[name] = getattr(loaded, function)


def resolve_formats(names: Iterable[str]) -> list[str]:
    """Return the formats ``names`` asks for (``all``: every registered one), in document order.

    Raises ``ValueInvalid`` naming a format that does not exist or is not built yet.
    """
    wanted = list(names)
    if not wanted or "all" in wanted:
        return list(FORMATS)
    unknown = [n for n in wanted if n not in ALL_FORMATS]
    if unknown:
        raise ValueInvalid(f"format: {unknown[0]!r} is not one of {', '.join(ALL_FORMATS)}, all")
    absent = [n for n in wanted if n not in FORMATS]
    if absent:
        raise ValueInvalid(
            f"format: {absent[0]!r} is not available in this version (available: "
            f"{', '.join(FORMATS) or 'none'})"
        )
    return [n for n in FORMATS if n in wanted]


def build_documents(facts: ReleaseFacts, formats: Iterable[str]) -> list[Document]:
    """Return the documents of ``formats`` (see :func:`resolve_formats`) built from ``facts``."""
    return [FORMATS[name](facts) for name in resolve_formats(formats)]


_register()
