"""Data-drift statistics against the reference profile, cross-checked with scipy and river."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift as river_drift
from scipy import stats

from clinical_mlops.monitoring import drift
from clinical_mlops.monitoring.scenarios import ScoredStays
from clinical_mlops.registry.profile import FeatureProfile


def test_psi_matches_its_definition_and_known_value() -> None:
    # Ventilation 38.4 % -> 72 %: the R-T8 shift on a flag's two bins.
    ref = np.array([0.616, 0.384])
    counts = np.array([28, 72])
    expected = (0.28 - 0.616) * math.log(0.28 / 0.616) + (0.72 - 0.384) * math.log(0.72 / 0.384)
    assert drift.psi(counts, ref) == pytest.approx(expected, rel=1e-12)
    assert drift.psi(counts, ref) == pytest.approx(0.4761, abs=1e-4)
    assert drift.psi(np.array([616, 384]), ref) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(drift.psi(np.array([0, 0]), ref))


def test_grouped_ks_equals_scipy_two_sample_ks_on_discrete_data() -> None:
    # Integer data (like GCS) binned at every integer: the grouped statistic is the exact
    # supremum between the two step CDFs, which is what ks_2samp computes for a reference
    # sample with those fractions.
    rng = np.random.default_rng(3)
    support = np.arange(3, 16)
    ref_sample = rng.choice(support, size=5000, p=rng.dirichlet(np.ones(len(support))))
    ref_p = np.array([(ref_sample == v).mean() for v in support])
    sample = rng.choice(support, size=400, p=np.roll(ref_p, 1))
    counts = np.array([(sample == v).sum() for v in support])
    d, p = drift.grouped_ks(counts, ref_p)
    assert d == pytest.approx(stats.ks_2samp(sample, ref_sample).statistic, abs=1e-12)
    # The p-value is the one-sample Kolmogorov tail (Stephens' correction), near scipy's exact one.
    assert p == pytest.approx(stats.kstwo.sf(d, 400), rel=0.15, abs=1e-12)
    grouped = drift.grouped_ks(
        np.bincount(np.searchsorted([6.5, 9.5], sample), minlength=3),
        np.bincount(np.searchsorted([6.5, 9.5], ref_sample), minlength=3) / 5000,
    )
    assert grouped[0] <= d + 1e-12  # coarser bins can only hide differences: conservative


def test_chi_square_p_matches_scipy() -> None:
    ref = np.array([0.5, 0.3, 0.15, 0.05])
    counts = np.array([90, 70, 30, 10])
    expected = stats.chisquare(counts, ref * counts.sum()).pvalue
    assert drift.chi_square_p(counts, ref) == pytest.approx(expected, rel=1e-9)


def test_missingness_p_matches_scipy_binomtest() -> None:
    assert drift.missingness_p(60, 300, 0.1) == pytest.approx(
        stats.binomtest(60, 300, 0.1).pvalue, rel=1e-12
    )


def test_binning_reproduces_the_reference_profile(scored: ScoredStays) -> None:
    """Binning the validation stays with the monitor's rule gives back the profile's fractions."""
    profile = scored.reference.profile
    assert profile is not None
    refs = drift.reference_bins(profile.features)
    assert "ventilation" in refs and refs["ventilation"].kind == "flag"
    for name, ref in refs.items():
        values = scored.inputs[name]
        codes = ref.codes(
            values.to_numpy(dtype=object) if ref.kind == "categorical" else values.to_numpy(float)
        )
        assert np.mean(codes == drift.MISSING) == pytest.approx(
            profile.features[name].missing_fraction, abs=1e-5
        )
        present = codes[codes != drift.MISSING]
        observed = np.bincount(present, minlength=ref.n_bins) / len(present)
        np.testing.assert_allclose(observed, ref.fractions, atol=1e-5, err_msg=name)
        z = drift.standardised(
            ref,
            values.to_numpy(dtype=object) if ref.kind == "categorical" else values.to_numpy(float),
        )
        if ref.kind in ("numeric", "flag"):
            assert np.nanmean(z) == pytest.approx(0.0, abs=1e-4)
            assert np.nanstd(z) == pytest.approx(1.0, abs=1e-3)
    score = drift.score_reference(profile.score)
    observed = np.bincount(score.codes(scored.p), minlength=score.n_bins) / len(scored.p)
    np.testing.assert_allclose(observed, score.fractions, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=60),
    lo_frac=st.floats(0, 1),
)
def test_input_block_equals_the_one_input_statistics(data: list[int], lo_frac: float) -> None:
    numeric = drift.BinnedReference(
        "x", "numeric", np.array([0.2, 0.3, 0.5]), 0.0, inner_edges=np.array([1.5, 3.5])
    )
    flag = drift.BinnedReference("f", "flag", np.array([0.6, 0.4]), 0.0)
    values = np.array(data, dtype=float)
    values[values == 5] = np.nan  # some missing
    codes = [numeric.codes(values), flag.codes(np.where(np.isnan(values), np.nan, values % 2))]
    block = drift.InputBlock([numeric, flag], codes, n_records=len(values))
    hi = len(values)
    lo = int(lo_frac * hi)
    out = block.stats(lo, hi)
    for j, ref in enumerate((numeric, flag)):
        c = codes[j][lo:hi]
        present = c[c != drift.MISSING]
        counts = np.bincount(present, minlength=ref.n_bins)
        assert out["n"][j] == len(present)
        assert out["missing"][j] == np.sum(c == drift.MISSING)
        if len(present) == 0:
            assert math.isnan(out["psi"][j])
            continue
        assert out["psi"][j] == pytest.approx(drift.psi(counts, ref.fractions), rel=1e-9)
        if ref.ordered:
            d, p = drift.grouped_ks(counts, ref.fractions)
            assert out["ks"][j] == pytest.approx(d, abs=1e-12)
            assert out["p"][j] == pytest.approx(p, rel=1e-9, abs=1e-15)
        else:
            assert out["p"][j] == pytest.approx(
                drift.chi_square_p(counts, ref.fractions), rel=1e-9, abs=1e-15
            )


def test_rare_and_unseen_categories_share_one_bin() -> None:
    features = {
        "dx": FeatureProfile(
            kind="categorical",
            missing_fraction=0.0,
            categories={"a": 0.6, "b": 0.39, "c": 0.01},
        )
    }
    ref = drift.reference_bins(features)["dx"]
    assert ref.labels == ("a", "b", "(other)")
    np.testing.assert_allclose(ref.fractions, [0.6, 0.39, 0.01])
    assert ref.codes(np.array(["a", "c", "never-seen", None], dtype=object)).tolist() == [
        0,
        2,
        2,
        drift.MISSING,
    ]


# -- one battery for every stream detector ------------------------------------------------------

DETECTORS = {
    "adwin": (lambda: drift.Adwin(delta=0.0002), lambda: river_drift.ADWIN(delta=0.0002)),
    "page_hinkley": (
        lambda: drift.PageHinkley(delta=0.5, threshold=25, min_instances=30),
        lambda: river_drift.PageHinkley(delta=0.5, threshold=25, min_instances=30, alpha=1.0),
    ),
}


@pytest.fixture(params=sorted(DETECTORS))
def detector_pair(request: pytest.FixtureRequest):
    return DETECTORS[request.param]


def _step(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 1, 2000), rng.normal(1.0, 1, 1000)]


def test_detector_is_rivers_own(detector_pair) -> None:
    ours, theirs = detector_pair
    x = _step(1)
    mine = drift.detection_times(ours(), np.arange(len(x), dtype=float), x)
    ref = theirs()
    hits = []
    for i, v in enumerate(x.tolist()):
        ref.update(v)
        if ref.drift_detected:
            hits.append(float(i))
    assert mine.tolist() == hits


def test_detector_finds_a_one_sd_step_within_200_values(detector_pair) -> None:
    ours, _ = detector_pair
    x = _step(2)
    hits = drift.detection_times(ours(), np.arange(len(x), dtype=float), x)
    after = hits[hits >= 2000]
    assert len(after) and after[0] - 2000 < 200


def test_detector_is_silent_on_a_constant_and_on_a_stable_stream(detector_pair) -> None:
    ours, _ = detector_pair
    flat = np.zeros(5000)
    assert len(drift.detection_times(ours(), np.arange(5000.0), flat)) == 0
    rng = np.random.default_rng(5)
    noise = rng.normal(size=20000)
    assert len(drift.detection_times(ours(), np.arange(20000.0), noise)) == 0


def test_detector_skips_missing_values_and_is_deterministic(detector_pair) -> None:
    ours, _ = detector_pair
    x = _step(3)
    gappy = x.copy()
    gappy[::7] = np.nan
    t = np.arange(len(x), dtype=float)
    first = drift.detection_times(ours(), t, gappy)
    assert first.tolist() == drift.detection_times(ours(), t, gappy).tolist()
    assert not np.isin(first, t[::7]).any()
