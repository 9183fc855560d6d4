"""Statistical checks: flags fire on data built to differ and stay quiet otherwise."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from genreflow.checks import (
    CheckFailed,
    CheckPolicy,
    adjust_p,
    load_policy,
    raise_on_failures,
    run_checks,
)
from genreflow.dataset import TableError
from genreflow.features.names import FEATURE_NAMES

GENRES = ("classical", "metal", "electronic")
SEPARATING = list(range(10))


def test_adjusted_p_values_by_hand():
    p = np.array([0.01, 0.04, 0.03])
    np.testing.assert_allclose(adjust_p(p, "holm"), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(adjust_p(p, "bh"), [0.03, 0.04, 0.04])


def test_kruskal_flags_exactly_the_features_built_to_differ(make_table):
    table = make_table(GENRES, shift={c: 2.0 for c in SEPARATING})
    report = run_checks(table, GENRES)
    kw = report["kruskal"]
    flagged = {n for n, v in kw["per_feature"].items() if v["p_adj"] < 0.05}
    assert flagged == {FEATURE_NAMES[c] for c in SEPARATING}
    assert set(kw["top_features"]) == flagged
    assert kw["significant_share"] == pytest.approx(10 / 311)
    json.dumps(report, allow_nan=False)  # the stored report is strict JSON


def test_kruskal_quiet_on_noise_and_low_separability_warns(make_table):
    report = run_checks(make_table(GENRES), GENRES)
    assert report["kruskal"]["significant_share"] == 0
    assert [f["finding"] for f in report["findings"]] == ["low_separability"]
    assert report["findings"][0]["severity"] == "warn"
    raise_on_failures(report, "here")  # a warning does not stop the run


def test_anova_is_reported_with_its_assumption_tests(make_table):
    anova = run_checks(make_table(GENRES, shift={0: 2.0}), GENRES)["anova"]
    # normal data with equal variances: the assumptions mostly hold
    assert anova["shapiro_pass_share"] > 0.8
    assert anova["levene_pass_share"] > 0.8 and anova["bartlett_pass_share"] > 0.8
    skewed = make_table(GENRES)
    skewed[FEATURE_NAMES] = np.exp(3 * skewed[FEATURE_NAMES])
    assert run_checks(skewed, GENRES)["anova"]["shapiro_pass_share"] < 0.1


def test_confidence_intervals_are_over_track_means(make_table):
    table = make_table(GENRES, tracks=3, shift={0: 10.0})
    ci = run_checks(table, GENRES)["confidence_intervals"][FEATURE_NAMES[0]]
    assert set(ci) == set(GENRES)
    assert all(v["n_tracks"] == 3 and v["low"] < v["mean"] < v["high"] for v in ci.values())
    assert ci["electronic"]["low"] > ci["metal"]["high"] > ci["classical"]["high"]


def test_drift_fires_on_shifted_new_tracks_only(make_table):
    previous = make_table(GENRES, tracks=6, seed=1)
    same = make_table(GENRES, tracks=6, seed=2, prefix="new")
    shifted = same.copy()
    shifted[FEATURE_NAMES[:100]] += 3.0
    quiet = run_checks(pd.concat([previous, same]), GENRES, previous=previous)["drift"]
    assert quiet["compared"] == "new tracks" and quiet["n_compared_segments"] == len(same)
    assert quiet["drifted_share"] == 0
    # Holm controls the family-wise error: no null feature is flagged beside the 100
    # (BH, which controls the false discovery rate, may add a few)
    loud = run_checks(pd.concat([previous, shifted]), GENRES, CheckPolicy(correction="holm"),
                      previous=previous)
    assert set(loud["drift"]["drifted_features"]) == set(FEATURE_NAMES[:100])
    assert "drift" in [f["finding"] for f in loud["findings"]]


def test_policy_decides_what_stops_a_run(make_table, tmp_path):
    table = make_table(GENRES, tracks=1, shift={c: 2.0 for c in SEPARATING})
    report = run_checks(table, GENRES)
    with pytest.raises(CheckFailed, match="fewer than 2"):
        raise_on_failures(report, "report.json")
    relaxed = run_checks(table, GENRES, CheckPolicy(fail_on=()))
    raise_on_failures(relaxed, "report.json")
    strict = tmp_path / "checks.toml"
    strict.write_text('[checks]\ncorrection = "holm"\nfail_on = ["too_few_tracks", "drift"]\n')
    assert load_policy(strict) == CheckPolicy(correction="holm",
                                              fail_on=("too_few_tracks", "drift"))
    assert load_policy(tmp_path / "absent.toml") == CheckPolicy()
    strict.write_text("[checks]\nalpah = 0.1\n")
    with pytest.raises(CheckFailed, match="alpah"):
        load_policy(strict)
    with pytest.raises(CheckFailed, match="unknown finding"):
        CheckPolicy(fail_on=("typo",))


def test_duplicates_and_broken_tables(make_table):
    table = make_table(GENRES)
    doubled = pd.concat([table, table.assign(track_id=table["track_id"] + "_copy")])
    report = run_checks(doubled, GENRES)
    assert report["duplicate_segments"] == len(table)
    assert "duplicate_segments" in [f["finding"] for f in report["findings"]]
    broken = table.copy()
    broken.loc[3, FEATURE_NAMES[5]] = np.inf
    with pytest.raises(TableError, match="NaN/inf"):
        run_checks(broken, GENRES)
