"""Markdown and HTML pages of the framework documents (TRIPOD+AI, Annex IV, PMM plan, PCCP).

A page is the document's fields in :class:`Section` order, each row the field's label,
its value (or who must complete it), its status where the framework judges one, and
the pointers to its evidence, plus optional tables (the monitoring rules). Both
outputs escape every value: a task description or a person's name holding
``<script>`` is shown as text, in the HTML (Jinja autoescape) and in the Markdown
(``&``, ``<``, ``>`` as entities, table pipes and line breaks neutralised), so a
viewer that renders Markdown's inline HTML runs nothing from a release. The HTML is
one self-contained file: CSS inline, no script, no external resource.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from clinical_mlops.evidence.fields import Document, Field

__all__ = ["Page", "Section", "Table", "md_text", "render_page"]


@dataclass(frozen=True)
class Table:
    """A table shown under a section: column heads and rows of plain text cells."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str | None = None


@dataclass(frozen=True)
class Section:
    """One part of a framework document: its heading, what it covers, its fields' keys."""

    id: str
    title: str
    keys: tuple[str, ...]
    intro: str | None = None
    tables: tuple[Table, ...] = ()


@dataclass(frozen=True)
class Page:
    """What a framework page shows besides its fields: the framework, sections, a status."""

    framework: str
    sections: tuple[Section, ...]
    status: Callable[[Field], str] | None = None
    preamble: tuple[str, ...] = field(default_factory=tuple)


_ENVS: dict[str, Environment] = {}


def _env(kind: str) -> Environment:
    """Return the Jinja environment of ``kind``: ``html`` autoescapes, ``md`` escapes every
    expression through :func:`md_text` (so no value can reach the page unescaped)."""
    if kind not in _ENVS:
        _ENVS[kind] = Environment(
            loader=PackageLoader("clinical_mlops.evidence", "templates"),
            # Markdown is not HTML-autoescaped: md_text escapes every expression instead
            autoescape=select_autoescape(["html", "html.j2"]) if kind == "html" else False,  # noqa: S701
            finalize=md_text if kind == "md" else None,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
    return _ENVS[kind]


def md_text(value: Any) -> str:
    """Return ``value`` as one line of Markdown text: HTML escaped, pipes and breaks neutralised."""
    text = html.escape(str(value), quote=False)
    text = re.sub(r"\s*[\r\n]+\s*", " ", text)
    # Markdown syntax characters a value could use to restyle or link the page
    return re.sub(r"([\\`*\[\]|])", r"\\\1", text)


def _shown(value: Any) -> Any:
    """Return a value for the HTML template: nested lists and mappings kept, floats rounded."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return {str(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    return "—" if value is None else str(value)


def _plain(value: Any) -> str:
    """Return a value as one line of text: mappings as ``k: v; ...``, lists comma-joined."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _rows(doc: Document, keys: Sequence[str], page: Page) -> list[dict[str, Any]]:
    by_key = {f.key: f for f in doc.fields}
    out = []
    for key in keys:
        f = by_key[key]
        status = page.status(f) if page.status else None
        note = f.note
        if status and note and note.startswith(status):
            # the status column already says it; the note keeps only the reason
            note = note[len(status) :].lstrip(": ") or None
        out.append(
            {
                "key": f.key,
                "label": f.label,
                "missing": f.missing,
                "value": None if f.missing else _shown(f.value),
                "text": f.shown() if f.missing else _plain(f.value),
                "owner": f.owner,
                "note": note,
                "status": status,
                "pointers": [p.text() for p in f.pointers],
            }
        )
    return out


def render_page(doc: Document, page: Page) -> tuple[bytes, bytes]:
    """Return (Markdown, HTML) of ``doc`` laid out by ``page``; every field in exactly one section.

    ``KeyError`` when a section names a field the document lacks, ``ValueError`` when a
    field is in no section or in two: a page must show every field once.
    """
    placed = [k for s in page.sections for k in s.keys]
    keys = [f.key for f in doc.fields]
    if sorted(placed) != sorted(keys):
        unplaced = sorted(set(keys) - set(placed))
        twice = sorted({k for k in placed if placed.count(k) > 1})
        raise ValueError(
            f"{doc.format}: every field must be in one section (unplaced {unplaced}, "
            f"twice {twice}, unknown {sorted(set(placed) - set(keys))})"
        )
    context = {
        "doc": doc,
        "page": page,
        "sections": [
            {
                "id": s.id,
                "title": s.title,
                "intro": s.intro,
                "tables": s.tables,
                "rows": _rows(doc, s.keys, page),
            }
            for s in page.sections
        ],
        "n_missing": len(doc.missing()),
        "owners": sorted({f.owner for f in doc.missing() if f.owner}),
    }
    md = _env("md").get_template("framework.md.j2").render(**context)
    page_html = _env("html").get_template("framework.html.j2").render(**context)
    return md.encode("utf-8"), page_html.encode("utf-8")
