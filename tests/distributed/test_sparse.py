"""Row-sparse views of a model's vector (``sparkdl.distributed.sparse``): the map of dense
part and tables, gathering and scattering rows, the ids a stretch of batches touches."""
import numpy as np
import pytest

from sparkdl.distributed.sparse import ParamMap, RowSlice
from sparkdl.distributed.worker import model_vector
from sparkdl.engine import layers
from sparkdl.engine.model import Model
from sparkdl.engine.sequential import Sequential
from sparkdl.engine.training import BatchPlan
from tests.distributed.sparse_cases import NUM_IDS, click_block, click_model, same


def test_map_of_wide_and_deep_names_each_table_and_its_input():
    model = click_model()
    m = ParamMap.from_model(model)
    by_layer = {layer.name: layer.params["embeddings"] for layer in model.layers if "embeddings" in layer.params}
    assert sorted(t.name for t in m.tables) == sorted(f"{n}/embeddings" for n in by_layer)
    vector = model_vector(model)
    for t, tab in enumerate(m.tables):
        assert (tab.rows, tab.dim, tab.input_index) == (NUM_IDS, by_layer[tab.name.split("/")[0]].shape[1], 0)
        assert same(m.table(vector, t), by_layer[tab.name.split("/")[0]])
    assert m.dense_length == m.dense_size == model.flat_weights.size - sum(t.rows * t.dim for t in m.tables)


def test_take_and_put_move_the_dense_part_the_rows_and_the_moving_statistics():
    model = click_model(batchnorm=True)
    m = ParamMap.from_model(model)
    assert m.state_size == model.flat_state.size > 0 and m.dense_length == m.dense_size + m.state_size
    model.flat_state[...] = np.arange(m.state_size)
    vector = model_vector(model)
    ids = [np.array([1, 5, 63])]
    part = m.take(vector, ids)
    emb = next(layer for layer in model.layers if layer.name == "emb").params["embeddings"]
    assert same(part.rows[0], emb[[1, 5, 63]])
    assert same(part.dense, np.concatenate([model.flat_weights[:m.dense_size], model.flat_state]))
    target = np.full(m.size, np.nan, np.float32)
    m.put(target, part)
    written = ~np.isnan(target)
    assert written.sum() == m.dense_length + 3 * emb.shape[1]
    assert same(target[written], vector[written])
    assert same(m.take_model(model, ids).rows[0], part.rows[0])


def test_a_table_fed_by_another_layer_has_no_ids_to_pull():
    ids = layers.Input((4,), dtype="int64")
    emb = layers.Embedding(10, 2)(layers.Reshape((4,))(ids))
    model = Model(inputs=ids, outputs=layers.Dense(1)(layers.Flatten()(emb)))
    with pytest.raises(ValueError, match="read its ids from a model input directly"):
        ParamMap.from_model(model)


def test_a_sequential_model_reads_its_first_embedding_from_its_input():
    model = Sequential([layers.Input((3,), dtype="int64"), layers.Embedding(20, 2), layers.Flatten(),
                        layers.Dense(1)])
    assert [t.input_index for t in ParamMap.from_model(model).tables] == [0]


@pytest.mark.parametrize("shuffle", [True, False])
def test_touched_ids_are_those_the_planned_batches_read(shuffle):
    model = click_model()
    xs, y = click_block(model)
    m = ParamMap.from_model(model)
    plans = [BatchPlan(len(y), 32, (3, 0, 1), 2, 4, shuffle), BatchPlan(len(y), 32, (3, 1, 1), 0, 1, shuffle)]
    read = np.unique(np.concatenate([xb[0].reshape(-1) for plan in plans
                                     for _, xb, _ in plan.iterate(model, xs, y)]))
    touched = m.touched_ids(xs, plans)
    assert len(touched) == 2 and all(same(t, read.astype(m.id_dtype)) for t in touched)
    assert len(read) < NUM_IDS          # the stretch reads part of the table only


def test_ids_must_be_sorted_unique_and_in_range():
    m = ParamMap.from_model(click_model())
    vector = np.zeros(m.size, np.float32)
    for bad in ([3, 1], [1, 1], [-1], [NUM_IDS]):
        with pytest.raises(ValueError, match="sorted unique ids"):
            m.take(vector, [np.array(bad), np.array([0])])
    with pytest.raises(ValueError, match="ids for 2 tables"):
        m.take(vector, [np.array([0])])


def test_changed_keeps_rows_with_a_change_and_nbytes_counts_what_travels():
    dense = np.ones(3, np.float32)
    ids = [np.array([2, 7, 9], np.int32)]
    before = RowSlice(dense, ids, [np.zeros((3, 2), np.float32)])
    after = RowSlice(dense + 1, ids, [np.array([[0, 0], [0, 1], [2, 0]], np.float32)])
    delta = after.minus(before).changed()
    assert same(delta.dense, np.ones(3, np.float32))
    assert same(delta.ids[0], np.array([7, 9], np.int32))
    assert same(delta.rows[0], np.array([[0, 1], [2, 0]], np.float32))
    assert delta.nbytes == 3 * 4 + 2 * (4 + 2 * 4)
