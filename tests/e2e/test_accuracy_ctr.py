"""Wide & Deep on click data whose true click probabilities are known: the learned model's
test AUC comes within 0.01 of the best possible AUC on the same held-out rows."""
import numpy as np

import sparkdl
from sparkdl.data.synthetic import click_data
from sparkdl.engine import metrics, optimizers, zoo


def exact_auc(labels, scores):
    """Mann-Whitney AUC with ties counted one half (independent of the engine's metric)."""
    order = np.argsort(scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    pos = lab == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


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


def test_wide_and_deep_reaches_truth_auc_within_001():
    data = click_data(60000, seed=0)
    train, test = data.split(50000)
    truth_auc = exact_auc(test.label, test.probability)
    sparkdl.set_random_seed(0)
    model = zoo.wide_and_deep(data.num_ids, data.ids.shape[1], data.dense.shape[1])
    model.compile(optimizer=optimizers.Adam(0.003), loss="binary_crossentropy", metrics=["auc"])
    model.fit([train.ids, train.dense], train.label, epochs=3, batch_size=256, seed=0, verbose=0)
    scores = model.predict([test.ids, test.dense])[:, 0].astype(np.float64)
    learned_auc = exact_auc(test.label, scores)
    assert learned_auc > truth_auc - 0.01, (learned_auc, truth_auc)
    # The streaming metric agrees with the exact computation.
    assert abs(model.evaluate([test.ids, test.dense], test.label)["auc"] - learned_auc) < 1e-3
