"""The exceptions callers catch live in ``sparkdl.errors``, are importable from ``sparkdl`` and
from the modules that raise them, and keep the built-in bases existing code catches."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sparkdl
from sparkdl import errors, layers, optimizers
from sparkdl.models import Input, Sequential

NAMES = ["NotCompiledError", "TrainingDivergedError", "SparkTrainingDivergedError",
         "ProtocolError", "AuthenticationError", "IntegrityError", "RemoteError"]


def test_every_error_is_defined_once_and_exported_from_sparkdl():
    assert sorted(errors.__all__) == sorted(NAMES)
    for name in NAMES:
        cls = getattr(errors, name)
        assert cls.__module__ == "sparkdl.errors"
        assert getattr(sparkdl, name) is cls
        assert name in sparkdl.__all__
    assert issubclass(errors.IntegrityError, errors.AuthenticationError)     # a tampered frame


def test_the_former_import_locations_give_the_same_classes():
    from sparkdl.distributed import protocol
    from sparkdl.engine import NotCompiledError, TrainingDivergedError, model
    assert NotCompiledError is model.NotCompiledError is errors.NotCompiledError
    assert TrainingDivergedError is model.TrainingDivergedError is errors.TrainingDivergedError
    for name in ("ProtocolError", "AuthenticationError", "RemoteError"):
        assert getattr(protocol, name) is getattr(errors, name)


@pytest.mark.parametrize("name, bases", [
    ("NotCompiledError", (RuntimeError, ValueError)),
    ("TrainingDivergedError", (FloatingPointError, ArithmeticError)),
    ("SparkTrainingDivergedError", (errors.TrainingDivergedError, FloatingPointError)),
    ("ProtocolError", (ValueError,)),
    ("AuthenticationError", (errors.ProtocolError, ValueError)),
    ("RemoteError", (RuntimeError,)),
])
def test_errors_keep_the_builtin_bases_callers_catch(name, bases):
    cls = getattr(errors, name)
    for base in bases:
        assert issubclass(cls, base), (name, base)


def test_errors_import_without_pyspark():
    code = textwrap.dedent("""
        import sys
        sys.modules["pyspark"] = None  # any `import pyspark...` now raises ImportError
        from sparkdl import TrainingDivergedError, SparkTrainingDivergedError, RemoteError  # noqa: F401
        import sparkdl.errors  # noqa: F401
        print(sorted(m for m, mod in sys.modules.items()
                     if mod is not None and m.split(".")[0] in ("pyspark", "py4j")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_engine_divergence_is_caught_from_sparkdl():
    model = Sequential([Input((2,)), layers.Dense(1)])
    model.compile(optimizers.SGD(learning_rate=0.1), "mse")
    x = np.full((4, 2), 1e30, np.float32)
    before = model.get_weights()
    with np.errstate(all="ignore"), pytest.raises(sparkdl.TrainingDivergedError, match="the loss became inf"):
        model.train_on_batch(x, np.zeros((4, 1), np.float32))
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)


def test_not_compiled_is_caught_from_sparkdl():
    model = Sequential([Input((2,)), layers.Dense(1)])
    with pytest.raises(sparkdl.NotCompiledError, match="must be compiled first"):
        model.evaluate(np.zeros((2, 2), np.float32), np.zeros((2, 1), np.float32))
