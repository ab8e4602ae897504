"""Switching activity from a gate-level VCD, and the energy models that price it.

Toggles: every bit change of every net of the design after time 0 (the initial dump is
not a toggle), the clock excluded (it is priced per flip-flop instead). Both models are
stated here and copied into result.json.

iCE40 UP5K, from measurements (tinyvision-ai-inc/ice40_power on GitHub: Joulescope on
the core rail at 1.219 V, icestorm-built designs):
* static: blank design 85.6 uA -> 104 uW;
* clock + baseline: 12 MHz clock + 32-LC counter 613.5 uA; minus blank = 527.9 uA
  -> 643.5 uW / 12 MHz = 53.6 pJ per clock cycle;
* logic: an 8-bit multiply in fabric at 12 MHz, 996 uA with 208 LCs: 382.5 uA over the
  counter design for 176 more LCs -> 466 uW / 12 MHz / 176 = 0.221 pJ per LC per cycle;
  taking its LC outputs to toggle on half the cycles (random operands) -> 0.44 pJ per
  LC output toggle.
  A design's LC toggles per cycle = (its LUT4 + FF count) x the toggle rate per net per
  cycle measured on the generic gate-level netlist (the iCE40 netlist is not simulated).

Generic CMOS (assumed, not measured; a 45 nm-class node at 0.9 V): 2 fF switched per net
toggle -> 1/2 C V^2 = 0.81 fJ; a flip-flop's clock pin 2 transitions per cycle -> 1.62 fJ
per FF per cycle; leakage 20 pW per transistor. Cross-check: Horowitz (ISSCC 2014,
45 nm, 0.9 V) gives 0.1 pJ for a 32-bit add, ~300 gates -> ~0.3 fJ per gate operation.
"""

from __future__ import annotations

from pathlib import Path

from crystalbench.errors import SimError

ICE40 = {"static_w": 104e-6, "clock_j_per_cycle": 53.6e-12, "lc_toggle_j": 0.44e-12,
         "source": "tinyvision-ai-inc/ice40_power (Joulescope, UP5K core rail 1.219 V): blank "
                   "85.6 uA; 12 MHz clock + counter 613.5 uA (32 LCs); 8-bit fabric multiply "
                   "at 12 MHz 996 uA (208 LCs)"}
CMOS = {"net_toggle_j": 0.81e-15, "ff_clock_j_per_cycle": 1.62e-15, "leak_w_per_transistor": 20e-12,
        "source": "assumed: 45 nm-class, 0.9 V, 2 fF per net toggle, 20 pW leakage per "
                  "transistor (order checked against Horowitz ISSCC 2014)"}


_UNITS_NS = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0, "ps": 1e-3, "fs": 1e-6}


def _timescale_ns(text: str) -> float:
    """`$timescale 1ps $end` (number and unit, spaced or not) -> nanoseconds per tick."""
    words = text.replace("$timescale", "").replace("$end", "").split()
    joined = "".join(words)
    num = "".join(ch for ch in joined if ch.isdigit()) or "1"
    unit = joined[len(num):] if joined.startswith(num) else joined.lstrip("0123456789")
    if unit not in _UNITS_NS:
        raise ValueError(f"unknown VCD timescale {text.strip()!r}")
    return int(num) * _UNITS_NS[unit]


def count_toggles(vcd: str | Path, exclude=("clk",), start_ns: float = 0.0,
                  end_ns: float | None = None) -> dict:
    """Bit toggles of every net in a VCD within the window (start_ns, end_ns], and the
    number of net bits (aliases counted once). The values at start_ns are the baseline
    (the initial dump is not a toggle); changes after end_ns or after a `$dumpoff` are
    not counted. `exclude`: net names left out (the clock is priced per flip-flop)."""
    ids: dict[str, int] = {}  # id code -> width
    skip: set[str] = set()
    last: dict[str, str] = {}
    toggles = 0
    tick_ns = 1.0
    now = 0.0
    header = True
    pending = ""
    with open(vcd) as fh:
        for line in fh:
            if header:
                pending += line
                if "$end" not in line:
                    continue
                block, pending = pending, ""
                if block.lstrip().startswith("$timescale"):
                    tick_ns = _timescale_ns(block)
                elif block.lstrip().startswith("$var"):
                    parts = block.split()
                    width, code, name = int(parts[2]), parts[3], parts[4]
                    if name in exclude:
                        skip.add(code)
                    ids.setdefault(code, width)
                elif block.lstrip().startswith("$enddefinitions"):
                    header = False
                continue
            c = line[:1]
            if c == "#":
                now = int(line[1:]) * tick_ns
                if end_ns is not None and now > end_ns:
                    break
                continue
            if line.startswith("$dumpoff"):
                break
            if c in "01xzXZ":
                val, code = c, line[1:].strip()
            elif c in "bB":
                val, code = line[1:].split()
            else:
                continue
            if code in skip or code not in ids:  # not a declared net: nothing to price
                continue
            prev = last.get(code)
            if prev is not None and now > start_ns:
                w = ids[code]
                a, b = prev.rjust(w, "0"), val.rjust(w, "0")
                toggles += sum(1 for p, q in zip(a, b) if p != q)
            last[code] = val
    nets = sum(w for code, w in ids.items() if code not in skip)
    return {"toggles": toggles, "net_bits": nets}


def estimate(toggles: int, net_bits: int, cycles: int, inferences: int, fig: dict,
             clock_mhz: float) -> dict:
    """Energy per inference and power for both models, from a measured window of
    `cycles` clock cycles holding `inferences` inferences."""
    if cycles < 1 or inferences < 1:
        raise SimError(f"an activity window of {cycles} cycles and {inferences} inferences "
                       "cannot price energy; simulate more vectors (sim.power_vectors)")
    rate = toggles / max(net_bits * cycles, 1)  # toggles per net bit per cycle
    cyc_per_inf = cycles / inferences
    f = clock_mhz * 1e6
    # generic CMOS
    e_cmos = (toggles / inferences) * CMOS["net_toggle_j"] \
        + cyc_per_inf * fig["flip_flops"] * CMOS["ff_clock_j_per_cycle"]
    leak = fig["transistors"] * CMOS["leak_w_per_transistor"]
    # iCE40
    lcs = fig["lut4"] + fig["ice40_ff"]
    e_cyc = ICE40["clock_j_per_cycle"] + rate * lcs * ICE40["lc_toggle_j"]
    e_ice = cyc_per_inf * e_cyc
    return {
        "toggle_rate": rate,
        "cycles_per_inference": cyc_per_inf,
        "energy_per_inference_nj": (e_ice + ICE40["static_w"] * cyc_per_inf / f) * 1e9,
        "power_mw": (e_cyc * f + ICE40["static_w"]) * 1e3,
        "energy_per_inference_nj_cmos": (e_cmos + leak * cyc_per_inf / f) * 1e9,
        "power_mw_cmos": (e_cmos / cyc_per_inf * f + leak) * 1e3,
    }
