"""Switching activity from a gate-level VCD, and the energy models that price it.

Toggles: every bit change of every net of the design after time 0 (the initial dump is
not a toggle), the clock excluded (it is priced per flip-flop instead). Both models are
stated here and copied into result.json.

iCE40 UP5K, from measurements (tinyvision-ai-inc/ice40_power, Joulescope on the core
rail at 1.219 V, icestorm-built designs; figures in ../shared/FIGURES.md):
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

ICE40 = {"static_w": 104e-6, "clock_j_per_cycle": 53.6e-12, "lc_toggle_j": 0.44e-12,
         "source": "tinyvision-ai-inc/ice40_power (Joulescope, UP5K core rail 1.219 V): blank "
                   "85.6 uA; 12 MHz clock + counter 613.5 uA (32 LCs); 8-bit fabric multiply "
                   "at 12 MHz 996 uA (208 LCs)"}
CMOS = {"net_toggle_j": 0.81e-15, "ff_clock_j_per_cycle": 1.62e-15, "leak_w_per_transistor": 20e-12,
        "source": "assumed: 45 nm-class, 0.9 V, 2 fF per net toggle, 20 pW leakage per "
                  "transistor (order checked against Horowitz ISSCC 2014)"}


def count_toggles(vcd: str | Path, exclude=("clk",)) -> dict:
    """Total bit toggles and the number of net bits in a VCD (aliases counted once)."""
    ids: dict[str, int] = {}  # id code -> width
    skip: set[str] = set()
    last: dict[str, str] = {}
    toggles = 0
    started = False
    with open(vcd) as fh:
        for line in fh:
            if not started:
                if line.startswith("$var"):
                    parts = line.split()
                    width, code, name = int(parts[2]), parts[3], parts[4]
                    if name in exclude:
                        skip.add(code)
                    ids.setdefault(code, width)
                elif line.startswith("$enddefinitions"):
                    started = True
                continue
            c = line[:1]
            if c == "#" or c == "$" or not line.strip():
                continue
            if c in "01xzXZ":
                val, code = c, line[1:].strip()
            elif c in "bB":
                val, code = line[1:].split()
            else:
                continue
            if code in skip:
                continue
            prev = last.get(code)
            if prev is not None:
                w = ids.get(code, 1)
                a, b = prev.rjust(w, "0"), val.rjust(w, "0")
                toggles += sum(1 for p, q in zip(a, b) if p != q)
            last[code] = val
    nets = sum(w for code, w in ids.items() if code not in skip)
    return {"toggles": toggles, "net_bits": nets}


def estimate(toggles: int, net_bits: int, cycles: int, inferences: int, fig: dict,
             clock_mhz: float) -> dict:
    """Energy per inference and power for both models, from a measured window."""
    rate = toggles / max(net_bits * cycles, 1)  # toggles per net bit per cycle
    cyc_per_inf = cycles / max(inferences, 1)
    f = clock_mhz * 1e6
    # generic CMOS
    e_cmos = (toggles / max(inferences, 1)) * CMOS["net_toggle_j"] \
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
