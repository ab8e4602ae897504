"""The hybrid as one system (sim/hybrid.py): the ADC part by hand, the system figures by
hand, and the whole chain on the tiny crystal (ngspice core -> ADC -> gate netlist)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from crystalbench import adc
from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench.analog import spice
from crystalbench.errors import ConfigError, CrystalbenchError, SimError
from crystalbench.results import Paths
from crystalbench.sim import hybrid

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import tiny_crystal, tiny_deep_crystal  # noqa: E402


def part(bits=4, channels=8, **kw):
    base = dict(key="p", part="Test ADC", bits=bits, channels=channels, vref_min_v=0.5,
                vref_max_v=20.0, supply_v=5.0, sample_rate_sps=200e3, supply_current_a=400e-6,
                ref_current_a=100e-6, offset_error_lsb=1.5, gain_error_lsb=1.0, source="test")
    return adc.AdcPart(**{**base, **kw})


# ---- the ADC part ------------------------------------------------------------------------------
def test_convert_by_hand():
    p = part(bits=4)  # VREF 16 V: 1 V per part code; the frontier keeps 2 bits (k = 2)
    v = np.array([-1.0, 0.0, 0.49, 0.5, 1.5, 2.0, 5.0, 6.0, 9.9, 15.6, 100.0])
    # part codes: 0, 0, 0, 0 (half to even), 2, 2, 5, 6, 10, 15 (clip at 2**4 - 1), 15
    assert adc.convert(p, v, 16.0, 4).tolist() == [0, 0, 0, 0, 2, 2, 5, 6, 10, 15, 15]
    # frontier: code / 4 rounded half to even (2 -> 0, 6 -> 2, 10 -> 2), saturated at 3
    assert adc.convert(p, v, 16.0, 2).tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 2, 3, 3]
    codes = np.arange(16.0)  # every part code: 1 V each
    assert adc.convert(p, codes, 16.0, 2).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3,
                                                       3, 3, 3]


def test_convert_offset_and_gain_error_in_part_lsb():
    p = part(bits=4)
    v = np.array([0.0, 1.0, 4.0])
    # gain error of +16 LSB at N = 4 doubles the slope; an offset adds to every code
    assert adc.convert(p, v, 16.0, 4, gain_lsb=16.0).tolist() == [0, 2, 8]
    assert adc.convert(p, v, 16.0, 4, offset_lsb=0.6).tolist() == [1, 2, 5]
    assert adc.convert(p, v, 16.0, 4, offset_lsb=-1.4).tolist() == [0, 0, 3]
    # per channel (columns)
    got = adc.convert(p, np.array([[2.0, 2.0]]), 16.0, 4, offset_lsb=np.array([0.0, 3.0]))
    assert got.tolist() == [[2, 5]]


def test_reference_puts_each_frontier_code_at_its_ideal_voltage():
    p = adc.part_for("mcp3008")  # 10 bits; the frontier keeps 8
    vref = adc.reference_v(1.0, 8)
    assert vref == pytest.approx(256 / 255)
    lsb = 1.0 / 255  # the analog core's LSB: analog.adc_ref_v / (2**8 - 1)
    c = np.arange(256)
    assert adc.convert(p, c * lsb, vref, 8).tolist() == c.tolist()
    # the edge of a code is half an LSB up, give or take the part's half LSB (1/8 here):
    # from 0.375 to 0.625 LSB the part reads 4c + 2, which goes to the even neighbour
    assert adc.convert(p, (c[:-1] + 0.37) * lsb, vref, 8).tolist() == c[:-1].tolist()
    assert adc.convert(p, (c[:-1] + 0.63) * lsb, vref, 8).tolist() == (c[:-1] + 1).tolist()
    even = c[:-1] + (c[:-1] % 2)
    assert adc.convert(p, (c[:-1] + 0.5) * lsb, vref, 8).tolist() == even.tolist()
    assert adc.convert(p, np.array([1.2, -0.1]), vref, 8).tolist() == [255, 0]


def test_check_part_refuses_what_the_part_cannot_do():
    p = adc.part_for("mcp3008")
    assert adc.check_part(p, 8, 1.0) == pytest.approx(256 / 255)
    assert adc.check_part(p, 10, 1.0) == pytest.approx(1024 / 1023)
    with pytest.raises(ConfigError, match=r"adc.bits 11 is more than the Microchip MCP3008's 10"):
        adc.check_part(p, 11, 1.0)
    with pytest.raises(ConfigError, match=r"analog.adc_ref_v 1 V needs a 1.004 V reference, "
                                          r"outside the TI ADC128S022's 2.7-5.25 V"):
        adc.check_part(adc.part_for("adc128s022"), 8, 1.0)
    with pytest.raises(ConfigError, match=r"adc.part 'ads1' is not a known ADC; choose one of "
                                          r"ad7091r, ad7091r8, adc128s022, mcp3008"):
        adc.part_for("ads1")
    # the config offers exactly the catalogue
    assert set(cfgmod.SCHEMA["adc"]["part"].choices) == set(adc.PARTS)


def test_energy_and_conversion_time_from_the_datasheet_figures():
    p = adc.part_for("mcp3008")
    assert p.conversion_s == pytest.approx(5e-6)  # 200 ksps
    # 5 V x 425 uA + 1 V x 100 uA over 5 us
    assert p.energy_per_conversion_j(1.0) == pytest.approx((5 * 425e-6 + 100e-6) * 5e-6)
    q = adc.part_for("adc128s022")
    assert q.energy_per_conversion_j(3.0) == pytest.approx(1.2e-3 / 200e3)  # 1.2 mW at 3 V


@pytest.mark.parametrize("channels, chips, per_chip", [(0, 0, 0), (1, 1, 1), (8, 1, 8),
                                                       (9, 2, 5), (10, 2, 5), (48, 6, 8),
                                                       (49, 7, 7)])
def test_channel_plan(channels, chips, per_chip):
    p = part(channels=8)
    plan = adc.channel_plan(p, channels, 1.0)
    assert (plan.channels, plan.chips, plan.conversions_per_chip) == (channels, chips, per_chip)
    assert plan.latency_s == pytest.approx(per_chip * 5e-6)
    assert plan.energy_j == pytest.approx(channels * (5 * 400e-6 + 100e-6) * 5e-6)


def test_adc_errors_are_drawn_per_chip_within_the_maxima():
    p = part(channels=8, offset_error_lsb=1.5, gain_error_lsb=1.0)
    plan = adc.channel_plan(p, 10, 1.0)  # 2 chips of 5 channels
    off, gain = hybrid.draw_adc_errors(p, plan, np.random.default_rng(3))
    assert off.shape == gain.shape == (10,)
    assert len(set(off[:5])) == 1 and len(set(off[5:])) == 1 and off[0] != off[5]
    assert len(set(gain[:5])) == 1 and len(set(gain[5:])) == 1
    assert np.all(np.abs(off) <= 1.5) and np.all(np.abs(gain) <= 1.0)
    many = hybrid.draw_adc_errors(p, adc.channel_plan(p, 8 * 400, 1.0), np.random.default_rng(0))
    assert np.abs(many[0]).max() > 1.4 and np.abs(many[1]).max() > 0.9  # the whole range


# ---- system figures --------------------------------------------------------------------------
def test_system_figures_by_hand():
    plan = adc.ChannelPlan(channels=4, chips=1, conversions_per_chip=4, latency_s=3e-6,
                           energy_j=5e-9)
    analog = {"energy_per_inference_nj": 100.0, "settling_time_us": 2.0, "power_mw": 50.0}
    gates = {"energy_per_inference_nj": 7.0, "latency_cycles": 24, "interval_cycles": 12}
    f = hybrid.system_figures(analog, plan, gates, 12.0)
    # core + ADC (2 + 3 us) is the slow stage: one inference per 5 us. The core stays on
    # through the 3 us of conversions: 50 mW x 3 us = 150 nJ more, and waits for nothing.
    assert f["inference_interval_us"] == pytest.approx(5.0)
    assert f["throughput_per_s"] == pytest.approx(1e6 / 5.0)
    assert f["analog_parts_nj"] == {"to_settle_nj": 100.0, "held_for_adc_nj": pytest.approx(150.0),
                                    "waiting_for_frontier_nj": pytest.approx(0.0),
                                    "decoupling_recharge_nj": 0.0}
    # the frontier computes for 12 cycles (1 us) and idles 4 us = 48 cycles at 53.6 pJ per
    # clock cycle (iCE40 UP5K, measured) + 104 uW static x 4 us
    idle = 48 * 53.6e-3 + 104e-6 * 4e-6 * 1e9
    assert f["digital_parts_nj"] == {"computing_nj": 7.0, "idle_nj": pytest.approx(idle)}
    assert f["energy_nj"] == {"analog_nj": pytest.approx(250.0), "adc_nj": pytest.approx(5.0),
                              "digital_nj": pytest.approx(7.0 + idle)}
    assert f["energy_per_inference_nj"] == pytest.approx(262.0 + idle)
    assert f["latency_parts_us"] == {"analog_us": 2.0, "adc_us": pytest.approx(3.0),
                                     "digital_us": 2.0}
    assert f["latency_us"] == pytest.approx(7.0)
    # a frontier interval of 120 cycles (10 us) is now the slow stage: an always-on core
    # waits 10 - 5 us at 50 mW (250 nJ more), the frontier never idles
    slow = hybrid.system_figures(analog, plan, {**gates, "interval_cycles": 120}, 12.0)
    assert slow["throughput_per_s"] == pytest.approx(1e6 / 10.0)
    assert slow["analog_parts_nj"]["waiting_for_frontier_nj"] == pytest.approx(250.0)
    assert slow["digital_parts_nj"]["idle_nj"] == pytest.approx(0.0)
    assert slow["energy_per_inference_nj"] == pytest.approx(100 + 150 + 250 + 5 + 7)
    # a gated core is off while it waits, and recharges its decoupling at power-up:
    # sim-analog's 1000 nJ (a full C x V^2) at most, and at most what it would have drawn
    # while off: 50 mW x the 5 us off = 250 nJ
    gated_analog = {**analog, "power_gating": True, "energy_per_inference_nj": 1100.0,
                    "decoupling_energy_nj": 1000.0}
    gated = hybrid.system_figures(gated_analog, plan, {**gates, "interval_cycles": 120}, 12.0)
    assert gated["analog_parts_nj"] == {
        "to_settle_nj": pytest.approx(100.0), "held_for_adc_nj": pytest.approx(150.0),
        "waiting_for_frontier_nj": 0.0, "decoupling_recharge_nj": pytest.approx(250.0)}
    assert gated["energy_per_inference_nj"] == pytest.approx(100 + 250 + 150 + 5 + 7)
    # off for 1000 - 5 us: the capacitors lose all their charge, 1000 nJ
    long_off = hybrid.system_figures(gated_analog, plan, {**gates, "interval_cycles": 12000}, 12.0)
    assert long_off["analog_parts_nj"]["decoupling_recharge_nj"] == pytest.approx(1000.0)
    assert long_off["energy_per_inference_nj"] == pytest.approx(100 + 1000 + 150 + 5 + 7)
    # never off (core + ADC is the slow stage): nothing to recharge
    busy = hybrid.system_figures(gated_analog, plan, gates, 12.0)
    assert busy["analog_parts_nj"]["decoupling_recharge_nj"] == pytest.approx(0.0)
    assert busy["energy_nj"]["analog_nj"] == pytest.approx(100 + 150)
    # exactly balanced stages (core + ADC = frontier interval = 5 us): nothing waits or idles
    even = hybrid.system_figures(analog, plan, {**gates, "interval_cycles": 60}, 12.0)
    assert even["analog_parts_nj"]["waiting_for_frontier_nj"] == pytest.approx(0.0, abs=1e-9)
    assert even["digital_parts_nj"]["idle_nj"] == pytest.approx(0.0, abs=1e-9)
    unsettled = hybrid.system_figures({"energy_per_inference_nj": None, "settling_time_us": None,
                                       "power_mw": 50.0}, plan, gates, 12.0)
    assert unsettled["energy_per_inference_nj"] is None and unsettled["latency_us"] is None
    assert unsettled["throughput_per_s"] is None and unsettled["inference_interval_us"] is None
    assert unsettled["energy_nj"]["adc_nj"] == pytest.approx(5.0)


# ---- the stage on the tiny crystal ------------------------------------------------------------
def tiny_cfg(**hyb):
    return cfgmod.validate({
        "experiment": "tiny", "rtl": {"shapes": "serial", "digital_shapes": "none",
                                      "large_part": "none"},
        "analog": {"monte_carlo_runs": 1, "tolerances": [0.01], "transient_samples": 3},
        "hybrid": {"boards": 3, **hyb}}, "<test>")


def test_a_clock_above_the_frontiers_fmax_is_refused():
    d = {"fmax_mhz": 31.17}
    hybrid.check_clock(31.17, "frontier_serial", d)  # at fmax: priced as asked
    hybrid.check_clock(12.0, "frontier_serial", {"fmax_mhz": None})  # none measured
    with pytest.raises(SimError) as e:
        hybrid.check_clock(31.18, "frontier_serial", d)
    assert str(e.value) == ("rtl.clock_mhz = 31.18 exceeds the 31.17 MHz fmax nextpnr measured "
                            "for the frontier frontier_serial; set rtl.clock_mhz to at most "
                            "31.17 (and re-run `crystalbench synth`)")


@pytest.mark.slow
@pytest.mark.parametrize("make", [tiny_crystal, tiny_deep_crystal])
def test_whole_chain_on_the_tiny_crystal(tmp_path, make):
    """The readout-only frontier, and one with a hidden layer of its own (tiny_deep)."""
    from crystalbench.analog import flow as analog_flow
    from crystalbench.rtl import fixed
    from crystalbench.rtl import flow as synth_stage

    c = make(n_test=10)
    cm.save(c, tmp_path / c.name / "crystal")
    paths = Paths(tmp_path, c.name)
    out = tmp_path / c.name / "hybrid"
    cfg = tiny_cfg()
    with pytest.raises(SimError, match=r"run `crystalbench sim-analog`"):
        hybrid.run(c, cfg, paths)
    analog = analog_flow.run(c, cfg, paths)
    with pytest.raises(CrystalbenchError, match=r"run `crystalbench synth`"):
        hybrid.run(c, cfg, paths)
    synth_stage.run(c, cfg, paths)
    lines = []
    res = hybrid.run(c, cfg, paths, lines.append)

    assert res["vectors"] == 10 and res["frontier_design"] == "frontier_serial"
    assert res["bit_exact_fraction"] == 1.0 and res["rtl_bit_exact_fraction"] == 1.0
    assert res["passed"]
    # The codes the frontier got, recomputed here from ngspice's own output: boundary
    # volts x 1024 / VREF rounded (MCP3008, 10 bits), then /4 rounded half to even.
    net = fixed.nets_of(fixed.load(paths.stage("fixed"), c))["frontier"]
    raw = spice.read_raw(out / "core.raw")
    volts = np.stack([np.maximum(raw[f"h1_{j}"], 0.0) for j in net.input_index], 1)
    part_codes = np.clip(np.rint(volts * 1024 / (256 / 255)), 0, 1023)
    want = np.clip(np.rint(part_codes / 4), 0, 255).astype(np.int64)  # rint: half to even
    saved = np.load(out / "codes.npz")
    np.testing.assert_array_equal(saved["codes"], want)
    torch_cls = c.reference.outputs[-1].argmax(1)
    g = net.forward(want)
    assert res["class_agreement_with_torch"] == float((g["cls"] == torch_cls).mean())
    assert res["test_accuracy"] == float((g["cls"] == c.reference.y).mean())
    ideal = fixed.input_codes(c, net)
    assert res["codes_equal_to_ideal"] == float((want == ideal).mean())
    assert res["codes_max_diff_from_ideal"] == int(np.abs(want - ideal).max())
    # no code is further off than the core's worst error plus the ADC's rounding
    assert res["codes_max_diff_from_ideal"] <= np.ceil(analog["max_error_lsb"] + 0.625)
    # every boundary neuron (4 or 5 here) on one MCP3008, converted in turn: 5 us and
    # 5 V x 425 uA + VREF x 100 uA over 5 us each, VREF = 256/255 V
    k = len(net.input_index)
    assert k == {"tiny": 4, "tiny_deep": 5}[c.name] and len(net.layers) == {"tiny": 1,
                                                                          "tiny_deep": 2}[c.name]
    e_conv = (5 * 425e-6 + (256 / 255) * 100e-6) * 5e-6 * 1e9
    assert res["adc"]["chips"] == 1 and res["adc"]["channels"] == k
    assert res["energy_nj"]["adc_nj"] == pytest.approx(k * e_conv)
    assert res["latency_parts_us"]["adc_us"] == pytest.approx(5.0 * k)
    # the core settles, then stays on through the k conversions of 5 us (one chip)
    hold_nj = analog["power_mw"] * 5.0 * k
    assert res["analog_parts_nj"]["held_for_adc_nj"] == pytest.approx(hold_nj)
    # at one inference per max(core + ADC, frontier interval), an always-on core waits for a
    # slower frontier; a faster one idles (iCE40: 53.6 pJ per clock cycle + 104 uW static)
    core_adc_us = analog["settling_time_us"] + 5.0 * k
    frontier_us = res["frontier"]["interval_cycles"] / cfg.rtl.clock_mhz
    interval_us = max(core_adc_us, frontier_us)
    assert res["inference_interval_us"] == pytest.approx(interval_us)
    off_us = interval_us - core_adc_us
    wait_nj = 0.0 if analog["power_gating"] else analog["power_mw"] * off_us
    # gated: the decoupling recharge is at most sim-analog's C x V^2 and at most the
    # on-power over the off-time
    full_nj = analog["decoupling_energy_nj"]
    recharge_nj = min(full_nj, analog["power_mw"] * off_us) if analog["power_gating"] else 0.0
    assert res["energy_nj"]["analog_nj"] == pytest.approx(
        analog["energy_per_inference_nj"] - full_nj + recharge_nj + hold_nj + wait_nj)
    idle_us = interval_us - frontier_us
    assert res["energy_nj"]["digital_nj"] == pytest.approx(
        res["frontier"]["energy_per_inference_nj"]
        + idle_us * cfg.rtl.clock_mhz * 53.6e-3 + idle_us * 104e-6 * 1e3)
    assert res["latency_parts_us"]["analog_us"] == analog["settling_time_us"]
    assert res["latency_parts_us"]["digital_us"] == pytest.approx(
        res["frontier"]["latency_cycles"] / cfg.rtl.clock_mhz)
    assert res["energy_per_inference_nj"] == pytest.approx(sum(res["energy_nj"].values()))
    mc = res["monte_carlo"]
    assert mc["boards"] == 3 and len(mc["agreements"]) == 3
    assert mc["yield"] == pytest.approx(np.mean(np.array(mc["agreements"]) >= 0.98))
    assert mc["mean_accuracy"] == pytest.approx(np.mean(mc["accuracies"]), abs=1e-5)
    b0 = mc["board0_gate_level"]
    assert b0["gates_bit_exact_fraction"] == 1.0 and b0["ngspice_vs_numpy_codes_max"] <= 1
    assert res["all_digital"] is None  # sim did not run
    assert res["summary"][-1] == "all-digital: no figures (run `crystalbench sim` for them)"
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["energy_per_inference_nj"] == res["energy_per_inference_nj"]
    assert (out / "breakdown.png").stat().st_size > 1000
    assert any(line.startswith("board 0: frontier_serial_gates") for line in lines)

    # another analog setting than the one sim-analog ran with: refused before any work
    changed = cfgmod.validate({**json.loads(json.dumps(dict(cfg))),
                               "analog": {**cfg.analog, "input_v": 1.5}}, "<test>")
    with pytest.raises(SimError, match=r"other analog/adc settings .* re-run `crystalbench "
                                       r"sim-analog`"):
        hybrid.run(c, changed, paths)


def test_cli_names_what_to_run_first(tmp_path, capsys):
    from crystalbench.cli import main

    c = tiny_crystal()
    cm.save(c, tmp_path / "build" / "tiny" / "crystal")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("experiment: tiny\n")
    base = ["--build-dir", str(tmp_path / "build"), "sim-hybrid", "--config", str(cfg)]
    assert main(base) == 2
    assert "run `crystalbench sim-analog` (`make sim-analog`) first" in capsys.readouterr().err
    assert main(base + ["--set", "adc.part=ads1"]) == 2
    err = capsys.readouterr().err
    assert "tiny.yaml with --set adc.part=ads1" in err and "choose one of mcp3008, adc128s022" in err
    assert main(base + ["--set", "adc.part=adc128s022"]) == 2  # 1 V core: reference too low
    assert "outside the TI ADC128S022's 2.7-5.25 V" in capsys.readouterr().err
    assert not (tmp_path / "build" / "tiny" / "hybrid" / "result.json").exists()


def test_all_digital_figures_come_from_sim_on_the_same_formats(tmp_path):
    from crystalbench.results import write_result

    paths = Paths(tmp_path, "tiny")
    sres = {"fixed_digest": "abc"}
    assert hybrid.all_digital_results(paths, sres) is None  # sim never ran
    sim = {"fixed_digest": "abc", "clock_mhz": 12.0, "vectors": 40,
           "all_digital": {"design": "all_digital_serial", "class_agreement_with_torch": 0.99,
                           "fixed_point_test_accuracy": 0.97, "bit_exact_fraction": 1.0,
                           "energy_per_inference_nj": 87.5, "latency_cycles": 1088}}
    write_result(paths.stage("sim"), sim)
    a = hybrid.all_digital_results(paths, sres)
    assert a["latency_us"] == pytest.approx(1088 / 12.0) and a["latency_cycles"] == 1088
    assert (a["design"], a["energy_per_inference_nj"], a["test_accuracy"], a["vectors"]) == \
        ("all_digital_serial", 87.5, 0.97, 40)
    assert a["measured"]["machine"]["cores"] >= 1  # which run the figures come from
    assert hybrid.all_digital_results(paths, {"fixed_digest": "other"}) is None  # stale
    del sim["all_digital"]
    write_result(paths.stage("sim"), sim)
    assert hybrid.all_digital_results(paths, sres) is None  # sim built no all-digital net
