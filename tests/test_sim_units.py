"""The sim stage's steps, one at a time and fast: activity window, energy, latency,
headline, golden comparison, refusals; one design run through Icarus for real."""
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench.errors import FixedPointError, SimError
from crystalbench.results import Paths, write_result
from crystalbench.rtl import design, fixed, quantize
from crystalbench.sim import flow, power, runner

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import quantized, quantized_deep, tiny_crystal  # noqa: E402
from test_parsers import HAND_VCD  # noqa: E402

FIG = {"fmax_mhz": 50.0, "flip_flops": 10, "transistors": 1000, "lut4": 50, "ice40_ff": 30}


def test_activity_counts_the_steady_stream_between_results(tmp_path):
    vcd = tmp_path / "a.vcd"
    vcd.write_text(HAND_VCD)  # toggles: 3 at 5 ns, 2 at 10 ns, 1 at 15 ns; 5 net bits
    r = {"latency_cycles": [2, 3, 2], "interval_cycles": 1.5, "result_ns": [0.0, 10.0, 30.0]}
    got = flow.activity(FIG, r, vcd, 2, 12.0)
    # window (0, 30] ns: 3 + 2 + 1 toggles over 30 / 10 ns = 3 cycles, 2 inferences
    assert got["activity"] == {"toggles": 6, "net_bits": 5, "cycles": 3, "vectors": 2}
    want = power.estimate(6, 5, 3, 2, FIG, 12.0)
    assert got["energy_per_inference_nj"] == want["energy_per_inference_nj"]
    assert got["power_mw"] == want["power_mw"]
    assert got["latency_ns"] == pytest.approx(3 * 1e3 / 50.0)  # worst latency at fmax
    assert got["throughput_per_s"] == pytest.approx(50e6 / 1.5)
    one = flow.activity(FIG, r, vcd, 1, 12.0)  # window (0, 10]: 3 + 2 toggles in 1 cycle
    assert one["activity"] == {"toggles": 5, "net_bits": 5, "cycles": 1, "vectors": 1}
    late = {**r, "result_ns": [5.0, 15.0, 30.0]}  # window (5, 15]: 2 at 10 ns + 1 at 15 ns
    assert flow.activity(FIG, late, vcd, 1, 12.0)["activity"] == {
        "toggles": 3, "net_bits": 5, "cycles": 1, "vectors": 1}


def test_activity_without_an_interval_or_fmax(tmp_path):
    r = {"latency_cycles": [4], "interval_cycles": None, "result_ns": [40.0]}
    got = flow.activity({**FIG, "fmax_mhz": None}, r, tmp_path / "none.vcd", 0, 12.0)
    assert got == {"latency_ns": None, "throughput_per_s": None,
                   "energy_per_inference_nj": None, "power_mw": None}


def test_headline_by_hand():
    h = {"design": "frontier_serial", "bit_exact_fraction": 1.0,
         "class_agreement_with_torch": 0.99443, "latency_cycles": 485, "latency_ns": 14895.6,
         "energy_per_inference_nj": 41.4014}
    assert flow.headline("frontier", h, 12.0) == (
        "frontier (frontier_serial, gate level): bit-exact 1.0000, agreement with torch 0.9944, "
        "latency 485 cycles = 14.9 us at fmax, 41.4 nJ/inference (iCE40 model, 12 MHz)")
    h.update(latency_ns=1000.0)  # 1 us exactly
    assert " = 1 us at fmax" in flow.headline("frontier", h, 12.0)
    h.update(latency_ns=None, energy_per_inference_nj=None)
    assert flow.headline("frontier", h, 12.0).endswith("latency 485 cycles")


def test_golden_check_flags_each_disagreeing_vector():
    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    codes = fixed.input_codes(c, net)[:4]
    g = net.forward(codes)
    got = {"cls": g["cls"].copy(), "logits": g["logits"].copy()}
    assert flow.golden_check(codes, got, net).tolist() == [True] * 4
    got["logits"][1, 2] += 1  # one logit off by one
    got["cls"][3] = (got["cls"][3] + 1) % 3  # one class wrong
    assert flow.golden_check(codes, got, net).tolist() == [True, False, True, False]


def test_synth_results_are_refused_when_missing_damaged_or_stale(tmp_path):
    c = tiny_crystal()
    cfg = cfgmod.validate({"experiment": "tiny"}, "<t>")
    paths = Paths(tmp_path, "tiny")
    quantize.run(c, cfg, paths)
    with pytest.raises(SimError) as e:
        flow.synth_results(c, cfg, paths)
    assert str(e.value) == (f"{paths.result('synth')}: not found; run `crystalbench synth` "
                            "(`make synth`) first: it writes the gate netlists")
    paths.stage("synth").mkdir()
    paths.result("synth").write_text("{broken")
    with pytest.raises(SimError, match=r"synth result is not valid JSON"):
        flow.synth_results(c, cfg, paths)
    # formats made with other settings than the config asks for: stale, whatever synth says
    other = cfgmod.validate({"experiment": "tiny", "fixed_point": {"weight_bits": 6}}, "<t>")
    with pytest.raises(FixedPointError, match=r"made with other fixed_point/adc settings"):
        flow.synth_results(c, other, paths)
    with pytest.raises(FixedPointError, match=r"made with other fixed_point/adc settings"):
        flow.run(c, other, paths)
    write_result(paths.stage("synth"), {"fixed_digest": "0123456789abcdef", "designs": {}})
    with pytest.raises(SimError, match=r"other fixed-point formats .* re-run `crystalbench synth`"):
        flow.synth_results(c, cfg, paths)
    fp = fixed.load(paths.stage("fixed"), c, cfg)
    write_result(paths.stage("synth"), {"fixed_digest": fixed.artifact_digest(fp), "designs": {}})
    assert flow.synth_results(c, cfg, paths)["designs"] == {}


def test_synth_results_are_refused_when_built_from_another_qat_net(tmp_path, monkeypatch):
    """synth stamps the QAT artifact's digest (None without qat.shapes); sim compares it
    with the artifact that synth's own qat_net reads for this crystal, config and folders."""
    from crystalbench.rtl import flow as synth_stage

    c = tiny_crystal()
    cfg = cfgmod.validate({"experiment": "tiny"}, "<t>")
    paths = Paths(tmp_path, "tiny")
    quantize.run(c, cfg, paths)
    fp = fixed.load(paths.stage("fixed"), c, cfg)
    asked = []
    monkeypatch.setattr(synth_stage, "qat_net",
                        lambda *a: (asked.append(a), ("0123456789abcdef", {}))[1])
    write_result(paths.stage("synth"), {"fixed_digest": fixed.artifact_digest(fp), "designs": {}})
    with pytest.raises(SimError) as e:
        flow.synth_results(c, cfg, paths)
    assert str(e.value) == (f"{paths.result('synth')}: the designs were built from another QAT "
                            f"net than {paths.stage('qat')} holds (or qat.shapes changed); "
                            "re-run `crystalbench synth`")
    assert asked == [(c, cfg, paths)]
    write_result(paths.stage("synth"), {"fixed_digest": fixed.artifact_digest(fp), "designs": {},
                                        "qat_digest": "0123456789abcdef"})
    assert flow.synth_results(c, cfg, paths)["qat_digest"] == "0123456789abcdef"


def parallel_stand_in(tmp_path, net, weights: str, latency: int) -> dict:
    """A design entry as synth writes it, with the parallel design's Verilog standing in
    for both levels (no synthesis needed)."""
    src = tmp_path / "top.v"
    src.write_text(design.to_verilog(design.build(net, "parallel", weights)))
    return {"verilog": str(src), "gate_netlist": str(src), "weights": weights,
            "design_latency_cycles": latency, **FIG}


def test_run_design_through_icarus(tmp_path):
    """The parallel frontier's Verilog stands in for both levels (no synthesis needed). The
    crystal has two hidden layers, so the torch classes come from its last layer only."""
    c, fp = quantized_deep()
    net = fixed.nets_of(fp)["frontier"]
    d = parallel_stand_in(tmp_path, net, "baked", 3)
    cfg = cfgmod.validate({"experiment": "tiny", "sim": {"power_vectors": 3}}, "<t>")
    lines = []
    out = Paths(tmp_path, "tiny").stage("sim")
    runs = flow.run_design(c, cfg, out, "fp", d, net, fixed.input_codes(c, net)[:6], False,
                           lines.append)
    assert set(runs) == {"fp_rtl", "fp_gates"}
    g = net.forward(fixed.input_codes(c, net)[:6])
    torch_cls = c.reference.outputs[-1].argmax(1)[:6]
    for run in runs.values():
        assert run["vectors"] == 6 and run["bit_exact_fraction"] == 1.0
        assert run["class_agreement_with_torch"] == float((g["cls"] == torch_cls).mean())
        assert run["fixed_point_test_accuracy"] == float((g["cls"] == c.reference.y[:6]).mean())
        assert run["latency_cycles"] == 3 and run["interval_cycles"] == 1  # 2 layers + argmax
    act = runs["fp_gates"]["activity"]
    assert act["vectors"] == 3 and act["cycles"] == 3  # one result per clock
    assert runs["fp_gates"]["cycles_per_inference"] == 1
    assert "energy_per_inference_nj" not in runs["fp_rtl"]
    assert not (tmp_path / "tiny" / "sim" / "fp_gates.vcd").exists()  # counted, then removed
    assert not (tmp_path / "tiny" / "sim" / "fp_rtl.vcd").exists()  # RTL: no dump without waves
    job = json.loads((out / "fp_gates" / "job.json").read_text())
    assert job["max_cycles"] == runner.cycle_limit(3, 6) and job["loadable"] is False
    assert lines[0].startswith("fp_rtl: 6 vectors, bit-exact 1.0000")
    assert "nJ/inference" in lines[1]
    json.dumps(runs)  # plain values only
    assert np.isfinite(runs["fp_gates"]["energy_per_inference_nj"])


def quantized_stage(tmp_path, vectors: int):
    """The tiny crystal with its fixed-point artifact made: (crystal, config, paths, formats)."""
    c = tiny_crystal()
    cfg = cfgmod.validate({"experiment": "tiny", "sim": {"vectors": vectors, "power_vectors": 2}},
                          "<t>")
    paths = Paths(tmp_path, "tiny")
    quantize.run(c, cfg, paths)
    return c, cfg, paths, fixed.load(paths.stage("fixed"), c, cfg)


def test_the_stage_end_to_end_on_rtl_stand_ins(tmp_path, monkeypatch):
    """`run` over two designs whose 'gate netlists' are their RTL (no synthesis): the
    result's headline follows synth's choice, bit-exactness and summary lines."""
    c, cfg, paths, fp = quantized_stage(tmp_path, 5)
    nets = fixed.nets_of(fp)
    designs = {}
    for name, kind, shape in (("frontier_parallel", "frontier", "parallel"),
                              ("all_digital_small_serial", "all_digital_small", "serial")):
        dut = design.build(nets[kind], shape, "baked")
        src = tmp_path / f"{name}.v"
        src.write_text(design.to_verilog(dut))
        designs[name] = {"verilog": str(src), "gate_netlist": str(src), "weights": "baked",
                         "kind": kind, "design_latency_cycles": dut.latency, **FIG}
    write_result(paths.stage("synth"), {
        "crystal_digest": fp["crystal"]["digest"], "fixed_digest": fixed.artifact_digest(fp),
        "designs": designs, "frontier": {"design": "frontier_parallel"},
        "all_digital": {"design": "all_digital_small_serial"}})
    res = flow.run(c, cfg, paths)
    assert res["vectors"] == 5 and res["passed"] and res["all_bit_exact"]
    assert not list(paths.stage("sim").rglob("*.vcd"))  # no waves unless asked: counted, removed
    assert set(res["runs"]) == {f"{d}_{lvl}" for d in designs for lvl in ("rtl", "gates")}
    torch_cls = c.reference.outputs[-1].argmax(1)[:5]
    assert res["float_test_accuracy"] == float((torch_cls == c.reference.y[:5]).mean())
    assert res["frontier"]["design"] == "frontier_parallel"
    assert res["all_digital"]["design"] == "all_digital_small_serial"
    g = res["runs"]["all_digital_small_serial_gates"]
    assert res["all_digital"] == {"design": "all_digital_small_serial", **{k: g[k] for k in (
        "bit_exact_fraction", "class_agreement_with_torch", "fixed_point_test_accuracy",
        "latency_cycles", "latency_ns", "energy_per_inference_nj", "power_mw",
        "energy_per_inference_nj_cmos")}}
    assert g["activity"]["vectors"] == 2 and g["activity"]["cycles"] == 2 * g["interval_cycles"]
    assert res["summary"][0] == flow.headline("frontier", res["frontier"], 12.0)
    assert res["summary"][-1] == (f"5 vectors per run; float test accuracy "
                                  f"{res['float_test_accuracy']:.4f}; all bit-exact")
    assert res["crystal_digest"] == fp["crystal"]["digest"]
    on_disk = json.loads(paths.result("sim").read_text())
    assert on_disk["energy_models"]["ice40"]["clock_j_per_cycle"] == 53.6e-12
    assert on_disk["clock_mhz"] == 12.0 and on_disk["method"] == flow.METHOD
    assert on_disk["energy_models"] == {"ice40": power.ICE40, "cmos": power.CMOS}
    assert on_disk["fixed_digest"] == fixed.artifact_digest(fp)
    assert res["summary"][1] == flow.headline("all_digital", res["all_digital"], 12.0)
    assert 0 < res["seconds"] < 600 and res["seconds"] == round(res["seconds"], 1)
    # vectors beyond the split are capped at its size; the run's seconds from its own clock,
    # to a tenth (a scripted clock: 0 at the start, 12.345 at every later reading)
    readings = iter([0.0])
    monkeypatch.setattr(flow, "time", SimpleNamespace(perf_counter=lambda: next(readings, 12.345)))
    again = flow.run(c, cfg, paths, waves=True, vectors=99)
    assert again["vectors"] == 10 and again["seconds"] == 12.3
    # with waves, every run's dump is kept beside its folder
    assert sorted(p.name for p in paths.stage("sim").glob("*.vcd")) == sorted(
        f"{d}_{lvl}.vcd" for d in designs for lvl in ("rtl", "gates"))


def test_a_netlist_that_disagrees_fails_the_stage(tmp_path):
    import dataclasses

    c, cfg, paths, fp = quantized_stage(tmp_path, 4)
    net = fixed.nets_of(fp)["frontier"]
    last = net.layers[-1]
    wrong = dataclasses.replace(net, layers=net.layers[:-1] + (
        dataclasses.replace(last, bias=last.bias + np.array([0, 0, 1 << 12])),))
    good, bad = tmp_path / "good.v", tmp_path / "bad.v"
    good.write_text(design.to_verilog(design.build(net, "parallel", "baked")))
    bad.write_text(design.to_verilog(design.build(wrong, "parallel", "baked")))
    d = {"verilog": str(good), "gate_netlist": str(bad), "weights": "baked", "kind": "frontier",
         "design_latency_cycles": 2, **FIG}
    write_result(paths.stage("synth"), {
        "fixed_digest": fixed.artifact_digest(fp), "crystal_digest": cm.digest(c),
        "designs": {"fp": d, "fq": {**d, "verilog": str(bad)}}})
    res = flow.run(c, cfg, paths)
    assert res["runs"]["fp_rtl"]["bit_exact_fraction"] == 1.0
    assert res["runs"]["fp_gates"]["bit_exact_fraction"] < 1.0
    assert not res["passed"] and not res["all_bit_exact"]
    assert res["summary"][-1].endswith("NOT bit-exact: fp_gates, fq_rtl, fq_gates")


def test_run_design_passes_on_what_the_runner_needs_and_logs_each_run(tmp_path, monkeypatch):
    """A spy on the runner (the real one runs): the loadable flag, the dump window, the
    cycle limit; the run's seconds from a scripted clock; the log line by hand."""
    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    d = parallel_stand_in(tmp_path, net, "loadable", 2)
    cfg = cfgmod.validate({"experiment": "tiny", "sim": {"power_vectors": 2}}, "<t>")
    calls, real = [], runner.run_vectors
    monkeypatch.setattr(runner, "run_vectors", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    readings = iter([100.0, 102.25, 200.0, 203.5])  # rtl: 2.25 s, gates: 3.5 s
    monkeypatch.setattr(flow, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
    codes = fixed.input_codes(c, net)[:5]
    lines = []
    runs = flow.run_design(c, cfg, tmp_path / "o", "fp", d, net, codes, False, lines.append)
    (a_rtl, k_rtl), (a_g, k_g) = calls
    assert a_rtl[6] is True and a_g[6] is True  # loadable: the bench drives the write port
    assert k_rtl["vcd"] is None and k_g["vcd"] == tmp_path / "o" / "fp_gates.vcd"
    assert k_g["vcd_results"] == 3  # dump until result power_vectors + 1
    assert k_g["max_cycles"] == runner.cycle_limit(2, 5) and k_g["load"] is None
    assert runs["fp_rtl"]["seconds"] == 2.2 and runs["fp_gates"]["seconds"] == 3.5
    g = net.forward(codes)
    torch_cls = c.reference.outputs[-1].argmax(1)[:5]
    agree = f"{float((g['cls'] == torch_cls).mean()):.4f}"
    acc = f"{float((g['cls'] == c.reference.y[:5]).mean()):.4f}"
    assert lines[0] == (f"fp_rtl: 5 vectors, bit-exact 1.0000, class agreement with torch {agree}, "
                        f"accuracy {acc}, latency 2 cycles (2.2 s)")
    e = runs["fp_gates"]["energy_per_inference_nj"]
    assert lines[1] == (f"fp_gates: 5 vectors, bit-exact 1.0000, class agreement with torch "
                        f"{agree}, accuracy {acc}, latency 2 cycles, {e:.3g} nJ/inference (3.5 s)")
    # with waves: every level dumps everything, and the line names the file; words to load
    # (here the design's own first two weights again) go to both runs
    calls.clear()
    readings = iter([0.0, 1.0, 2.0, 3.0])
    words = design.load_words(net)[:2]
    runs = flow.run_design(c, cfg, tmp_path / "w", "fp", d, net, codes, True, lines.append,
                           load=words)
    assert [k["vcd_results"] for _, k in calls] == [0, 0]
    assert [k["load"] for _, k in calls] == [words, words] and len(words) == 2
    assert runs["fp_gates"]["bit_exact_fraction"] == 1.0
    assert lines[2].endswith(f"(1.0 s), waves {tmp_path / 'w' / 'fp_rtl.vcd'}")
    assert (tmp_path / "w" / "fp_rtl.vcd").stat().st_size > 0


def test_power_window_needs_one_result_more_than_it_prices(tmp_path):
    """sim.power_vectors larger than the run: the window is every interval, n - 1."""
    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    d = parallel_stand_in(tmp_path, net, "baked", 2)
    cfg = cfgmod.validate({"experiment": "tiny", "sim": {"power_vectors": 50}}, "<t>")
    runs = flow.run_design(c, cfg, tmp_path / "o", "fp", d, net, fixed.input_codes(c, net)[:4],
                           False, lambda _: None, levels=("gates",))
    assert set(runs) == {"fp_gates"} and runs["fp_gates"]["activity"]["vectors"] == 3


def test_stage_on_a_deep_frontier_compares_with_the_readout(tmp_path):
    from hw_tiny import tiny_deep_crystal

    c = tiny_deep_crystal()
    cfg = cfgmod.validate({"experiment": "tiny_deep", "sim": {"vectors": 6, "power_vectors": 2}},
                          "<t>")
    paths = Paths(tmp_path, "tiny_deep")
    quantize.run(c, cfg, paths)
    fp = fixed.load(paths.stage("fixed"), c, cfg)
    net = fixed.nets_of(fp)["frontier"]
    write_result(paths.stage("synth"), {
        "fixed_digest": fixed.artifact_digest(fp), "crystal_digest": cm.digest(c),
        "designs": {"fp": {**parallel_stand_in(tmp_path, net, "baked", 3), "kind": "frontier"}}})
    res = flow.run(c, cfg, paths)
    torch_cls = c.reference.outputs[-1].argmax(1)[:6]  # the readout, not a hidden layer
    g = net.forward(fixed.input_codes(c, net)[:6])
    assert res["float_test_accuracy"] == float((torch_cls == c.reference.y[:6]).mean())
    assert res["runs"]["fp_gates"]["class_agreement_with_torch"] == float(
        (g["cls"] == torch_cls).mean())
    assert res["passed"]


def test_the_stage_runs_the_qat_net_that_synth_built(tmp_path):
    """With qat.shapes set, sim runs the QAT net's design on the net rtl/qatnet reads from
    build/<exp>/qat for this crystal and config (its RTL standing in for the netlist)."""
    from crystalbench.rtl import qatnet

    c = tiny_crystal()
    cfg = cfgmod.validate({"experiment": "tiny", "qat": {"shapes": "ring"},
                           "sim": {"vectors": 4, "power_vectors": 2}}, "<t>")
    paths = Paths(tmp_path, "tiny")
    quantize.run(c, cfg, paths)
    fp = fixed.load(paths.stage("fixed"), c, cfg)
    rng = np.random.default_rng(3)
    art = {"version": qatnet.VERSION, "crystal": {"digest": cm.digest(c)},
           "config": cfgmod.qat_stamp(json.loads(json.dumps(cfg.qat))),
           "formats": {"input_bits": 2, "weight_bits": 2, "readout_weight_bits": 3,
                       "activation_bits": 2, "shift": 1},
           "w1": rng.integers(-1, 2, (2, 8)).tolist(), "b1": [0, 1],
           "w2": rng.integers(-3, 4, (3, 2)).tolist(), "b2": [1, 0, -1]}
    paths.stage(qatnet.NAME).mkdir(parents=True)
    (paths.stage(qatnet.NAME) / qatnet.FILE_NAME).write_text(json.dumps(art))
    _, net = qatnet.load(paths.stage(qatnet.NAME), c, cfg)
    dut = design.build(net, "ring", "baked")
    src = tmp_path / "ring.v"
    src.write_text(design.to_verilog(dut))
    write_result(paths.stage("synth"), {
        "crystal_digest": cm.digest(c), "fixed_digest": fixed.artifact_digest(fp),
        "qat_digest": qatnet.artifact_digest(art), "designs": {"qat_ring": {
            "verilog": str(src), "gate_netlist": str(src), "weights": "baked",
            "kind": qatnet.KIND, "design_latency_cycles": dut.latency, **FIG}}})
    res = flow.run(c, cfg, paths)
    want = net.forward(fixed.input_codes(c, net)[:4])
    g = res["runs"]["qat_ring_gates"]
    assert res["all_bit_exact"] and g["bit_exact_fraction"] == 1.0
    assert g["fixed_point_test_accuracy"] == float((want["cls"] == c.reference.y[:4]).mean())
    torch_cls = c.reference.outputs[-1].argmax(1)[:4]
    assert g["class_agreement_with_torch"] == float((want["cls"] == torch_cls).mean())


# ---- sim.runner's wiring, Icarus and cocotb stubbed (the real runs are in test_sim) ---------
class FakeIcarusRunner:
    """cocotb_tools' Icarus runner as run_cocotb uses it: build() and test() record their
    arguments and print from C-level file descriptors as the tools do; _test_command is the
    command the runner would start (with cocotb's `-none`)."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def _test_command(self):
        return [["vvp", "-M", "libs", "-none", "sim.vvp"]]

    def build(self, **kw):
        self.calls.append(("build", kw))
        os.write(1, b"iverilog said this\n")
        if self.fail:
            raise self.fail

    def test(self, **kw):
        self.calls.append(("test", kw))
        os.write(2, b"vvp said this\n")


def test_run_cocotb_builds_and_tests_with_exactly_these_arguments(tmp_path, monkeypatch):
    import cocotb_tools.runner

    fake = FakeIcarusRunner()
    monkeypatch.setattr(cocotb_tools.runner, "get_runner", lambda sim: fake if sim == "icarus"
                        else pytest.fail(f"asked for {sim}"))
    src = tmp_path / "d.v"
    src.write_text("module top; endmodule\n")  # nothing to kick: built as it is
    b = tmp_path / "b"
    b.mkdir()
    log = runner.run_cocotb(src, b, "tb_x", tmp_path / "tests", tmp_path / "job.json",
                            extra_sources=[tmp_path / "dump.v"], build_args=["-s", "dump"],
                            plusargs=["+a=1"])
    assert log == b / "sim.log"
    assert fake.calls == [
        ("build", {"sources": [src.resolve(), tmp_path / "dump.v"], "hdl_toplevel": "top",
                   "build_dir": b, "always": True, "timescale": ("1ns", "1ps"),
                   "build_args": ["-s", "dump"]}),
        ("test", {"hdl_toplevel": "top", "test_module": "tb_x", "test_dir": str(tmp_path / "tests"),
                  "build_dir": b, "extra_env": {"CB_TB": str(tmp_path / "job.json"),
                                                "PYTHONPATH": str(tmp_path / "tests")},
                  "plusargs": ["+a=1"], "results_xml": str(b / "results.xml")})]
    assert type(fake.calls[1][1]["test_dir"]) is str
    assert log.read_text() == "iverilog said this\nvvp said this\n"
    # no VCD asked for: cocotb's command keeps its -none; with vcd=True it is dropped
    assert fake._test_command() == [["vvp", "-M", "libs", "-none", "sim.vvp"]]
    runner.run_cocotb(src, b, "tb_x", tmp_path, tmp_path / "job.json", vcd=True)
    assert fake._test_command() == [["vvp", "-M", "libs", "sim.vvp"]]
    assert fake.calls[-1][1]["plusargs"] == [] and fake.calls[-2][1]["build_args"] == []


def test_run_cocotb_failure_names_the_log_and_build_folder(tmp_path, monkeypatch):
    import cocotb_tools.runner

    fake = FakeIcarusRunner(fail=SystemExit(1))
    monkeypatch.setattr(cocotb_tools.runner, "get_runner", lambda sim: fake)
    src = tmp_path / "d.v"
    src.write_text("module top; endmodule\n")
    with pytest.raises(SimError) as e:
        runner.run_cocotb(src, tmp_path, "tb_x", tmp_path, tmp_path / "job.json")
    assert str(e.value) == (f"Icarus/cocotb failed on {src} (SystemExit: 1); see "
                            f"{tmp_path / 'sim.log'} and {tmp_path}")
    assert [c[0] for c in fake.calls] == ["build"]  # not tested after the build failed


@pytest.fixture
def stub_cocotb(monkeypatch):
    """runner.run_cocotb replaced by a bench that reads the job and answers st.results (at
    the job's outputs path, unless st.results is None); toolrun.require recorded."""
    st = SimpleNamespace(calls=[], required=[], job=None,
                         results=[{"cls": 2, "logits": [-3, 0, 5]}, {"cls": 0, "logits": [7, 1, -2]}])

    def fake(verilog, build_dir, test_module, test_dir, job, **kw):
        st.calls.append((verilog, build_dir, test_module, test_dir, job, kw))
        st.job = json.loads(Path(job).read_text())
        if st.results is not None:
            Path(st.job["out"]).write_text(json.dumps({"results": st.results, "latency_cycles": [9]}))
        return build_dir / "sim.log"

    monkeypatch.setattr(runner, "run_cocotb", fake)
    monkeypatch.setattr(runner.toolrun, "require", lambda *t: st.required.append(t))
    return st


def test_run_vectors_writes_the_job_and_reads_the_outputs(tmp_path, stub_cocotb):
    st = stub_cocotb
    codes = np.array([[1.0, 3.0], [0.0, 2.0]])  # floats: the bench gets integers
    res = runner.run_vectors(tmp_path / "d.v", codes, 2, 9, 3, tmp_path / "b", True,
                             load=[(np.int64(4), np.int64(-7)), (5, 6)])
    b = (tmp_path / "b").resolve()
    assert st.required == [("iverilog", "vvp")]
    assert st.job == {"vectors": [[1, 3], [0, 2]], "in_bits": 2, "logit_bits": 9, "n_classes": 3,
                      "loadable": True, "out": str(b / "outputs.json"), "period_ns": 10,
                      "load": [[4, -7], [5, 6]], "max_cycles": runner.cycle_limit(4000, 2)}
    assert st.job["max_cycles"] == 100 + 2 * 4000 * 4
    assert {type(v) for row in st.job["vectors"] + st.job["load"] for v in row} == {int}
    ((verilog, build_dir, module, test_dir, job, kw),) = st.calls
    assert (verilog, build_dir, module, job) == (tmp_path / "d.v", b, "tb_net", b / "job.json")
    assert Path(test_dir) == Path(runner.__file__).parent
    assert kw == {"extra_sources": [b / "cb_vcd_dump.v"], "build_args": ["-s", "cb_vcd_dump"],
                  "plusargs": [], "vcd": False}
    assert (b / "cb_vcd_dump.v").read_text() == runner.DUMP_V
    assert res["cls"].tolist() == [2, 0] and res["cls"].dtype == np.int64
    assert res["logits"].tolist() == [[-3, 0, 5], [7, 1, -2]] and res["logits"].dtype == np.int64
    assert res["latency_cycles"] == [9]
    # a VCD: its path and, unless asked otherwise, the whole run (vcd_results 0)
    runner.run_vectors(tmp_path / "d.v", codes, 2, 9, 3, tmp_path / "b", False,
                       vcd=tmp_path / "w.vcd", max_cycles=77)
    assert st.calls[-1][5]["plusargs"] == [f"+vcd={(tmp_path / 'w.vcd').resolve()}",
                                           "+vcd_results=0"]
    assert st.calls[-1][5]["vcd"] is True and st.job["max_cycles"] == 77 and st.job["load"] == []


def test_run_vectors_refusals_and_a_run_without_outputs(tmp_path, stub_cocotb):
    st = stub_cocotb
    with pytest.raises(SimError) as e:
        runner.run_vectors("d.v", np.zeros((1, 2), int), 2, 9, 3, tmp_path, False, load=[(0, 1)])
    assert str(e.value) == "d.v: a weight set to load, but the design's weights are baked"
    assert st.calls == [] and st.required == []
    # an outputs file left by an earlier run is removed first: no new one is an error
    b = tmp_path / "b"
    runner.run_vectors("d.v", np.zeros((1, 2), int), 2, 9, 3, b, False)
    st.results = None
    with pytest.raises(SimError) as e:
        runner.run_vectors("d.v", np.zeros((1, 2), int), 2, 9, 3, b, False)
    assert str(e.value) == (f"the cocotb test wrote no outputs (it failed or timed out); see "
                            f"{b.resolve() / 'sim.log'} and {b.resolve() / 'results.xml'}")
    # no vectors: empty results are still integer arrays (numpy's default for [] is float)
    st.results = []
    res = runner.run_vectors("d.v", np.zeros((0, 2), int), 2, 9, 3, b, False)
    assert res["cls"].dtype == res["logits"].dtype == np.int64 and res["cls"].shape == (0,)
