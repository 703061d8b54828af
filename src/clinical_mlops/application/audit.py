"""Audit use cases: export, checkpoint, index, purge and rotate keys; verify an exported bundle.

Verifying a bundle checks it against the keys its verifier trusts.

A bundle carries its own public keys, but a bundle re-signed with keys of the forger's
making is as self-consistent as a genuine one: its own keys prove nothing about who
wrote it. So every front end (``clinical-mlops audit verify --bundle``, the console's
bundle check) trusts the same keys, decided here:

1. keys the auditor pinned, obtained out of band from the ledger's owner, when given;
2. otherwise the signing keys of the ledger at hand (the workspace's, rotated-out keys
   included): a bundle checked in a workspace must come from that workspace's ledger;
3. otherwise none: the bundle fails, saying how to pin its keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from clinical_mlops.ledger.verify import Problem, VerifyReport
from clinical_mlops.privacy.keys import KeyProvider, provider_for_workspace, public_key_hex
from clinical_mlops.workspace import Workspace

if TYPE_CHECKING:
    from clinical_mlops.application.services import Services
    from clinical_mlops.ledger.claims import ClaimsIndex
    from clinical_mlops.ledger.retention import PurgeResult

__all__ = [
    "export_audit_bundle",
    "index_unique_keys",
    "make_checkpoint",
    "purge_payloads",
    "rotate_key",
    "trusted_keys",
    "verify_bundle",
    "workspace_keys",
]

NOTHING_TRUSTED = (
    "no public key is trusted: pin the ledger's keys (KEY_ID=HEX, obtained from the "
    "ledger's owner out of band) or check the bundle in the workspace it was exported from; "
    "the keys inside a bundle only show that it is self-consistent"
)


def workspace_keys(root: str | Path | None = None) -> KeyProvider:
    """Return the key provider the ledger of the workspace at ``root`` is signed with.

    ``root`` defaults as every command's ``--workspace`` does (``$CLINICAL_MLOPS_HOME``,
    else ``./.clinical-mlops``). Reading it writes nothing, not even the folder: a
    workspace without a keyring has no keys to trust.
    """
    return provider_for_workspace(Workspace.locate(root))


def trusted_keys(
    *, pinned: Mapping[str, str] | None = None, ledger_keys: KeyProvider | None = None
) -> dict[str, str]:
    """Return key id -> public key (hex) of the keys a bundle's signatures must be made with.

    Keys pinned by the auditor win; without them, the signing keys of the ledger at hand;
    with neither, no key (and every bundle fails).
    """
    if pinned:
        return {kid: value.strip().lower() for kid, value in pinned.items()}
    if ledger_keys is None:
        return {}
    return {kid: public_key_hex(key) for kid, key in ledger_keys.public_keys().items()}


def verify_bundle(
    bundle: Mapping[str, Any],
    *,
    pinned: Mapping[str, str] | None = None,
    ledger_keys: KeyProvider | None = None,
) -> VerifyReport:
    """Return the verification of an exported audit bundle against the trusted keys.

    Leaves, inclusion proofs, the checkpoint's and every entry's signature and any
    consistency proof are checked; a bundle any of whose keys is not trusted (see the
    module docstring) fails with a ``key`` problem naming the key. A malformed bundle
    raises :class:`~clinical_mlops.errors.BundleInvalid` naming the field.
    """
    from clinical_mlops.ledger.export import verify_bundle as _verify

    trusted = trusted_keys(pinned=pinned, ledger_keys=ledger_keys)
    report = _verify(bundle, pinned_keys=trusted or None)
    if not trusted:
        report.problems.insert(0, Problem("key", None, NOTHING_TRUSTED))
    return report


# -- acts on the ledger ---------------------------------------------------------------------
def export_audit_bundle(
    services: Services,
    out: Path,
    *,
    start: int = 0,
    end: int | None = None,
    since: int | None = None,
) -> dict[str, Any]:
    """Return the exported bundle (entries, proofs, a fresh checkpoint, public keys), written to ``out``.

    ``since`` adds a consistency proof from an earlier checkpoint of that size. The file
    is the auditor's copy; the ledger gains the checkpoint the bundle is proved against.
    """
    from clinical_mlops.ledger.export import export_bundle, write_bundle

    bundle = export_bundle(services.ledger, start=start, end=end, previous_size=since)
    write_bundle(bundle, out)
    return bundle


def make_checkpoint(services: Services, out: Path | None = None) -> dict[str, Any]:
    """Return the signed checkpoint of the ledger as it stands now (made, or the latest).

    With ``out`` the checkpoint JSON is also written there, to hand to an auditor.
    """
    checkpoint = services.ledger.checkpoint().to_json()
    if out is not None:
        out.write_text(json.dumps(checkpoint, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return checkpoint


def index_unique_keys(services: Services) -> ClaimsIndex:
    """Return what indexing the ledger's unique keys found (built now, or already built)."""
    return services.ledger.ensure_claims()


def purge_payloads(services: Services, *, days: Mapping[str, float], actor: str) -> PurgeResult:
    """Return the audited purge of payloads past their retention (``days`` per entry type)."""
    from clinical_mlops.ledger.retention import RetentionPolicy, purge_expired

    return purge_expired(services.ledger, policy=RetentionPolicy.from_days(dict(days)), actor=actor)


def rotate_key(
    services: Services, *, purpose: Literal["wrap", "sign"], actor: str
) -> dict[str, Any]:
    """Return the rotation's ledger seq and the new key's public record.

    New writes use the new key; old keys keep decrypting and verifying.
    """
    receipt = services.ledger.rotate_key(purpose=purpose, actor=actor)
    entry = services.ledger.read(receipt.seq).to_json()
    return {"seq": receipt.seq, **entry["public"]}
