"""Synthetic click data (``sparkdl.data.synthetic``): a ground truth that is learnable but not
trivial, reproducible from its seed."""
import numpy as np

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
