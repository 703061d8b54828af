"""Release bundles (R-L1): the signed, auditable unit that is registered, gated and served.

A bundle is a flat folder of data files — no pickles, nothing executable::

    model.json preprocess.json calibrator.json conformal.json escalation_reference.json
    explanation.json lineage.json report.json report.html model_card.md model_card.html model_card.json
    feature_schema.json snapshot_manifest.json reference_profile.json task_spec.json
    deployment.json release.json
    MANIFEST.json     SHA-256 of every file above
    SIGNATURE.json    Ed25519 signature over the manifest hash, the workspace id and
                      the validity period, by a signing key from the key provider

The bundle's identity is the SHA-256 of ``MANIFEST.json``. :func:`load_bundle`
verifies, in order: manifest and signature present and well formed; exactly the
listed files present; every file's hash; the workspace the bundle was signed for;
the signing key (held by this workspace's key provider); the signature; the
validity period. Any failure raises :class:`BundleSignatureInvalid` (or its
:class:`BundleExpired` / :class:`BundleForeign` children) naming the file or rule,
and nothing of the bundle is used.

The typed documents (``report.json``, ``reference_profile.json``) are checked against
their models when a bundle is built or imported and whenever they are read
(:meth:`Bundle.report`, :meth:`Bundle.profile`): a mismatch raises
:class:`~clinical_mlops.errors.DocumentInvalid` naming the file and the field.

The evidence is bound to its release: ``report.json``, ``report.html`` and the model
card describe the release's own operating threshold and escalation policy. When both
are those the training report was computed at, the training copies are used; otherwise
the validation is recomputed from the model folder and its snapshot (the input
training evaluated, ``evaluation.inputs.stored_evaluation_input``) at the release's
threshold and policy. A bundle whose evidence states another threshold or policy than
its ``deployment.json`` is refused before signing (:func:`evidence_problems`), and
gate 1 fails on one built elsewhere.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import tarfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature

from clinical_mlops.clock import Clock, SystemClock, utc_iso
from clinical_mlops.errors import BundleExpired, BundleForeign, BundleSignatureInvalid, ValueInvalid
from clinical_mlops.hashing import canonical_json, sha256_bytes, sha256_file
from clinical_mlops.privacy.keys import provider_for_workspace, public_key_hex
from clinical_mlops.tasks.spec import EscalationPolicy, TaskSpec, load_sealed_task
from clinical_mlops.workspace import Workspace

if TYPE_CHECKING:
    from clinical_mlops.evaluation.validation_report import ValidationReport
    from clinical_mlops.modeling.trained import TrainedModel
    from clinical_mlops.registry.profile import ReferenceProfile

__all__ = [
    "BUNDLE_FORMAT",
    "DEFAULT_VALIDITY",
    "Bundle",
    "build_bundle",
    "bundles_dir",
    "evidence_problems",
    "export_bundle",
    "import_bundle",
    "load_bundle",
    "workspace_id",
]

BUNDLE_FORMAT = "clinical-mlops/release-bundle/v1"
SIGNATURE_KIND = "clinical-mlops/bundle-signature/v1"
DEFAULT_VALIDITY = timedelta(days=730)
MANIFEST = "MANIFEST.json"
SIGNATURE = "SIGNATURE.json"
_COPIED = (
    "model.json",
    "preprocess.json",
    "calibrator.json",
    "conformal.json",
    "escalation_reference.json",
    "explanation.json",
    "lineage.json",
    "report.json",
    "report.html",
    "model_card.md",
    "model_card.html",
    "model_card.json",
)
#: the files that describe the release's threshold and policy: recomputed when they differ
_EVIDENCE = ("report.json", "report.html", "model_card.md", "model_card.html", "model_card.json")
#: how the model card states an operating threshold in words ("at threshold 0.4", "risk >= 0.4")
_STATED_THRESHOLD = re.compile(r"(?:\bthreshold|risk >=) (0?\.\d+)\b")
#: how a resolved escalation policy's statement begins (``ResolvedEscalation.statement``)
_POLICY_STATEMENT = "A case goes to clinician review when"


def workspace_id(workspace: Workspace) -> str:
    """Return the id of ``workspace``: the origin id of its audit ledger (created if absent)."""
    from clinical_mlops.ledger import Ledger

    with Ledger.open(workspace) as led:
        return led.origin


def bundles_dir(workspace: Workspace) -> Path:
    """Return ``artifacts/bundles`` of ``workspace`` (created if absent)."""
    path = workspace.bundles_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Bundle:
    """A verified release bundle on disk."""

    path: Path
    sha256: str
    manifest: dict[str, Any]
    signature: dict[str, Any]

    def read_json(self, name: str) -> dict[str, Any]:
        """Return the parsed JSON file ``name`` of the bundle."""
        return dict(json.loads((self.path / name).read_text(encoding="utf-8")))

    def report(self) -> ValidationReport:
        """Return the validation report; ``DocumentInvalid`` names the file and field if it differs."""
        from clinical_mlops.evaluation.validation_report import ValidationReport

        return ValidationReport.load(self.path / "report.json")

    def profile(self) -> ReferenceProfile:
        """Return the monitoring reference profile; ``DocumentInvalid`` if it does not match."""
        from clinical_mlops.registry.profile import ReferenceProfile

        return ReferenceProfile.load(self.path / "reference_profile.json")

    def has(self, name: str) -> bool:
        """Return whether the bundle holds a file ``name`` (bundles built before it may not)."""
        return (self.path / name).is_file()

    @property
    def release(self) -> dict[str, Any]:
        return self.read_json("release.json")

    @property
    def deployment(self) -> dict[str, Any]:
        return self.read_json("deployment.json")

    @property
    def task(self) -> str:
        return str(self.release["task"])

    @property
    def model_version(self) -> str:
        return str(self.release["model_version"])

    @property
    def threshold(self) -> float:
        return float(self.deployment["operating_threshold"])

    def model(self) -> TrainedModel:
        """Return the model in the bundle (JSON only; nothing is executed)."""
        from clinical_mlops.modeling.trained import TrainedModel  # the numerical stack, on use

        return TrainedModel.load(self.path)

    def spec(self) -> TaskSpec:
        """Return the task spec: the installed built-in, or the copy sealed in the bundle.

        Callers compare its hash with ``release.json``'s ``spec_sha256``; a task defined
        in a YAML file is read from the signed ``task_spec.json``.
        """
        return load_sealed_task(self.task, self.path / "task_spec.json")


def _feature_schema(spec: Any) -> dict[str, Any]:
    return {
        "format": "clinical-mlops/feature-schema/v1",
        "task": spec.name,
        "spec_sha256": spec.spec_hash(),
        "cohort_criteria_sha256": spec.criteria_hash(),
        "cohort": spec.cohort.model_dump(mode="json"),
        "label": spec.label.model_dump(mode="json"),
        "features": [
            {
                "name": f.name,
                "label": f.label,
                "kind": f.kind,
                "unit": f.shown_unit,
                "valid_range": list(f.valid_range) if f.valid_range else None,
                "categories": list(f.categories) if f.categories else None,
                "aggregation": f.aggregation,
                "status": f.status,
                "justification": f.justification,
            }
            for f in spec.features
        ],
    }


def _signing_message(signature: dict[str, Any]) -> bytes:
    return canonical_json(
        {
            "kind": SIGNATURE_KIND,
            "manifest_sha256": signature["manifest_sha256"],
            "workspace_id": signature["workspace_id"],
            "key_id": signature["key_id"],
            "signed_at": signature["signed_at"],
            "expires_at": signature["expires_at"],
        }
    )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []


def _operating_thresholds(value: Any) -> list[float]:
    """Return every number a document records under an ``operating_threshold`` key."""
    if isinstance(value, dict):
        own = value.get("operating_threshold")
        found = [float(own)] if isinstance(own, int | float) else []
        return found + [t for v in value.values() for t in _operating_thresholds(v)]
    if isinstance(value, list):
        return [t for v in value for t in _operating_thresholds(v)]
    return []


def evidence_problems(documents: dict[str, Any], deployment: dict[str, Any]) -> list[str]:
    """Return how ``report.json`` and ``model_card.json`` disagree with ``deployment`` ([]: agree).

    The report must be computed at the deployment's ``operating_threshold`` (its test
    and workload sections) and under its resolved ``escalation`` policy (the same
    document). The model card must state no other operating threshold (recorded under
    an ``operating_threshold`` key, or in its words: "threshold 0.4", "risk >= 0.4")
    and no other policy statement. ``documents`` maps file name to parsed JSON; a file
    absent from it is not checked. A deployment written before escalation policies
    (no ``escalation``) is checked on its threshold only.
    """
    threshold = float(deployment["operating_threshold"])
    policy = deployment.get("escalation")
    problems: list[str] = []

    def other(value: Any) -> bool:
        return not isinstance(value, int | float) or not math.isclose(
            float(value), threshold, rel_tol=0, abs_tol=1e-12
        )

    report = documents.get("report.json")
    if report is not None:
        for section in ("test", "workload"):
            stated = (report.get(section) or {}).get("threshold")
            if other(stated):
                problems.append(
                    f"report.json: {section}.threshold is {stated}, the release's operating "
                    f"threshold is {threshold:g}"
                )
        stated_policy = report.get("escalation")
        if policy is not None and canonical_json(stated_policy) != canonical_json(policy):
            if not isinstance(stated_policy, dict):
                problems.append(
                    "report.json: computed under no escalation policy, the release's is "
                    f"{policy.get('statement')!r}"
                )
            else:
                keys = sorted(set(stated_policy) | set(policy))
                differing = [
                    k for k in keys if k != "statement" and stated_policy.get(k) != policy.get(k)
                ] or ["statement"]
                problems += [
                    f"report.json: escalation.{k} is {stated_policy.get(k)!r}, the release's is "
                    f"{policy.get(k)!r}"
                    for k in differing
                ]
    card = documents.get("model_card.json")
    if card is not None:
        words = _strings(card)
        stated_numbers = _operating_thresholds(card) + [
            float(m) for text in words for m in _STATED_THRESHOLD.findall(text)
        ]
        differing = sorted({v for v in stated_numbers if other(v)})
        if differing:
            problems.append(
                f"model_card.json: states the operating threshold "
                f"{', '.join(f'{v:g}' for v in differing)}, the release's is {threshold:g}"
            )
        if policy is not None:
            statements = sorted({t for t in words if t.startswith(_POLICY_STATEMENT)})
            if any(t != policy.get("statement") for t in statements):
                problems.append(
                    f"model_card.json: states the escalation policy {statements[0]!r}, the "
                    f"release's is {policy.get('statement')!r}"
                )
    return problems


def _release_evidence(
    workspace: Workspace,
    source: Path,
    out: Path,
    *,
    spec: TaskSpec,
    threshold: float,
    declared: EscalationPolicy,
    resolved: Any,
) -> None:
    """Write the report and model card of the model in ``source`` at a release's threshold/policy.

    The evaluation input is rebuilt from the model folder and its snapshot exactly as
    a replay does, so at the training threshold and policy this gives the training
    report byte for byte. The card reads the operating threshold and the policy from
    the task spec it is given: here the spec as released (same task, the release's
    threshold and declared policy); the report keeps the task spec's hash.
    """
    from dataclasses import replace

    from clinical_mlops.evaluation.inputs import stored_evaluation_input
    from clinical_mlops.evaluation.model_card import write_model_card
    from clinical_mlops.evaluation.report import evaluate, write_report

    stored = stored_evaluation_input(workspace, source)
    report = evaluate(stored.input, n_boot=stored.n_boot, threshold=threshold, escalation=resolved)
    write_report(report, stored.input, out)
    as_released = spec.model_copy(
        update={
            "thresholds": spec.thresholds.model_copy(update={"operating": threshold}),
            "escalation": declared,
        }
    )
    write_model_card(report, replace(stored.input, spec=as_released), out)


def build_bundle(
    workspace: Workspace,
    *,
    model_version: str,
    author: str,
    threshold: float | None = None,
    escalation: EscalationPolicy | None = None,
    clock: Clock | None = None,
    validity: timedelta = DEFAULT_VALIDITY,
) -> Bundle:
    """Return the signed release bundle of ``model_version``, written under ``artifacts/bundles``.

    ``threshold`` overrides the task spec's operating threshold (a clinical-impacting
    change when it differs from the approved release); ``escalation`` overrides the task
    spec's escalation policy the same way. The policy is resolved at the release's
    threshold on the model's held-out calibration stays and recorded in
    ``deployment.json`` (``modeling.escalation``). The report and model card are
    those of training when its threshold and policy are the release's, and are
    recomputed at the release's otherwise (a threshold or policy change gets new
    evidence); evidence that still differs from ``deployment.json`` is refused before
    signing (:class:`ValueInvalid` naming the file and the value). A model recalibrated
    at a site (lineage ``recalibration``) gets a ``deployment.json`` naming its ``site``
    and ``scope``, and a reference profile on that site's held-out stays. The signing key
    is the workspace key provider's active signing key; the bundle is bound to this
    workspace's id and valid for ``validity`` from now.
    """
    from clinical_mlops.evaluation.inputs import evaluated_stays
    from clinical_mlops.evaluation.validation_report import ValidationReport
    from clinical_mlops.features.snapshot import open_snapshot  # the numerical stack, on use
    from clinical_mlops.modeling.escalation import resolve
    from clinical_mlops.modeling.trained import TrainedModel, model_folder
    from clinical_mlops.registry.profile import reference_profile

    clock = clock or SystemClock()
    source = model_folder(workspace, model_version)
    # The training report is checked as written: a key renamed since fails here, not at a gate.
    ValidationReport.load(source / "report.json")
    trained_report = json.loads((source / "report.json").read_text(encoding="utf-8"))
    lineage = json.loads((source / "lineage.json").read_text(encoding="utf-8"))
    snapshot = open_snapshot(workspace, lineage["snapshot"]["id"])
    spec = snapshot.spec()
    model = TrainedModel.load(source)
    operating = float(spec.thresholds.operating if threshold is None else threshold)
    if not 0.0 < operating < 1.0:
        raise ValueInvalid(f"threshold: must lie strictly between 0 and 1, got {operating}")
    if model.escalation_reference is None:
        raise ValueInvalid(
            f"model {model.version}: it keeps no escalation reference (trained before escalation "
            "policies); retrain it to build a release"
        )
    declared = spec.escalation if escalation is None else escalation
    policy = resolve(declared, threshold=operating, reference=model.escalation_reference)
    ws_id = workspace_id(workspace)
    now = clock.now()
    recalibration = lineage.get("recalibration")
    profile = (
        reference_profile(model, snapshot)
        if not recalibration
        else reference_profile(
            model,
            snapshot,
            stays=evaluated_stays(snapshot, lineage),
            population=_site_population(recalibration),
        )
    )
    documents: dict[str, Any] = {
        "feature_schema.json": _feature_schema(spec),
        "snapshot_manifest.json": snapshot.manifest | {"id": snapshot.id},
        "reference_profile.json": profile.to_json(),
        "task_spec.json": spec.model_dump(mode="json"),
        "deployment.json": {
            "format": "clinical-mlops/deployment/v1",
            "task": spec.name,
            "model_version": model.version,
            "operating_threshold": operating,
            "conformal_alpha": spec.thresholds.conformal_alpha,
            "escalation": policy.to_json(),
            "rollout_modes": ["shadow", "silent", "pilot", "full"],
            "initial_mode": "shadow",
            "intended_use": spec.intended_use.model_dump(mode="json"),
            "non_intended_uses": list(spec.non_intended_uses),
        }
        | _site_scope(recalibration),
        "release.json": {
            "format": BUNDLE_FORMAT,
            "task": spec.name,
            "task_version": spec.version,
            "spec_sha256": spec.spec_hash(),
            "model_version": model.version,
            "model_sha256": model.model_sha256,
            "snapshot_id": snapshot.id,
            "author": author,
            "created": utc_iso(now),
            "workspace_id": ws_id,
            "acceptance": spec.acceptance.model_dump(mode="json"),
            "mlflow_run_id": (lineage.get("tracking") or {}).get("mlflow_run_id"),
        },
    }
    deployment = json.loads(canonical_json(documents["deployment.json"]))
    recompute = _needs_evidence(trained_report, deployment)
    keys = provider_for_workspace(workspace)
    key_id, signer = keys.signer()
    public = keys.public_keys()[key_id]
    with workspace.staging_dir(bundles_dir(workspace)) as stage:
        for name in _COPIED:
            if not (recompute and name in _EVIDENCE):
                shutil.copyfile(source / name, stage / name)
        if recompute:
            _release_evidence(
                workspace,
                source,
                stage,
                spec=spec,
                threshold=operating,
                declared=declared,
                resolved=policy,
            )
        for name, doc in documents.items():
            (stage / name).write_bytes(canonical_json(doc))
        problems = evidence_problems(
            {
                name: json.loads((stage / name).read_text(encoding="utf-8"))
                for name in ("report.json", "model_card.json")
            },
            deployment,
        )
        if problems:
            raise ValueInvalid(
                f"bundle of {model.version}: refusing to sign evidence that does not describe "
                f"this release: {'; '.join(problems)}"
            )
        files = {p.name: sha256_file(p) for p in sorted(stage.iterdir())}
        manifest = {"format": BUNDLE_FORMAT, "files": files}
        manifest_bytes = canonical_json(manifest)
        (stage / MANIFEST).write_bytes(manifest_bytes)
        bundle_sha = sha256_bytes(manifest_bytes)
        signature: dict[str, Any] = {
            "algorithm": "Ed25519",
            "manifest_sha256": bundle_sha,
            "workspace_id": ws_id,
            "key_id": key_id,
            "public_key": public_key_hex(public),
            "signed_at": utc_iso(now),
            "expires_at": utc_iso(now + validity),
        }
        signature["signature"] = signer.sign(_signing_message(signature)).hex()
        (stage / SIGNATURE).write_bytes(canonical_json(signature))
        final = bundles_dir(workspace) / f"{spec.name}-{bundle_sha[:12]}"
        workspace.publish(stage, final)
    return load_bundle(workspace, final, clock=clock)


def _site_population(recalibration: dict[str, Any]) -> str:
    """Return the reference population of a locally recalibrated model, in words."""
    years = recalibration["split"]["held_out_years"]
    return f"held-out stays of site {recalibration['site']} {years[0]}-{years[1]}"


def _site_scope(recalibration: dict[str, Any] | None) -> dict[str, Any]:
    """Return the deployment fields scoping a locally recalibrated release to its site ({}: none)."""
    if not recalibration:
        return {}
    site = str(recalibration["site"])
    return {
        "site": site,
        "scope": (
            f"Recalibrated for site {site}: its probabilities, uncertainty sets and review band "
            f"were fitted on that site's stays; roll it out at site {site} only."
        ),
    }


def _needs_evidence(trained_report: dict[str, Any], deployment: dict[str, Any]) -> bool:
    """Return whether the training report describes another threshold or policy than the release."""
    return bool(evidence_problems({"report.json": trained_report}, deployment))


def _parse(path: Path, name: str) -> dict[str, Any]:
    try:
        value = json.loads((path / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleSignatureInvalid(f"bundle {path.name}: {name} is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleSignatureInvalid(
            f"bundle {path.name}: {name} is not valid JSON ({exc})"
        ) from None
    if not isinstance(value, dict):
        raise BundleSignatureInvalid(f"bundle {path.name}: {name} must be a JSON object")
    return value


def _parse_time(value: Any, *, where: str) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BundleSignatureInvalid(f"{where}: not an ISO-8601 time: {value!r}") from None


def load_bundle(workspace: Workspace, path: str | Path, *, clock: Clock | None = None) -> Bundle:
    """Return the verified bundle at ``path``; raise ``BundleSignatureInvalid`` naming the failure.

    Checks every file hash against the manifest, that no file is missing or added,
    that the bundle was signed for this workspace by a key its key provider holds,
    the Ed25519 signature, and that the signature has not expired (``clock``).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BundleSignatureInvalid(f"bundle {folder}: no such bundle folder")
    where = f"bundle {folder.name}"
    manifest = _parse(folder, MANIFEST)
    signature = _parse(folder, SIGNATURE)
    files = manifest.get("files")
    if manifest.get("format") != BUNDLE_FORMAT or not isinstance(files, dict) or not files:
        raise BundleSignatureInvalid(f"{where}: {MANIFEST} is not a {BUNDLE_FORMAT} manifest")
    present = {p.name for p in folder.iterdir()} - {MANIFEST, SIGNATURE}
    extra, missing = sorted(present - set(files)), sorted(set(files) - present)
    if extra or missing:
        raise BundleSignatureInvalid(
            f"{where}: file set differs from the signed manifest "
            f"(added: {extra or 'none'}; missing: {missing or 'none'})"
        )
    for name, expected in sorted(files.items()):
        if (folder / name).is_symlink() or not (folder / name).is_file():
            raise BundleSignatureInvalid(f"{where}: {name} is not a regular file")
        if sha256_file(folder / name) != expected:
            raise BundleSignatureInvalid(
                f"{where}: {name} does not match its SHA-256 in the signed manifest "
                "(the file was changed after signing); refusing to load"
            )
    manifest_sha = sha256_file(folder / MANIFEST)
    required = ("manifest_sha256", "workspace_id", "key_id", "signed_at", "expires_at", "signature")
    lacking = [k for k in required if not isinstance(signature.get(k), str)]
    if lacking:
        raise BundleSignatureInvalid(f"{where}: {SIGNATURE} lacks {lacking}")
    if signature["manifest_sha256"] != manifest_sha:
        raise BundleSignatureInvalid(
            f"{where}: {MANIFEST} was changed after signing (its SHA-256 is not the signed one)"
        )
    ours = workspace_id(workspace)
    if signature["workspace_id"] != ours:
        raise BundleForeign(
            f"{where}: signed for workspace {signature['workspace_id']}, not this workspace "
            f"({ours}); a release must be built and signed in the workspace whose ledger "
            "audits it — rebuild it here from its model"
        )
    publics = provider_for_workspace(workspace).public_keys()
    key = publics.get(signature["key_id"])
    if key is None:
        raise BundleSignatureInvalid(
            f"{where}: signed with key {signature['key_id']!r}, which this workspace's key "
            "provider does not hold (wrong key); refusing to load"
        )
    try:
        key.verify(bytes.fromhex(signature["signature"]), _signing_message(signature))
    except (InvalidSignature, ValueError):
        raise BundleSignatureInvalid(
            f"{where}: the Ed25519 signature does not verify with key {signature['key_id']!r} "
            "(wrong key or altered signature); refusing to load"
        ) from None
    now = (clock or SystemClock()).now()
    expires = _parse_time(signature["expires_at"], where=f"{where}: expires_at")
    if now > expires:
        raise BundleExpired(
            f"{where}: signature expired at {signature['expires_at']}; rebuild and re-sign the "
            "bundle (and pass the gates again) before using it"
        )
    return Bundle(path=folder, sha256=manifest_sha, manifest=manifest, signature=signature)


def export_bundle(bundle: Bundle, destination: str | Path) -> Path:
    """Return the path of a reproducible ``.tar.gz`` of ``bundle`` (sorted, zeroed owners and times)."""
    dest = Path(destination)
    if dest.is_dir():
        dest = dest / f"{bundle.path.name}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted([*bundle.manifest["files"], MANIFEST, SIGNATURE]):
            data = (bundle.path / name).read_bytes()
            info = tarfile.TarInfo(f"{bundle.path.name}/{name}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    import gzip

    dest.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return dest


def import_bundle(
    workspace: Workspace, archive: str | Path, *, clock: Clock | None = None
) -> Bundle:
    """Return the verified bundle unpacked from ``archive`` into this workspace's bundles folder.

    Only flat regular files inside one top folder are accepted (no links, no paths);
    the bundle is verified, and its report and reference profile checked against their
    models, before it is published under its final name.
    """
    src = Path(archive)
    try:
        tar = tarfile.open(src, mode="r:gz")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as exc:
        raise BundleSignatureInvalid(f"bundle archive {src.name}: unreadable ({exc})") from None
    with tar, workspace.staging_dir(bundles_dir(workspace)) as stage:
        tops = set()
        for member in tar.getmembers():
            top, _, name = member.name.partition("/")
            if not member.isfile() or not name or "/" in name or name.startswith("."):
                raise BundleSignatureInvalid(
                    f"bundle archive {src.name}: member {member.name!r} is not a flat file"
                )
            tops.add(top)
            fh = tar.extractfile(member)
            assert fh is not None  # noqa: S101 - type narrowing: member.isfile() was checked
            (stage / name).write_bytes(fh.read())
        if len(tops) != 1:
            raise BundleSignatureInvalid(f"bundle archive {src.name}: expected one bundle folder")
        imported = load_bundle(workspace, stage, clock=clock)
        imported.report()
        imported.profile()
        sha = sha256_file(stage / MANIFEST)
        task = json.loads((stage / "release.json").read_text(encoding="utf-8"))["task"]
        final = bundles_dir(workspace) / f"{task}-{sha[:12]}"
        workspace.publish(stage, final)
    return load_bundle(workspace, final, clock=clock)
