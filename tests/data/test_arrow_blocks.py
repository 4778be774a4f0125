"""Arrow arrays into the engine's arrays (``sparkdl.data.arrow_blocks``), without Spark: the
struct Spark uses for ml Vectors read as ids, and lists read as ids or float32 values."""
import numpy as np
import pyarrow as pa
import pytest

from sparkdl.data.arrow_blocks import list_to_dense, vector_struct_to_ids


def _vector_structs(rows):
    """The Arrow struct Spark uses for ml Vectors; rows are ("d", values) or ("s", size, indices, values)."""
    kinds, sizes, indices, values = [], [], [], []
    for r in rows:
        if r[0] == "d":
            kinds.append(1), sizes.append(None), indices.append(None), values.append(list(r[1]))
        else:
            kinds.append(0), sizes.append(r[1]), indices.append(list(r[2])), values.append(list(r[3]))
    return pa.StructArray.from_arrays(
        [pa.array(kinds, pa.int8()), pa.array(sizes, pa.int32()), pa.array(indices, pa.list_(pa.int32())),
         pa.array(values, pa.list_(pa.float64()))], names=["type", "size", "indices", "values"])


def test_vector_ids_from_arrow_dense_and_sparse_rows():
    arr = _vector_structs([
        ("d", [0, 2.0, 0, 0, 1, 0, 0.5]),       # non-zero positions 1, 4, 6
        ("s", 7, [5, 0, 3], [1, 1, 1]),          # given unsorted: sorted to 0, 3, 5
        ("s", 7, [2, 3, 6], [0.0, 1, 1]),        # a stored zero still counts as active
    ])
    assert vector_struct_to_ids(arr, 3).tolist() == [[1, 4, 6], [0, 3, 5], [2, 3, 6]]
    with pytest.raises(ValueError, match=r"f: expected 2 active indices per row .* received a row "
                                         r"with 3 \(3 of 3 rows"):
        vector_struct_to_ids(arr, 2, "f")
    with pytest.raises(ValueError, match="received a row with 1"):
        vector_struct_to_ids(_vector_structs([("d", [0, 0, 3.0, 0])]), 3)
    # Ids as the values of a vector of size = ids per row: every position "active", every row
    # the same ids 0..2. Refused, pointing at vector_to_array.
    for row in (("d", [3.0, 17.0, 5.0]), ("s", 3, [0, 1, 2], [3.0, 17.0, 5.0])):
        with pytest.raises(ValueError, match=r"a vector of size 3 cannot carry 3 ids .*vector_to_array"):
            vector_struct_to_ids(_vector_structs([("d", [0, 2.0, 0, 1, 4.0]), row]), 3)


def test_list_ids_must_be_whole_numbers_and_float_lists_read_as_float32():
    # Whole floats are accepted as ids, fractions are not.
    assert list_to_dense(pa.array([[1.0, 2.0, 3.0]]), 3, "t", ids=True).tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError, match=r"whole numbers, received 2\.5"):
        list_to_dense(pa.array([[1.0, 2.5, 3.0]]), 3, "t", ids=True)
    # Float models still read float32.
    assert list_to_dense(pa.array([[1, 2]]), 2, "t").dtype == np.float32
