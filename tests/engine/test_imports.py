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


def test_keras_import_paths_are_modules_and_a_keras_2_port_runs_without_pyspark():
    out = _run("""
        import sys
        sys.modules["pyspark"] = None
        import warnings
        import numpy as np
        import sparkdl.layers, sparkdl.optimizers
        from sparkdl.layers import Dense, Dropout, Activation
        from sparkdl.optimizers import SGD
        from sparkdl.optimizers.schedules import CosineDecay
        from sparkdl.callbacks import EarlyStopping
        from sparkdl.losses import SparseCategoricalCrossentropy
        from sparkdl.metrics import Accuracy
        from sparkdl.models import Sequential, model_from_json
        from sparkdl.saving import register_keras_serializable, custom_object_scope
        import sparkdl.engine

        assert sparkdl.layers.__file__.endswith("layers.py"), sparkdl.layers.__file__
        assert sparkdl.layers.Dense is sparkdl.engine.layers.Dense
        assert sparkdl.optimizers.schedules.CosineDecay is CosineDecay

        x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
        y = (x[:, 0] > 0).astype("int64")
        model = Sequential()
        model.add(Dense(16, input_dim=20))
        model.add(Activation("relu"))
        model.add(Dropout(0.2))
        model.add(Dense(2))
        model.add(Activation("softmax"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sgd = SGD(lr=0.1, decay=1e-4, momentum=0.9, nesterov=True)
        assert [w.category for w in caught] == [DeprecationWarning]
        model.compile(loss=SparseCategoricalCrossentropy(), optimizer=sgd, metrics=[Accuracy()])
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[EarlyStopping(patience=1)])
        rebuilt = model_from_json(model.to_json())
        rebuilt.set_weights(model.get_weights())
        assert np.array_equal(rebuilt.predict(x), model.predict(x))
        assert sys.modules["pyspark"] is None
        print("ok")
    """)
    assert out.strip() == "ok"


def test_the_public_modules_export_every_public_engine_name():
    import types

    import sparkdl
    from sparkdl import engine
    pairs = {"layers": engine.layers, "optimizers": engine.optimizers, "callbacks": engine.callbacks,
             "losses": engine.losses, "metrics": engine.metrics}
    for name, inner in pairs.items():
        public = getattr(sparkdl, name)
        assert isinstance(public, types.ModuleType) and public is not inner, name
        assert public.__name__ == f"sparkdl.{name}"
        for item in public.__all__:
            assert getattr(public, item) is getattr(inner, item, None) or item == "schedules", (name, item)
        defined = {k for k, v in vars(inner).items() if not k.startswith("_") and isinstance(v, type)
                   and v.__module__.startswith(inner.__name__)}
        assert defined <= set(public.__all__), (name, sorted(defined - set(public.__all__)))
    assert sparkdl.optimizers.schedules.__name__ == "sparkdl.optimizers.schedules"
    assert {"register_serializable", "register_keras_serializable", "custom_object_scope",
            "load_model", "model_from_json"} <= set(sparkdl.saving.__all__)
    assert sparkdl.register_serializable is sparkdl.saving.register_serializable
