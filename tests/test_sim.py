"""cocotb + Icarus regression (reduced: a tiny crystal, few vectors) and the synth/sim flow."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Fragment

from crystalbench import cli
from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench.errors import FixedPointError, SimError
from crystalbench.results import Paths
from crystalbench.sim import runner

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import tiny_crystal  # noqa: E402


def tiny_cfg(**rtl):
    return cfgmod.validate({"experiment": "tiny", "rtl": rtl,
                            "sim": {"power_vectors": 4, "vectors": 6}}, "<test>")


@pytest.mark.slow
def test_synth_then_sim_end_to_end(tmp_path, monkeypatch):
    from crystalbench.rtl import flow as synth_stage
    from crystalbench.sim import flow as sim_stage

    c = tiny_crystal()
    cm.save(c, tmp_path / "tiny" / "crystal")
    paths = Paths(tmp_path, "tiny")
    cfg = tiny_cfg(digital_shapes="serial")
    simulated = []
    real = runner.run_vectors
    monkeypatch.setattr(runner, "run_vectors",
                        lambda src, *a, **k: simulated.append(Path(src).name) or real(src, *a, **k))
    res = synth_stage.run(c, cfg, paths)
    assert simulated == [], "synth simulates nothing: latency and energy come from sim"
    saved = json.loads((tmp_path / "tiny" / "synth" / "result.json").read_text())
    assert saved["measured"]["machine"]["cores"] >= 1 and "method" in saved
    assert (tmp_path / "tiny" / "fixed" / "fixed_point.png").stat().st_size > 1000
    for kind in ("frontier", "all_digital"):
        assert set(saved[kind]) == {"design", *synth_stage.KEYS}
    designs = res["designs"]
    assert designs["frontier_parallel"]["memory_bits"] == 0
    from crystalbench.rtl import design, fixed
    nets = fixed.nets_of(fixed.load(tmp_path / "tiny" / "fixed", c))
    for name in ("frontier_serial", "all_digital_serial", "all_digital_small_serial"):
        d = designs[name]
        dut = design.build(nets[d["kind"]], "serial", d["weights"])
        Fragment.get(dut, None)  # elaborated (Amaranth warns about a component never used)
        assert d["design_latency_cycles"] == dut.latency
        # Program and weights stay memory macros in the gate netlist (RAM when loadable,
        # with the biases in a RAM of their own); the all-logic count maps them to
        # flip-flops and gates.
        kinds = {m["name"]: m["kind"] for m in d["memories"]}
        loadable = d["weights"] == "loadable"
        assert kinds == {"prog": "rom", "wmem": "ram" if loadable else "rom",
                         **({"bmem": "ram"} if loadable else {})}
        assert d["memory_bits"] == sum(m["depth"] * m["width"] for m in d["memories"])
        ram_bits = sum(m["bits"] for m in d["memories"] if m["kind"] == "ram")
        assert d["all_logic"]["flip_flops"] >= d["flip_flops"] + ram_bits
        assert d["all_logic"]["gates"] > d["gates"]

    sim = sim_stage.run(c, cfg, paths, waves=True)
    # Each netlist once: the RTL and the gate netlist of every design.
    assert sorted(simulated) == sorted(n for d in designs.values()
                                       for n in ("top.v", "gates.v"))
    assert set(sim["runs"]) == {f"{d}_{lvl}" for d in designs for lvl in ("rtl", "gates")}
    assert all(r["bit_exact_fraction"] == 1.0 for r in sim["runs"].values()) and sim["passed"]
    par = sim["runs"]["frontier_parallel_gates"]
    assert par["latency_cycles"] == 2 and par["interval_cycles"] == 1  # readout + argmax
    assert par["activity"]["cycles"] == 4 and par["cycles_per_inference"] == 1
    for name in ("frontier_serial", "all_digital_serial"):
        g = sim["runs"][f"{name}_gates"]
        assert g["latency_cycles"] == g["interval_cycles"] == designs[name]["design_latency_cycles"]
        # the activity window: the steady stream from result 1 to result 5, 4 intervals
        assert g["activity"]["vectors"] == 4
        assert g["activity"]["cycles"] == 4 * g["interval_cycles"]
        assert g["latency_ns"] == pytest.approx(g["latency_cycles"] * 1e3 / designs[name]["fmax_mhz"])
    assert sim["frontier"]["design"] == res["frontier"]["design"]
    assert (tmp_path / "tiny" / "sim" / "frontier_serial_gates.vcd").stat().st_size > 0


@pytest.mark.slow
def test_sim_refuses_designs_of_other_formats(tmp_path):
    from crystalbench.rtl import flow as synth_stage
    from crystalbench.sim import flow as sim_stage

    c = tiny_crystal()
    paths = Paths(tmp_path, "tiny")
    cfg = tiny_cfg(shapes="parallel", digital_shapes="none", large_part="none")
    with pytest.raises(FixedPointError, match=r"fixed_point\.json: not found; run `crystalbench synth`"):
        sim_stage.run(c, cfg, paths)
    synth_stage.run(c, cfg, paths)
    other = tiny_cfg(shapes="parallel", digital_shapes="none", large_part="none")
    other["fixed_point"]["weight_bits"] = 6
    with pytest.raises(FixedPointError, match="stale"):
        sim_stage.run(c, other, paths)
    # formats re-made (by quantize) without re-running synth: its designs are stale
    from crystalbench.rtl import quantize
    quantize.run(c, other, paths)
    with pytest.raises(SimError, match=r"other fixed-point formats .* re-run `crystalbench synth`"):
        sim_stage.run(c, other, paths)


def test_icarus_failure_names_its_log(tmp_path, capfd):
    bad = tmp_path / "bad.v"
    bad.write_text("module top(input clk; endmodule\n")
    with pytest.raises(SimError) as e:
        runner.run_vectors(bad, np.zeros((1, 2), int), 8, 8, 2, tmp_path / "b", False)
    assert str(e.value).startswith(f"Icarus/cocotb failed on {bad} (")
    assert "NoneType" not in str(e.value)
    assert str(e.value).endswith(f"see {tmp_path / 'b' / 'sim.log'} and {tmp_path / 'b'}")
    # the tools printed into the log, and the process's own output is back where it was
    os.write(1, b"stdout after the run\n")  # the descriptors themselves, as the tools use
    os.write(2, b"stderr after the run\n")
    out = capfd.readouterr()
    assert "stdout after the run" in out.out and "stderr after the run" in out.err
    log = (tmp_path / "b" / "sim.log").read_text()
    assert "after the run" not in log and "syntax error" in log  # iverilog's stderr: the log


def test_design_that_never_answers_ends_at_the_cycle_limit(tmp_path):
    mute = tmp_path / "mute.v"
    mute.write_text("module top(input clk, input rst, input i__valid, input [15:0] i__payload,\n"
                    "  output i__ready, output o__valid, input o__ready, output [16:0] o__payload);\n"
                    "  assign i__ready = 1'b0; assign o__valid = 1'b0; assign o__payload = 0;\n"
                    "endmodule\n")
    with pytest.raises(SimError) as e:
        runner.run_vectors(mute, np.zeros((1, 2), int), 8, 8, 2, tmp_path / "m", False,
                           max_cycles=50)
    # cocotb 2's runner exits when its test fails: that is the error the user sees
    assert str(e.value) == (f"Icarus/cocotb failed on {mute} (SystemExit: 1); see "
                            f"{tmp_path / 'm' / 'sim.log'} and {tmp_path / 'm'}")
    job = json.loads((tmp_path / "m" / "job.json").read_text())
    assert job["max_cycles"] == 50 and job["loadable"] is False and job["load"] == []
    assert "no result after 50 cycles" in (tmp_path / "m" / "sim.log").read_text()


def test_cli_names_missing_inputs(tmp_path, capsys):
    cfgf = tmp_path / "t.yaml"
    cfgf.write_text("experiment: nothing\n")
    assert cli.main(["--build-dir", str(tmp_path), "synth", "--config", str(cfgf)]) == 2
    assert "crystalbench train" in capsys.readouterr().err
    assert cli.main(["--build-dir", str(tmp_path), "sim", "--config", str(cfgf)]) == 2
    assert "crystalbench train" in capsys.readouterr().err
    cm.save(tiny_crystal(), tmp_path / "nothing" / "crystal")
    assert cli.main(["--build-dir", str(tmp_path), "sim", "--config", str(cfgf)]) == 2
    err = capsys.readouterr().err
    assert "fixed_point.json: not found; run `crystalbench synth`" in err
    assert err.count("\n") == 1  # one line
