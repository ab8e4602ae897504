"""Boards as data: which amaranth-boards platform, its clock, the pins the board top uses,
how place and route names its part, and how openFPGALoader programs it. A new board is a
new entry here, not new code.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass

from crystalbench.errors import BoardError


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    platform: str  # "module:Class" of its amaranth-boards platform
    part: str
    clock_hz: float  # the platform's default clock (what the top runs on)
    baud: int
    uart: tuple[str, int]  # resource (name, number): fields rx, tx
    leds: dict  # controller output -> LED resource (name, number)
    nextpnr: tuple[str, ...]  # nextpnr device and package options
    luts: int  # LUT4 of the part
    programmer: tuple[str, ...]  # openFPGALoader options before the bitstream
    serial_hint: str  # where its UART shows up on the host
    family: str = "ice40"  # "ice40": nextpnr-ice40 + icepack; "ecp5": nextpnr-ecp5 + ecppack

    def make_platform(self):
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)()


BOARDS = {
    "icebreaker": Board(
        name="icebreaker", title="iCEBreaker", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        part="iCE40UP5K-SG48", clock_hz=12e6, baud=115200, uart=("uart", 0),
        leds={"loaded": ("led_g", 0), "error": ("led_r", 0)},
        nextpnr=("--up5k", "--package", "sg48"), luts=5280,
        # iCE40 boards share the FTDI-to-SPI-flash wiring: openFPGALoader's generic entry
        programmer=("-b", "ice40_generic"),
        serial_hint="the FTDI's second interface, usually /dev/ttyUSB1"),
    "ulx3s": Board(
        name="ulx3s", title="ULX3S", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        part="LFE5U-85F-6BG381", clock_hz=25e6, baud=115200, uart=("uart", 0),
        leds={"loaded": ("led", 0), "error": ("led", 1)},
        nextpnr=("--85k", "--package", "CABGA381", "--speed", "6"), luts=83640,
        # -f: the configuration flash (kept over power cycles), as the iCEBreaker's
        programmer=("-b", "ulx3s", "-f"),
        serial_hint="the FT231X's port, usually /dev/ttyUSB0", family="ecp5"),
}


def get(name: str) -> Board:
    if name not in BOARDS:
        near = difflib.get_close_matches(name, BOARDS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise BoardError(f"unknown board {name!r}; boards: {', '.join(sorted(BOARDS))}{hint}")
    return BOARDS[name]
