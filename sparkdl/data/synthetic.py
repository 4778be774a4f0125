"""A click-through data generator with a known logistic ground truth.

Rows have categorical fields (each hashed into a shared id space), hashed crosses of field
pairs given as extra fields, and dense features. The true click probability is
``sigmoid(bias + sum of one weight per id + dense @ v)``, so the best possible model and its
AUC on any rows are known exactly; a learned model is judged by how close it gets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _hash(values: np.ndarray, salt: int, buckets: int) -> np.ndarray:
    """Deterministic multiplicative hash of non-negative ints into ``[0, buckets)``."""
    with np.errstate(over="ignore"):
        h = (values.astype(np.uint64) + np.uint64(salt) * np.uint64(1_000_003)) * _GOLDEN
        h ^= h >> np.uint64(29)
        h *= _GOLDEN
    return (h >> np.uint64(16)) % np.uint64(buckets)


def _zipf(cardinality: int, exponent: float) -> np.ndarray:
    """Popularities proportional to ``(k + 1) ** -exponent`` for k in ``range(cardinality)``."""
    p = np.arange(1, cardinality + 1, dtype=np.float64) ** -exponent
    return p / p.sum()


def _check_settings(zipf, rarity_decay, dense_scale) -> None:
    if zipf is not None and not (isinstance(zipf, (int, float)) and zipf > 0):
        raise ValueError(f"click_data: expected zipf > 0 or None, received zipf={zipf!r}")
    if not (isinstance(rarity_decay, (int, float)) and rarity_decay >= 0):
        raise ValueError(f"click_data: expected rarity_decay >= 0, received rarity_decay={rarity_decay!r}")
    if not (isinstance(dense_scale, (int, float)) and dense_scale >= 0):
        raise ValueError(f"click_data: expected dense_scale >= 0, received dense_scale={dense_scale!r}")


@dataclass
class ClickData:
    """Synthetic click-through data: categorical ids (fields and their crosses, hashed into ``num_ids``), dense
    features, 0/1 clicks and each example's true click probability."""
    ids: np.ndarray          # (n, fields + crosses) int64 in [0, num_ids)
    dense: np.ndarray        # (n, num_dense) float32
    label: np.ndarray        # (n,) float32 clicks, 0 or 1
    probability: np.ndarray  # (n,) float64 true click probability
    num_ids: int

    def split(self, n_train: int):
        """The first ``n_train`` examples and the rest, as two ``ClickData``."""
        head = ClickData(self.ids[:n_train], self.dense[:n_train], self.label[:n_train],
                         self.probability[:n_train], self.num_ids)
        tail = ClickData(self.ids[n_train:], self.dense[n_train:], self.label[n_train:],
                         self.probability[n_train:], self.num_ids)
        return head, tail


def click_data(n: int, seed: int = 0, cardinalities=(12, 20, 30, 8, 50, 16),
               crosses=((0, 1), (2, 3), (1, 5)), num_dense: int = 4, num_ids: int = 4096,
               weight_scale: float = 0.8, bias: float = -1.0, *, zipf: float | None = None,
               rarity_decay: float = 0.0, dense_scale: float = 0.5) -> ClickData:
    """``n`` rows of synthetic click data; the same ``seed`` gives the same ground truth.

    A field's values are drawn with popularities from ``Dirichlet(0.7)`` or, with ``zipf=a``,
    Zipf-like: its k-th value (k = 0, 1, ...) with probability proportional to ``(k + 1) ** -a``.
    Each id has a weight ``N(0, weight_scale)``; with ``rarity_decay=d > 0`` a field's value of
    popularity ``p`` carries its id's weight times ``(p / p_max) ** d``, so rare values (which
    few rows show) move the click probability little. Dense features have weights
    ``N(0, dense_scale)``.
    """
    _check_settings(zipf, rarity_decay, dense_scale)
    truth = np.random.default_rng(seed)
    weights = truth.normal(0.0, weight_scale, num_ids)
    v = truth.normal(0.0, dense_scale, num_dense)
    popularity = [truth.dirichlet(np.full(c, 0.7)) for c in cardinalities] if zipf is None else \
        [_zipf(c, zipf) for c in cardinalities]
    rows = np.random.default_rng([seed, n])
    raw = np.stack([rows.choice(c, size=n, p=p) for c, p in zip(cardinalities, popularity)], axis=1)
    columns = [_hash(raw[:, f], f, num_ids) for f in range(len(cardinalities))]
    for k, (a, b) in enumerate(crosses):
        pair = raw[:, a].astype(np.uint64) * np.uint64(cardinalities[b]) + raw[:, b].astype(np.uint64)
        columns.append(_hash(pair, 1000 + k, num_ids))
    ids = np.stack(columns, axis=1).astype(np.int64)
    dense = rows.normal(size=(n, num_dense)).astype(np.float32)
    contributions = weights[ids]
    if rarity_decay:
        for f, p in enumerate(popularity):
            contributions[:, f] *= (p[raw[:, f]] / p.max()) ** rarity_decay
    logit = bias + contributions.sum(axis=1) + dense.astype(np.float64) @ v
    probability = 1.0 / (1.0 + np.exp(-logit))
    label = (rows.random(n) < probability).astype(np.float32)
    return ClickData(ids, dense, label, probability, num_ids)
