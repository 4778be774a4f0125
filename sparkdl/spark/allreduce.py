"""``transport="allreduce"``: the fit as one barrier job whose tasks average among themselves.

The tasks hold the training state and all-reduce each round's results with their peers
(``sparkdl.distributed.ring``, ``sparkdl.distributed.ring_task``); the driver sends each
round's order (the round's spec: a few hundred bytes), receives each partition's report
(counts, loss, metric states) and, only on the rounds that need it — the last of each epoch
(validation, callbacks, ``stop_training`` and the end of the fit, which come only at an
epoch's end), checkpoints, every round when a callback watches rounds, or every
``ring_task.MAX_REPLAY`` rounds so a retried stage has little to replay — the model's state
from the lowest training partition.
"""
from __future__ import annotations

from sparkdl.distributed import exchange, fit_task, ring_task
from sparkdl.distributed.coordinator import Coordinator
from sparkdl.spark import transports


class RingInJob(transports.InJob):
    """The fit's barrier job with ring all-reduce between its tasks (see the module docstring).
    Shares ``InJob``'s waiting, validation and closing; its ``sync_round`` applies nothing to
    the driver's model except the state a round brought back."""

    applies_rounds = True       # the tasks apply each round's mean; the driver only mirrors it
    ring_bytes = 0              # what the tasks sent each other in the last round

    def __init__(self, spark_model, blocks, model_bc, val_blocks, group: str, description: str):
        model = spark_model.model
        self._take_settings(spark_model, blocks)
        self.ps, self.exchange = None, None
        layout = exchange.round_layouts(model, "weights")[0]          # the whole state, every slot
        push = exchange.round_layouts(model, spark_model.aggregate)[1]  # what the hub's tasks push
        self.state = ring_task.RingState(layout, first=self.training[0] if self.training else 0)
        self.coordinator = Coordinator(self.state, partitions=range(len(blocks.rows)),
                                       poll=min(10.0, spark_model.timeout / 2),
                                       state_sizes=(model.flat_weights.size, model.flat_state.size), redo=True)
        self.server, address, token = transports.serve(blocks.site, self.coordinator, "sparkdl-allreduce",
                                                       spark_model.port, self.timeout)
        self.end = fit_task.FitEndpoint(address, token, self.timeout, layout, push,
                                        security=self.server.security, ring=tuple(self.training),
                                        compression=spark_model.compression)
        self._start_job(blocks, model_bc, val_blocks, group, description)

    def sync_round(self, spec, what: str, need_weights: bool = True):
        """``(result, bytes through the driver)``: one round carried out by the tasks; with
        ``need_weights`` (or when the base lags ``MAX_REPLAY`` rounds) the driver's model takes
        the state after it."""
        state = self.state
        if state.base_round is None:        # the fit starts (or resumes) from the driver's model
            model = self.model
            state.reset(spec.round, transports.round_payload(model, state.layout),
                        int(model.optimizer.iterations))
        need_weights = need_weights or state.lag(spec.round) + 1 >= ring_task.MAX_REPLAY
        before = state.bytes_pulled + state.bytes_pushed
        state.open(spec.round, vars(spec))
        self.coordinator.order(ring_task.ORDER, {"spec": vars(spec), "weights": bool(need_weights),
                                                 "first": state.first, "label": f"sparkdl {what}"},
                               expected=self.training)
        reports = self._wait(what)
        self.ring_bytes = sum(int(meta.get("ring_bytes", 0)) for meta, _ in reports.values())
        result = self._results(reports)
        transports.check_result(result, what.split("/")[0], "round", kept=(
            f"the driver's model holds the state after round {state.base_round}, the last it received "
            f"(with transport='allreduce' the tasks keep no earlier state)"))
        if need_weights:
            self._mirror(spec.round)
        return result, state.bytes_pulled + state.bytes_pushed - before

    def _mirror(self, round_index: int) -> None:
        """The driver's model takes the state the first partition pushed after ``round_index``."""
        state = self.state
        if state.base_round != round_index + 1 or state.base is None:
            raise RuntimeError(f"SparkModel.fit: round {round_index + 1} ended without the state of partition "
                               f"{state.first} (the driver holds the state after {state.base_round} rounds)")
        ring_task.set_state(self.model, state.layout, state.base, state.iterations)

