"""The engine works without pyspark, and ``import sparkdl`` does not start pyspark."""
import subprocess
import sys
import textwrap


def _run(code):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def test_engine_builds_and_fits_with_pyspark_unimportable():
    out = _run("""
        import sys
        sys.modules["pyspark"] = None  # any `import pyspark...` now raises ImportError
        try:
            import pyspark  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("pyspark should be blocked")

        import sparkdl.engine
        import sparkdl
        from sparkdl import layers, optimizers, losses, metrics, callbacks  # noqa: F401
        from sparkdl.models import Sequential, Input, load_model  # noqa: F401
        import numpy as np

        sparkdl.set_random_seed(0)
        x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
        y = (x.sum(axis=1) > 0).astype("float32")
        model = Sequential([Input((3,)), layers.Dense(4, activation="relu"),
                            layers.Dense(1, activation="sigmoid")])
        model.compile(optimizers.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
        assert len(history.history["loss"]) == 3
        assert model.predict(x).shape == (32, 1)
        engine_model = sparkdl.engine.Sequential([sparkdl.engine.layers.Dense(2, input_shape=(3,))])
        engine_model.compile("sgd", "mse")
        engine_model.train_on_batch(x, np.zeros((32, 2), "float32"))
        assert sys.modules["pyspark"] is None
        print("ok")
    """)
    assert out.strip() == "ok"


def test_import_sparkdl_does_not_import_pyspark():
    out = _run("""
        import sys
        import sparkdl
        import sparkdl.models
        import sparkdl.engine
        loaded = sorted(m for m in sys.modules if m == "pyspark" or m.startswith("pyspark."))
        print(loaded)
    """)
    assert out.strip() == "[]"


def test_spark_model_is_only_resolved_on_demand():
    # Accessing an unknown attribute is an AttributeError, not an import of anything.
    out = _run("""
        import sys
        sys.modules["pyspark"] = None
        import sparkdl
        try:
            sparkdl.NoSuchThing
        except AttributeError as exc:
            print("AttributeError:", exc)
    """)
    assert "has no attribute 'NoSuchThing'" in out
