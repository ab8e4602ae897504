"""The simulated board with its SPI ADC front end reading the analog core as ngspice
computes it, and the calibration loop run against that board (boards/calibrate.py)."""

import numpy as np

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
