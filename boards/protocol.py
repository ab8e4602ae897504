"""The host protocol over the board's UART: frames, CRC, commands, replies.

Plain Python (no Amaranth): the host (boards/link.py) and the board's controller
(boards/controller.py) both take their constants from here.

A command frame, host -> board:

    0xA5 | cmd | len | payload (len bytes, 0..255) | crc_hi crc_lo

A reply frame, board -> host:

    0x5A | cmd (echoed) | status | len | payload (len bytes) | crc_hi crc_lo

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection,
no final XOR; check value 0x29B1 over b"123456789"), over every byte after the sync byte
up to the CRC, sent high byte first. Multi-byte numbers are big-endian; signed ones two's
complement. One command at a time: the board ignores bytes while it executes and replies.
Every frame the board takes gets a reply: a bad CRC, an unknown command, a length the
command does not take, a load past the last word, or a frame cut short (no byte for the
board's timeout) get an error status and an empty payload.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

from crystalbench.errors import LinkError

PROTOCOL_VERSION = 1
SYNC_CMD = 0xA5
SYNC_REPLY = 0x5A
MAX_PAYLOAD = 255

# commands
IDENTIFY = 0x01  # -> identity (IDENTITY_LAYOUT)
LOAD = 0x02  # start address (2 bytes) + words (word_bytes each) -> empty
RUN = 0x03  # input codes (in_bytes each) -> logits (logit_bytes each) + class (1 byte)
READ = 0x04  # -> the last run's logits + class
COUNTERS = 0x05  # -> last run's cycles, runs, error replies (4 bytes each)
RUN_ADC = 0x06  # (boards with an SPI ADC front end) -> the codes read + logits + class
COMMANDS = {IDENTIFY: "identify", LOAD: "load", RUN: "run", READ: "read", COUNTERS: "counters",
            RUN_ADC: "run-adc"}

# reply statuses
OK = 0
BAD_CRC = 1
BAD_LENGTH = 2
UNKNOWN_COMMAND = 3
TIMEOUT = 4
BAD_ADDRESS = 5
STATUSES = {OK: "ok", BAD_CRC: "bad CRC", BAD_LENGTH: "bad length",
            UNKNOWN_COMMAND: "unknown command", TIMEOUT: "frame cut short (timeout)",
            BAD_ADDRESS: "load past the last word"}

# IDENTIFY's payload: (field, bytes) in order
IDENTITY_LAYOUT = (("version", 1), ("weights_digest", 8), ("formats_digest", 8), ("flags", 1),
                   ("n_in", 2), ("in_bits", 1), ("n_classes", 1), ("logit_bits", 1),
                   ("n_words", 2), ("n_conn", 2), ("word_bytes", 1), ("clock_hz", 4), ("baud", 4))
IDENTITY_BYTES = sum(n for _, n in IDENTITY_LAYOUT)
FLAG_LOADED = 0x01  # a LOAD has been executed since configuration
FLAG_ADC = 0x02  # the board reads its inputs from an SPI ADC front end (RUN_ADC)
COUNTER_FIELDS = ("run_cycles", "runs", "errors")




# ---- CRC-16/CCITT-FALSE ---------------------------------------------------------------------
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF


def crc16_update(crc: int, byte: int) -> int:
    """One byte into the CRC, most significant bit first."""
    for i in range(7, -1, -1):
        fb = ((crc >> 15) ^ (byte >> i)) & 1
        crc = ((crc << 1) & 0xFFFF) ^ (CRC_POLY if fb else 0)
    return crc


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    for b in data:
        crc = crc16_update(crc, b)
    return crc


# ---- frames ---------------------------------------------------------------------------------
def _body(head: bytes, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise LinkError(f"payload of {len(payload)} bytes; a frame holds at most {MAX_PAYLOAD} "
                        "(split the load into more frames)")
    body = head + bytes([len(payload)]) + payload
    return body + crc16(body).to_bytes(2, "big")


def encode_command(cmd: int, payload: bytes = b"") -> bytes:
    return bytes([SYNC_CMD]) + _body(bytes([cmd]), bytes(payload))


def encode_reply(cmd: int, status: int, payload: bytes = b"") -> bytes:
    """What the board sends (the host's simulated boards and tests use it)."""
    return bytes([SYNC_REPLY]) + _body(bytes([cmd, status]), bytes(payload))


@dataclass(frozen=True)
class Reply:
    cmd: int
    status: int
    payload: bytes


def decode_reply(frame: bytes) -> Reply:
    """A whole reply frame (sync byte first) -> Reply; a damaged one is a LinkError."""
    if len(frame) < 6 or frame[0] != SYNC_REPLY:
        raise LinkError(f"reply {frame.hex()} is not a reply frame (0x5A, cmd, status, len, "
                        "payload, CRC); check the port and the baud rate")
    n = frame[3]
    if len(frame) != 6 + n:
        raise LinkError(f"reply {frame.hex()}: length byte {n} but {len(frame) - 6} payload bytes")
    if crc16(frame[1:]) != 0:  # the CRC over the body and its own CRC leaves 0
        raise LinkError(f"reply {frame.hex()}: bad CRC (line noise or a wrong baud rate); retry")
    return Reply(frame[1], frame[2], bytes(frame[4:4 + n]))


# ---- payload layouts ------------------------------------------------------------------------
def nbytes(bits: int) -> int:
    return (bits + 7) // 8


def word_bytes(data_bits: int) -> int:
    """Bytes per LOAD word: the smallest power of two holding `data_bits` (a power of two
    lets the board check a length with a mask)."""
    n = 1
    while 8 * n < data_bits:
        n *= 2
    return n


def to_signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def formats_digest(net) -> str:
    """What a loadable design keeps from the net it was built from (every format, and
    which connections exist): sha256 of the JSON text, 16 hex digits. A host may load
    weights into a board only when its net has the same formats digest."""
    text = json.dumps([{"activation": ly.activation, "in_bits": ly.in_bits,
                        "weight_bits": ly.weight_bits, "acc_bits": ly.acc_bits,
                        "out_bits": ly.out_bits, "shift": ly.shift.tolist(),
                        "mask": ly.mask.astype(int).tolist()} for ly in net.layers])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_bytes(fields: dict) -> bytes:
    """IDENTIFY's payload from its fields (digests as 16 hex digits)."""
    out = b""
    for name, n in IDENTITY_LAYOUT:
        v = fields[name]
        out += bytes.fromhex(v) if name.endswith("digest") else int(v).to_bytes(n, "big")
    return out


def parse_identity(payload: bytes) -> dict:
    if len(payload) != IDENTITY_BYTES:
        raise LinkError(f"identify reply of {len(payload)} bytes, protocol version "
                        f"{PROTOCOL_VERSION} gives {IDENTITY_BYTES}: the board runs another "
                        "protocol version; build and flash this one (`make bitstream flash`)")
    out, at = {}, 0
    for name, n in IDENTITY_LAYOUT:
        chunk = payload[at:at + n]
        out[name] = chunk.hex() if name.endswith("digest") else int.from_bytes(chunk, "big")
        at += n
    return out


def parse_counters(payload: bytes) -> dict:
    if len(payload) != 4 * len(COUNTER_FIELDS):
        raise LinkError(f"counters reply of {len(payload)} bytes, expected "
                        f"{4 * len(COUNTER_FIELDS)}")
    return dict(zip(COUNTER_FIELDS, struct.unpack(">3I", payload)))
