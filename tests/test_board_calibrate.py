"""The simulated board with its SPI ADC front end reading the analog core as ngspice
computes it, and the calibration loop run against that board (boards/calibrate.py)."""

import numpy as np
import pytest

from crystalbench import adc as adc_mod
from crystalbench import config
from crystalbench.analog import flow as analog_flow
from crystalbench.boards.simboard import run_icarus
from crystalbench.rtl import fixed
from crystalbench.sim import hybrid

from .hw_tiny import tiny_crystal

CLOCK, BAUD = 12e6, 1_500_000  # 8 clocks per bit: fast to simulate


def tiny_cfg():
    return config.validate({"experiment": "tiny", "fixed_point": {},
                            "analog": {"tolerances": [0.01]}}, "<test>")


@pytest.mark.slow
def test_spi_adc_answers_with_the_ngspice_core_outputs(tmp_path):
    """12 boundary neurons (two MCP3008s) of one Monte Carlo board (1% resistors, op-amp
    offsets, ADC offset and gain errors) in one ngspice DC sweep over 3 test inputs; the
    testbench's ADC answers each RUN_ADC with the next input's volts converted as the part
    does; the board's codes, logits and class are checked against a conversion written
    out here and the golden model."""
    c = tiny_crystal(n_hidden=12, n_test=3)
    cfg = tiny_cfg()
    net = fixed.nets_of(fixed.quantize(c, cfg.fixed_point, cfg.adc.bits))["frontier"]
    assert (net.n_in, net.in_bits, cfg.adc.part) == (12, 8, "mcp3008")
    b = analog_flow.prepare(c, cfg.analog, cfg.adc.bits)
    part = adc_mod.part_for(cfg.adc.part)
    vref = adc_mod.check_part(part, cfg.adc.bits, cfg.analog.adc_ref_v)
    plan = adc_mod.channel_plan(part, net.n_in, vref)
    rng = np.random.default_rng(3)
    r_scale, vos = analog_flow.draw_board(b.design, 0.01, True, rng)
    off, gain = hybrid.draw_adc_errors(part, plan, rng)
    volts = hybrid.board_volts(b, net, b.x, {"r_scale": r_scale, "vos": vos},
                               tmp_path / "core.cir")
    assert volts.shape == (3, 12)
    steps = [{"op": "identify"}, {"op": "run_adc", "count": 3}, {"op": "counters"}]
    out = run_icarus(net, CLOCK, BAUD, steps, tmp_path / "icarus", timeout=5e-3,
                     timeout_clocks=3000, adc=part.key,
                     adc_volts={"volts": volts, "vref": vref, "offset_lsb": off,
                                "gain_lsb": gain})
    r = out["records"]
    assert not [x for x in r if "error" in x] and out["framing_errors"] == 0
    # The MCP3008 (10 bits): round(v x 1024 / VREF x (1 + gain / 1024) + offset), clipped;
    # the FPGA keeps the top 8 bits, rounded half to even (Python's round), saturated.
    part_codes = np.clip(np.rint(volts * 1024 / vref * (1 + gain / 1024) + off), 0, 1023)
    want = np.array([[min(round(v / 4), 255) for v in row] for row in part_codes.tolist()])
    assert len({tuple(w) for w in want.tolist()}) == 3  # three different samples
    assert np.abs(off).max() > 0 and np.abs(gain).max() > 0
    assert r[1]["codes"] == want.tolist()
    gold = net.forward(want)
    assert r[1]["logits"] == gold["logits"].tolist() and r[1]["cls"] == gold["cls"].tolist()
    assert r[2]["counters"]["runs"] == 3 and r[2]["counters"]["errors"] == 0
    # the same codes as sim-hybrid's and calibrate's path (hybrid.board_codes)
    assert want.tolist() == adc_mod.convert(part, volts, vref, 8, off, gain).tolist()


@pytest.mark.slow
def test_calibration_loop_against_the_simulated_board(tmp_path):
    """`board calibrate --sim` on the tiny crystal (64 training inputs, 4 test inputs):
    the codes the board read equal calibrate's board 0 through ngspice and the ADC model;
    the refit is calibrate_board's on those codes; after the load the board's logits and
    classes are the golden model's with the new weights, on the codes it read again."""
    import dataclasses

    from crystalbench.boards import calibrate as board_cal
    from crystalbench.boards import platforms
    from crystalbench.results import Paths, read_json
    from crystalbench.sim import calibrate as sim_cal

    c = tiny_crystal()
    cfg = config.validate({"experiment": "tiny", "fixed_point": {}, "seed": 0,
                           "analog": {"tolerances": [0.05]}}, "<test>")
    paths = Paths(tmp_path, "tiny")
    spec = dataclasses.replace(platforms.get("icebreaker"), baud=BAUD)  # 8 clocks a bit
    lines = []
    res = board_cal.run(c, cfg, paths, lines.append, spec=spec, sim=True, vectors=4,
                        timeout=5e-3)
    saved = read_json(paths.stage("board") / "calibrate" / "result.json")
    assert saved["passed"] and saved["loaded"] and res["result_file"].endswith("result.json")
    got = np.load(paths.stage("board") / "calibrate" / "readings.npz")
    net = fixed.nets_of(fixed.load(paths.stage("fixed"), c, cfg))["frontier"]
    m = len(c.reference.calibration_x)
    assert (m, saved["vectors"], saved["train_inputs"]) == (64, 4, 64)
    # The codes: board 0's volts (ngspice again, here) converted as adc.convert does.
    x = np.vstack([c.reference.calibration_x, c.reference.x[:4]])
    b0 = sim_cal.first_board(c, cfg, net, x, tmp_path / "again.cir")
    part = adc_mod.part_for(b0["part"])
    want = adc_mod.convert(part, b0["volts"], b0["vref"], 8, b0["offset_lsb"], b0["gain_lsb"])
    np.testing.assert_array_equal(got["codes_before"], want)
    np.testing.assert_array_equal(got["codes_after"], want[m:])
    gold = net.forward(want)
    np.testing.assert_array_equal(got["logits_before"], gold["logits"])
    new, fig = sim_cal.calibrate_board(c, net, want[:m], want[m:], cfg.calibrate.ridge, 0)
    assert new is not None and saved["weights_digest"] == fixed.weights_digest(new)
    assert fixed.weights_digest(new) != fixed.weights_digest(net)
    after = new.forward(want[m:])
    np.testing.assert_array_equal(got["logits_after"], after["logits"])
    np.testing.assert_array_equal(got["cls_after"], after["cls"])
    y, torch_cls = c.reference.y[:4], c.reference.outputs[-1].argmax(1)[:4]
    assert saved["after"]["accuracy"] == float((after["cls"] == y).mean())
    assert saved["after"]["agreement"] == float((after["cls"] == torch_cls).mean())
    assert saved["before"]["accuracy"] == float((gold["cls"][m:] == y).mean())
    assert saved["refit"] == fig | {"fit_seconds": saved["refit"]["fit_seconds"]}
    assert lines[-1].startswith("board calibrate: 68 RUN_ADC")


def test_calibrate_on_a_real_port_is_refused_before_any_work(tmp_path, capfd):
    from crystalbench import cli
    from crystalbench import crystal as cm

    cm.save(tiny_crystal(), tmp_path / "crystal")
    (tmp_path / "tiny.yaml").write_text("experiment: tiny\nfixed_point: {}\n")
    rc = cli.main(["--build-dir", str(tmp_path / "b"), "board", "calibrate", "--config",
                   str(tmp_path / "tiny.yaml"), "--crystal", str(tmp_path / "crystal"),
                   "--port", "/dev/ttyUSB1"])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("crystalbench: error: board calibrate --port: the host link cannot "
                             "set a real analog core's inputs")
    assert not (tmp_path / "b" / "tiny" / "board").exists()


@pytest.mark.slow
def test_adc_samples_follow_the_runs_on_the_pipelined_part(tmp_path):
    """ADC128S022 (a chip is read with one frame more than its channels): three samples
    of volts, one per RUN_ADC, on two chips; each run reads its own sample."""
    c = tiny_crystal(n_hidden=12, n_test=3)
    net = fixed.nets_of(fixed.quantize(c, tiny_cfg().fixed_point, 8))["frontier"]
    vref = 3.0
    volts = np.random.default_rng(5).uniform(0.0, vref, (3, 12))
    steps = [{"op": "run_adc", "count": 3}]
    out = run_icarus(net, CLOCK, BAUD, steps, tmp_path / "icarus", timeout=5e-3,
                     timeout_clocks=3000, adc="adc128s022",
                     adc_volts={"volts": volts, "vref": vref})
    r = out["records"]
    assert "error" not in r[0] and out["framing_errors"] == 0
    part_codes = np.clip(np.rint(volts * 4096 / vref), 0, 4095)  # 12 bits, then the top 8
    want = [[min(round(v / 16), 255) for v in row] for row in part_codes.tolist()]
    assert r[0]["codes"] == want and len({tuple(w) for w in want}) == 3
    assert r[0]["logits"] == net.forward(np.array(want))["logits"].tolist()
