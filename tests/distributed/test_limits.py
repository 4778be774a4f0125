"""The bounds a server keeps (``sparkdl.distributed.limits``): the memory budget, the growing
pause after resource errors, and the rate-limited log."""
import logging

from sparkdl.distributed import limits


def test_rate_limited_log_says_how_many_lines_it_held_back(caplog):
    log = logging.getLogger("tests.rate")
    limited = limits.RateLimitedLog(log, interval=60)
    with caplog.at_level(logging.WARNING, logger="tests.rate"):
        for i in range(5):
            limited(logging.WARNING, "a", "line %d", i)
        limited(logging.WARNING, "b", "other")
        limited.interval = 0
        limited(logging.WARNING, "a", "line %d", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "line 0", "other", "line 5 (and 4 more like it, held back)"]


def test_backoff_grows_to_its_longest_pause_and_resets():
    backoff = limits.Backoff(first=0.01, longest=0.05)
    assert [backoff.pause() for _ in range(5)] == [0.01, 0.02, 0.04, 0.05, 0.05]
    backoff.reset()
    assert backoff.pause() == 0.01


def test_memory_budget():
    budget = limits.MemoryBudget(10)
    assert budget.take(6, 0) and not budget.take(5, 0.01) and budget.take(4, 0)
    assert not budget.take(11, 0)                 # more than the whole budget never waits
    budget.give(6)
    assert budget.free == 6
