"""Property tests: the prediction input schema and the ledger round-trip.

Input schema (``serving.inputs.InputSchema``), for both built-in tasks: any mix of
valid and broken values is either accepted with every value in range and in the
declared unit, or refused with exactly the broken fields named — never another
exception; accepted rows encode to the same matrix as the training
``Preprocessor`` (the reference implementation).

Ledger (``clinical_mlops.ledger``): any batch of declared entries with arbitrary JSON
payloads appends, reads back equal, verifies, exports and verifies offline from the
export alone; a payload that has no JSON form is refused with nothing written.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinical_mlops import units
from clinical_mlops.clock import FixedClock
from clinical_mlops.errors import EntryPayloadInvalid, InputInvalid
from clinical_mlops.hashing import canonical_json
from clinical_mlops.ledger import Ledger, NewEntry
from clinical_mlops.ledger.checkpoint_log import CheckpointLog
from clinical_mlops.ledger.export import export_bundle, load_bundle, verify_bundle, write_bundle
from clinical_mlops.ledger.store import LedgerStore
from clinical_mlops.modeling.preprocess import Preprocessor
from clinical_mlops.privacy.keys import LocalKeyring, public_key_hex
from clinical_mlops.registry.profile import FeatureProfile, ReferenceProfile
from clinical_mlops.serving.inputs import InputSchema
from clinical_mlops.tasks import load_task
from clinical_mlops.tasks.spec import Feature, TaskSpec
from evidence_helpers import T0

TASKS = ["icu_mortality_48h", "readmission_30d"]
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def schema_for(task: str) -> InputSchema:
    """Return the input schema of ``task`` with medians at the middle of each valid range."""
    spec = load_task(task)
    medians = {
        f.name: (f.valid_range[0] + f.valid_range[1]) / 2 if f.valid_range else 0.0
        for f in spec.features
        if f.kind != "categorical"
    }
    categories = {f.name: tuple(f.categories or ()) for f in spec.features if f.categories}
    pre = Preprocessor(features=spec.feature_names, medians=medians, categories=categories)
    # only the bin edges of numeric inputs matter to the schema's range flags
    profile = ReferenceProfile.model_construct(
        features={
            n: FeatureProfile(
                kind="numeric",
                missing_fraction=0.0,
                edges=[spec.feature(n).valid_range[0], m],  # type: ignore[index]
            )
            for n, m in medians.items()
            if spec.feature(n).kind == "numeric"
        }
    )
    return InputSchema(spec, pre, profile)


def valid_value(f: Feature) -> st.SearchStrategy[Any]:
    if f.kind == "categorical":
        return st.sampled_from(f.categories or ())
    if f.kind == "flag":
        return st.sampled_from([0, 1, True, False, 0.0, 1.0])
    low, high = f.valid_range  # type: ignore[misc]
    plain = st.one_of(
        st.floats(low, high, allow_nan=False), st.integers(math.ceil(low), math.floor(high))
    )
    units = [f.unit, f.display_unit, f.shown_unit]
    declared = st.builds(
        lambda v, u: {"value": v, "unit": u}, plain, st.sampled_from([u for u in units if u])
    )
    return st.one_of(plain, declared, st.builds(lambda v: {"value": v}, plain))


def broken_value(f: Feature) -> st.SearchStrategy[Any]:
    junk = st.one_of(
        st.text(max_size=8),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2).filter(
            lambda d: set(d) - {"value", "unit"}
        ),
        st.builds(dict),  # an object without "value"
    )
    if f.kind == "categorical":
        return st.one_of(junk.filter(lambda v: v not in (f.categories or ())), st.integers())
    if f.kind == "flag":
        return st.one_of(junk, st.integers().filter(lambda v: v not in (0, 1)), st.just(0.5))
    low, high = f.valid_range  # type: ignore[misc]
    return st.one_of(
        junk,
        st.booleans(),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.floats(min_value=high, exclude_min=True, allow_infinity=False),
        st.floats(max_value=low, exclude_max=True, allow_infinity=False),
        st.integers(min_value=10**300, max_value=10**400),  # JSON allows it; float() cannot
        st.builds(lambda v: {"value": v, "unit": "furlong/fortnight"}, st.floats(low, high)),
    )


@st.composite
def requests(draw: st.DrawFn, spec: TaskSpec) -> tuple[dict[str, Any], set[str]]:
    """Return (raw features, names that must be refused)."""
    raw: dict[str, Any] = {}
    bad: set[str] = set()
    for f in spec.features:
        choice = draw(st.sampled_from(["valid", "valid", "valid", "missing", "null", "broken"]))
        if choice == "valid":
            raw[f.name] = draw(valid_value(f))
        elif choice == "null":
            raw[f.name] = None
        elif choice == "broken":
            raw[f.name] = draw(broken_value(f))
            bad.add(f.name)
    for name in draw(st.lists(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), max_size=2)):
        if name not in spec.feature_names:
            raw[name] = draw(st.integers())
            bad.add(name)
    return raw, bad


@pytest.mark.parametrize("task", TASKS)
def test_input_schema_accepts_valid_rows_and_names_every_broken_field(task: str) -> None:
    schema = schema_for(task)
    spec = schema.spec

    @SETTINGS
    @given(request=requests(spec))
    def check(request: tuple[dict[str, Any], set[str]]) -> None:
        raw, bad = request
        try:
            checked = schema.check(raw)
        except InputInvalid as exc:
            named = {path.removeprefix("features.") for path, _ in exc.problems}
            assert named == bad, (named, bad)
            assert all(msg.strip() for _, msg in exc.problems)
            return
        assert not bad, bad
        for f in spec.features:
            value = checked.values[f.name]
            if value is None:
                assert f.name in checked.missing
            elif f.kind == "categorical":
                assert value in (f.categories or ())
            else:
                low, high = f.valid_range  # type: ignore[misc]
                assert low <= value <= high and not isinstance(value, bool)
        assert checked.values == schema.check(checked.values).values  # idempotent
        X = schema.encode([checked.values])
        frame = pd.DataFrame([{k: (np.nan if v is None else v) for k, v in checked.values.items()}])
        for f in spec.features:  # the training path keeps categories as text, numbers as floats
            if f.kind == "categorical":
                frame[f.name] = frame[f.name].astype(object)
        np.testing.assert_array_equal(X, schema.pre.transform(frame))
        assert np.isfinite(X).all() and X.shape == (1, len(schema.columns))

    check()


@pytest.mark.parametrize(
    ("feature", "unit"),
    [
        ("temperature", "[degF]"),
        ("temperature", "°F"),
        ("creatinine", "umol/L"),
        ("bilirubin", "umol/L"),
        ("albumin", "g/L"),
        ("lactate", "mg/dL"),
        ("map", "kPa"),
        ("platelets", "10*3/uL"),
    ],
)
def test_unit_conversions_land_in_the_declared_unit(feature: str, unit: str) -> None:
    schema = schema_for("icu_mortality_48h")
    f = schema.features[feature]

    @SETTINGS
    @given(value=st.floats(-1e6, 1e6))
    def check(value: float) -> None:
        assert f.unit is not None
        converted = units.convert(
            value, units.ucum_code(unit) or "", f.unit, molar_mass=f.molar_mass
        )
        low, high = f.valid_range  # type: ignore[misc]
        try:
            checked = schema.check({feature: {"value": value, "unit": unit}})
        except InputInvalid as exc:
            assert not low <= converted <= high
            assert [p for p, _ in exc.problems] == [f"features.{feature}"]
            return
        assert checked.values[feature] == converted and low <= converted <= high

    check()


# -- ledger round-trip -----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
extra = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
TEXT = st.text(min_size=1, max_size=16)


@st.composite
def new_entries(draw: st.DrawFn, pseudonyms: list[str]) -> NewEntry:
    kind = draw(st.sampled_from(["alert", "inference", "outcome", "status_change", "review"]))
    actor = draw(TEXT.filter(str.strip))
    subject = None
    if kind == "alert":
        required: dict[str, Any] = {"kind": draw(TEXT), "message": draw(TEXT)}
    elif kind == "inference":
        subject = draw(st.sampled_from(pseudonyms))
        required = {
            "model_version": draw(TEXT),
            "dataset_sha256": "0" * 64,
            "inputs": draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4)),
            "raw_score": draw(st.floats(-50, 50)),
            "probability": draw(st.floats(0, 1)),
            "conformal_set": draw(st.lists(st.sampled_from(["no", "yes"]), max_size=2)),
            "explanation": {"contributions": draw(extra)},
            "requester": actor,
            "purpose": "direct_care",
        }
    elif kind == "outcome":
        subject = draw(st.none() | st.sampled_from(pseudonyms))
        required = {"prediction_seq": draw(st.integers(0, 10**6)), "outcome": draw(st.booleans())}
    elif kind == "status_change":
        required = {
            "release": draw(TEXT),
            "from_status": draw(st.none() | TEXT),
            "to_status": draw(TEXT),
            "why": draw(TEXT),
        }
    else:
        subject = draw(st.none() | st.sampled_from(pseudonyms))
        required = {"model_version": draw(TEXT), "outcome": draw(TEXT)}
    return NewEntry(type=kind, actor=actor, subject=subject, payload=draw(extra) | required)


def open_ledger(root: Path) -> Ledger:
    return Ledger(
        store=LedgerStore.open(f"sqlite:///{root / 'ledger.db'}"),
        provider=LocalKeyring(root / "keys"),
        vault=f"sqlite:///{root / 'identity.db'}",
        checkpoint_log=CheckpointLog(root / "ledger-checkpoints.jsonl"),
        clock=FixedClock(T0),
        checkpoint_every=25,
    )


def test_ledger_round_trip_append_read_verify_export(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path)
    pseudonyms = [ledger.vault.pseudonym_for(f"MRN-{i}") for i in range(3)]
    written: dict[int, NewEntry] = {}
    predictions = itertools.count()

    @settings(SETTINGS, max_examples=60)
    @given(batch=st.lists(new_entries(pseudonyms), min_size=1, max_size=6))
    def append_and_read(batch: list[NewEntry]) -> None:
        # a prediction takes one outcome (a unique key of the ledger): each names its own
        batch = [
            replace(e, payload=dict(e.payload) | {"prediction_seq": next(predictions)})
            if e.type == "outcome"
            else e
            for e in batch
        ]
        size = ledger.size()
        receipts = ledger.append_batch(batch)
        assert [r.seq for r in receipts] == list(range(size, size + len(batch)))
        for item, receipt in zip(batch, receipts, strict=True):
            view = ledger.read(receipt.seq)
            assert view.status == "ok"
            assert view.payload == json.loads(canonical_json(dict(item.payload)))
            assert (view.entry.type, view.entry.actor, view.entry.subject) == (
                item.type,
                item.actor,
                item.subject,
            )
            written[receipt.seq] = item

    append_and_read()
    try:
        assert ledger.size() == len(written) > 100
        report = ledger.verify(thorough=True)
        assert report.ok, report.problems[:3]
        bundle = export_bundle(ledger, start=0)
        pinned = {k: public_key_hex(v) for k, v in ledger.provider.public_keys().items()}
        reloaded = load_bundle(write_bundle(bundle, tmp_path / "export.json"))
        assert verify_bundle(reloaded, pinned_keys=pinned).ok
        assert [e["seq"] for e in reloaded["entries"]] == sorted(written)
        # one changed payload byte in the export is detected offline
        entry = reloaded["entries"][len(written) // 2]
        entry["payload"] = ("0" if entry["payload"][0] != "0" else "1") + entry["payload"][1:]
        assert not verify_bundle(reloaded, pinned_keys=pinned).ok
    finally:
        ledger.close()


def test_a_payload_without_a_json_form_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path)
    try:
        ledger.append(type="alert", actor="test", payload={"kind": "a", "message": "b"})

        @SETTINGS
        @given(
            bad=st.sampled_from([math.nan, math.inf, "\ud800", {"set": {1}}, b"bytes"]),
            good=st.lists(TEXT, max_size=3),
        )
        def refuse(bad: Any, good: list[str]) -> None:
            before = ledger.size()
            broken = NewEntry(
                type="alert", actor="test", payload={"kind": "x", "message": "y", "v": bad}
            )
            with pytest.raises(EntryPayloadInvalid):
                ledger.append_batch(
                    [
                        NewEntry(type="alert", actor="test", payload={"kind": "k", "message": m})
                        for m in good
                    ]
                    + [broken]
                )
            assert ledger.size() == before

        refuse()
        assert ledger.verify().ok
    finally:
        ledger.close()
