"""FeatureGenerator: columns equal their formulas, ranking, bounded exp, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone

from genreflow.generation import EXP_CLIP, FeatureGenerator, odd_root


def toy(n: int = 60, seed: int = 0):
    """Columns a (separates the 3 classes), b (weakly), c (noise)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n // 3)
    X = pd.DataFrame({
        "a": 5.0 * (y - 1) + rng.standard_normal(n),
        "b": 0.5 * y + rng.standard_normal(n),
        "c": rng.standard_normal(n),
    })
    return X, y


def expected_columns(X: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every candidate over a and b, written out by hand."""
    r = {n: np.sign(X[n]) * np.abs(X[n]) ** 0.2 for n in ("a", "b")}
    inner = {}
    for n in ("a", "b"):
        inner[f"root({n})"] = r[n]
        inner[f"square(root({n}))"] = r[n] ** 2
        inner[f"cube(root({n}))"] = r[n] ** 3
    inner["root(a)*root(b)"] = r["a"] * r["b"]
    columns = dict(inner)
    for name, values in inner.items():
        columns[f"sin({name})"] = np.sin(values)
        columns[f"exp({name})"] = np.exp(np.clip(values, -20, 20))
    return columns


def test_odd_root_by_hand():
    np.testing.assert_allclose(odd_root(np.array([-32.0, 0.0, 1.0, 243.0])), [-2, 0, 1, 3])


def test_generated_columns_equal_their_formulas():
    X, y = toy()
    gen = FeatureGenerator(k=2, n_keep=100, rank_distinct=False).fit(X, y)
    assert sorted(X.columns[gen.base_columns_]) == ["a", "b"]  # the top 2 by H
    out = gen.transform(X)
    names = gen.get_feature_names_out()
    assert list(names[:3]) == ["a", "b", "c"]
    np.testing.assert_array_equal(out[:, :3], X.to_numpy())
    expected = expected_columns(X)
    assert sorted(names[3:]) == sorted(expected)  # all 21 candidates, none twice
    for i, name in enumerate(names[3:], start=3):
        np.testing.assert_allclose(out[:, i], expected[name], err_msg=name)
    # H is a rank statistic: a strictly increasing transform ties with its argument
    h = dict(zip(names[3:], gen.scores_, strict=True))
    assert h["exp(root(a)*root(b))"] == h["root(a)*root(b)"]
    assert h["cube(root(a))"] == h["root(a)"]


def test_rank_equivalent_candidates_are_left_out_by_default():
    X, y = toy()
    names = FeatureGenerator(k=2, n_keep=100).fit(X, y).get_feature_names_out()[3:]
    assert sorted(names) == sorted(n for n in expected_columns(X)
                                   if not n.startswith(("exp", "cube")))


def test_kept_columns_are_the_top_by_kruskal_h():
    X, y = toy()
    gen = FeatureGenerator(k=3, n_keep=4).fit(X, y)
    assert len(gen.get_feature_names_out()) == 3 + 4
    assert np.all(np.diff(gen.scores_) <= 0)
    assert "root(a)" in gen.get_feature_names_out()[3]  # a separates best


def test_exp_never_overflows_and_only_generated_when_asked():
    """root(a) ~ 1e6 here: exp of it overflows unless clipped to +-EXP_CLIP."""
    X, y = toy()
    X["a"] *= 1e30
    distinct = FeatureGenerator(k=3, n_keep=50, keep_original=False).fit(X, y)
    assert not [n for n in distinct.get_feature_names_out() if n.startswith("exp(")]
    gen = FeatureGenerator(k=3, n_keep=50, keep_original=False, rank_distinct=False).fit(X, y)
    names = list(gen.get_feature_names_out())
    assert len(names) == 36 and "a" not in names  # 12 forms x (plain, sin, exp)
    out = gen.transform(X)
    assert out.shape == (len(X), 36) and np.isfinite(out).all()
    exp_root_a = out[:, names.index("exp(root(a))")]
    root_a = out[:, names.index("root(a)")]
    assert np.abs(root_a).max() > 1e5
    np.testing.assert_allclose(exp_root_a, np.exp(np.clip(root_a, -EXP_CLIP, EXP_CLIP)))


def test_chunking_and_refitting_do_not_change_the_result():
    X, y = toy(90, seed=3)
    one = FeatureGenerator(k=3, n_keep=10, chunk_size=1).fit(X, y)
    big = clone(one).set_params(chunk_size=10_000).fit(X, y)
    np.testing.assert_array_equal(one.specs_, big.specs_)
    np.testing.assert_array_equal(one.transform(X), big.transform(X))


def test_score_rows_subsample_is_seeded():
    """Scores come from a seeded subsample of score_rows rows: the same seed gives the
    same scores, another seed or another size different ones."""
    X, y = toy(300, seed=4)

    def scores(**params):
        return FeatureGenerator(k=3, n_keep=8, **params).fit(X, y).scores_

    np.testing.assert_array_equal(scores(score_rows=100), scores(score_rows=100))
    assert not np.array_equal(scores(score_rows=100), scores(score_rows=100, random_state=1))
    assert not np.array_equal(scores(score_rows=100), scores(score_rows=300))
    np.testing.assert_array_equal(scores(score_rows=300), scores(score_rows=300, random_state=1))
