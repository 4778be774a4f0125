"""What ``evaluate`` returns (``sparkdl.engine.scores``): a dict by name that also reads by
position in Keras' order, and the ``return_dict`` forms of ``Model.evaluate``.

Expected values are written out or computed by hand from the model's predictions, never
from ``evaluate`` itself."""
import json

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.engine.scores import Scores, check_return_dict, returned
from tests.helpers import mlp, one_hot, regression_data


def _classifier():
    return mlp(layers.Dense(3, activation="softmax", name="out"), input_dim=4, std=0.5,
               optimizer=optimizers.SGD(0.1), loss="categorical_crossentropy", metrics=["acc", "mse"])


def _data(n=30):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)).astype(np.float32), one_hot(rng.integers(0, 3, n), 3)


def test_scores_read_by_name_and_by_position_in_keras_order():
    scores = Scores({"loss": 0.5, "accuracy": 0.75, "mse": 0.125})
    assert (scores["loss"], scores["accuracy"], scores["mse"]) == (0.5, 0.75, 0.125)
    assert (scores[0], scores[1], scores[2]) == (0.5, 0.75, 0.125)
    assert (scores[-1], scores[np.int64(1)]) == (0.125, 0.75)
    assert scores[1:] == [0.75, 0.125]
    assert scores.to_list() == [0.5, 0.75, 0.125]
    with pytest.raises(IndexError, match=r"expected a position in \[-3, 2\] .*\['accuracy', 'mse'\]\), received 3"):
        scores[3]
    with pytest.raises(KeyError, match="auc"):
        scores["auc"]


def test_scores_stay_a_dict_for_everything_else():
    scores = Scores({"loss": 0.5, "accuracy": 0.75})
    assert isinstance(scores, dict)
    assert list(scores) == ["loss", "accuracy"]                     # iteration yields the names
    assert scores == {"loss": 0.5, "accuracy": 0.75} and scores != {"loss": 0.5}
    assert scores == pytest.approx({"loss": 0.5 + 1e-9, "accuracy": 0.75})
    assert json.loads(json.dumps(scores)) == {"loss": 0.5, "accuracy": 0.75}
    assert dict(scores) == {"loss": 0.5, "accuracy": 0.75} and len(scores) == 2
    assert scores.get("loss") == 0.5 and "accuracy" in scores


def test_returned_forms():
    scores = {"loss": 0.5, "accuracy": 0.75}
    assert type(returned(scores, None)) is Scores
    plain = returned(scores, True)
    assert type(plain) is dict and plain == scores
    assert returned(scores, False) == [0.5, 0.75]
    assert returned({"loss": 0.5}, False) == 0.5                    # no metrics: the loss alone
    assert check_return_dict(None, "who") is None and check_return_dict(False, "who") is False
    with pytest.raises(TypeError, match=r"^evaluate: expected return_dict as True, False or None, "
                                        r"received return_dict='yes'"):
        check_return_dict("yes", "evaluate")


def test_model_evaluate_by_position_and_return_dict_match_a_hand_computation():
    model = _classifier()
    x, y = _data()
    p = model.predict(x).astype(np.float64)
    loss = float(np.mean(-np.sum(y * np.log(np.clip(p, 1e-7, 1)), axis=1)))
    accuracy = float(np.mean(p.argmax(axis=1) == y.argmax(axis=1)))
    mse = float(np.mean((p - y) ** 2))
    scores = model.evaluate(x, y)
    assert isinstance(scores, Scores) and list(scores) == ["loss", "accuracy", "mse"]
    assert scores[0] == pytest.approx(loss, rel=1e-5)
    assert scores[1] == pytest.approx(accuracy, abs=1e-12)           # "acc": the first compiled metric
    assert scores[2] == pytest.approx(mse, rel=1e-5)
    plain = model.evaluate(x, y, return_dict=True)
    assert type(plain) is dict and plain == scores
    assert model.evaluate(x, y, return_dict=False) == [scores[0], scores[1], scores[2]]
    assert model.evaluate(x, y, verbose=2)[1] == scores[1]


def test_model_evaluate_without_metrics_returns_the_loss_alone_as_keras():
    model = mlp(sgd=0.05)
    x, y = regression_data()
    expected = float(np.mean((model.predict(x).astype(np.float64) - y) ** 2))
    assert model.evaluate(x, y, return_dict=False) == pytest.approx(expected, rel=1e-5)
    assert model.evaluate(x, y)[0] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(TypeError, match="return_dict"):
        model.evaluate(x, y, return_dict=1)
