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
    # The SPI ADC front end's pins, each (connector, number, pin): the shared sclk, copi,
    # cipo, then one chip select per chip in order (as many chips as there are entries).
    adc_spi: tuple = ()
    adc_cs: tuple = ()
    io_attrs: tuple = ()  # (key, value) attributes of those pins

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
        serial_hint="the FTDI's second interface, usually /dev/ttyUSB1",
        # PMOD1A as Digilent's SPI PMOD: 1 CS, 2 COPI, 3 CIPO, 4 SCLK; more chip selects
        # on PMOD1A 7-10, then PMOD1B 1-4 and 7-10
        adc_spi=(("pmod", 0, "4"), ("pmod", 0, "2"), ("pmod", 0, "3")),
        adc_cs=(("pmod", 0, "1"), ("pmod", 0, "7"), ("pmod", 0, "8"), ("pmod", 0, "9"),
                ("pmod", 0, "10"), ("pmod", 1, "1"), ("pmod", 1, "2"), ("pmod", 1, "3"),
                ("pmod", 1, "4"), ("pmod", 1, "7"), ("pmod", 1, "8"), ("pmod", 1, "9"),
                ("pmod", 1, "10")),
        io_attrs=(("IO_STANDARD", "SB_LVCMOS"),)),
    "ulx3s": Board(
        name="ulx3s", title="ULX3S", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        part="LFE5U-85F-6BG381", clock_hz=25e6, baud=115200, uart=("uart", 0),
        leds={"loaded": ("led", 0), "error": ("led", 1)},
        nextpnr=("--85k", "--package", "CABGA381", "--speed", "6"), luts=83640,
        # -f: the configuration flash (kept over power cycles), as the iCEBreaker's
        programmer=("-b", "ulx3s", "-f"),
        serial_hint="the FT231X's port, usually /dev/ttyUSB0", family="ecp5",
        # header J1 (amaranth-boards' "gpio" connector): GP0 SCLK, GN0 COPI, GP1 CIPO, chip
        # selects GN1, GP2, GN2, ... GN7
        adc_spi=(("gpio", 0, "0+"), ("gpio", 0, "0-"), ("gpio", 0, "1+")),
        adc_cs=tuple(("gpio", 0, n) for n in ["1-"] + [f"{j}{s}" for j in range(2, 8) for s in "+-"]),
        io_attrs=(("IO_TYPE", "LVCMOS33"),)),
}


def get(name: str) -> Board:
    if name not in BOARDS:
        near = difflib.get_close_matches(name, BOARDS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise BoardError(f"unknown board {name!r}; boards: {', '.join(sorted(BOARDS))}{hint}")
    return BOARDS[name]
