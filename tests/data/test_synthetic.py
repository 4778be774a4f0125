"""Synthetic click data (``sparkdl.data.synthetic``): a ground truth that is learnable but not
trivial, reproducible from its seed."""
import numpy as np
import pytest

from sparkdl.data.synthetic import click_data
from tests.helpers import exact_auc


def test_click_data_truth_is_learnable_and_not_trivial():
    data = click_data(20000, seed=0)
    assert data.ids.shape == (20000, 9) and data.ids.min() >= 0 and data.ids.max() < data.num_ids
    assert 0.2 < data.label.mean() < 0.8
    truth_auc = exact_auc(data.label, data.probability)
    assert 0.8 < truth_auc < 0.95
    # The same seed gives the same ground truth.
    again = click_data(20000, seed=0)
    np.testing.assert_array_equal(again.ids, data.ids)
    np.testing.assert_array_equal(again.probability, data.probability)


def test_click_data_zipf_popularity_and_rarity_decay():
    from sparkdl.data.synthetic import _hash
    kw = dict(cardinalities=(50,), crosses=(), num_dense=0, num_ids=1 << 20, zipf=1.1, bias=-1.0)
    plain = click_data(200_000, seed=3, **kw)
    # Value k of the field (hashed to its id) shows up with probability proportional to (k + 1) ** -1.1.
    ids = _hash(np.arange(50), 0, 1 << 20).astype(np.int64)
    freq = (plain.ids[:, 0][:, None] == ids[None, :]).mean(axis=0)
    expected = np.arange(1, 51) ** -1.1 / (np.arange(1, 51) ** -1.1).sum()
    np.testing.assert_allclose(freq, expected, atol=0.004)
    assert freq[0] > 0.2 and freq[:5].sum() > 0.5
    # rarity_decay scales value k's weight by (p_k / p_0) ** d = (k + 1) ** (-1.1 * d); same rows.
    decayed = click_data(200_000, seed=3, rarity_decay=0.5, **kw)
    np.testing.assert_array_equal(decayed.ids, plain.ids)
    logit = lambda d: np.log(d.probability / (1 - d.probability)) + 1.0  # noqa: E731
    k = np.searchsorted(np.sort(ids), plain.ids[:, 0])
    rank = np.argsort(ids)[k]
    np.testing.assert_allclose(logit(decayed), logit(plain) * (rank + 1.0) ** (-0.55), rtol=1e-9, atol=1e-12)
    # The same seed gives the same truth; another seed another one.
    np.testing.assert_array_equal(click_data(1000, seed=3, rarity_decay=0.5, **kw).probability,
                                  click_data(1000, seed=3, rarity_decay=0.5, **kw).probability)
    assert not np.array_equal(click_data(1000, seed=4, **kw).probability, click_data(1000, seed=3, **kw).probability)


@pytest.mark.parametrize("bad", [dict(zipf=0), dict(zipf="1"), dict(rarity_decay=-1), dict(dense_scale=-0.1)])
def test_click_data_bad_settings(bad):
    with pytest.raises(ValueError, match="click_data: expected"):
        click_data(10, **bad)
