"""What protects the frames of one connection after its handshake: keys, sequence numbers, tags.

Both sides of a handshake contribute a random 32-byte nonce. HKDF (RFC 5869) with HMAC-SHA256
turns the per-fit token (the input key) and both nonces (the salt) into four 32-byte values,
each expanded with its own label that also names the protection ``mode``: the client's
proof, the server's proof, the client→server key and the server→client key. A relay that
forwards the handshake learns none of them, and one that rewrites the announced mode makes
the proofs disagree. Each direction numbers its frames from 0; the number is never sent, it
enters every tag, so a frame changed, replayed, reordered or dropped on the way fails the
check of the frame where it happened.

A protected frame carries two tags: one right after its metadata, covering the header, the
shape and the metadata (so the receiver checks them before it parses the JSON or gives the
data a place to land), and, when the frame holds an array, one after the data. Each tag is
bound to the direction, the frame's sequence number, its part (0: metadata, 1: data) and the
header.

Modes, from weakest to strongest:

- ``"plain"``: the handshake proves the token; frames travel as they are.
- ``"integrity"``: 32-byte HMAC-SHA256 tags over the frame's sequence number (8 bytes), its
  part, the direction, the header and shape, then the metadata or the data. Measured on the
  2-core x86-64 machine of ``BENCHMARKS.md`` (SHA extensions): HMAC-SHA256 hashes 40 MB in
  22 ms, keyed BLAKE2b in 44-53 ms, so HMAC-SHA256. A receiver hashes an array where it
  lands, piece by piece as it arrives (``hashlib`` takes a memoryview and releases the GIL
  while it hashes); a sender copies each 1 MiB piece into a scratch buffer, hashes and sends
  it from there, since a served array may change while it leaves (hogwild).
- ``"encrypted"``: AES-256-GCM from the ``cryptography`` package (the ``sparkdl[crypto]``
  extra) with the direction's key; the 12-byte nonce is the direction (3 bytes), the part
  (1 byte) and the sequence number (8 bytes); header and shape are authenticated in clear (a
  receiver needs the lengths), metadata and data are encrypted; 16-byte GCM tags. It needs no
  certificate: the keys come from the token as above.

A receiver checks a frame's tags before it returns the frame, so nothing of a frame that
fails reaches a service; its data may have landed in a receive buffer by then, and stays
unused.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sparkdl.errors import IntegrityError

MODES = ("plain", "integrity", "encrypted")
#: bytes of a frame hashed or encrypted at a time, between sends or receives: the two sides
#: work on different pieces at once, and each piece is still in the cache
CHUNK = 1 << 20
_CLIENT_TO_SERVER, _SERVER_TO_CLIENT = b"\0\0\1", b"\0\0\2"
EXTRA_HINT = 'pip install "sparkdl[crypto]"'


def check_mode(mode: object, who: str) -> str:
    """``mode`` if it names a protection mode, else ValueError naming the choices."""
    if mode not in MODES:
        raise ValueError(f"{who}: expected security to be one of {', '.join(map(repr, MODES))}, "
                         f"received security={mode!r}")
    return str(mode)


def require_cipher(why: str = "encrypted frames") -> None:
    """ImportError naming the extra to install when the ``cryptography`` package is absent."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"sparkdl's data plane needs the 'cryptography' package (AES-GCM) for "
                          f"{why}; install it with: {EXTRA_HINT}") from exc


# ---- keys -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Keys:
    """What both sides of one handshake derive from the token and both nonces."""
    client_proof: bytes
    server_proof: bytes
    client_to_server: bytes
    server_to_client: bytes


def derive_keys(token: bytes, server_nonce: bytes, client_nonce: bytes, mode: str) -> Keys:
    """HKDF-SHA256: extract with both nonces as salt, expand once per label (each names ``mode``)."""
    prk = hmac.new(server_nonce + client_nonce, token, hashlib.sha256).digest()

    def expand(label: bytes) -> bytes:
        info = b"sparkdl/2 " + mode.encode() + b" " + label
        return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()
    return Keys(expand(b"client proof"), expand(b"server proof"),
                expand(b"client->server"), expand(b"server->client"))


# ---- one frame's protection -------------------------------------------------------------------
class _Plain:
    """No protection: what frames get during the handshake and in mode "plain"."""
    size = 0

    def seal(self, view: memoryview) -> Iterator[memoryview]:
        yield view

    def open(self, view: memoryview) -> None:
        pass

    def tag(self) -> bytes:
        return b""

    def check(self, tag: bytes) -> None:
        pass


PLAIN = _Plain()


class _Mac(_Plain):
    """HMAC-SHA256 over the sequence number, the part, the direction and the header, then every
    byte of the part as it passes."""
    size = 32

    def __init__(self, key: bytes, nonce: bytes, head: bytes):
        self._mac = hmac.new(key, nonce + head, hashlib.sha256)

    def seal(self, view: memoryview) -> Iterator[memoryview]:
        # Each piece is copied into a scratch buffer, hashed there and sent from there: a served
        # array may change while it is sent (hogwild's lock-free vector), and the tag must cover
        # exactly the bytes that leave. The copy stays in the cache for the hash and the send.
        scratch = memoryview(bytearray(min(len(view), CHUNK)))
        for lo in range(0, len(view), CHUNK):
            piece = scratch[:len(view[lo:lo + CHUNK])]
            piece[:] = view[lo:lo + CHUNK]
            self._mac.update(piece)
            yield piece

    def open(self, view: memoryview) -> None:
        self._mac.update(view)

    def tag(self) -> bytes:
        return self._mac.digest()

    def check(self, tag: bytes) -> None:
        if not hmac.compare_digest(self._mac.digest(), tag):
            raise IntegrityError("a frame failed its integrity check (changed, replayed, reordered "
                                 "or dropped on the way)")


class _Gcm(_Plain):
    """AES-256-GCM: sealing encrypts through a scratch buffer, opening decrypts in place."""
    size = 16

    def __init__(self, key: bytes, nonce: bytes, head: bytes, sending: bool):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        cipher = Cipher(algorithms.AES(key), modes.GCM(nonce))
        self._ctx: Any = cipher.encryptor() if sending else cipher.decryptor()
        self._ctx.authenticate_additional_data(head)

    def seal(self, view: memoryview) -> Iterator[memoryview]:
        scratch = memoryview(bytearray(min(len(view), CHUNK)))
        for lo in range(0, len(view), CHUNK):
            yield scratch[:self._ctx.update_into(view[lo:lo + CHUNK], scratch)]

    def open(self, view: memoryview) -> None:
        for lo in range(0, len(view), CHUNK):
            piece = view[lo:lo + CHUNK]
            self._ctx.update_into(piece, piece)

    def tag(self) -> bytes:
        self._ctx.finalize()
        return self._ctx.tag

    def check(self, tag: bytes) -> None:
        from cryptography.exceptions import InvalidTag
        try:
            self._ctx.finalize_with_tag(tag)
        except (InvalidTag, ValueError):
            raise IntegrityError("a frame failed its authentication (changed, replayed, reordered "
                                 "or dropped on the way)") from None


class Session:
    """The protection of one authenticated connection: its ``mode``, and per direction a key and
    the number of frames so far. ``sealers(head)`` / ``openers(head)`` protect the next frame
    sent / received (``head``: its header and shape), counting it: one protection for its
    metadata, one for its data."""

    def __init__(self, mode: str, send_key: bytes, recv_key: bytes, send_dir: bytes, recv_dir: bytes):
        self.mode = check_mode(mode, "Session")
        if mode == "encrypted":
            require_cipher()
        self._send, self._recv = (send_key, send_dir), (recv_key, recv_dir)
        self.sent = self.received = 0

    @classmethod
    def client(cls, keys: Keys, mode: str) -> Session:
        return cls(mode, keys.client_to_server, keys.server_to_client, _CLIENT_TO_SERVER, _SERVER_TO_CLIENT)

    @classmethod
    def server(cls, keys: Keys, mode: str) -> Session:
        return cls(mode, keys.server_to_client, keys.client_to_server, _SERVER_TO_CLIENT, _CLIENT_TO_SERVER)

    def sealers(self, head: bytes) -> tuple[_Plain, _Plain]:
        self.sent += 1
        return self._protect(self._send, self.sent - 1, head, sending=True)

    def openers(self, head: bytes) -> tuple[_Plain, _Plain]:
        self.received += 1
        return self._protect(self._recv, self.received - 1, head, sending=False)

    def _protect(self, side: tuple[bytes, bytes], seq: int, head: bytes,
                 sending: bool) -> tuple[_Plain, _Plain]:
        key, direction = side
        nonces = [direction + bytes([part]) + seq.to_bytes(8, "big") for part in (0, 1)]
        if self.mode == "integrity":
            return _Mac(key, nonces[0], head), _Mac(key, nonces[1], head)
        if self.mode == "encrypted":
            return _Gcm(key, nonces[0], head, sending), _Gcm(key, nonces[1], head, sending)
        return PLAIN, PLAIN
