"""The host side of the link: a transport (pyserial for a real board, the Amaranth
simulator for a simulated one, boards/simboard.py) and `BoardLink`, which speaks the
protocol (boards/protocol.py) over it.

The host keeps which weights the board computes with (`live`, an IntNet, and its
`live_digest`): it checks every new set with fixed.loadable_update before writing a word
(so nothing that could overflow an accumulator ever reaches the board), writes only the
words that differ from the live set, and compares what it expects with the golden model.
"""

from __future__ import annotations

import time

import numpy as np

from crystalbench.rtl import design as design_mod
from crystalbench.rtl import fixed

from . import protocol as P
from .protocol import LinkError


class Transport:
    """Bytes to and from a board; a transport counts the bytes it moved (`bytes_sent`,
    `bytes_received`: what `read` returned)."""

    bytes_sent = 0
    bytes_received = 0

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, n: int, timeout: float) -> bytes:
        """Up to n bytes; fewer when `timeout` seconds pass first."""
        raise NotImplementedError

    def flush_input(self) -> None:
        """Drop whatever was received and not read (stale replies)."""

    def now(self) -> float:
        """The transport's clock in seconds (a simulated board: simulated time)."""
        return time.monotonic()

    def close(self) -> None:
        pass


class SerialTransport(Transport):
    """A real board on a serial port (pyserial); the iCEBreaker's FTDI UART is its second
    interface, usually /dev/ttyUSB1 on Linux."""

    def __init__(self, port: str, baud: int):
        import serial  # pyserial: only a real link needs it

        try:
            self.port = serial.Serial(port, baud, timeout=0)
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"cannot open serial port {port} ({e}); connect the board, or name "
                            "its port (the FTDI's second interface, e.g. /dev/ttyUSB1)") from None

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()
        self.bytes_sent += len(data)

    def read(self, n: int, timeout: float) -> bytes:
        self.port.timeout = timeout
        got = bytes(self.port.read(n))
        self.bytes_received += len(got)
        return got

    def flush_input(self) -> None:
        self.port.reset_input_buffer()

    def close(self) -> None:
        self.port.close()


class BoardLink:
    """Speak the protocol to a board that was built from `net` (the frontier IntNet)."""

    def __init__(self, transport: Transport, net: fixed.IntNet, timeout: float = 1.0):
        self.transport, self.net, self.timeout = transport, net, timeout
        # What the board computes with: the built net until a load; None = unknown (the
        # board reports a load the host did not make), so the next load writes every word.
        self.live: fixed.IntNet | None = net
        self.identity: dict | None = None
        self._loaded_here = False

    @property
    def live_digest(self) -> str | None:
        return None if self.live is None else fixed.weights_digest(self.live)

    # ---- one exchange -----------------------------------------------------------------------
    def _read_exact(self, n: int, deadline: float, what: str) -> bytes:
        got = b""
        while len(got) < n:
            left = deadline - self.transport.now()
            chunk = self.transport.read(n - len(got), max(left, 0.0)) if left > 0 else b""
            if not chunk:
                raise LinkError(f"no {what} from the board within {self.timeout} s; is it "
                                "powered, flashed with this design (`make bitstream flash`) and "
                                "on this port at the design's baud rate?")
            got += chunk
        return got

    def exchange(self, cmd: int, payload: bytes = b"") -> bytes:
        """Send one command, return its reply's payload; an error status is a LinkError."""
        self.transport.flush_input()
        self.transport.write(P.encode_command(cmd, payload))
        deadline = self.transport.now() + self.timeout
        while self._read_exact(1, deadline, "reply")[0] != P.SYNC_REPLY:
            pass  # noise before the reply
        head = self._read_exact(3, deadline, "reply header")
        rest = self._read_exact(head[2] + 2, deadline, "reply payload")
        reply = P.decode_reply(bytes([P.SYNC_REPLY]) + head + rest)
        if reply.cmd != cmd:
            raise LinkError(f"reply to command 0x{reply.cmd:02x}, sent 0x{cmd:02x}: a stale reply; "
                            "retry")
        if reply.status != P.OK:
            name = P.STATUSES.get(reply.status, f"status {reply.status}")
            raise LinkError(f"the board refused {P.COMMANDS.get(cmd, hex(cmd))}: {name}")
        return reply.payload

    # ---- commands -------------------------------------------------------------------------------
    def identify(self) -> dict:
        """The board's identity; refused when it holds another design or protocol."""
        ident = P.parse_identity(self.exchange(P.IDENTIFY))
        if ident["version"] != P.PROTOCOL_VERSION:
            raise LinkError(f"the board speaks protocol version {ident['version']}, this host "
                            f"{P.PROTOCOL_VERSION}; build and flash this version")
        if ident["formats_digest"] != P.formats_digest(self.net):
            raise LinkError(f"the board holds a design of other formats (digest "
                            f"{ident['formats_digest']}, this net's {P.formats_digest(self.net)}); "
                            "build and flash the bitstream of this net (`make bitstream flash`)")
        if ident["flags"] & P.FLAG_LOADED:
            if not self._loaded_here:
                self.live = None  # loaded by another run: unknown until we load
        elif ident["weights_digest"] == fixed.weights_digest(self.net):
            self.live = self.net  # as built (reconfiguring a board forgets its loads)
        else:
            self.live = None  # built from other weights of the same formats
        self.identity = ident
        return ident

    def load(self, weights=None, biases=None) -> str:
        """Write a new set (one entry per layer, None keeps a layer's): checked first with
        fixed.loadable_update (refused before any write), then only the words that differ
        from the live set, in as few frames as fit. Returns the new live digest."""
        base = self.live if self.live is not None else self.net
        new = fixed.loadable_update(base, weights, biases)
        words = design_mod.load_words(new, self.live)
        wb = P.word_bytes(max(max(ly.weight_bits, ly.acc_bits) for ly in self.net.layers))
        per_frame = (P.MAX_PAYLOAD - 2) // wb
        runs = _consecutive(words)
        self._loaded_here = True
        try:
            for start, values in runs:
                for at in range(0, len(values), per_frame):
                    chunk = values[at:at + per_frame]
                    payload = (start + at).to_bytes(2, "big") + b"".join(
                        (v & ((1 << 8 * wb) - 1)).to_bytes(wb, "big") for v in chunk)
                    self.exchange(P.LOAD, payload)
        except LinkError:
            self.live = None  # part may have been written: unknown until a full load
            raise
        self.live = new
        return self.live_digest

    def run(self, codes) -> tuple[np.ndarray, int]:
        """One input vector (integer codes) -> (logits, class) from the board."""
        codes = np.asarray(codes, np.int64).ravel()
        net = self.net
        if codes.shape != (net.n_in,) or codes.min() < 0 or codes.max() >= 1 << net.in_bits:
            raise LinkError(f"run takes {net.n_in} codes in 0..{(1 << net.in_bits) - 1}, got "
                            f"{codes.shape[0]} in {codes.min()}..{codes.max()}")
        ib = P.nbytes(net.in_bits)
        return self._result(self.exchange(P.RUN, b"".join(int(c).to_bytes(ib, "big")
                                                          for c in codes)))

    def run_adc(self) -> tuple[np.ndarray, np.ndarray, int]:
        """A board with an SPI ADC front end reads its inputs itself: (the codes it read,
        logits, class)."""
        payload = self.exchange(P.RUN_ADC)
        net, ib = self.net, P.nbytes(self.net.in_bits)
        n = net.n_in * ib
        codes = np.array([int.from_bytes(payload[k * ib:(k + 1) * ib], "big")
                          for k in range(min(net.n_in, len(payload) // ib))], np.int64)
        return (codes, *self._result(payload[n:]))

    def read(self) -> tuple[np.ndarray, int]:
        """The last run's (logits, class) again."""
        return self._result(self.exchange(P.READ))

    def counters(self) -> dict:
        return P.parse_counters(self.exchange(P.COUNTERS))

    def expected(self, codes) -> dict:
        """The golden model of the live set on these codes (n, n_in)."""
        if self.live is None:
            raise LinkError("the board's weights are unknown to this host (loaded by another "
                            "run); load a set first")
        return self.live.forward(np.atleast_2d(codes))

    def _result(self, payload: bytes) -> tuple[np.ndarray, int]:
        nb = P.nbytes(self.net.logit_bits)
        n = self.net.n_classes
        if len(payload) != n * nb + 1:
            raise LinkError(f"result of {len(payload)} bytes, expected {n * nb + 1}")
        logits = np.array([P.to_signed(int.from_bytes(payload[j * nb:(j + 1) * nb], "big"),
                                       8 * nb) for j in range(n)], np.int64)
        return logits, int(payload[-1])


def _consecutive(words: list[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """(address, data) words -> runs of consecutive addresses (start, values)."""
    runs: list[tuple[int, list[int]]] = []
    for a, v in sorted(words):
        if runs and runs[-1][0] + len(runs[-1][1]) == a:
            runs[-1][1].append(v)
        else:
            runs.append((a, [v]))
    return runs
