"""The batch plan of a pass (``sparkdl.engine.training.BatchPlan``): which rows each batch of a
pass visits and which seed its stochastic layers draw from, for the whole pass or any slice of
it. Expected batches are written out by hand, or compared with the whole pass (a slice must
draw what the whole pass draws there)."""
from __future__ import annotations

import numpy as np
import pytest

from sparkdl.engine.training import BatchPlan
from tests.helpers import indexed_rows, mlp, probed_model, regression_data


def visits(plan, n=10):
    """``[(batch index, row ids)]`` the plan visits over ``n`` indexed rows, and the Probe's
    per-batch draws."""
    model, probe = probed_model()
    x, y = indexed_rows(n)
    out = []
    for index, xb, yb in plan.iterate(model, [x], y):
        model._train_batch(xb, yb)
        out.append((index, xb[0][:, 0].astype(int).tolist()))
    return out, [draw for _, draw in probe.seen]


def test_without_shuffle_batches_are_consecutive_rows_and_the_last_is_short():
    plan = BatchPlan(10, 4, (0, 0, 0), shuffle=False)
    assert len(plan) == 3
    batches, _ = visits(plan)
    assert batches == [(0, [0, 1, 2, 3]), (1, [4, 5, 6, 7]), (2, [8, 9])]


def test_a_slice_without_shuffle_keeps_its_batch_indices():
    batches, _ = visits(BatchPlan(10, 4, (0, 0, 0), start=1, stop=3, shuffle=False))
    assert batches == [(1, [4, 5, 6, 7]), (2, [8, 9])]
    assert len(BatchPlan(10, 4, (0, 0, 0), start=3)) == 0
    assert visits(BatchPlan(10, 4, (0, 0, 0), start=3))[0] == []


def test_a_shuffled_pass_visits_every_row_once_in_batches_of_the_batch_size():
    batches, _ = visits(BatchPlan(50, 8, (5, 2, 1)), n=50)
    assert [i for i, _ in batches] == list(range(7))
    assert [len(rows) for _, rows in batches] == [8] * 6 + [2]
    rows = [r for _, b in batches for r in b]
    assert sorted(rows) == list(range(50))
    assert rows != list(range(50))


def test_the_seed_key_fixes_order_and_draws_and_each_part_of_it_matters():
    first = visits(BatchPlan(50, 8, (5, 2, 1)), n=50)
    assert visits(BatchPlan(50, 8, (5, 2, 1)), n=50) == first            # a retry draws the same
    for other in [(6, 2, 1), (5, 3, 1), (5, 2, 0)]:                       # seed, epoch or round, partition
        batches, draws = visits(BatchPlan(50, 8, other), n=50)
        assert batches != first[0], other
        assert not set(draws) & set(first[1]), other


def test_slices_of_a_pass_draw_what_the_whole_pass_draws_there():
    key = (3, 1, 0)
    whole = visits(BatchPlan(40, 8, key), n=40)
    parts = [visits(BatchPlan(40, 8, key, start=a, stop=b), n=40) for a, b in [(0, 2), (2, 3), (3, None)]]
    assert [b for p in parts for b in p[0]] == whole[0]
    assert [d for p in parts for d in p[1]] == whole[1]
    assert len(set(whole[1])) == 5       # every batch draws from its own seed


def test_train_epoch_in_slices_equals_one_pass_with_dropout():
    """A pass trained as slices [0, 2) + [2, 5) (a sync round of tau=2, then 3) draws the same
    batches and dropout masks as the whole pass in one call."""
    x, y = regression_data(n=40)
    whole, sliced, other = mlp(dropout=0.5, sgd=0.05), mlp(dropout=0.5, sgd=0.05), mlp(dropout=0.5, sgd=0.05)
    for m in (sliced, other):
        m.set_flat_weights(whole.get_flat_weights())
    xs, yy = whole.check_data(x, y, "test")
    whole.train_epoch(xs, yy, 8, (3, 1, 0))
    sliced.train_epoch(xs, yy, 8, (3, 1, 0), start=0, stop=2)
    sliced.train_epoch(xs, yy, 8, (3, 1, 0), start=2, stop=5)
    np.testing.assert_array_equal(sliced.get_flat_weights(), whole.get_flat_weights())
    other.train_epoch(xs, yy, 8, (3, 1, 1))        # another partition's key: another pass
    assert not np.array_equal(other.get_flat_weights(), whole.get_flat_weights())


@pytest.mark.parametrize("n, batch_size, expected", [(10, 4, 3), (8, 4, 2), (3, 4, 1), (1, 1, 1)])
def test_a_pass_has_ceil_n_over_batch_size_batches(n, batch_size, expected):
    assert len(BatchPlan(n, batch_size, (0,))) == expected


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_gathered_plan_visits_the_same_batches_with_the_same_draws(shuffle):
    plan = BatchPlan(10, 3, (4, 1, 0), start=1, stop=3, shuffle=shuffle)
    expected = visits(plan)
    model, probe = probed_model()
    x, y = indexed_rows(10)
    xs, ys, gathered = plan.gathered([x], y)
    assert len(ys) == 6                       # the two batches' rows only
    got = []
    for index, xb, yb in gathered.iterate(model, xs, ys):
        model._train_batch(xb, yb)
        got.append((index, xb[0][:, 0].astype(int).tolist()))
    assert (got, [draw for _, draw in probe.seen]) == expected
