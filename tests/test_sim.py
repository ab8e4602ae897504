"""cocotb + Icarus regression (reduced: a tiny crystal, few vectors) and the synth/sim flow."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Fragment

from crystalbench import cli
from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench.sim import runner

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import tiny_crystal  # noqa: E402


def tiny_cfg(**rtl):
    return cfgmod.validate({"experiment": "tiny", "rtl": {"power_vectors": 4, "sim_vectors": 6,
                                                          **rtl}}, "<test>")


def test_synth_then_sim_end_to_end(tmp_path):
    from crystalbench.rtl.flow import run_synth
    from crystalbench.sim.flow import run_sim

    cm.save(tiny_crystal(), tmp_path / "tiny" / "crystal")
    cfg = tiny_cfg(digital_shapes="serial")
    res = run_synth(cfg, tmp_path, log=lambda *_: None)
    saved = json.loads((tmp_path / "tiny" / "synth" / "result.json").read_text())
    assert "method" in saved and (tmp_path / "tiny" / "synth" / "result.md").exists()
    assert (tmp_path / "tiny" / "synth" / "fixed_point.png").stat().st_size > 1000
    for kind in ("frontier", "all_digital"):
        for key in ("gates", "flip_flops", "transistors", "lut4", "fmax_mhz", "latency_cycles",
                    "latency_ns", "energy_per_inference_nj", "power_mw"):
            assert saved[kind][key] is not None and saved[kind][key] > 0, (kind, key)
    assert res["designs"]["frontier_parallel"]["latency_cycles"] == 2  # readout + argmax
    assert res["designs"]["frontier_parallel"]["interval_cycles"] == 1
    c = cm.load(tmp_path / "tiny" / "crystal")
    from crystalbench.rtl import design, fixed
    for name in ("frontier_serial", "all_digital_serial", "all_digital_small_serial"):
        d = res["designs"][name]
        dut = design.build(fixed.nets_of(c)[d["kind"]], "serial", d["weights"])
        Fragment.get(dut, None)  # elaborated (Amaranth warns about a component never used)
        assert d["latency_cycles"] == d["interval_cycles"] == dut.latency  # measured = intent
        # Program and weights stay memory macros in the gate netlist (RAM when loadable);
        # the all-logic count maps them to flip-flops and gates.
        kinds = {m["name"]: m["kind"] for m in d["memories"]}
        assert kinds == {"prog": "rom", "wmem": "ram" if d["weights"] == "loadable" else "rom"}
        assert d["memory_bits"] == sum(m["depth"] * m["width"] for m in d["memories"])
        ram_bits = sum(m["bits"] for m in d["memories"] if m["kind"] == "ram")
        assert d["all_logic"]["flip_flops"] >= d["flip_flops"] + ram_bits
        assert d["all_logic"]["gates"] > d["gates"]
    assert res["designs"]["frontier_parallel"]["memory_bits"] == 0
    # The formats are recorded in the Crystal.
    assert cm.load(tmp_path / "tiny" / "crystal").fixed_point["nets"]["frontier"]
    sim = run_sim(cfg, tmp_path, waves=True, log=lambda *_: None)
    assert set(sim["bit_exact_fraction"]) == {f"{d}_{lvl}" for d in res["designs"]
                                              for lvl in ("rtl", "gates")}
    assert all(v == 1.0 for v in sim["bit_exact_fraction"].values())
    for key in ("vectors", "class_agreement_with_torch", "fixed_point_test_accuracy",
                "float_test_accuracy"):
        assert key in sim
    assert (tmp_path / "tiny" / "sim" / "frontier_serial_gates.vcd").stat().st_size > 0


def test_icarus_failure_names_its_log(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module top(input clk; endmodule\n")
    with pytest.raises(runner.SimError, match=r"see .*sim\.log"):
        runner.run_vectors(bad, np.zeros((1, 2), int), 8, 8, 2, tmp_path / "b", False)


def test_design_that_never_answers_ends_at_the_cycle_limit(tmp_path):
    mute = tmp_path / "mute.v"
    mute.write_text("module top(input clk, input rst, input i__valid, input [15:0] i__payload,\n"
                    "  output i__ready, output o__valid, input o__ready, output [16:0] o__payload);\n"
                    "  assign i__ready = 1'b0; assign o__valid = 1'b0; assign o__payload = 0;\n"
                    "endmodule\n")
    with pytest.raises(runner.SimError, match=r"see .*sim\.log"):
        runner.run_vectors(mute, np.zeros((1, 2), int), 8, 8, 2, tmp_path / "m", False,
                           max_cycles=50)
    assert "no result after 50 cycles" in (tmp_path / "m" / "sim.log").read_text()


def test_cli_names_missing_inputs(tmp_path, capsys):
    cfgf = tmp_path / "t.yaml"
    cfgf.write_text("experiment: nothing\n")
    assert cli.main(["--build-dir", str(tmp_path), "synth", "--config", str(cfgf)]) == 2
    assert "crystalbench train" in capsys.readouterr().err
    assert cli.main(["--build-dir", str(tmp_path), "sim", "--config", str(cfgf)]) == 2
    assert "crystalbench synth" in capsys.readouterr().err
