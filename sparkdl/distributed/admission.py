"""What the driver's services check of a request before anything changes.

A push, a clock or a report comes from a holder of the fit's token, which workers only use
after checking their own results; anything else (a bug, a stale task, a forged frame) must be
refused whole, before a value is added or a tag is taken: values must be finite, the partition
one the fit trains, the attempt its newest, and every count within what that partition can
hold. Refusals are ``Refused`` errors, which the client sees as a ``RemoteError`` naming what
was wrong.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sparkdl.distributed.server import Refused
from sparkdl.engine import checks


def shown(value) -> str:
    """``repr(value)``, with a huge int written as its number of digits (a refusal stays short)."""
    if checks.is_integer(value) and abs(int(value)) >= 10**18:
        return f"a {len(str(abs(int(value))))}-digit int"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def described(partitions) -> str:
    """The fit's partitions, briefly."""
    parts = sorted(partitions)
    if len(parts) <= 12:
        return str(parts)
    return f"{len(parts)} partitions ({parts[0]} to {parts[-1]})"


def known_partition(partition: int, partitions) -> None:
    if partition not in partitions:
        raise Refused(f"expected a partition this fit trains ({described(partitions)}), "
                      f"received partition {partition}")


def count(meta: dict, key: str, least: int, most: int, why: str) -> int:
    """``meta[key]`` as an int in ``[least, most]``; ``why`` says where ``most`` comes from."""
    value = meta.get(key)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and least <= value <= most:
        return int(value)
    raise Refused(f"expected {key} between {least} and {most} ({why}), received {shown(value)}")


def finite(array: np.ndarray, what: str) -> None:
    """Every value of a float array is finite. A float64 sum of float32 (or float64 that are
    not near overflow) values is finite exactly when they all are: one pass, no temporary."""
    if array.size and not np.isfinite(np.sum(array, dtype=np.float64)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise Refused(f"expected finite values in {what}, received {bad} NaN or infinite "
                      f"of {array.size}")


class Attempts:
    """The newest attempt of each partition. ``register`` records the coordinator's count of a
    partition's registrations (for the whole fit: a registered partition accepts requests of
    exactly that attempt); where no coordinator registers tasks (one Spark job per round or
    epoch), the newest attempt seen since ``forget_seen`` (the job's start) stands in. An older
    attempt is a task Spark has replaced: its requests are refused. Not thread-safe: the
    service calls it under its own lock."""

    def __init__(self) -> None:
        self.registered: dict[int, int] = {}
        self.seen: dict[int, int] = {}

    def register(self, partition: int, attempt: int) -> None:
        self.registered[partition] = max(attempt, self.registered.get(partition, -1))

    def forget_seen(self) -> None:
        self.seen = {}

    def check(self, partition: int, attempt: int) -> None:
        """Refuse ``attempt`` unless it is the partition's newest (changes nothing)."""
        registered = self.registered.get(partition)
        if registered is not None and attempt > registered:
            raise Refused(f"expected attempt {registered} of partition {partition} (its newest "
                          f"registration), received attempt {attempt}, which never registered")
        newest = max(self.seen.get(partition, -1), -1 if registered is None else registered)
        if attempt < newest:
            raise Refused(f"expected attempt {newest} of partition {partition} (its newest), "
                          f"received attempt {attempt}, which a retry replaced")

    def note(self, partition: int, attempt: int) -> None:
        """A checked request of ``attempt`` was accepted."""
        self.seen[partition] = max(attempt, self.seen.get(partition, -1))


def partition_rows(rows: Mapping, who: str) -> dict[int, int]:
    """``{partition: rows}`` of the partitions a fit trains, checked (each holds a row)."""
    if not isinstance(rows, Mapping):
        raise ValueError(f"{who}: expected rows as a {{partition: rows}} mapping, "
                         f"received {shown(rows)}")
    return {checks.integer(p, "partition", who, at_least=0): checks.integer(n, "rows", who, at_least=1)
            for p, n in rows.items()}
