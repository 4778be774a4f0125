"""Shared pieces of the row-sparse and sharded-server tests: a small Wide & Deep model on
click data, and K shard servers of its vector behind frame servers in this process."""
import contextlib

import numpy as np

from sparkdl.data.synthetic import click_data
from sparkdl.distributed import protocol
from sparkdl.distributed.server import FrameServer
from sparkdl.distributed.shard_client import ShardedClient
from sparkdl.distributed.shard_layout import ShardLayout
from sparkdl.distributed.shard_rounds import ShardRounds
from sparkdl.distributed.shards import ShardServer
from sparkdl.distributed.sparse import ParamMap
from sparkdl.engine import layers, optimizers, zoo
from sparkdl.engine.model import Model
from sparkdl.engine.random import set_random_seed

NUM_IDS = 64
ROWS = 300


def click_model(optimizer=None, seed=0, batchnorm=False) -> Model:
    """Wide & Deep over 9 id fields (6 raw, 3 crosses) and 4 dense features; with
    ``batchnorm`` the dense features pass a BatchNorm (moving statistics in the vector)."""
    set_random_seed(seed)
    if batchnorm:
        ids, dense = layers.Input((9,), dtype="int64"), layers.Input((4,))
        h = layers.Flatten()(layers.Embedding(NUM_IDS, 3, name="emb")(ids))
        h = layers.Concatenate()([h, layers.BatchNorm()(dense)])
        out = layers.Dense(1, activation="sigmoid")(layers.Dense(5, activation="relu")(h))
        model = Model(inputs=[ids, dense], outputs=out)
    else:
        model = zoo.wide_and_deep(num_ids=NUM_IDS, num_fields=9, num_dense=4, embedding_dim=4, hidden=(8,))
    model.compile(optimizer=optimizer or optimizers.SGD(0.05), loss="binary_crossentropy")
    return model


def click_block(model, n=ROWS, seed=0):
    """``(xs, y)`` of ``n`` rows of click data, checked for ``model``."""
    d = click_data(n, seed=seed, num_ids=NUM_IDS)
    return model.check_data([d.ids, d.dense], d.label, "click_block")


def same(a, b) -> bool:
    """Equal values (``-0.0 == 0.0``) and the same shape."""
    return a.shape == b.shape and bool(np.array_equal(a, b))


@contextlib.contextmanager
def sharded(model, num_shards, *, rows=None, epoch=0, **kwargs):
    """The model's vector on ``num_shards`` ShardServers behind FrameServers:
    ``(layout, shards, connect)`` where ``connect(partition, attempt=0, epoch=epoch)`` opens a
    client."""
    def service(layout, k, values):
        shard = ShardServer(layout, k, values, rows=rows or {0: ROWS}, **kwargs)
        shard.begin_epoch(epoch)
        return shard
    with _served(model, num_shards, service, epoch) as served:
        yield served


@contextlib.contextmanager
def sharded_rounds(model, num_shards, optimizer, wait=0.0):
    """As ``sharded``, with ShardRounds services (sync gradient rounds) stepping ``optimizer``
    (pulls waiting ``wait`` seconds for their round to open)."""
    with _served(model, num_shards, lambda layout, k, values: ShardRounds(layout, k, values, optimizer, wait),
                 0) as served:
        yield served


@contextlib.contextmanager
def _served(model, num_shards, service, epoch):
    from sparkdl.distributed.worker import model_vector
    layout = ShardLayout(ParamMap.from_model(model), num_shards)
    vector = model_vector(model)
    token = protocol.new_token()
    shards = [service(layout, k, layout.shard_values(vector, k)) for k in range(num_shards)]
    servers, clients = [], []
    try:
        for s in shards:
            servers.append(FrameServer(s, token, timeout=5.0))

        def connect(partition, attempt=0, epoch=epoch):
            clients.append(ShardedClient(layout, [srv.address for srv in servers], token, 5.0, epoch,
                                         partition, attempt))
            return clients[-1]
        connect.addresses = [srv.address for srv in servers]   # for raw connections
        connect.token = token
        yield layout, shards, connect
    finally:
        for c in clients:
            c.close()
        for srv in servers:
            srv.close()


def assembled(layout, shards) -> np.ndarray:
    return layout.assemble([s.snapshot() for s in shards])


def serve_shards_in_child(layout, vectors, token, conn) -> None:
    """A child process's part of a cross-process test: serve ShardServers of ``vectors`` (one
    local vector per shard), send their addresses on ``conn``, and on any message send back
    their local vectors and stop."""
    shards = [ShardServer(layout, k, v, rows={0: ROWS, 1: ROWS}) for k, v in enumerate(vectors)]
    servers = [FrameServer(s, token, timeout=5.0) for s in shards]
    try:
        conn.send([srv.address for srv in servers])
        conn.recv()
        conn.send([s.snapshot() for s in shards])
    finally:
        for srv in servers:
            srv.close()
