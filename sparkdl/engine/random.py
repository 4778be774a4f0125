"""Seeding for weight initialisation and stochastic layers.

``set_random_seed(s)`` makes every layer created afterwards draw its initial weights from a
generator derived from ``s`` and the order of creation, so a script that seeds once builds
the same model every run. ``fit(seed=...)`` reseeds the stochastic layers of one model.
"""
from __future__ import annotations

import numpy as np

from sparkdl.engine import checks

_root = np.random.SeedSequence()


def set_random_seed(seed: int) -> None:
    """Seed weight initialisation of layers created from now on (and NumPy's legacy RNG)."""
    global _root
    seed = checks.integer(seed, None, "set_random_seed", at_least=0)
    _root = np.random.SeedSequence(seed)
    np.random.seed(seed % 2**32)


def new_generator() -> np.random.Generator:
    return np.random.default_rng(_root.spawn(1)[0])
