"""The argument rules of ``sparkdl.engine.checks``, and the paths that must not bypass them:
optimizer hyperparameters set after construction (``apply_config``, plain assignment) go
through the constructor's checks and rebuild the slots they change."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sparkdl import layers, optimizers
from sparkdl.engine import checks


# ---- integer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3)])
def test_integer_accepts_python_and_numpy_ints_and_returns_an_int(value):
    out = checks.integer(value, "units", "Dense", above=0)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, 2.0, "3", None, np.float64(2.0)])
def test_integer_refuses_other_types_naming_who_the_argument_and_the_value(value):
    with pytest.raises(ValueError) as info:
        checks.integer(value, "units", "Dense", above=0)
    assert str(info.value) == f"Dense: expected units > 0 (an int), received units={value!r}"


@pytest.mark.parametrize("kwargs, ok, bad, words", [
    ({"at_least": 1}, 1, 0, "batch_size >= 1"),
    ({"above": 0}, 1, 0, "batch_size > 0"),
    ({"at_most": 4}, 4, 5, "batch_size <= 4"),
    ({"below": 4}, 3, 4, "batch_size < 4"),
    ({"at_least": 0, "at_most": 65535}, 65535, 65536, "batch_size >= 0 and <= 65535"),
])
def test_integer_bounds_are_inclusive_or_exclusive_as_named(kwargs, ok, bad, words):
    assert checks.integer(ok, "batch_size", "fit", **kwargs) == ok
    with pytest.raises(ValueError, match=rf"^fit: expected {words} \(an int\), received batch_size={bad}$"):
        checks.integer(bad, "batch_size", "fit", **kwargs)


def test_optional_integer_allows_none_and_says_so():
    assert checks.optional_integer(None, "num_workers", "SparkModel", at_least=1) is None
    with pytest.raises(ValueError, match=r"expected num_workers >= 1 \(an int\) or None, received num_workers=0"):
        checks.optional_integer(0, "num_workers", "SparkModel", at_least=1)


def test_integer_without_a_name_is_a_functions_only_argument():
    with pytest.raises(ValueError, match=r"^set_num_threads: expected an int >= 1 or None, received 0$"):
        checks.optional_integer(0, None, "set_num_threads", at_least=1)
    with pytest.raises(ValueError, match=r"^set_random_seed: expected a non-negative int, received -1$"):
        checks.integer(-1, None, "set_random_seed", at_least=0)


class _Refused(Exception):
    pass


def test_integer_raises_the_error_class_it_is_given():
    with pytest.raises(_Refused, match=r"^request: expected an int 'partition', received 'partition'=None$"):
        checks.integer(None, "'partition'", "request", error=_Refused)
    with pytest.raises(_Refused, match="samples >= 1"):
        checks.integer(0, "samples", "request", at_least=1, error=_Refused)


def test_integer_type_error_is_for_the_wrong_type_only():
    with pytest.raises(TypeError, match="keep >= 1"):
        checks.integer(1.5, "keep", "CheckpointStore", at_least=1, type_error=TypeError)
    with pytest.raises(ValueError, match="keep >= 1"):
        checks.integer(0, "keep", "CheckpointStore", at_least=1, type_error=TypeError)


# ---- number and fraction ---------------------------------------------------------------------
@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.int64(1)])
def test_number_accepts_ints_and_floats_and_returns_a_float(value):
    out = checks.number(value, "learning_rate", "SGD", at_least=0)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value", [True, "0.1", None, float("nan"), float("inf"), -0.1])
def test_number_refuses_bools_strings_non_finite_and_out_of_bounds(value):
    with pytest.raises(ValueError, match=r"^SGD: expected learning_rate >= 0, received learning_rate="):
        checks.number(value, "learning_rate", "SGD", at_least=0)


def test_number_two_bounds_read_lower_then_upper():
    assert checks.number(0.0, "beta_1", "Adam", at_least=0, below=1) == 0.0
    with pytest.raises(ValueError, match=r"^Adam: expected beta_1 >= 0 and < 1, received beta_1=1\.0$"):
        checks.number(1.0, "beta_1", "Adam", at_least=0, below=1)
    with pytest.raises(ValueError, match=r"expected timeout > 0 or None, received timeout=0"):
        checks.optional_number(0, "timeout", "SparkModel", above=0)
    assert checks.optional_number(None, "timeout", "SparkModel", above=0) is None


@pytest.mark.parametrize("value", [1.0, -0.1, "0.5", True, float("nan")])
def test_fraction_is_a_number_in_zero_one(value):
    assert checks.fraction(0.0, "rate", "Dropout") == 0.0
    with pytest.raises(ValueError, match=r"^Dropout: expected 0 <= rate < 1, received rate="):
        checks.fraction(value, "rate", "Dropout")


# ---- one_of, shape, pair, invalid --------------------------------------------------------------
def test_one_of_words_two_choices_with_or_and_more_as_a_tuple():
    assert checks.one_of("spark", ("socket", "spark"), "transport", "SparkModel") == "spark"
    with pytest.raises(ValueError, match=r"^SparkModel: expected transport 'socket' or 'spark', "
                                         r"received transport='tcp'$"):
        checks.one_of("tcp", ("socket", "spark"), "transport", "SparkModel")
    with pytest.raises(ValueError, match=r"^fit: expected verbose in \(0, 1, 2\), received verbose=3$"):
        checks.one_of(3, (0, 1, 2), "verbose", "fit")


def test_one_of_ignore_case_gives_the_choice():
    assert checks.one_of("SAME", ("valid", "same"), "padding", "Conv2D", ignore_case=True) == "same"
    with pytest.raises(ValueError, match="'valid' or 'same'.*'full'"):
        checks.one_of("full", ("valid", "same"), "padding", "Conv2D", ignore_case=True)
    with pytest.raises(ValueError, match="received padding='SAME'"):
        checks.one_of("SAME", ("valid", "same"), "padding", "Conv2D")


def test_shape_from_an_int_or_a_sequence():
    assert checks.shape(784, "shape", "Input") == (784,)
    assert checks.shape([1, np.int64(28), 28], "shape", "Input") == (1, 28, 28)
    for bad in ["784", None, 3.5]:
        with pytest.raises(TypeError, match=r"^Input: expected shape as a positive int or a tuple of "
                                            r"positive ints, received shape="):
            checks.shape(bad, "shape", "Input")
    for bad in [0, (3, 0), (True, 2)]:
        with pytest.raises(ValueError, match="positive ints"):
            checks.shape(bad, "shape", "Input")


def test_pair_from_an_int_or_two():
    assert checks.pair(3, "kernel_size", "Conv2D") == (3, 3)
    assert checks.pair((2, np.int32(5)), "kernel_size", "Conv2D") == (2, 5)
    for bad in [(3, 3, 3), (3,), "33", None]:
        with pytest.raises(TypeError, match="Conv2D: expected kernel_size as a positive int or a pair"):
            checks.pair(bad, "kernel_size", "Conv2D")
    for bad in [0, (3, -1)]:
        with pytest.raises(ValueError, match="Conv2D: expected kernel_size"):
            checks.pair(bad, "kernel_size", "Conv2D")


def test_invalid_builds_the_one_message_shape():
    error = checks.invalid("Concatenate", "a non-batch axis (an int other than 0)", "axis", 0)
    assert isinstance(error, ValueError)
    assert str(error) == "Concatenate: expected a non-batch axis (an int other than 0), received axis=0"
    assert str(checks.invalid("f", "a thing", None, [1])) == "f: expected a thing, received [1]"


def test_the_layers_messages_come_from_the_checks():
    with pytest.raises(ValueError, match=r"^Embedding: expected output_dim > 0 \(an int\), received output_dim=0$"):
        layers.Embedding(5, 0)
    with pytest.raises(TypeError, match=r"^Dense: expected input_shape as a positive int or a tuple"):
        layers.Dense(2, input_shape="784")


# ---- optimizer hyperparameters: no path around the constructor's checks ----------------------
P0 = np.array([1.0, -2.0, 0.5], np.float32)
G = np.array([0.5, -1.0, 2.0], np.float32)


def _steps(opt, n, p=None):
    p = P0.copy() if p is None else p
    for _ in range(n):
        opt.apply(p, G.copy())
    return p


def test_apply_config_checks_like_the_constructor():
    opt = optimizers.SGD(0.1)
    with pytest.raises(ValueError, match=r"^SGD: expected momentum >= 0 and < 1, received momentum=7$"):
        opt.apply_config({"momentum": 7})
    with pytest.raises(ValueError, match="learning_rate >= 0"):
        opt.apply_config({"learning_rate": -1.0})
    assert opt.get_config() == optimizers.SGD(0.1).get_config()


def test_apply_config_is_all_or_none():
    opt = optimizers.Adam(0.01)
    before = opt.get_config()
    with pytest.raises(ValueError, match="beta_2"):
        opt.apply_config({"learning_rate": 0.5, "beta_1": 0.5, "beta_2": 1.5})
    assert opt.get_config() == before


def test_apply_config_refuses_an_unknown_hyperparameter():
    opt = optimizers.SGD()
    with pytest.raises(ValueError, match=r"SGD\.apply_config: expected hyperparameters among "
                                         r"\['decay', 'learning_rate', 'momentum', 'nesterov'\], "
                                         r"received \['momentun'\]"):
        opt.apply_config({"momentun": 0.9})
    assert not hasattr(opt, "momentun")


@pytest.mark.parametrize("make, arg, bad", [
    (lambda: optimizers.SGD(), "momentum", 1.0),
    (lambda: optimizers.RMSprop(), "rho", -0.1),
    (lambda: optimizers.Adam(), "epsilon", float("nan")),
    (lambda: optimizers.Ftrl(), "l1", "0.1"),
    (lambda: optimizers.Adagrad(), "initial_accumulator_value", -1),
])
def test_assigning_a_hyperparameter_checks_it_too(make, arg, bad):
    opt = make()
    before = getattr(opt, arg)
    with pytest.raises(ValueError, match=rf"^{type(opt).__name__}: expected {arg} >= 0"):
        setattr(opt, arg, bad)
    assert getattr(opt, arg) == before


def test_momentum_turned_on_by_apply_config_builds_its_slot():
    """SGD(momentum=0) has no momentum slot; a config that turns momentum on used to leave it
    missing (KeyError: 'momentum' at the next step)."""
    opt = optimizers.SGD(0.1, momentum=0.0)
    p = _steps(opt, 1)
    assert opt.slots == {}
    opt.apply_config({"momentum": 0.9})
    p = _steps(opt, 2, p)
    # Plain SGD for one step, then momentum from a zero velocity for two.
    v, want = np.zeros(3), P0.astype(np.float64) - 0.1 * G
    for _ in range(2):
        v = 0.9 * v - 0.1 * G
        want = want + v
    np.testing.assert_allclose(p, want, rtol=1e-6)
    np.testing.assert_allclose(opt.slots["momentum"], v, rtol=1e-6)


def test_momentum_turned_on_by_assignment_builds_its_slot():
    opt = optimizers.RMSprop(momentum=0.0)
    _steps(opt, 1)
    velocity = opt.slots["velocity"].copy()
    opt.momentum = 0.5
    _steps(opt, 1)
    assert list(opt.slots) == ["velocity", "momentum"]
    assert not np.array_equal(opt.slots["velocity"], velocity)   # kept and stepped, not reset


def test_momentum_turned_off_drops_the_slot_and_keeps_the_others():
    opt = optimizers.RMSprop(momentum=0.5)
    _steps(opt, 2)
    velocity = opt.slots["velocity"]
    opt.apply_config({"momentum": 0.0})
    _steps(opt, 1)
    assert list(opt.slots) == ["velocity"] and opt.slots["velocity"] is velocity


def test_apply_config_of_the_same_config_keeps_the_slot_arrays():
    """Workers apply the driver's config every round: it must not reallocate or reset slots."""
    opt = optimizers.Adam(0.01)
    _steps(opt, 2)
    slots = dict(opt.slots)
    values = {k: v.copy() for k, v in slots.items()}
    opt.apply_config(json.loads(json.dumps(opt.get_config())))
    opt.build(P0.size)
    assert all(opt.slots[k] is slots[k] for k in slots)
    for k, v in values.items():
        np.testing.assert_array_equal(opt.slots[k], v)
    assert opt.iterations == 2


def test_a_new_initial_accumulator_value_keeps_the_accumulator():
    opt = optimizers.Adagrad(initial_accumulator_value=0.1)
    _steps(opt, 1)
    accumulator = opt.slots["accumulator"].copy()
    opt.apply_config({"initial_accumulator_value": 0.5})
    opt.build(P0.size)
    np.testing.assert_array_equal(opt.slots["accumulator"], accumulator)


def test_a_worker_takes_slots_of_a_momentum_the_driver_turned_on():
    """The driver's callback turned momentum on: its round carries a momentum slot that the
    worker's optimizer (still at momentum 0) gets only once it has applied the config."""
    from sparkdl.distributed import worker
    from sparkdl.models import Sequential

    def model(momentum):
        net = Sequential([layers.Dense(2, input_shape=(3,))])
        net.compile(optimizers.SGD(0.1, momentum=momentum), "mse")
        return net

    driver, local = model(0.9), model(0.0)
    driver.optimizer.build(driver.flat_weights.size)
    slots = {"momentum": np.full(driver.flat_weights.size, 0.01, np.float32)}
    spec = worker.RoundSpec(round=0, seed=0, batch_size=4, frequency="batch", aggregate="weights",
                            optimizer=driver.optimizer.get_config())
    xs = [np.ones((4, 3), np.float32)]
    result = worker.run_round(local, xs, np.zeros((4, 2), np.float32), spec, 0,
                              driver.get_flat_weights(), None, slots, 0)
    assert local.optimizer.momentum == 0.9 and list(result.slots) == ["momentum"]
    assert not np.allclose(result.slots["momentum"], 0.01)
