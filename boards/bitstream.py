"""`crystalbench bitstream --board B`: the frontier on a real board, as a bitstream; and
`crystalbench flash --board B`.

The board top (controller: UART + host protocol + the loadable serial frontier, on the
board's UART pins, two LEDs) is planned by amaranth-boards (`platform.build(...,
do_build=False)`: RTLIL, Yosys script, pin constraints with the clock's frequency), and
the plan's three steps run through the one tool runner (iCE40: yosys, nextpnr-ice40,
icepack; ECP5: yosys, nextpnr-ecp5, ecppack, Debian's or the pinned YoWASP builds), each
with its log in build/<exp>/boards/<board>/. Writes there: top.bin (iCE40) or top.bit
(ECP5), the logs, and result.json (utilization, fmax; `passed` false when fmax is below the
board's clock).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from crystalbench import stage, toolrun
from crystalbench.crystal import Crystal
from crystalbench.errors import SynthError, ToolFailed
from crystalbench.results import Paths
from crystalbench.rtl import fixed, quantize
from crystalbench.rtl import synth as synth_mod

from . import platforms
from .controller import Controller
from .platforms import Board, BoardError

NAME = "boards"
WRITES = (NAME, quantize.NAME)
NEEDS_CRYSTAL = True
NO_BOARD = ("unable to open ftdi device", "device not found", "failed to claim cable",
            "no cable", "no device found")


def adc_resource(board: Board, chips: int) -> Resource:
    """The SPI ADC front end's pins on the board (`adc_spi` 0): sclk, copi, cipo, cs0.."""
    if chips > len(board.adc_cs):
        raise BoardError(f"{board.title}: the ADC front end needs {chips} chip selects, the "
                         f"board's pin plan has {len(board.adc_cs)} (boards/platforms.py "
                         "adc_cs); add pins or use a part with more channels")
    attrs = Attrs(**dict(board.io_attrs))
    sub = [Subsignal(name, Pins(pin, dir=d, conn=(conn, num)), attrs)
           for name, d, (conn, num, pin) in zip(("sclk", "copi", "cipo"), "ooi", board.adc_spi)]
    sub += [Subsignal(f"cs{i}", Pins(pin, dir="o", conn=(conn, num)), attrs)
            for i, (conn, num, pin) in enumerate(board.adc_cs[:chips])]
    return Resource("adc_spi", 0, *sub)


class BoardTop(Elaboratable):
    """The controller on a board's pins: UART rx/tx, LEDs for `loaded` and `error`; with
    an ADC front end, its SPI pins (`adc_resource`)."""

    def __init__(self, board: Board, controller: Controller):
        self.board, self.controller = board, controller

    def elaborate(self, platform):
        m = Module()
        m.submodules.controller = ctl = self.controller
        uart = platform.request(*self.board.uart, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [ctl.rx.eq(rx.i), tx.o.eq(ctl.tx)]
        if ctl.adc is not None:
            platform.add_resources([adc_resource(self.board, ctl.adc.chips)])
            spi = platform.request("adc_spi", 0, dir="-")
            for name, d in (("sclk", "o"), ("copi", "o"), ("cipo", "i")):
                m.submodules[f"adc_{name}"] = b = io.Buffer(d, getattr(spi, name))
                m.d.comb += (b.o.eq(getattr(ctl, name)) if d == "o" else ctl.cipo.eq(b.i))
            for i in range(ctl.adc.chips):
                m.submodules[f"adc_cs{i}"] = b = io.Buffer("o", getattr(spi, f"cs{i}"))
                m.d.comb += b.o.eq(ctl.cs_n[i])
        for out, res in self.board.leds.items():
            m.submodules[f"led_{out}"] = led = io.Buffer("o", platform.request(*res, dir="-"))
            m.d.comb += led.o.eq(getattr(ctl, out))
        return m


def parse_utilization(text: str) -> dict:
    """nextpnr's 'Device utilisation' block: cell type -> (used, available)."""
    block = text.split("Device utilisation:")[-1] if "Device utilisation:" in text else ""
    found = re.findall(r"^\s*Info:\s+(\w+):\s+(\d+)/\s*(\d+)", block, re.M)
    if not found:
        raise SynthError("nextpnr printed no device utilisation; see its log")
    out = {}
    for name, used, avail in found:
        out.setdefault(name, {"used": int(used), "available": int(avail)})
    return out


def parse_ecp5_stat(text: str) -> dict:
    """Yosys `stat` after `synth_ecp5`: LUT4, flip-flops, carries, DSPs, block RAMs."""
    cells = dict((k, int(v)) for k, v in re.findall(r"^\s+(\$?\w+)\s+(\d+)\s*$", text, re.M))
    if "LUT4" not in cells and "TRELLIS_FF" not in cells:
        raise SynthError("could not read the Yosys ECP5 statistics (no LUT4/TRELLIS_FF cells "
                         "listed); see the yosys log")
    return {"lut4": cells.get("LUT4", 0), "ff": cells.get("TRELLIS_FF", 0),
            "carry": cells.get("CCU2C", 0), "dsp": cells.get("MULT18X18D", 0),
            "bram": cells.get("DP16KD", 0), "lutram": cells.get("TRELLIS_DPR16X4", 0)}


def _tool(name: str) -> str:
    """Debian's tool, else the PyPI (YoWASP) build that pyproject pins."""
    try:
        toolrun.find(name)
        return name
    except toolrun.ToolNotFound:
        if name in ("nextpnr-ecp5", "ecppack"):
            toolrun.require(f"yowasp-{name}")
            return f"yowasp-{name}"
        raise


def tools_of(board: Board) -> tuple[str, str, str]:
    """(synthesis, place and route, packer) for the board's family."""
    if board.family == "ecp5":
        return "yosys", _tool("nextpnr-ecp5"), _tool("ecppack")
    toolrun.require("yosys", "nextpnr-ice40", "icepack")
    return "yosys", "nextpnr-ice40", "icepack"


def build_bitstream(board: Board, controller: Controller, out: Path, log=stage.quiet) -> dict:
    """Plan with amaranth-boards, run yosys, nextpnr, the packer; return the figures."""
    _, pnr, pack = tools_of(board)
    out.mkdir(parents=True, exist_ok=True)
    plan = board.make_platform().build(BoardTop(board, controller), name="top", do_build=False,
                                       script_after_synth="tee -o top_stat.txt stat")
    plan.extract(out)
    t0 = time.perf_counter()
    toolrun.run("yosys", ["-q", "-l", "top.rpt", "top.ys"], log=out / "yosys.log", cwd=out)
    stat = (out / "top_stat.txt").read_text()
    if board.family == "ecp5":
        res = parse_ecp5_stat(stat)
        pnr_args = ["--lpf", "top.lpf", "--textcfg", "top.config"]
        pack_args, bit = ["--compress", "--input", "top.config", "--bit", "top.bit"], "top.bit"
    else:
        res = synth_mod.parse_ice40_stat(stat)
        res.pop("ice40_cells", None)
        res["ff"] = res["ice40_ff"]
        pnr_args = ["--pcf", "top.pcf", "--asc", "top.asc"]
        pack_args, bit = ["top.asc", "top.bin"], "top.bin"
    log(f"{board.name}: yosys {res['lut4']} LUT4, {res['ff']} FF, {res['bram']} BRAM; "
        f"placing and routing ({pnr})")
    r = toolrun.run(pnr, [*board.nextpnr, "--json", "top.json", *pnr_args, "--seed", "1",
                          "--timing-allow-fail"], log=out / "nextpnr.log", cwd=out, timeout=3600)
    text = r.stdout  # standard output and error: nextpnr logs to the latter
    fmax = synth_mod.parse_fmax(text)
    if fmax is None:
        raise SynthError(f"{pnr} printed no fmax; see {out / 'nextpnr.log'}")
    util = parse_utilization(text)
    toolrun.run(pack, pack_args, log=out / "pack.log", cwd=out)
    clock_mhz = board.clock_hz / 1e6
    res.update({"board": board.name, "part": board.part, "clock_mhz": clock_mhz,
                "baud": board.baud, "fmax_mhz": fmax, "passed": fmax >= clock_mhz,
                "luts": board.luts, "lut4_share": round(res["lut4"] / board.luts, 4),
                "placed": util, "bitstream": out / bit,
                "bitstream_bytes": (out / bit).stat().st_size,
                "tools": ["yosys", pnr, pack],
                "seconds": round(time.perf_counter() - t0, 1),
                "logs": {k: out / f"{k}.log" for k in ("yosys", "nextpnr", "pack")}})
    return res


def design_figures(controller: Controller) -> dict:
    ident = controller.identity
    return {k: ident[k] for k in ("version", "weights_digest", "formats_digest", "n_in", "in_bits",
                                  "n_classes", "logit_bits", "n_words", "n_conn", "word_bytes")}


def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet,
        board: str = "icebreaker", adc: bool = False) -> dict:
    spec = platforms.get(board)
    tools_of(spec)  # every tool there before any work
    fp = quantize.ensure(c, cfg, paths, log)
    net = fixed.nets_of(fp)["frontier"]
    ctl = Controller(net, spec.clock_hz, spec.baud, adc=cfg.adc.part if adc else None)
    if ctl.adc is not None:
        adc_resource(spec, ctl.adc.chips)  # the pins exist, before the build
    res = build_bitstream(spec, ctl, paths.stage(NAME) / board, log)
    res.update({"crystal_digest": fp["crystal"]["digest"], "fixed_digest": fixed.artifact_digest(fp),
                "design": design_figures(ctl), "method": METHOD,
                "adc_front_end": None if ctl.adc is None else {
                    "part": ctl.adc.part.part, "chips": ctl.adc.chips, "sclk_hz": ctl.adc.sclk_hz,
                    "sclk_max_hz": ctl.adc.sclk_max_hz,
                    "pins": {"sclk": spec.adc_spi[0], "copi": spec.adc_spi[1],
                             "cipo": spec.adc_spi[2], "cs_n": spec.adc_cs[:ctl.adc.chips]}}})
    timing = (f"fmax {res['fmax_mhz']:.1f} MHz >= the {res['clock_mhz']:g} MHz clock" if res["passed"]
              else f"fmax {res['fmax_mhz']:.1f} MHz BELOW the {res['clock_mhz']:g} MHz clock: "
                   f"timing not met, do not flash; see {res['logs']['nextpnr']}")
    summary = [f"{spec.title} ({spec.part}): {res['lut4']} LUT4 ({res['lut4_share']:.0%} of "
               f"{spec.luts}), {res['ff']} FF, {res['bram']} BRAM, {res['dsp']} DSP; {timing}",
               f"bitstream {res['bitstream']} ({res['bitstream_bytes']} bytes); UART {spec.baud} "
               f"baud; weights digest {res['design']['weights_digest']}; flash with "
               f"`crystalbench flash --board {board}`"]
    if ctl.adc is not None:
        a = res["adc_front_end"]
        summary.append(f"SPI ADC front end: {a['chips']} x {a['part']} at SCLK "
                       f"{a['sclk_hz'] / 1e6:g} MHz (the part's most: {a['sclk_max_hz'] / 1e6:g} MHz); "
                       "pins " + ", ".join(f"{k} {v[0]}{v[1]}:{v[2]}" for k, v in
                                           zip(("sclk", "copi", "cipo"), spec.adc_spi)) +
                       ", chip selects " + " ".join(f"{c}{n}:{p}" for c, n, p in a["pins"]["cs_n"]))
    return stage.finish(f"{NAME}/{board}", paths, res, summary)


def flash(paths: Paths, board: str, log: stage.Log = stage.quiet) -> dict:
    """Program the board's flash with its built bitstream (openFPGALoader)."""
    spec = platforms.get(board)
    bit = paths.stage(NAME) / board / ("top.bit" if spec.family == "ecp5" else "top.bin")
    if not bit.exists():
        raise BoardError(f"{bit}: no bitstream; build it first with `crystalbench bitstream "
                         f"--board {board}` (make bitstream BOARD={board})")
    toolrun.require("openFPGALoader")
    flash_log = bit.parent / "flash.log"
    try:
        r = toolrun.run("openFPGALoader", [*spec.programmer, bit], log=flash_log, timeout=600)
    except ToolFailed as e:
        text = e.log.read_text(errors="replace").lower() if e.log.exists() else ""
        if any(s in text for s in NO_BOARD):
            raise BoardError(f"no {spec.title} found on USB (openFPGALoader {' '.join(spec.programmer)}"
                             f" found no cable); connect it (and check its USB permissions), or "
                             f"point OPENFPGALOADER at another openFPGALoader; see {e.log}") from None
        raise
    log(f"{spec.title}: {bit} written in {r.seconds:.1f} s")
    return {"board": board, "bitstream": str(bit), "log": str(flash_log),
            "summary": [f"{spec.title}: flashed {bit} ({r.seconds:.1f} s); log {flash_log}"]}


METHOD = (
    "Board top = boards/controller.py (UART 8N1 + host protocol + rtl.design.SerialNet with "
    "loadable weights) on the board's UART pins, planned by amaranth-boards (platform.build("
    "do_build=False): RTLIL, Yosys script, PCF/LPF with the clock's frequency); the plan's steps "
    "run through crystalbench.toolrun: yosys (synth_ice40 or synth_ecp5, `stat` after it: "
    "LUT4/FF/carry/DSP/BRAM), nextpnr-ice40 or nextpnr-ecp5 (seed 1, --timing-allow-fail: fmax "
    "and placed utilization from its log; passed = fmax >= the board clock), icepack or "
    "ecppack --compress.")
