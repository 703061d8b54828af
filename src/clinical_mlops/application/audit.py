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
from dataclasses import dataclass, field
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
    "ProvenanceCheck",
    "check_provenance",
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

    With ``out`` the checkpoint JSON is also written there, to hand to an auditor. The
    result also carries the checkpoint as a C2SP signed note (``note``), the vkey a witness
    pins for this ledger (``vkey``) and what each configured witness answered
    (``witnesses``); a witness refusing or unreachable never fails the checkpoint.
    """
    from clinical_mlops.application.witness import ledger_vkey

    ledger = services.ledger
    made = ledger.checkpoint(witness="no")
    checkpoint = made.to_json()
    if out is not None:
        out.write_text(json.dumps(checkpoint, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    checkpoint["note"] = ledger.checkpoint_note(made)
    checkpoint["vkey"] = ledger_vkey(ledger)
    checkpoint["witnesses"] = ledger.offer_to_witnesses()
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


# -- a FHIR Provenance against the ledger ---------------------------------------------------
@dataclass(frozen=True)
class ProvenanceCheck:
    """What checking one Provenance against the ledger found; ``ok`` when nothing differs.

    ``checks`` lists (what, expected from the ledger, found in the Provenance, agrees)
    for each item an auditor compares; ``mismatches`` names each one that differs.
    """

    seq: int
    origin: str
    checks: list[tuple[str, str, str, bool]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(agrees for *_, agrees in self.checks)

    @property
    def mismatches(self) -> list[str]:
        return [
            f"{what}: the ledger has {expected!r}, the Provenance says {found!r}"
            for what, expected, found, agrees in self.checks
            if not agrees
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seq": self.seq,
            "origin": self.origin,
            "checks": [
                {"what": w, "ledger": e, "provenance": f, "agrees": a} for w, e, f, a in self.checks
            ],
            "mismatches": self.mismatches,
        }


def _provenance_of(document: Any, source: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Return (the Provenance, the Bundle it came in or None); DocumentInvalid otherwise."""
    from clinical_mlops.errors import DocumentInvalid

    def bad(where: str, what: str) -> DocumentInvalid:
        return DocumentInvalid(source, "FHIR Provenance (or Bundle holding one)", [(where, what)])

    if not isinstance(document, dict):
        raise bad("(root)", "expected a JSON object")
    kind = document.get("resourceType")
    if kind == "Provenance":
        return document, None
    if kind != "Bundle":
        raise bad("resourceType", f"expected Provenance or Bundle, got {kind!r}")
    entries = document.get("entry")
    if not isinstance(entries, list):
        raise bad("entry", "expected a list of entries")
    found = [
        e["resource"]
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == "Provenance"
    ]
    if len(found) != 1:
        raise bad("entry", f"expected exactly one Provenance, found {len(found)}")
    return found[0], document


def _field(data: Any, path: str, source: str) -> Any:
    from clinical_mlops.errors import DocumentInvalid

    node = data
    for part in path.split("."):
        key: int | str = int(part) if part.isdigit() else part
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            raise DocumentInvalid(
                source, "FHIR Provenance (or Bundle holding one)", [(path, "missing")]
            ) from None
    return node


def check_provenance(services: Services, document: Any, *, source: str) -> ProvenanceCheck:
    """Return how a FHIR Provenance of a prediction agrees with the workspace's ledger.

    It names the audit record (``<ledger origin>/<seq>`` with the entry's leaf hash),
    the release (contained Device: release, model version, bundle SHA-256) and the
    target (the RiskAssessment ``pred-<seq>``). Each is compared with the ledger: the
    record exists in this ledger and is an inference record, its stored leaf hash
    recomputes from the entry and equals the Provenance's, the release, model version
    and bundle hash are the record's (and the registry's for that release), and the
    target is the record's RiskAssessment (and, in a Bundle, the one it holds). A
    document that is not a Provenance (or a Bundle holding one) or lacks these
    elements raises ``DocumentInvalid`` naming the element.
    """
    from clinical_mlops.errors import DocumentInvalid, EntryNotFound, ReleaseNotFound
    from clinical_mlops.ledger.entries import body_bytes, leaf_bytes
    from clinical_mlops.ledger.merkle import leaf_hash
    from clinical_mlops.serving.fhir import (
        AUDIT_ENTRY_SYSTEM,
        BUNDLE_SHA256_SYSTEM,
        ENTRY_HASH_EXTENSION,
        RELEASE_SYSTEM,
    )

    prov, bundle = _provenance_of(document, source)
    what = "FHIR Provenance (or Bundle holding one)"
    entities = prov.get("entity") or []
    audit = next(
        (
            (i, e)
            for i, e in enumerate(entities)
            if isinstance(e, dict)
            and isinstance(e.get("what"), dict)
            and (e["what"].get("identifier") or {}).get("system") == AUDIT_ENTRY_SYSTEM
        ),
        None,
    )
    if audit is None:
        raise DocumentInvalid(
            source, what, [("Provenance.entity", f"no entity names an {AUDIT_ENTRY_SYSTEM} record")]
        )
    at, entity = audit
    named = str(entity["what"]["identifier"].get("value", ""))
    origin, _, seq_text = named.rpartition("/")
    if not origin or not seq_text.isdigit():
        raise DocumentInvalid(
            source,
            what,
            [(f"Provenance.entity.{at}.what.identifier.value", "expected <ledger origin>/<seq>")],
        )
    seq = int(seq_text)
    claimed_hash = next(
        (
            str(x.get("valueString"))
            for x in entity.get("extension") or []
            if isinstance(x, dict) and x.get("url") == ENTRY_HASH_EXTENSION
        ),
        None,
    )
    if claimed_hash is None:
        raise DocumentInvalid(
            source,
            what,
            [(f"Provenance.entity.{at}.extension", f"no {ENTRY_HASH_EXTENSION} extension")],
        )
    devices = [r for r in prov.get("contained") or [] if isinstance(r, dict)]
    agent_ref = str(_field(prov, "agent.0.who.reference", source))
    device = next((d for d in devices if f"#{d.get('id')}" == agent_ref), None)
    if device is None or device.get("resourceType") != "Device":
        raise DocumentInvalid(
            source, what, [("Provenance.agent.0.who", "expected a reference to a contained Device")]
        )
    idents = {
        i.get("system"): str(i.get("value"))
        for i in device.get("identifier") or []
        if isinstance(i, dict)
    }
    versions = [str(v.get("value")) for v in device.get("version") or [] if isinstance(v, dict)]
    targets = [t for t in prov.get("target") or [] if isinstance(t, dict)]
    if not targets:
        raise DocumentInvalid(source, what, [("Provenance.target", "missing")])

    result = ProvenanceCheck(seq=seq, origin=origin)
    checks = result.checks
    ledger = services.ledger
    checks.append(("ledger origin", ledger.origin, origin, ledger.origin == origin))
    if ledger.origin != origin:
        return result
    try:
        entry = ledger.entry(seq)
    except EntryNotFound:
        checks.append(("audit record", f"no entry {seq}", f"entry {seq}", False))
        return result
    recomputed = leaf_hash(
        leaf_bytes(
            body_bytes(entry.body_fields()), sig_key_id=entry.sig_key_id, signature=entry.signature
        )
    ).hex()
    checks.append(("audit record type", "inference", entry.type, entry.type == "inference"))
    checks.append(
        (
            "entry hash (recomputed from the entry)",
            recomputed,
            entry.leaf_hash,
            recomputed == entry.leaf_hash,
        )
    )
    checks.append(("entry hash", entry.leaf_hash, claimed_hash, entry.leaf_hash == claimed_hash))
    view = ledger.read(seq)
    payload = view.payload or {}
    if view.status != "ok":
        checks.append(("inference payload", "readable", view.status, False))
    else:
        for label, key, found in (
            ("release", "release", idents.get(RELEASE_SYSTEM, "")),
            ("bundle SHA-256", "bundle_sha256", idents.get(BUNDLE_SHA256_SYSTEM, "")),
            ("model version", "model_version", versions[0] if versions else ""),
        ):
            expected = str(payload.get(key, ""))
            checks.append((label, expected, found, expected == found))
        release = str(payload.get("release", ""))
        try:
            registered = services.registry.get(release) if release else None
        except ReleaseNotFound:
            registered = None
        if registered is not None:
            checks.append(
                (
                    "bundle SHA-256 in the registry",
                    registered.bundle_sha256,
                    idents.get(BUNDLE_SHA256_SYSTEM, ""),
                    registered.bundle_sha256 == idents.get(BUNDLE_SHA256_SYSTEM, ""),
                )
            )
    expected_target = f"RiskAssessment/pred-{seq}"
    found_target = str(targets[0].get("reference", ""))
    checks.append(("target", expected_target, found_target, found_target == expected_target))
    if bundle is not None:
        held = [
            e["resource"]
            for e in bundle.get("entry") or []
            if isinstance(e, dict)
            and isinstance(e.get("resource"), dict)
            and f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}" == found_target
        ]
        seqs = [
            str(i.get("value"))
            for r in held
            for i in r.get("identifier") or []
            if isinstance(i, dict) and i.get("system") == "urn:clinical-mlops:audit-seq"
        ]
        checks.append(
            (
                "target in the Bundle (its audit seq)",
                str(seq),
                ",".join(seqs) or "absent",
                seqs == [str(seq)],
            )
        )
    return result
