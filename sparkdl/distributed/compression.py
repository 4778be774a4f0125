"""Lossy encodings of float32 vectors for the wire, and the error feedback that makes them safe.

``compression=None | "fp16" | "int8"``:

- ``"fp16"``: each value as an IEEE half (2 bytes; values beyond ±65504 are clipped to it).
- ``"int8"``: the vector in chunks of ``CHUNK`` values; each chunk is sent as one float32
  scale ``max|v| / 127`` and a signed byte per value, ``round(v / scale)`` (round half to
  even). ``n + 4 ceil(n / CHUNK)`` bytes for ``n`` values: 0.251 of float32.

An encoding is a ``uint8`` array (what a frame carries) and its decoding needs only the number
of values. Encoding and decoding are deterministic NumPy operations, so every process that
decodes the same bytes gets the same float32 values.

**Error feedback** (Seide et al. 2014; Karimireddy et al. 2019): a sender keeps what rounding
lost and adds it to what it sends next, ``v = x + r; send Q(v); r = v - D(Q(v))``. Over any
number of sends, the sum of what was received equals the sum of what was meant minus the
current residual, so nothing is lost, only delayed.
"""
from __future__ import annotations

import numpy as np

CHUNK = 2048                      # values per int8 scale
_F16_MAX = np.float32(np.finfo(np.float16).max)


class Codec:
    """One encoding: ``encode`` a float32 vector to bytes, ``decode`` them back."""

    name = "none"

    def nbytes(self, size: int) -> int:
        """Bytes of the encoding of ``size`` values."""
        raise NotImplementedError

    def encode(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def decode(self, payload: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def _payload(self, payload: np.ndarray, size: int) -> np.ndarray:
        expected = self.nbytes(size)
        if payload.dtype != np.uint8 or payload.ndim != 1 or payload.size != expected:
            raise ValueError(f"{self.name}: expected {expected} bytes (uint8) for {size} values, "
                             f"received {payload.size} values of {payload.dtype}")
        return payload

    def __repr__(self) -> str:
        return f"<codec {self.name}>"


def _vector(values: np.ndarray, who: str) -> np.ndarray:
    if not isinstance(values, np.ndarray) or values.dtype != np.float32 or values.ndim != 1:
        got = f"{values.dtype} array of shape {values.shape}" if isinstance(values, np.ndarray) \
            else type(values).__name__
        raise TypeError(f"{who}: expected a 1-D float32 array, received {got}")
    return values


def _out(out: np.ndarray | None, size: int, dtype) -> np.ndarray:
    if out is None:
        return np.empty(size, dtype)
    if out.dtype != dtype or out.shape != (size,):
        raise ValueError(f"expected an output array of {size} {np.dtype(dtype)} values, "
                         f"received {out.shape} of {out.dtype}")
    return out


class Float16(Codec):
    name = "fp16"

    def nbytes(self, size: int) -> int:
        return 2 * int(size)

    def encode(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        values = _vector(values, "fp16 encode")
        payload = _out(out, self.nbytes(values.size), np.uint8)
        halves = payload.view("<f2")
        np.clip(values, -_F16_MAX, _F16_MAX, out=halves, casting="same_kind")
        return payload

    def decode(self, payload: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
        payload = self._payload(payload, size)
        result = _out(out, size, np.float32)
        result[...] = payload.view("<f2")
        return result


class Int8(Codec):
    name = "int8"

    def __init__(self, chunk: int = CHUNK):
        self.chunk = int(chunk)

    def nbytes(self, size: int) -> int:
        return int(size) + 4 * self._chunks(size)

    def _chunks(self, size: int) -> int:
        return -(-int(size) // self.chunk)

    def _parts(self, size: int):
        """``(start, stop, rows)`` of the whole chunks, then of the last partial chunk."""
        whole = size // self.chunk
        yield 0, whole * self.chunk, whole
        if size % self.chunk:
            yield whole * self.chunk, size, 1

    def encode(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        values = _vector(values, "int8 encode")
        n, chunks = values.size, self._chunks(values.size)
        payload = _out(out, self.nbytes(n), np.uint8)
        scales = payload[:4 * chunks].view("<f4")
        codes = payload[4 * chunks:].view(np.int8)
        row = 0
        for start, stop, rows in self._parts(n):
            if rows == 0:
                continue
            block = values[start:stop].reshape(rows, -1)
            scale = np.abs(block).max(axis=1) / np.float32(127)
            scales[row:row + rows] = scale
            # divided, not multiplied by 1 / scale: the inverse of a subnormal scale overflows
            scaled = np.zeros_like(block)
            np.divide(block, scale[:, None], out=scaled, where=scale[:, None] > 0)
            np.rint(scaled, out=scaled)
            codes[start:stop] = scaled.reshape(-1)
            row += rows
        return payload

    def decode(self, payload: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
        payload = self._payload(payload, size)
        chunks = self._chunks(size)
        scales = payload[:4 * chunks].view("<f4")
        codes = payload[4 * chunks:].view(np.int8)
        result = _out(out, size, np.float32)
        row = 0
        for start, stop, rows in self._parts(size):
            if rows == 0:
                continue
            target = result[start:stop].reshape(rows, -1)
            np.multiply(codes[start:stop].reshape(rows, -1), scales[row:row + rows, None], out=target)
            row += rows
        return result


CODECS: dict[str, type[Codec]] = {"fp16": Float16, "int8": Int8}


def get_codec(compression) -> Codec | None:
    """The codec for a ``compression`` setting (None: vectors travel as float32)."""
    if compression is None:
        return None
    if not isinstance(compression, str) or compression not in CODECS:
        raise ValueError(f"expected compression None, 'fp16' or 'int8', received {compression!r}")
    return CODECS[compression]()


class ErrorFeedback:
    """A sender's residual: ``encode`` sends ``Q(x + r)`` and keeps ``r = x + r - D(Q(x + r))``."""

    def __init__(self, codec: Codec, size: int, residual: np.ndarray | None = None):
        self.codec = codec
        self.size = int(size)
        self.residual = np.zeros(self.size, np.float32)
        if residual is not None:
            self.residual[...] = residual
        self._sent = np.empty(self.size, np.float32)

    def encode(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        values = _vector(values, f"{self.codec.name} error feedback")
        if values.size != self.size:
            raise ValueError(f"{self.codec.name} error feedback: expected {self.size} values, "
                             f"received {values.size}")
        corrected = self.residual
        corrected += values                        # r <- x + r, in place: the residual's memory
        payload = self.codec.encode(corrected, out=out)
        self.codec.decode(payload, self.size, out=self._sent)
        corrected -= self._sent                    # r <- (x + r) - D(Q(x + r))
        return payload

    @property
    def sent(self) -> np.ndarray:
        """``D(Q(x + r))`` of the last ``encode``: what its receiver decodes (a live buffer)."""
        return self._sent
