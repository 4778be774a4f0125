"""The exceptions sparkdl raises for callers to catch, all in one module.

Each class is also importable from ``sparkdl`` and from the module that raises it
(``sparkdl.engine.model``, ``sparkdl.distributed.protocol``). It imports nothing itself, so
every layer of sparkdl (engine, distributed, Spark) can raise from it without an import cycle
and without pyspark.
"""
from __future__ import annotations

__all__ = ["AuthenticationError", "IntegrityError", "NotCompiledError", "ProtocolError", "RemoteError",
           "SparkTrainingDivergedError", "TrainingDivergedError"]


class NotCompiledError(RuntimeError, ValueError):
    """A training or evaluation method was called before ``compile``."""


class TrainingDivergedError(FloatingPointError):
    """The loss (or, in distributed training, the weights or an update) became NaN or infinite;
    the model keeps the weights it had before the failing step."""


class SparkTrainingDivergedError(TrainingDivergedError):
    """Training diverged during ``SparkModel.fit``: in some partition, or in the driver's step on
    the mean gradient. The message names the round (or epoch) and the partitions; the driver's
    model keeps the weights it had before that round (or epoch)."""


class ProtocolError(ValueError):
    """A frame that breaks the protocol (bad magic, version, length, JSON...)."""


class AuthenticationError(ProtocolError):
    """The other side could not prove it holds the job's token."""


class IntegrityError(AuthenticationError):
    """A frame after the handshake failed its check: changed, replayed, reordered or dropped
    on the way (or sent by someone who does not hold the session's keys)."""


class RemoteError(RuntimeError):
    """The server answered a request with an ERROR frame."""
