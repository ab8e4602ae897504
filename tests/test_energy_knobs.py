"""The analog energy knobs, each realised in the netlist and measured in ngspice against a
value computed by hand: the op-amp part (quiescent current), the supply voltage and power
gating (rails switched on per inference, energy integrated over the window).

The hand formula: a core whose inputs are all 0 V carries no signal current (every
resistor has 0 V across it, every op-amp output sits at 0 V), so the supply delivers
exactly the op-amps' quiescent current, n x I_q, across the rails. Gated, the rails ramp
linearly from 0 to V_s over the rise time, so over a window w from power-on the energy is
n x I_q x V_s x (w - rise / 2). Tolerance 1e-6 relative (ngspice's solution of a linear
circuit; the window's ends interpolated between time points of a piecewise-linear trace).
"""

import numpy as np
import pytest

from crystalbench import config as cfgmod
from crystalbench.analog import flow, spice
from crystalbench.analog import netlist as nl
from crystalbench.analog.opamps import OPAMPS, spec_for
from crystalbench.errors import AnalogError
from crystalbench.results import atomic_write_bytes


def zero_design(opamp: str, supply_v: float) -> nl.CoreDesign:
    """Two clamped summers on DAC inputs 0 and 1 (one read inverted: one inverter): three
    op-amps, resistors 10k-100k."""
    neurons = [nl.Neuron(0, 0, 1.0, 1e5, [(0, False, 1e4), (1, True, 2e4)], None, "clamp"),
               nl.Neuron(0, 1, 1.0, 5e4, [(0, False, 1e5)], None, "clamp")]
    return nl.CoreDesign(crystal_name="zero", opamp=spec_for(opamp), series="E96",
                         vcc=supply_v / 2, vee=-supply_v / 2, vx=1.0, vref=1.0, v_fs=1.0,
                         r_inverter=1e4, neurons=neurons, core=(np.array([0, 1]),), sizes=(2,),
                         inverted=[(-1, 1)], n_inputs=2)


def run_transient(tmp_path, d, n, step_s, gate_s):
    x = np.zeros((n, 2))
    cir = nl.build_circuit(d, x, step_s=step_s, gate_s=gate_s)
    path = tmp_path / "zero_tran.cir"
    t_stop = n * step_s
    atomic_write_bytes(path, flow.netlist_text(
        cir, f".tran {step_s / 400:.4g} {t_stop:.6g} 0 {step_s / 200:.4g}", "tran", ["v(h1_0)"],
        flow.transient_vectors(d, gate_s is not None)).encode())
    tv, _ = spice.run_file(path, t_stop=t_stop)
    gated = gate_s is not None
    vcc, vee = (tv["vcc"], tv["vee"]) if gated else (d.vcc, d.vee)
    p = flow.supply_power(tv["time"], tv["i(vcc)"], tv["i(vee)"], vcc, vee,
                          [tv["i(vrefp)"], tv["i(vrefn)"]] + flow.dac_currents(d, tv))
    return tv, p


@pytest.mark.parametrize("opamp,supply_v", [("opa835", 3.0), ("opa835", 5.0), ("opa837", 2.7),
                                            ("mcp6002", 5.0)])
def test_gated_window_energy_is_the_quiescent_current_by_hand(tmp_path, opamp, supply_v):
    d = zero_design(opamp, supply_v)
    assert d.opamp_count == 3
    step, gate, rise, w = 2e-6, 1e-6, 10e-9, 0.4e-6
    tv, p = run_transient(tmp_path, d, 3, step, gate)
    e = flow.window_energy(tv["time"], p.trace, [0.0, step, 2 * step], w)
    iq = OPAMPS[opamp].iq_a
    want = 3 * iq * supply_v * (w - rise / 2)
    np.testing.assert_allclose(e, want, rtol=1e-6)
    # off between windows: nothing drawn after the ramp down
    off = (tv["time"] > gate + rise + 1e-9) & (tv["time"] < step)
    assert off.any() and np.abs(p.trace[off]).max() < 1e-12
    # on, after the ramp: exactly n x I_q x V_s
    on = (tv["time"] > step + rise) & (tv["time"] < step + gate)
    np.testing.assert_allclose(p.trace[on], 3 * iq * supply_v, rtol=1e-6)


def test_ungated_power_is_the_quiescent_current_by_hand(tmp_path):
    d = zero_design("opa835", 4.0)
    tv, p = run_transient(tmp_path, d, 2, 1e-6, None)
    np.testing.assert_allclose(p.trace, 3 * 250e-6 * 4.0, rtol=1e-6)


def test_window_energy_by_hand():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    p = np.array([0.0, 2.0, 2.0, 0.0])
    # [0.5, 2.5]: 0.5 x (1 + 2) / 2 + 2 + 0.5 x (2 + 1) / 2 = 3.5; [0, 2]: 1 + 2 = 3;
    # [0, 3]: the whole trapezoid, 4
    np.testing.assert_allclose(flow.window_energy(t, p, [0.5, 0.0], 2.0), [3.5, 3.0], rtol=1e-12)
    np.testing.assert_allclose(flow.window_energy(t, p, [0.0], 3.0), [4.0], rtol=1e-12)
    np.testing.assert_allclose(flow.window_energy(t, p, [1.0], 0.25), [0.5], rtol=1e-12)



# A trace with a jump at t = 1 (two time points there): 0 W before, 10 W after.
JUMP_T, JUMP_P = np.array([0.0, 1.0, 1.0, 2.0]), np.array([0.0, 0.0, 10.0, 10.0])


def test_window_energy_from_a_jump_at_its_start():
    # [1, 2] lies after the jump: 10 W x 1 s; [0.5, 1.5]: 0.5 s at 0 W, 0.5 s at 10 W
    np.testing.assert_allclose(flow.window_energy(JUMP_T, JUMP_P, [1.0, 0.5], 1.0), [10.0, 5.0],
                               rtol=1e-12)


def test_window_energy_to_a_jump_at_its_end():
    # [0, 1] ends where the trace jumps: 0 W throughout, 0 J
    np.testing.assert_allclose(flow.window_energy(JUMP_T, JUMP_P, [0.0], 1.0), [0.0], atol=1e-12)


def test_gate_points_and_their_limits():
    pts = nl.gate_points(2, 1.0, 0.5, 0.1, 3.0)
    assert pts == [(0.0, 0.0), (0.1, 3.0), (0.5, 3.0), (0.6, 0.0),
                   (1.0, 0.0), (1.1, 3.0), (1.5, 3.0), (1.6, 0.0)]
    with pytest.raises(AnalogError, match=r"raise analog\.step_us"):
        nl.gate_points(2, 1.0, 0.95, 0.1, 3.0)  # on-time + rise beyond the step
    with pytest.raises(AnalogError, match=r"rise 0\.1 s < on-time 0\.05 s"):
        nl.gate_points(2, 1.0, 0.05, 0.1, 3.0)


def test_new_parts_cite_their_datasheets_and_are_config_choices():
    a, b = OPAMPS["opa835"], OPAMPS["opa837"]
    assert "SLOS713H" in a.source and "SBOS673D" in b.source
    assert (a.iq_a, a.slew_v_per_us, a.vos_max_v, a.supply_min_v, a.supply_max_v) == (
        250e-6, 160.0, 500e-6, 2.5, 5.5)
    assert a.gbw_hz == pytest.approx(56e6 / 2.1, rel=1e-12)  # estimated: see opamps.py
    assert (b.gbw_hz, b.iq_a, b.slew_v_per_us, b.vos_max_v, b.supply_min_v, b.supply_max_v) == (
        50e6, 600e-6, 105.0, 130e-6, 2.7, 5.4)
    # GBW per quiescent current, Hz per amp: the figure of merit the energy floor follows
    merit = {k: OPAMPS[k].gbw_hz / OPAMPS[k].iq_a for k in ("mcp6002", "opa2333", "opa835",
                                                             "opa837")}
    assert merit["opa835"] > merit["opa837"] > merit["opa2333"] > merit["mcp6002"]
    for key in ("opa835", "opa837"):
        cfg = cfgmod.validate({"analog": {"opamp": key, "power_gating": True}}, "<test>")
        assert cfg.analog.opamp == key and cfg.analog.power_gating is True


def test_gated_stage_on_the_tiny_crystal(tmp_path):
    """The stage with power gating: settling from power-on, energy from the window, never
    below the quiescent floor n x I_q x V_s x (window - rise / 2)."""
    import sys
    from pathlib import Path

    from crystalbench.results import Paths

    sys.path.insert(0, str(Path(__file__).parent))
    from hw_tiny import tiny_crystal

    low = dict(supply_v=3.0, adc_ref_v=0.5, input_v=0.9, vref_v=0.9, opamp="opa835",
               transient_samples=4, monte_carlo_runs=0, step_us=10.0)
    cfg = cfgmod.validate({"analog": {**low, "power_gating": True}}, "<test>")
    res = flow.run(tiny_crystal(), cfg, Paths(tmp_path, "tiny"))
    assert res["power_gating"] and res["unsettled_steps"] == 0
    w = res["settling_time_us"] * 1e-6
    assert res["gate_window_us"] == res["settling_time_us"]
    steps = res["energy_per_inference_steps_nj"]
    assert len(steps) == 3
    # each power-up charges one 100 nF per dual package to the 3 V span: C V^2 from the supply
    decoupling_nj = -(-res["opamps"] // 2) * 100e-9 * 3.0 ** 2 * 1e9
    assert res["decoupling_energy_nj"] == pytest.approx(decoupling_nj, rel=1e-12)
    assert res["energy_per_inference_nj"] == pytest.approx(np.mean(steps) + decoupling_nj,
                                                           rel=1e-12)
    assert res["energy_per_neuron_nj"] == pytest.approx(
        res["energy_per_inference_nj"] / res["neurons"], rel=1e-12)
    floor = res["opamps"] * 250e-6 * 3.0 * (w - 10e-9 / 2) * 1e9
    assert min(steps) >= floor * (1 - 1e-6)
    # the power while on: the window's energy over the window, without the recharge
    assert res["power_mw"] == pytest.approx(np.mean(steps) / (w * 1e6), rel=1e-12)
    assert "core_tran.cir" in res["files"]["netlist_transient"]
    text = Path(res["files"]["netlist_transient"]).read_text()
    assert "v(en)*(" in text and "PWL(" in text.upper()
