"""Wide & Deep on click data whose true click probabilities are known: the learned model's
test AUC comes within 0.01 of the best possible AUC on the same held-out rows."""
import numpy as np

import sparkdl
from sparkdl.data.synthetic import click_data
from sparkdl.engine import optimizers, zoo
from tests.helpers import exact_auc


def test_wide_and_deep_reaches_truth_auc_within_001():
    data = click_data(60000, seed=0)
    train, test = data.split(50000)
    truth_auc = float(exact_auc(test.label, test.probability))
    sparkdl.set_random_seed(0)
    model = zoo.wide_and_deep(data.num_ids, data.ids.shape[1], data.dense.shape[1])
    model.compile(optimizer=optimizers.Adam(0.003), loss="binary_crossentropy", metrics=["auc"])
    model.fit([train.ids, train.dense], train.label, epochs=3, batch_size=256, seed=0, verbose=0)
    scores = model.predict([test.ids, test.dense])[:, 0].astype(np.float64)
    learned_auc = float(exact_auc(test.label, scores))
    assert learned_auc > truth_auc - 0.01, (learned_auc, truth_auc)
    # The streaming metric agrees with the exact computation.
    assert abs(model.evaluate([test.ids, test.dense], test.label)["auc"] - learned_auc) < 1e-3
