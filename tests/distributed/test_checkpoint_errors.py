"""Errors about a checkpoint name the checkpoint operation, not the model loader it shares the
``model.json`` / ``weights.npz`` format with."""
import hashlib
import json
import zipfile

import numpy as np
import pytest

from sparkdl.distributed.checkpoint import CheckpointStore
from sparkdl.engine import optimizers, zoo


def _model():
    model = zoo.mlp(input_dim=4, hidden=(5,), num_classes=2)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy")
    model.train_on_batch(np.ones((3, 4), np.float32), np.array([0, 1, 0]))
    return model


def _rewrite(path, **replace):
    """Replace members of a checkpoint file, with the manifest's checksums updated to match."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members.update(replace)
    manifest = json.loads(members["checkpoint.json"])
    for name in replace:
        manifest["members"][name] = hashlib.sha256(members[name]).hexdigest()
    members["checkpoint.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("member, damage, fragment", [
    ("model.json", lambda doc: json.dumps({**json.loads(doc), "version": 99}).encode(),
     "has format version 99"),
    ("weights.npz", lambda data: data[:len(data) // 2], "is corrupted or truncated"),
    ("arrays.npz", lambda data: b"not an npz" * 4, "cannot read the arrays"),
])
def test_unreadable_checkpoint_errors_name_the_restore(tmp_path, member, damage, fragment):
    store = CheckpointStore(tmp_path)
    path = store.save(_model(), 3, {})
    with zipfile.ZipFile(path) as zf:
        original = zf.read(member)
    _rewrite(path, **{member: damage(original)})
    with pytest.raises(ValueError) as info:
        store.restore_latest(_model())
    message = str(info.value)
    assert "ckpt-00000003.sdlckpt: CheckpointStore.restore_latest: " in message
    assert fragment in message
    assert "load_model" not in message

