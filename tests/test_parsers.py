"""Tool-output parsers on saved, real tool output (tests/data/), beside the live-tool tests.

The files were written by the tools this project runs (Yosys 0.23, nextpnr-ice40 0.4,
Icarus 11 through the cocotb testbench) on the tiny crystal of tests/hw_tiny.py; the
expected figures below were read off those files by hand.
"""
import re
from pathlib import Path

import pytest

from crystalbench.errors import SynthError
from crystalbench.rtl import synth
from crystalbench.sim import power

DATA = Path(__file__).parent / "data"


def test_generic_gate_stat():
    got = synth.parse_generic_stat((DATA / "yosys_gates_stat.txt").read_text())
    # ANDNOT 515 + AND 141 + NAND 17 + NOR 23 + NOT 30 + ORNOT 147 + OR 76 + XNOR 40 + XOR 143
    assert got["gates"] == 1132
    assert got["flip_flops"] == 116
    assert got["transistors"] == 9546  # "9546+": memories are added by synth_design
    assert got["gates_by_type"]["ANDNOT"] == 515 and got["gates_by_type"]["NOT"] == 30
    assert got["other_cells"] == {}  # memories ($mem_v2) are read from the netlist
    full = synth.parse_generic_stat((DATA / "yosys_gates_all_logic_stat.txt").read_text())
    assert (full["gates"], full["flip_flops"], full["transistors"]) == (1705, 223, 14726)


def test_generic_stat_refuses_garbage():
    with pytest.raises(SynthError, match="could not read the Yosys statistics"):
        synth.parse_generic_stat("ERROR: something else entirely\n")


def test_ice40_stat():
    got = synth.parse_ice40_stat((DATA / "yosys_ice40_stat.txt").read_text())
    assert got["lut4"] == 302 and got["carry"] == 30 and got["bram"] == 1 and got["dsp"] == 0
    assert got["ice40_ff"] == 24 + 91 + 26  # SB_DFF + SB_DFFESR + SB_DFFSR
    with pytest.raises(SynthError, match="iCE40 statistics"):
        synth.parse_ice40_stat("garbage\n")


def test_fmax_is_the_last_report():
    text = (DATA / "nextpnr_ice40.log").read_text()
    assert synth.parse_fmax(text) == 34.46  # after routing; 35.27 was the pre-route estimate
    assert synth.parse_fmax("Info: nothing timed\n") is None


def test_memories_of_a_gate_netlist():
    mems = synth.parse_memories((DATA / "yosys_gates_memories.v").read_text())
    assert mems == [{"name": "prog", "depth": 12, "width": 3, "bits": 36, "kind": "rom"},
                    {"name": "wmem", "depth": 12, "width": 8, "bits": 96, "kind": "ram"}]
    # as synth_design prices them: 1 transistor per ROM bit, 6 per RAM bit
    assert sum(synth.TRANSISTORS_PER_BIT[m["kind"]] * m["bits"] for m in mems) == 36 + 576


HAND_VCD = """$timescale
  1ps
$end
$scope module top $end
$var wire 1 ! clk $end
$var wire 4 " bus [3:0] $end
$var wire 1 # a $end
$var wire 1 # a_alias $end
$upscope $end
$enddefinitions $end
#0
$dumpvars
0!
b0000 "
0#
$end
#5000
1!
b11 "
1#
#10000
0!
b0110 "
#15000
b0110 "
0#
$dumpoff
x!
bxxxx "
x#
$end
#20000
b1111 "
"""


@pytest.mark.parametrize("start, end, toggles", [
    (0.0, None, 2 + 1 + 2 + 1),  # 0000->0011, a, 0011->0110, a; x's after $dumpoff not counted
    (5.0, None, 2 + 1),  # changes after 5 ns only; the values at 5 ns are the baseline
    (0.0, 10.0, 2 + 1 + 2),  # up to and including 10 ns
    (5.0, 10.0, 2),
    (15.0, None, 0),
])
def test_toggle_window_on_a_hand_written_vcd(tmp_path, start, end, toggles):
    p = tmp_path / "hand.vcd"
    p.write_text(HAND_VCD)
    got = power.count_toggles(p, start_ns=start, end_ns=end)
    assert got == {"toggles": toggles, "net_bits": 4 + 1}  # clk excluded, alias once


def _independent_toggles(text: str, start_ps: int, end_ps: int) -> int:
    """Bit changes per id within (start, end], from a regex reading of the VCD."""
    head, body = text.split("$enddefinitions $end", 1)
    width = {m[1]: int(m[0]) for m in re.findall(r"\$var \w+ (\d+) (\S+) ", head)}
    clk = re.search(r"\$var \w+ 1 (\S+) clk ", head).group(1)
    body = body.split("$dumpoff", 1)[0]
    t, last, n = 0, {}, 0
    for tok in re.finditer(r"^#(\d+)|^b([01xz]+) (\S+)|^([01xz])(\S+)", body, re.M):
        if tok.group(1):
            t = int(tok.group(1))
            continue
        val, code = (tok.group(2), tok.group(3)) if tok.group(2) else (tok.group(4), tok.group(5))
        if code == clk or t > end_ps:
            continue
        val = val.rjust(width[code], "0")
        if code in last and t > start_ps:
            n += sum(a != b for a, b in zip(last[code], val))
        last[code] = val
    return n


def test_toggles_of_a_real_icarus_vcd():
    p = DATA / "icarus_frontier_parallel.vcd"
    text = p.read_text()
    # reset ended at 26 ns; the results came at 66, 76 (the dump stopped there) and 86 ns
    got = power.count_toggles(p, start_ns=26.0, end_ns=76.0)
    assert got["toggles"] == _independent_toggles(text, 26_000, 76_000)
    assert got["toggles"] > 0
    head = text.split("$enddefinitions", 1)[0]
    ids = dict((code, int(w)) for w, code, name in re.findall(r"\$var \w+ (\d+) (\S+) (\S+)", head)
               if name != "clk")
    assert got["net_bits"] == sum(ids.values())


def test_energy_model_by_hand():
    fig = {"flip_flops": 10, "transistors": 1000, "lut4": 50, "ice40_ff": 30}
    # 2,000 toggles over 100 net bits x 40 cycles, 4 inferences, 12 MHz
    e = power.estimate(2000, 100, 40, 4, fig, 12.0)
    assert e["toggle_rate"] == pytest.approx(2000 / (100 * 40))
    assert e["cycles_per_inference"] == 10
    e_cycle = 53.6e-12 + 0.5 * 80 * 0.44e-12  # clock + rate x (LUT4 + FF) x per-LC toggle
    assert e["energy_per_inference_nj"] == pytest.approx((10 * e_cycle + 104e-6 * 10 / 12e6) * 1e9)
    assert e["power_mw"] == pytest.approx((e_cycle * 12e6 + 104e-6) * 1e3)
    e_cmos = 500 * 0.81e-15 + 10 * 10 * 1.62e-15  # toggles/inference + FF clock pins
    leak = 1000 * 20e-12
    assert e["energy_per_inference_nj_cmos"] == pytest.approx((e_cmos + leak * 10 / 12e6) * 1e9)
    assert e["power_mw_cmos"] == pytest.approx((e_cmos / 10 * 12e6 + leak) * 1e3)


@pytest.mark.parametrize("cycles, inferences", [(0, 1), (4, 0)])
def test_energy_needs_a_window(cycles, inferences):
    from crystalbench.errors import SimError

    with pytest.raises(SimError, match=rf"window of {cycles} cycles and {inferences} inferences"):
        power.estimate(10, 10, cycles, inferences, {"flip_flops": 1, "transistors": 1, "lut4": 1,
                                                    "ice40_ff": 1}, 12.0)


@pytest.mark.parametrize("text, ns", [
    ("$timescale 1ps $end", 1e-3), ("$timescale\n\t1ps\n$end", 1e-3), ("$timescale 10 ns $end", 10.0),
    ("$timescale 100fs $end", 1e-4), ("$timescale 1us $end", 1e3), ("$timescale 1 s $end", 1e9),
    ("$timescale 1ms $end", 1e6)])
def test_vcd_timescales(text, ns):
    assert power._timescale_ns(text) == pytest.approx(ns)


def test_unknown_vcd_timescale_is_refused():
    with pytest.raises(ValueError, match=r"unknown VCD timescale '\$timescale 1 parsec \$end'"):
        power._timescale_ns("$timescale 1 parsec $end")


def test_cycle_limit_by_hand():
    from crystalbench.sim import runner

    assert runner.cycle_limit(485, 359) == 100 + 2 * 485 * 361
    assert runner.cycle_limit(0, 1) == 100 + 2 * 1 * 3  # a latency of 0 counts as 1


def test_comb_blocks_are_kicked_once_at_time_zero(tmp_path):
    from crystalbench.sim import runner

    src = tmp_path / "g.v"
    src.write_text("module top;\n  reg \\$auto$verilog_backend.cc:2083:dump_module$1 = 0;\n"
                   "  always @* begin end\nendmodule\n")
    out = runner._kick_comb_blocks(src, tmp_path)
    assert out == tmp_path / "g_sim.v"
    assert out.read_text() == ("module top;\n  reg \\$auto$verilog_backend.cc:2083:dump_module$1 "
                               "= 0;\n  initial #0 \\$auto$verilog_backend.cc:2083:dump_module$1 "
                               "= 1'b1;\n  always @* begin end\nendmodule\n")
    plain = tmp_path / "p.v"
    plain.write_text("module top; endmodule\n")
    assert runner._kick_comb_blocks(plain, tmp_path) == plain  # nothing to kick: used as is


ODD_VCD = """
  $timescale 10ps $end

  $scope module top $end
    $var wire 1 ! clk $end
    $var wire 1 # a $end
    $var wire 3 % v [2:0] $end
  $upscope $end
  $enddefinitions $end
0#
1#
b000 %
#100
X#
B101 %
b7 ?
#200
Z#
x#
z#
B111 %
1?
#300
1#
0?
"""


def test_toggles_of_an_odd_but_valid_vcd(tmp_path):
    """Indented header blocks, a blank line first, upper-case X, Z and B, a change before the
    first time stamp, and an id no $var declared (not a net of the design: ignored)."""
    p = tmp_path / "odd.vcd"
    p.write_text(ODD_VCD)
    # 10 ps ticks: #100 = 1 ns, #200 = 2 ns, #300 = 3 ns. The 0 -> 1 of `a` before the
    # first time stamp is at 0 ns: the baseline, not a toggle, for any window.
    # a: 1 -> X (1 ns), X -> Z -> x -> z (2 ns, three changes), z -> 1 (3 ns)
    # v: 000 -> 101 (1 ns, 2 bits), 101 -> 111 (2 ns, 1 bit)
    assert power.count_toggles(p) == {"toggles": 1 + 3 + 1 + 2 + 1, "net_bits": 1 + 3}
    assert power.count_toggles(p, start_ns=1.0)["toggles"] == 3 + 1 + 1
    assert power.count_toggles(p, start_ns=0.5, end_ns=1.0)["toggles"] == 1 + 2


def test_vcd_without_a_timescale_counts_in_nanoseconds(tmp_path):
    p = tmp_path / "plain.vcd"
    p.write_text("$var wire 1 # a $end\n$enddefinitions $end\n#0\n0#\n#4\n1#\n#6\n0#\n")
    assert power.count_toggles(p, start_ns=4.0)["toggles"] == 1  # only the change at 6 ns
    assert power.count_toggles(p, end_ns=5.0)["toggles"] == 1  # only the change at 4 ns


def test_timescale_without_a_number_is_one_unit():
    assert power._timescale_ns("$timescale ps $end") == pytest.approx(1e-3, rel=1e-12)
    assert power._timescale_ns("$timescale ns $end") == 1.0


def test_energy_rate_of_one_net_bit_one_cycle_and_exact_units():
    fig = {"flip_flops": 0, "transistors": 0, "lut4": 1, "ice40_ff": 0}
    e = power.estimate(1, 1, 1, 1, fig, 10.0)
    assert e["toggle_rate"] == 1.0  # one toggle of one net bit in one cycle
    e_cyc = 53.6e-12 + 1.0 * 1 * 0.44e-12
    assert e["energy_per_inference_nj"] == pytest.approx((e_cyc + 104e-6 / 10e6) * 1e9, rel=1e-12)
    assert e["power_mw"] == pytest.approx((e_cyc * 10e6 + 104e-6) * 1e3, rel=1e-12)
    assert e["energy_per_inference_nj_cmos"] == pytest.approx(0.81e-15 * 1e9, rel=1e-12, abs=0)
    with pytest.raises(Exception) as err:
        power.estimate(1, 1, 0, 1, fig, 10.0)
    assert str(err.value) == ("an activity window of 0 cycles and 1 inferences cannot price "
                              "energy; simulate more vectors (sim.power_vectors)")
