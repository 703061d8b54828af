"""Typed JSON documents: one pydantic model per document, shared by its writer and readers.

A :class:`Document` is frozen and refuses unknown keys, so a key renamed on one
side fails when the file is loaded — :class:`~clinical_mlops.errors.DocumentInvalid`
names the file and every field — not later, where a reader looks the key up.
:meth:`Document.to_json` returns exactly the dict that was validated (fields left
unset stay absent, integers stay integers), so serialising a loaded document gives
the bytes it was read from and hashed documents keep their hashes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, ValidationError

from clinical_mlops.errors import DocumentInvalid

__all__ = ["UNION_CASE", "Document", "Number", "Section", "Value"]

#: Prefix of the tag naming which form of a tagged union a section took; a problem's field
#: path leaves it out, so it reads as the document's own keys (``baseline.auroc``).
UNION_CASE = "case:"

# A JSON number kept as written: int stays int and float stays float (no 5 -> 5.0).
Number: TypeAlias = StrictInt | StrictFloat
# A figure that may be unmeasurable: null (NaN), or a reason such as "insufficient data (n=12)".
Value: TypeAlias = StrictInt | StrictFloat | str | None


class Section(BaseModel):
    """A part of a document: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    def to_json(self) -> dict[str, Any]:
        """Return the JSON-ready dict this was built from (unset fields absent, numbers as given)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Document(Section):
    """A whole JSON document with a loader that names the file and field on any mismatch."""

    @classmethod
    def from_json(cls, data: Any, *, source: str) -> Self:
        """Return the document validated from parsed JSON; ``DocumentInvalid`` names ``source``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = [
                (
                    ".".join(
                        str(part) for part in err["loc"] if not str(part).startswith(UNION_CASE)
                    )
                    or "(root)",
                    err["msg"],
                )
                for err in exc.errors()
            ]
            raise DocumentInvalid(source, cls.__name__, problems) from None

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Return the document read from ``path``; ``DocumentInvalid`` if unreadable or invalid."""
        source = str(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DocumentInvalid(source, cls.__name__, [("(file)", "no such file")]) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise DocumentInvalid(
                source, cls.__name__, [("(file)", f"not valid JSON ({exc})")]
            ) from None
        return cls.from_json(data, source=source)
