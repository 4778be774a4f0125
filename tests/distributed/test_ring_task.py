"""The driver's side of allreduce rounds (``sparkdl.distributed.ring_task.RingState``) without
Spark: a task that starts takes the base state with the specs of the rounds since; only the
first training partition's finite state of an ordered round replaces the base."""
import numpy as np
import pytest

from sparkdl.distributed import exchange, ring_task
from sparkdl.distributed.protocol import Frame, Op
from sparkdl.distributed.server import Refused

LAYOUT = exchange.Layout(("weights", "state"), (3, 1), (True, True))


def state_after(rounds):
    state = ring_task.RingState(LAYOUT, first=1)
    state.reset(rounds, np.arange(4, dtype=np.float32), iterations=7)
    return state


def test_a_starting_task_takes_the_base_and_the_specs_to_replay():
    state = state_after(2)
    for r in (2, 3, 4):
        state.open(r, {"round": r})
    reply = state.handle(Frame(Op.PULL, {"round": 4}))
    assert reply.meta == {"rounds_done": 2, "iterations": 7, "replay": [{"round": 2}, {"round": 3}]}
    np.testing.assert_array_equal(reply.array, np.arange(4, dtype=np.float32))
    for round_index in (1, 5):      # before the base, or not ordered yet
        with pytest.raises(Refused, match=f"round {round_index} is not open"):
            state.handle(Frame(Op.PULL, {"round": round_index}))


def test_the_first_partitions_state_replaces_the_base_and_nothing_else_does():
    state = state_after(0)
    state.open(0, {"round": 0})
    state.open(1, {"round": 1})
    good = {"round": 0, "partition": 1, "iterations": 9}
    for meta, array, message in [
            (dict(good, partition=0), np.ones(4, np.float32), "expected the state from partition 1"),
            (good, np.ones(5, np.float32), "expected a float32 state of 4 values"),
            (good, np.array([1, np.nan, 0, 0], np.float32), "NaN|finite"),
            (dict(good, round=3), np.ones(4, np.float32), "round 3 was not ordered")]:
        with pytest.raises(Refused, match=message):
            state.handle(Frame(Op.PUSH, meta, array))
    assert state.base_round == 0
    state.handle(Frame(Op.PUSH, good, np.full(4, 2, np.float32)))
    assert state.base_round == 1 and state.iterations == 9 and state.specs == {1: {"round": 1}}
    np.testing.assert_array_equal(state.base, np.full(4, 2, np.float32))
    assert state.lag(3) == 2
