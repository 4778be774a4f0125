"""The driver's model in files while a sharded fit runs (``mapped.MappedModel``)."""
import numpy as np

from sparkdl.distributed import mapped
from sparkdl.engine import optimizers
from tests.distributed.sparse_cases import click_model


def test_the_model_trains_on_its_mapped_weights_and_gets_them_back(tmp_path, monkeypatch):
    monkeypatch.setattr(mapped, "CHUNK", 100)          # several chunks for a small model
    model = click_model(optimizers.Adam(0.01))
    opt = model.optimizer
    opt.build(model.flat_weights.size)
    opt.slots["m"][...] = np.arange(model.flat_weights.size, dtype=np.float32)
    before, m_before = model.get_flat_weights(), opt.slots["m"].copy()
    kernel = model.trainable_weights[0]
    held = mapped.MappedModel(model, opt, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot-m.f32", "slot-v.f32", "weights.f32"]
    np.testing.assert_array_equal(model.flat_weights, before)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "weights.f32", np.float32), before)
    np.testing.assert_array_equal(opt.slots["m"], m_before)
    assert model.trainable_weights[0] is not kernel            # the layers' arrays are views of the file
    assert np.shares_memory(model.trainable_weights[0], model.flat_weights)
    # Writes go to the file, and dropping pages loses nothing.
    model.flat_weights[5:7] = [1.5, -2.5]
    opt.slots["m"][-1] = 7.0
    held.drop()
    held.drop(3, 11)
    assert list(model.flat_weights[5:7]) == [1.5, -2.5] and opt.slots["m"][-1] == 7.0
    x = [np.zeros((4, 9), np.int64), np.ones((4, 4), np.float32)]
    model.train_on_batch(x, np.ones(4, np.float32))             # training steps the mapped weights
    trained, trained_m = model.get_flat_weights(), opt.slots["m"].copy()
    np.testing.assert_array_equal(np.fromfile(tmp_path / "weights.f32", np.float32), trained)
    held.close()
    assert not list(tmp_path.iterdir())
    np.testing.assert_array_equal(model.flat_weights, trained)
    np.testing.assert_array_equal(opt.slots["m"], trained_m)
    assert np.shares_memory(model.trainable_weights[0], model.flat_weights)
