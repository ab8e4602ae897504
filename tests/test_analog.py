"""Analog core: E-series, design, golden netlist, ngspice raw files, ngspice against the
exact model, settling, supply power, errors, the `analog` stage.

Tolerances: ngspice with the ideal op-amp equals the numpy model of the snapped
resistors to 1e-4 V (solver precision); with the MCP6002 macro-model (A_OL 112 dB, no
offset) to 0.1 ADC LSB. The raw-file parser is exact to float64 rounding (1e-12
relative) on a checked-in ngspice-39 file. Settling and power are pinned on synthetic
waveforms whose answers are computed by hand below.
"""

import dataclasses
import json
import math
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from crystalbench import adc as adc_mod
from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench import toolrun
from crystalbench.analog import eseries, flow, spice
from crystalbench.analog import netlist as nl
from crystalbench.analog.opamps import OPAMPS, spec_for
from crystalbench.errors import AnalogError, SpiceRunError, ToolFailed, ToolNotFound
from crystalbench.results import Paths, atomic_write_bytes

from .conftest import shared_scope

GOLDEN = Path(__file__).parent / "golden" / "tiny_core.cir"
DATA = Path(__file__).parent / "data"
LSB = 1.0 / 255  # adc_ref_v 1 V, 8 bits


def tiny_crystal():
    """4 inputs -> 3 ReLU (all frozen) -> 2 ReLU (first frozen: a two-layer core whose
    second layer reads core neurons, inverted copies included) -> 3 linear."""
    rng = np.random.default_rng(7)
    m1 = np.array([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1]], bool)
    m2 = np.array([[1, 1, 0], [0, 1, 1]], bool)
    m3 = np.ones((3, 2), bool)

    def layer(mask, act, frozen, scale):
        n = mask.shape[0]
        frozen = np.array(frozen, bool)
        w = (rng.normal(size=mask.shape) * scale * mask).astype(np.float32)
        return cm.Layer(weights=w, bias=(rng.normal(size=n) * 0.2).astype(np.float32), mask=mask,
                        activation=act, position=np.zeros((n, 2), np.float32),
                        radius=np.full(n, 1.5, np.float32), frozen=frozen,
                        epoch_frozen=np.where(frozen, 3, -1).astype(np.int32))

    layers = (layer(m1, "relu", [True] * 3, 1.0), layer(m2, "relu", [True, False], 1.0),
              layer(m3, "linear", [False] * 3, 1.0))
    x = rng.integers(0, 17, size=(12, 4)).astype(np.float32) / 16
    inp = cm.InputSpec(size=4, geometry=(2, 2), offset=0.0, scale=1 / 16, low=0.0, high=1.0)
    proto = cm.Crystal.__new__(cm.Crystal)
    object.__setattr__(proto, "layers", layers)
    outs = tuple(cm.Crystal.forward(proto, x))
    ref = cm.Reference(x=x, y=outs[-1].argmax(1).astype(np.int64), outputs=outs, calibration_x=x)
    return cm.Crystal(name="tiny", dataset="unit", n_classes=3, input=inp, layers=layers,
                      reference=ref)


def _layer(w, b, act, frozen):
    w = np.array(w, np.float32)
    n = w.shape[0]
    frozen = np.broadcast_to(np.array(frozen, bool), (n,)).copy()
    return cm.Layer(weights=w, bias=np.array(b, np.float32), mask=np.ones(w.shape, bool),
                    activation=act, position=np.zeros((n, 2), np.float32),
                    radius=np.full(n, 1.5, np.float32), frozen=frozen,
                    epoch_frozen=np.where(frozen, 3, -1).astype(np.int32))


def _crystal(name, layers, x, relabel=()):
    inp = cm.InputSpec(size=x.shape[1], geometry=(2, 2), offset=0.0, scale=1 / 16, low=0.0,
                       high=1.0)
    proto = cm.Crystal.__new__(cm.Crystal)
    object.__setattr__(proto, "layers", layers)
    outs = tuple(cm.Crystal.forward(proto, x))
    y = outs[-1].argmax(1).astype(np.int64)
    for i, label in relabel:
        y[i] = label
    ref = cm.Reference(x=x, y=y, outputs=outs, calibration_x=x)
    return cm.Crystal(name=name, dataset="unit", n_classes=outs[-1].shape[1], input=inp,
                      layers=layers, reference=ref)


# mixed_crystal's inputs in sixteenths: per sample x0, x1, x2 distinct (the largest picks
# the class), several only 1/16 apart (a resistor tolerance of 20% flips them)
MIXED_X = np.array([[16, 4, 2, 0], [12, 11, 3, 4], [5, 15, 6, 8], [2, 9, 8, 2], [10, 13, 1, 16],
                    [0, 7, 6, 1], [3, 12, 4, 0], [1, 2, 14, 3], [9, 4, 10, 5], [6, 5, 16, 12],
                    [4, 0, 5, 7], [14, 8, 13, 9]], np.float32) / 16
# its classes by hand: argmax_j x_j (j < 3) -> class (j - 1) mod 3
MIXED_CLASSES = (np.argmax(MIXED_X[:, :3], 1) - 1) % 3


def mixed_crystal(frozen=True):
    """Classes that follow the core, by hand. 4 inputs -> 3 ReLU (core when `frozen`;
    neuron 1 scaled by 2, neuron 2 by 1/2) -> 3 ReLU undoing the scales (only neuron 2
    frozen: a second core layer whose highest neuron is core) -> 3 linear readout, a
    cyclic permutation. So h2_j = x_j - x_3 / 4 + 0.3 and the class is (argmax_j h2_j - 1)
    mod 3: layer 2's argmax never is the class. Labels: the torch classes with samples 0
    and 1 (class 2) relabelled 0, so accuracy and agreement differ."""
    layers = (_layer([[1, 0, 0, -0.25], [0, 2, 0, -0.5], [0, 0, 0.5, -0.125]], [0.3, 0.6, 0.15],
                     "relu", frozen),
              _layer([[1, 0, 0], [0, 0.5, 0], [0, 0, 2]], [0, 0, 0], "relu", [False, False, frozen]),
              _layer([[0, 1, 0], [0, 0, 1], [1, 0, 0]], [0, 0, 0], "linear", False))
    return _crystal("mixed", layers, MIXED_X, relabel=((0, 0), (1, 0)))


def wide_crystal():
    """4 inputs -> 9 ReLU, all frozen -> 2 linear: more core outputs than a .print line
    of the transient netlist shows (8)."""
    rng = np.random.default_rng(11)
    layers = (_layer(rng.normal(size=(9, 4)), rng.normal(size=9) * 0.2 + 0.5, "relu", True),
              _layer(rng.normal(size=(2, 9)), [0, 0], "linear", False))
    return _crystal("wide", layers, rng.integers(0, 17, size=(12, 4)).astype(np.float32) / 16)


def config(**analog):
    return cfgmod.validate({"analog": analog}, "<test>")


def acfg(**changes):
    return config(**changes).analog


def design(c, **changes):
    a = acfg(**changes)
    return nl.design_core(c, a, adc_mod.adc_for(c, 8), spec_for(a.opamp))


def write_dc(d, x, path):
    cir = nl.build_circuit(d, x, slew=False)
    nodes = [f"v(h{n.layer + 1}_{n.index})" for n in d.neurons]
    atomic_write_bytes(path, flow.netlist_text(cir, f".dc Vidx 0 {len(x) - 1} 1", "dc",
                                               nodes, nodes).encode())
    return nodes


def core_volts(d, vec):
    """Neuron outputs as the ADC converts them (negatives -> 0: the clamp stages' ReLU)."""
    return np.maximum(np.stack([vec[f"h{n.layer + 1}_{n.index}"] for n in d.neurons], 1), 0.0)


def exact_volts(d, x):
    v = nl.realized_forward(d, x)
    return np.stack([v[n.layer][:, n.index] for n in d.neurons], 1)


# ---- E-series and part names ------------------------------------------------------------
def test_e_series_values():
    e96 = eseries.mantissas("E96")
    assert len(e96) == 96 and e96[0] == 1.0 and 9.76 in e96 and 4.99 in e96
    e192 = eseries.mantissas("E192")
    assert len(e192) == 192 and 9.2 in e192 and 9.19 not in e192  # IEC 60063's exception
    assert 4.7 in eseries.mantissas("E24") and 3.3 in eseries.mantissas("E24")
    table = eseries.values_in("E96", 1e3, 1e6)
    assert table[0] == 1e3 and table[-1] == 1e6 and len(table) == 3 * 96 + 1


def test_e_series_snapping_edges():
    table = eseries.values_in("E96", 1e3, 1e6)
    # below the range -> r_min, above -> r_max
    np.testing.assert_array_equal(eseries.snap([10.0, 999.0, 2e6], table), [1e3, 1e3, 1e6])
    # across a decade: 9.76k and 10k meet at their geometric mean
    mid = math.sqrt(9760.0 * 10000.0)
    np.testing.assert_array_equal(eseries.snap([mid * (1 - 1e-9), mid * (1 + 1e-9)], table),
                                  [9760.0, 10000.0])
    mid = math.sqrt(1000.0 * 1020.0)
    np.testing.assert_array_equal(eseries.snap([1005.0, mid * (1 - 1e-9), mid * (1 + 1e-9)],
                                               table), [1000.0, 1000.0, 1020.0])
    np.testing.assert_array_equal(eseries.snap([4990.0], table), [4990.0])  # exact stays
    one = eseries.values_in("E24", 1050.0, 1150.0)  # only 1.1k inside
    np.testing.assert_array_equal(eseries.snap([10.0, 1e9], one), [1100.0, 1100.0])


def test_e_series_and_part_errors_name_the_key():
    with pytest.raises(AnalogError, match=r"^analog\.e_series 'E12' .*E24, E48, E96, E192$"):
        eseries.values_in("E12", 1e3, 1e6)
    with pytest.raises(AnalogError, match=r"^analog\.e_series 'E6' .*E24, E48, E96, E192$"):
        eseries.mantissas("E6")
    with pytest.raises(AnalogError, match=r"^no E24 value lies in analog\.r_min\.\.r_max = "
                       r"1010\.\.1090 ohm; .*analog\.r_min, analog\.r_max"):
        eseries.values_in("E24", 1010.0, 1090.0)
    with pytest.raises(AnalogError, match=r"analog\.r_min\.\.r_max = 0\.\.1000 "):
        eseries.values_in("E96", 0.0, 1e3)
    with pytest.raises(AnalogError, match=r"^analog\.opamp 'ua741' .*ideal, mcp6002, opa2333, "
                       r"tlv9062, lm358, opa835, opa837$"):
        spec_for("ua741")


# ---- design and netlist ---------------------------------------------------------------------
def test_design_counts_and_signs():
    c = tiny_crystal()
    d = design(c)
    assert len(d.neurons) == 4  # 3 in layer 1, 1 in layer 2
    # layer-1 neurons 0 and 1 feed the layer-2 core neuron: true ReLU (rectifier); the
    # others are read only through the ADC
    assert [n.stage for n in d.neurons] == ["rectifier", "rectifier", "clamp", "clamp"]
    for n in d.neurons:
        w = c.layers[n.layer].weights[n.index]
        for k, inv, ohms in n.inputs:
            assert inv == (w[k] > 0)  # positive weights read inverted copies
            assert 1e3 <= ohms <= 1e6
    assert any(li == 0 for li, _ in d.inverted)
    # every resistor an E96 value
    table = set(np.round(eseries.values_in("E96", 1e3, 1e6), 6))
    for n in d.neurons:
        assert round(n.rf, 6) in table
        assert all(round(r, 6) in table for _, _, r in n.inputs)


def test_netlist_matches_golden():
    c = tiny_crystal()
    text = str(nl.build_circuit(design(c), c.reference.x, slew=False))
    if os.environ.get("CRYSTALBENCH_REGOLD"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), ("netlist of the tiny crystal changed; if on purpose, "
                                        "regenerate with CRYSTALBENCH_REGOLD=1 pytest "
                                        "tests/test_analog.py")


def test_out_of_range_weights_clipped_or_refused():
    c = tiny_crystal()
    d = design(c, r_min=1e4, r_max=3e4)
    assert sum(v for k, v in d.clipped.items() if k != "worst") > 0
    with pytest.raises(AnalogError, match=r"analog\.out_of_range is 'refuse'.*r_min"):
        design(c, r_min=1e4, r_max=3e4, out_of_range="refuse")


def test_headroom_refused_with_the_key_to_change():
    c = tiny_crystal()
    a = acfg(opamp="lm358", supply_v=5.0)
    d = nl.design_core(c, a, adc_mod.adc_for(c, 8), spec_for("lm358"))
    with pytest.raises(AnalogError, match=r"does not fit .*raise analog\.supply_v"):
        flow.check_headroom(d, a)


def _headroom(opamp, vcc=2.5, vee=-2.5, stages=("rectifier",), inverted=((-1, 0),),
              **changes):
    """check_headroom on a design with these rails and op-amp, one neuron per ReLU stage in
    `stages` and these inverted sources (default: input 0); the analog knobs it reads (a
    diode drop of 0.5 V, 0.25 V headroom) with `changes`."""
    neurons = [nl.Neuron(0, j, 1.0, 1e4, [], None, stage) for j, stage in enumerate(stages)]
    d = dataclasses.replace(synthetic_design(neurons, inverted), opamp=opamp, vcc=vcc, vee=vee)
    a = dict(headroom_v=0.25, adc_ref_v=1.0, diode_drop_v=0.5, input_v=1.0, vref_v=1.0)
    flow.check_headroom(d, SimpleNamespace(**{**a, **changes}))


def _refusal(opamp, **kw):
    with pytest.raises(AnalogError) as e:
        _headroom(opamp, **kw)
    return str(e.value)


def test_headroom_supply_range_edges():
    mcp = OPAMPS["mcp6002"]  # 1.8 .. 6.0 V
    small = dict(headroom_v=0.125, adc_ref_v=0.25, diode_drop_v=0.25, input_v=0.5, vref_v=0.5)
    _headroom(mcp, 0.9, -0.9, **small)  # exactly 1.8 V: accepted
    _headroom(mcp, 3.0, -3.0)  # exactly 6.0 V
    assert _refusal(mcp, vcc=float(np.nextafter(0.9, 0.0)), vee=-0.9, **small) == (
        "analog.supply_v 1.8 V is outside the Microchip MCP6002's 1.8-6 V range")
    hair = float(np.nextafter(6.0, 7.0))  # one step above 6 V, split over the rails exactly
    assert _refusal(mcp, vcc=hair - 3.0, vee=-3.0).startswith("analog.supply_v 6 V is outside")
    assert _refusal(mcp, vcc=3.005, vee=-3.005) == (
        "analog.supply_v 6.01 V is outside the Microchip MCP6002's 1.8-6 V range")
    _headroom(OPAMPS["ideal"], 100.0, -100.0, vref_v=500.0)  # no rails to respect


def _swing_msg(what, v, part, usable, half=2.5):
    return (f"{what} = {v} V does not fit the {part}'s output swing on +-{half} V rails with "
            f"analog.headroom_v 0.25 V (usable {usable} V); lower it or raise analog.supply_v")


def test_headroom_top_rail_edges_and_the_limit_named():
    # swing 0.375 V under VCC, 0.125 V over VEE: usable 2.5 - 0.375 - 0.25 = 1.875 V at the
    # top (the binding side) and -2.5 + 0.125 + 0.25 = -2.125 V at the bottom
    op = dataclasses.replace(OPAMPS["mcp6002"], swing_high_v=0.375, swing_low_v=0.125)
    above = float(np.nextafter(1.875, 2.0))
    _headroom(op, vref_v=1.875, input_v=1.875, adc_ref_v=1.375)  # 1.375 + 0.5: exactly at top
    usable = "-2.12..1.88"
    assert _refusal(op, vref_v=above) == _swing_msg("analog.vref_v", 1.875, op.part, usable)
    assert _refusal(op, input_v=above) == _swing_msg("analog.input_v (inverted inputs)", 1.875,
                                                     op.part, usable)
    # the rectifier's op-amp output carries adc_ref_v plus the diode drop
    assert _refusal(op, adc_ref_v=float(np.nextafter(1.375, 2.0))) == _swing_msg(
        "analog.adc_ref_v + analog.diode_drop_v (rectifier op-amp output)", 1.875, op.part, usable)
    # asymmetric rails: 2 - 0.375 - 0.25 = 1.375 V usable at the top, -3 + 0.125 + 0.25 = -2.625 V
    assert _refusal(op, vcc=2.0, vee=-3.0) == _swing_msg(
        "analog.adc_ref_v + analog.diode_drop_v (rectifier op-amp output)", 1.5, op.part,
        "-2.62..1.38")


def test_headroom_bottom_rail_edges():
    # swing 0.125 V under VCC, 0.375 V over VEE: usable -2.5 + 0.375 + 0.25 = -1.875 V at
    # the bottom (the binding side: the references and inputs swing negative), 2.125 V at
    # the top
    op = dataclasses.replace(OPAMPS["mcp6002"], swing_high_v=0.125, swing_low_v=0.375)
    _headroom(op, vref_v=1.875, input_v=1.875, adc_ref_v=1.375)  # exactly at the bottom
    above = float(np.nextafter(1.875, 2.0))
    assert _refusal(op, vref_v=above) == _swing_msg("analog.vref_v", 1.875, op.part,
                                                    "-1.88..2.12")
    # asymmetric rails: 4 V supply, -1.5 + 0.375 + 0.25 = -0.875 V usable at the bottom
    assert _refusal(op, vcc=2.5, vee=-1.5, vref_v=0.875 + 2 ** -20, adc_ref_v=0.25,
                    input_v=0.5) == _swing_msg(
        "analog.vref_v", 0.875001, op.part, "-0.875..2.12", half=2)
    _headroom(op, vcc=2.5, vee=-1.5, vref_v=0.875, input_v=0.875, adc_ref_v=0.375)


def test_headroom_inverted_inputs_at_the_bottom_rail():
    # the inverted inputs swing to -input_v: with the bottom binding (usable -1.875 V, as
    # above) input_v 1.875 V fits and one step more is refused though the top (2.125 V) holds
    op = dataclasses.replace(OPAMPS["mcp6002"], swing_high_v=0.125, swing_low_v=0.375)
    _headroom(op, input_v=1.875)
    assert _refusal(op, input_v=float(np.nextafter(1.875, 2.0))) == _swing_msg(
        "analog.input_v (inverted inputs)", 1.875, op.part, "-1.88..2.12")


def test_headroom_diode_drop_only_where_the_design_has_the_rectifier():
    # 3 V supply, 0.1 V swing limits (OPA835-like), 0.2 V headroom: usable -1.2 .. 1.2 V
    op = dataclasses.replace(OPAMPS["mcp6002"], swing_high_v=0.1, swing_low_v=0.1)
    knobs = dict(headroom_v=0.2, diode_drop_v=0.7, input_v=0.9, vref_v=0.9)
    top = 1.5 - 0.1 - 0.2
    above = float(np.nextafter(top, 2.0))
    # clamped summers only (ReLU by the ADC): the output itself reaches adc_ref_v, no drop
    _headroom(op, 1.5, -1.5, stages=("clamp",), adc_ref_v=top, **knobs)
    assert _refusal(op, vcc=1.5, vee=-1.5, stages=("clamp",), adc_ref_v=above, **knobs) == (
        _swing_msg("analog.adc_ref_v (clamped summer output)", 1.2, op.part, "-1.2..1.2",
                   half=1.5).replace("0.25 V", "0.2 V"))
    # a rectifier: its op-amp output sits one drop (0.7 V) higher, so 0.5 V is the most
    _headroom(op, 1.5, -1.5, stages=("rectifier", "clamp"), adc_ref_v=top - 0.7, **knobs)
    assert _refusal(op, vcc=1.5, vee=-1.5, stages=("rectifier", "clamp"),
                    adc_ref_v=float(np.nextafter(top - 0.7, 2.0)), **knobs).startswith(
        "analog.adc_ref_v + analog.diode_drop_v (rectifier op-amp output) = 1.2 V does not fit")
    # below zero both stages clamp one drop under: a drop past the bottom is refused
    assert _refusal(op, vcc=1.5, vee=-1.5, stages=("clamp",), adc_ref_v=0.5,
                    **{**knobs, "diode_drop_v": above}).startswith(
        "analog.diode_drop_v (op-amp output clamped below zero) = 1.2 V does not fit")
    # inverted copies of core neurons swing to -adc_ref_v: usable -1.2 V at the bottom
    d = dataclasses.replace(synthetic_design([nl.Neuron(0, 0, 1.0, 1e4, [], None, "clamp")],
                                             inverted=[(0, 0)]), opamp=op, vcc=1.5, vee=-1.5)
    a = SimpleNamespace(**knobs, adc_ref_v=top)
    flow.check_headroom(d, a)  # exactly at the bottom
    with pytest.raises(AnalogError, match=r"^analog\.adc_ref_v \(inverted copies of core "
                                          r"neurons\) = 1\.2 V does not fit"):
        flow.check_headroom(dataclasses.replace(d, vee=float(np.nextafter(-1.5, 0.0))), a)
    # no core neurons, no diode: only the references and inputs count
    _headroom(op, 1.5, -1.5, stages=(), adc_ref_v=5.0, **{**knobs, "diode_drop_v": 2.0})

def test_config_rejects_bad_analog_values():
    with pytest.raises(cfgmod.ConfigError, match=r"analog\.opamp"):
        acfg(opamp="ua741")
    with pytest.raises(cfgmod.ConfigError, match=r"analog\.tolerances"):
        acfg(tolerances=[0.5])
    with pytest.raises(cfgmod.ConfigError, match=r"analog\.r_max"):
        acfg(r_min=1e5, r_max=1e4)


def test_every_opamp_cites_its_source():
    for key, spec in OPAMPS.items():
        assert spec.source and spec.key == key
    for key in ("mcp6002", "opa2333", "tlv9062", "lm358"):
        s = OPAMPS[key]
        assert s.gbw_hz > 0 and s.slew_v_per_us > 0 and s.iq_a > 0 and s.vos_max_v > 0


# ---- ngspice raw files ---------------------------------------------------------------------
def check_divider(plots):
    """tests/data/ngspice_divider.cir: 1k over 3k, .dc V1 0 2 0.5, then .op at 2 V."""
    assert [p.plotname for p in plots] == ["DC transfer characteristic", "Operating Point"]
    title = ("crystalbench raw-file parser test: 1k over 3k divider, operating point then dc "
             "sweep")  # a ':' inside the value
    assert [(p.title, p.flags) for p in plots] == [(title, "real")] * 2
    dc, op = plots
    assert all(v.dtype == np.float64 for p in plots for v in p.vectors.values())  # real data
    assert dc.points == 5 and dc.names == ["v(v-sweep)", "v(in)", "v(mid)", "i(v1)"]
    assert list(dc.vectors) == ["v-sweep", "in", "mid", "i(v1)"]
    v_in = np.arange(5) * 0.5
    np.testing.assert_allclose(dc.vectors["in"], v_in, rtol=1e-12, atol=0)
    np.testing.assert_allclose(dc.vectors["mid"], v_in * 3 / 4, rtol=1e-12, atol=0)
    np.testing.assert_allclose(dc.vectors["i(v1)"], -v_in / 4000, rtol=1e-12, atol=0)
    assert op.points == 1 and list(op.vectors) == ["in", "mid", "i(v1)"]
    np.testing.assert_allclose([op.vectors[k][0] for k in ("in", "mid", "i(v1)")],
                               [2.0, 1.5, -5e-4], rtol=1e-12)


def test_raw_parser_on_checked_in_files():
    for name in ("ngspice_divider.raw", "ngspice_divider_ascii.raw"):
        check_divider(spice.parse_raw((DATA / name).read_bytes(), name))
    last = spice.read_raw(DATA / "ngspice_divider.raw")  # the last analysis: .op
    assert set(last) == {"in", "mid", "i(v1)"} and last["mid"][0] == pytest.approx(1.5)


def test_raw_parser_short_and_broken_files(tmp_path):
    data = (DATA / "ngspice_divider.raw").read_bytes()
    start = data.index(b"Binary:\n") + len(b"Binary:\n")
    cut = spice.parse_raw(data[:start + 2 * 4 * 8 + 5], "cut.raw")  # 2 points and a bit
    np.testing.assert_allclose(cut[0].vectors["mid"], [0.0, 0.375], rtol=1e-12)
    assert cut[0].points == 5  # the header's count: run_file's check compares against it
    with pytest.raises(SpiceRunError, match=r"^head\.raw: raw file ends inside a header \(no "
                       r"'Binary:' or 'Values:' line\); the run was cut short$"):
        spice.parse_raw(data[:start - 10], "head.raw")
    with pytest.raises(SpiceRunError, match=r"^junk\.raw: not an ngspice raw file"):
        spice.parse_raw(b"\x00\x01garbage\n", "junk.raw")
    with pytest.raises(SpiceRunError, match=r"missing\.raw: no raw file"):
        spice.read_raw(tmp_path / "missing.raw")
    assert spice.vector_key("Vcc#branch") == "i(vcc)" and spice.vector_key("V(H1_0)") == "h1_0"


# Raw files made by hand: the header lines as ngspice writes them, then the data.
def raw_plot(names, points, data, *, kind="Binary", flags="real", title="crafted raw file",
             plotname="Transient Analysis"):
    head = [f"Title: {title}", "Date: Thu Jan  1 00:00:00  1970", f"Plotname: {plotname}",
            f"Flags: {flags}", f"No. Variables: {len(names)}", f"No. Points: {points}",
            "Variables:"] + [f"\t{i}\t{n}\tvoltage" for i, n in enumerate(names)]
    return ("\n".join(head) + f"\n{kind}:\n").encode() + data


def binary_points(rows, complex_=False):
    """float64, point-major; complex: a (real, imaginary) pair per value."""
    a = np.array(rows, complex if complex_ else np.float64)
    if complex_:
        a = np.stack([a.real, a.imag], -1)
    return a.astype("<f8").tobytes()


def test_raw_parser_crafted_binary_plots(tmp_path):
    names = ["time", "v(H1_0)", "i(Vcc)", "vee#branch", "out"]
    rows = [[0.0, 0.25, -1e-3, 2e-3, 1.5], [1e-6, 0.5, -1.5e-3, 2.5e-3, -0.75]]
    tran = raw_plot(names, 2, binary_points(rows), title="crafted MATRIX")  # ends in 'X'
    ac_rows = [[1.0, 0.5 - 0.25j], [10.0, -0.125 + 2j], [100.0, 3.0 + 0j]]
    ac = raw_plot(["frequency", "v(out)"], 3, binary_points(ac_rows, True), flags="complex",
                  plotname="AC Analysis")
    plots = spice.parse_raw(tran + ac, "two.raw")
    assert [(p.title, p.plotname, p.flags, p.points) for p in plots] == [
        ("crafted MATRIX", "Transient Analysis", "real", 2),
        ("crafted raw file", "AC Analysis", "complex", 3)]
    tr, a = plots
    assert tr.names == names  # as written
    assert list(tr.vectors) == ["time", "h1_0", "i(vcc)", "i(vee)", "out"]
    for key, col in zip(tr.vectors, np.array(rows).T):
        assert tr.vectors[key].dtype == np.float64
        np.testing.assert_array_equal(tr.vectors[key], col)  # float64 bytes: exact
    assert a.vectors["frequency"].dtype == a.vectors["out"].dtype == np.complex128
    np.testing.assert_array_equal(a.vectors["frequency"], [1.0, 10.0, 100.0])
    np.testing.assert_array_equal(a.vectors["out"].real, [0.5, -0.125, 3.0])
    np.testing.assert_array_equal(a.vectors["out"].imag, [-0.25, 2.0, 0.0])
    (tmp_path / "two.raw").write_bytes(tran + ac)
    last = spice.read_raw(tmp_path / "two.raw")  # the last plot: the AC analysis
    assert list(last) == ["frequency", "out"]
    np.testing.assert_array_equal(last["out"], [0.5 - 0.25j, -0.125 + 2j, 3.0])
    # cut short inside the second plot: its complete points, the header's count kept
    cut = spice.parse_raw(tran + ac[:len(ac) - 16 - 5], "cut.raw")
    assert cut[1].points == 3
    np.testing.assert_array_equal(cut[1].vectors["out"], [0.5 - 0.25j, -0.125 + 2j])
    # more data than "No. Points" says: the surplus is not read as a point (here no
    # newline follows it: a header that never ends)
    with pytest.raises(SpiceRunError, match=r"^surplus\.raw: raw file ends inside a header"):
        spice.parse_raw(raw_plot(["v(a)", "v(b)"], 1, binary_points([[1.0, 2.0], [3.0, 4.0]])),
                        "surplus.raw")


@pytest.mark.timeout(20)  # a reader that keeps looking past a cut-short plot never ends
def test_raw_parser_crafted_ascii_plots():
    # complex values "re,im"; a blank line between points, the next index at column 0
    ac = raw_plot(["frequency", "v(out)"], 2, b"0\t\t1.0e+00,0.0e+00\n\t5.0e-01,-2.5e-01\n\n"
                  b"1\t\t1.0e+01,0.0e+00\n\t-1.25e-01,2.0e+00\n", kind="Values", flags="complex")
    # real values, No. Points 3 but two points written, the last line without a newline
    dc = raw_plot(["v(a)", "v(b)"], 3, b"0\t\t1.5e-03\n\t-2.0e+00\n \n1\t\t2.5e-01\n\t7.25",
                  kind="Values", plotname="DC transfer characteristic")
    a, d = spice.parse_raw(ac + dc, "ascii.raw")
    assert (a.flags, a.points, d.flags, d.points) == ("complex", 2, "real", 3)
    assert a.vectors["out"].dtype == np.complex128
    np.testing.assert_array_equal(a.vectors["frequency"], [1.0, 10.0])
    np.testing.assert_array_equal(a.vectors["out"], [0.5 - 0.25j, -0.125 + 2j])
    assert d.vectors["a"].dtype == d.vectors["b"].dtype == np.float64
    np.testing.assert_array_equal(d.vectors["a"], [1.5e-3, 0.25])
    np.testing.assert_array_equal(d.vectors["b"], [-2.0, 7.25])


@pytest.mark.timeout(20)
def test_raw_parser_ascii_data_ends_at_what_is_not_a_point():
    def one(data, points=2, flags="real"):
        (p,) = spice.parse_raw(raw_plot(["v(a)", "v(b)"], points, data, kind="Values",
                                        flags=flags), "a.raw")
        return p.vectors["a"], p.vectors["b"]

    # more data than "No. Points" says: the surplus point is no header
    with pytest.raises(SpiceRunError, match=r"^a\.raw: not an ngspice raw file \(unexpected "
                       r"header line b'1\\t\\t3\.0'\)$"):
        one(b"0\t\t1.0\n\t2.0\n1\t\t3.0\n\t4.0\n", points=1)

    # the second point's index is not a number / has a third field / a value is no number:
    # the data ends there, the complete points before it stay
    for second in (b"x\t\t3.0\n\t4.0\n", b"1\t\t3.0\textra\n\t4.0\n", b"1\t\t3.0\n\t4.0.0\n"):
        va, vb = one(b"0\t\t1.0\n\t2.0\n" + second)
        assert (va.tolist(), vb.tolist()) == ([1.0], [2.0]), second
    # complex, cut before the first point completes: empty complex vectors
    va, vb = one(b"0\t\t1.0,2.0\n", points=1, flags="complex")
    assert va.shape == vb.shape == (0,) and va.dtype == vb.dtype == np.complex128


def test_raw_parser_header_fields_in_another_order():
    # fields in another order, a blank line in the header and in the variable list,
    # variables indented with spaces, bytes that are no UTF-8 (replaced, not fatal)
    first = (b"Plotname: Operating Point\nNo. Points: 1\n\nVariables:\n  0  v(in)  voltage\n\n"
             b"  1  i(V1)  current\n  2  v(\xb5x)  voltage\nNo. Variables: 3\nDate: today\n"
             b"Title: \xb5-volt check\nBinary:\n" + binary_points([[2.0, -5e-4, 0.125]]))
    # no Title, Plotname or Flags line: empty strings, real data
    second = (b"No. Variables: 1\nNo. Points: 2\nVariables:\n\t0\ttime\ttime\nBinary:\n"
              + binary_points([[0.0], [1e-6]]))
    # CRLF line endings
    third = (b"Title: crlf\r\nFlags: real\r\nNo. Variables: 1\r\nNo. Points: 1\r\nVariables:\r\n"
             b"\t0\tv(c)\tvoltage\r\nValues:\r\n0\t\t4.5e+00\r\n")
    p1, p2, p3 = spice.parse_raw(first + second + third, "order.raw")
    assert (p1.title, p1.plotname, p1.flags, p1.points) == ("\ufffd-volt check", "Operating Point",
                                                            "", 1)
    assert p1.names == ["v(in)", "i(V1)", "v(\ufffdx)"]
    assert {k: v.tolist() for k, v in p1.vectors.items()} == {
        "in": [2.0], "i(v1)": [-5e-4], "\ufffdx": [0.125]}
    assert (p2.title, p2.plotname, p2.flags, p2.points, p2.names) == ("", "", "", 2, ["time"])
    assert p2.vectors["time"].tolist() == [0.0, 1e-6] and p2.vectors["time"].dtype == np.float64
    assert (p3.title, p3.flags, p3.names, p3.vectors["c"].tolist()) == ("crlf", "real", ["v(c)"],
                                                                       [4.5])


_HEAD = b"Title: t\nFlags: real\n"


@pytest.mark.parametrize("data, message", [
    (_HEAD + b"No. Variables: 2\nNo. Points: 1\nBinary:\n" + bytes(16),  # no "Variables:"
     "m.raw: raw file lists 0 variables, its header says 2"),
    (_HEAD + b"No. Variables: 1\nNo. Points: 1\nVariables:\n\t0\ta\tvoltage\n\t1\tb\tvoltage\n"
     b"Binary:\n" + bytes(16), "m.raw: raw file lists 2 variables, its header says 1"),
    (_HEAD + b"No. Variables: 1\nVariables:\n\t0\ta\tvoltage\nBinary:\n" + bytes(8),
     "m.raw: raw file header has no valid 'No. Points:' line"),
    (_HEAD + b"No. Variables: one\nNo. Points: 1\nVariables:\n\t0\ta\tvoltage\nBinary:\n",
     "m.raw: raw file header has no valid 'No. Variables:' line"),
    (_HEAD + b"No. Variables:\nNo. Points: 1\nVariables:\n\t0\ta\tvoltage\nBinary:\n",
     "m.raw: raw file header has no valid 'No. Variables:' line"),
    (_HEAD + b"No. Variables: 1\nNo. Points: 1\nVariables:\n\t0\ta\nBinary:\n",
     "m.raw: bad variable line b'\\t0\\ta' in the raw file"),
    (b"Xyce " + b"y" * 70 + b"\nBinary:\n",  # at most 60 bytes of the line shown
     "m.raw: not an ngspice raw file (unexpected header line b'Xyce " + "y" * 55 + "')"),
    (b"junk \t\r\nTitle: t\r\n",  # the CR goes, the other trailing blanks stay
     "m.raw: not an ngspice raw file (unexpected header line b'junk \\t')"),
])
def test_raw_parser_refuses_broken_headers_naming_the_file(data, message):
    with pytest.raises(SpiceRunError) as e:
        spice.parse_raw(data, "m.raw")
    assert str(e.value) == message


def test_raw_parser_default_source_name():
    with pytest.raises(SpiceRunError) as e:
        spice.parse_raw(b"junk\n")
    assert str(e.value) == "<raw>: not an ngspice raw file (unexpected header line b'junk')"


@pytest.mark.timeout(20)
def test_raw_parser_skips_blank_space_around_plots():
    one = raw_plot(["v(a)"], 1, binary_points([[1.25]]), title="first plot")
    two = raw_plot(["v(a)"], 1, b"0\t\t2.5e+00\n", kind="Values", title="second plot")
    plots = spice.parse_raw(b"\r\n\t" + one + b"\n \n" + two + b"\n\n", "ws.raw")
    assert [(p.title, p.vectors["a"].tolist()) for p in plots] == [("first plot", [1.25]),
                                                                  ("second plot", [2.5])]
    assert spice.parse_raw(b" \n\t\r\n") == []  # only blank space: no plot


def test_raw_header_and_values_read_from_the_first_byte():
    """The helpers on their own: a blank first line is skipped, an indented line before
    'Variables:' is no variable, and the position returned is the one after the data."""
    head = b"\nTitle: t\nNo. Variables: 1\nVariables:\n\t0\ttime\ttime\nValues:\n"
    assert spice._header(head + b"0\t1.0\n", 0, "h.raw") == (
        {"Title": "t", "No. Variables": "1", "Variables": ""}, ["time"], "Values", len(head))
    with pytest.raises(SpiceRunError) as e:
        spice._header(b"\t0\ttime\ttime\nVariables:\nValues:\n", 0, "h.raw")
    assert str(e.value) == ("h.raw: not an ngspice raw file (unexpected header line "
                            "b'\\t0\\ttime\\ttime')")
    arr, pos = spice._values(b"\n0\t1.0\n", 0, "Values", 1, 1, False)
    assert arr.tolist() == [[1.0]] and pos == 7

def test_run_file_reads_what_ngspice_writes(tmp_path):
    """The live run beside the checked-in file: same netlist, same numbers, log left."""
    shutil.copy(DATA / "ngspice_divider.cir", tmp_path)
    vec, seconds = spice.run_file(tmp_path / "ngspice_divider.cir")
    check_divider(spice.parse_raw((tmp_path / "ngspice_divider.raw").read_bytes()))
    assert vec["mid"][0] == pytest.approx(1.5) and seconds > 0
    log = (tmp_path / "ngspice_divider.log").read_text()
    assert log.startswith("$ ") and "-b -r ngspice_divider.raw ngspice_divider.cir" in log


def test_missing_ngspice_names_the_variable(tmp_path, monkeypatch):
    shutil.copy(DATA / "ngspice_divider.cir", tmp_path)
    monkeypatch.setenv("NGSPICE", "/nonexistent")
    with pytest.raises(ToolNotFound, match=r"^NGSPICE='/nonexistent' does not name an "
                       r"executable; fix or unset NGSPICE$"):
        spice.run_file(tmp_path / "ngspice_divider.cir")
    with pytest.raises(ToolNotFound, match="NGSPICE"):  # before the stage does any work
        flow.run(tiny_crystal(), config(), Paths(tmp_path, "tiny"))
    assert not (tmp_path / "tiny").exists()


def test_failed_run_names_the_netlist_and_log(tmp_path):
    bad = tmp_path / "broken.cir"
    bad.write_text(".title broken\nV1 a 0 1\nR1 a b 1k\nXnope b 0 no_such_subckt\n.op\n.end\n")
    with pytest.raises(SpiceRunError, match=r"^ngspice failed on .*broken\.cir: .*unknown "
                       r"subckt.*; see .*broken\.log$"):
        spice.run_file(bad)
    assert (tmp_path / "broken.log").exists()


def test_short_sweep_is_an_error(tmp_path):
    shutil.copy(DATA / "ngspice_divider.cir", tmp_path)
    with pytest.raises(SpiceRunError, match=r"stopped after 1 of 5 sweep points of .*"
                       r"ngspice_divider\.cir .*see .*ngspice_divider\.log"):
        spice.run_file(tmp_path / "ngspice_divider.cir", points=5)  # the last plot: .op
    with pytest.raises(SpiceRunError, match=r"transient of .*ngspice_divider\.cir stopped"):
        spice.run_file(tmp_path / "ngspice_divider.cir", t_stop=1e-3)


# ---- difference summers (relu_stage 'difference') -----------------------------------------
def diff_crystal(w=(3.0, -0.25, 2.0, 0.0), b=0.25):
    """4 inputs -> 1 ReLU, frozen (read only by the ADC) -> 2 linear."""
    rng = np.random.default_rng(3)
    layers = (_layer([list(w)], [b], "relu", True), _layer([[1.0], [-1.0]], [0, 0.5], "linear", False))
    return _crystal("diff", layers, rng.integers(0, 17, size=(12, 4)).astype(np.float32) / 16)


def _preferred_rp(gains, table):
    """The divider's Rp before any ground resistor, found as Rf is on 1k-1M: the weakest
    gain at r_max, the strongest at least r_min."""
    return eseries.snap(max(min(1e6 * min(gains), 1e6), 1e3 * max(gains), 1e3), table)


def _plus_side(n, r_scale=None):
    """By hand from the resistor values: (A, conductance into the divider per input, total
    divider conductance)."""
    s = r_scale or {}
    key = (n.layer, n.index)
    g_sum = sum(1 / (r * s.get(("in",) + key + (k,), 1.0)) for k, _, r in n.inputs)
    g_sum += 1 / (n.bias[1] * s.get(("bias",) + key, 1.0)) if n.bias else 0.0
    g_sum += 1 / (n.r_ground_sum * s.get(("gsum",) + key, 1.0)) if n.r_ground_sum else 0.0
    rf = n.rf * s.get(("rf",) + key, 1.0)
    g_p = {k: 1 / (r * s.get(("plus",) + key + (k,), 1.0)) for k, r in n.plus}
    g_total = sum(g_p.values()) + (1 / (n.r_ground_plus * s.get(("gplus",) + key, 1.0))
                                   if n.r_ground_plus else 0.0)
    return 1 + rf * g_sum, g_p, g_total, rf


@pytest.mark.parametrize("w, b, input_v, grounds", [
    # small input volts, large gains: positive gains beyond 1 + Rf G, summing node grounded
    ((3.0, -0.25, 2.0, 0.0), 0.25, 0.1, "sum"),
    ((0.5, -3.0, 0.25, 0.0), -0.5, 2.0, "plus")])  # the divider needs its ground resistor
def test_difference_summer_design_by_hand(w, b, input_v, grounds):
    c = diff_crystal(w, b)
    d = design(c, relu_stage="difference", input_v=input_v)
    (n,) = d.neurons
    assert (n.stage, d.inverted, d.opamp_count, n.diodes) == ("difference", [], 1, 0)
    assert [k for k, _ in n.plus] == [0, 2]  # positive weights on the non-inverting side
    assert [(k, inv) for k, inv, _ in n.inputs] == [(1, False)]  # the negative one, direct
    assert n.bias[0] == (b < 0)  # from +Vref for a negative bias, as the inverting summer
    table = eseries.values_in("E96", 1e3, 1e6)
    a = {k: n.gain * w[k] / d.vx for k in (0, 2)}  # the gains the weights ask for
    a0 = 1 + n.rf * (1 / n.inputs[0][2] + 1 / n.bias[1])
    rp = _preferred_rp(list(a.values()), table)
    if grounds == "sum":  # A0 short of sum(a) + Rp / r_max: the largest E96 value at or
        assert sum(a.values()) > a0  # below Rf / (sum(a) + Rp / r_max - A0)
        assert n.r_ground_sum == table[table <= n.rf / (sum(a.values()) + rp / 1e6 - a0)].max()
    else:
        assert sum(a.values()) < a0 and n.r_ground_sum is None
    big_a, g_p, g_total, rf = _plus_side(n)
    # the divider's ground resistor is snapped first and sets Rp = R_g (A - sum(a)); each
    # positive input is then Rp / a_k snapped
    spare = big_a - sum(a.values())
    assert n.r_ground_plus in table
    assert [r for _, r in n.plus] == [eseries.snap(n.r_ground_plus * spare / a[k], table)
                                      for k in (0, 2)]
    assert big_a >= sum(a.values()) * (1 - 0.013)  # the divider can give every gain
    for k in (0, 2):  # realized gain A G_p / G_total: the weight within E96 snapping (x2)
        assert big_a * g_p[k] / g_total * d.vx / n.gain == pytest.approx(w[k], rel=0.025)
    assert rf / n.inputs[0][2] * d.vx / n.gain == pytest.approx(-w[1], rel=0.013)
    assert d.resistor_count == len(n.inputs) + len(n.plus) + 2 + (n.r_ground_plus is not None) \
        + (n.r_ground_sum is not None)  # + Rf + the bias
    assert all(round(r, 6) in set(np.round(table, 6)) for r in n.resistors)


def test_difference_summer_ground_resistors_at_the_range_edges():
    # positive weights only, no bias: A = 1 before any ground resistor. 1k-1M, 0.1 V
    # inputs: the gains (about 12 and 8) need a summing-node ground resistor, chosen so
    # that the divider's own stays <= r_max at the preferred Rp: nothing clipped
    table = eseries.values_in("E96", 1e3, 1e6)
    d = design(diff_crystal((3.0, 0.0, 2.0, 0.0), 0.0), relu_stage="difference", input_v=0.1)
    (n,) = d.neurons
    a = [n.gain * w / d.vx for w in (3.0, 2.0)]
    rp = _preferred_rp(a, table)
    assert n.r_ground_sum == table[table <= n.rf / (sum(a) + rp / 1e6 - 1)].max()
    assert sum(v for k, v in d.clipped.items() if k != "worst") == 0
    big_a, g_p, g_total, _ = _plus_side(n)
    assert n.r_ground_plus <= 1e6 and big_a > sum(a)
    for k, w in ((0, 3.0), (2, 2.0)):
        assert big_a * g_p[k] / g_total * d.vx / n.gain == pytest.approx(w, rel=0.025)
    # 10k-20k and 0.05 V inputs: even r_min at the summing node leaves A short of sum(a):
    # counted, no divider ground resistor, every positive gain shrinks by A / sum(a)
    d = design(diff_crystal((3.0, 0.0, 2.0, 0.0), 0.0), relu_stage="difference",
               input_v=0.05, r_min=1e4, r_max=2e4, r_inverter=1e4)
    (n,) = d.neurons
    a = [n.gain * w / d.vx for w in (3.0, 2.0)]
    assert n.r_ground_sum == 1e4 and n.r_ground_plus is None and d.clipped["below_r_min"] >= 1
    big_a, g_p, g_total, _ = _plus_side(n)
    assert big_a == pytest.approx(1 + n.rf / 1e4) and big_a < sum(a)


def test_difference_transfer_by_hand():
    c = diff_crystal((3.0, -4.0, 2.0, 0.0), -0.25)
    d = design(c, relu_stage="difference", input_v=0.1)  # both ground resistors
    (n,) = d.neurons
    x = c.reference.x.astype(np.float64)
    rng = np.random.default_rng(1)
    drawn = flow.draw_board(d, 0.01, False, rng)[0]
    assert all(0.99 <= f <= 1.01 for f in drawn.values())  # ground resistors drawn too
    r_scale = {key: 1 + 0.05 * rng.uniform(-1, 1) for key in drawn}
    assert {k[0] for k in r_scale} == {"rf", "in", "bias", "plus", "gsum", "gplus"}
    for scale, vos in ((None, 0.0), (r_scale, 0.0), (r_scale, 3e-3)):
        big_a, g_p, g_total, rf = _plus_side(n, scale)
        v_plus = sum(g * x[:, k] * d.vx for k, g in g_p.items()) / g_total
        g_in = 1 / (n.inputs[0][2] * (scale or {}).get(("in", 0, 0, 1), 1.0))
        g_b = 1 / (n.bias[1] * (scale or {}).get(("bias", 0, 0), 1.0))
        v_b = d.vref if n.bias[0] else -d.vref  # a negative bias reads +Vref
        want = big_a * (v_plus + vos) - rf * (g_in * x[:, 1] * d.vx + g_b * v_b)
        got = nl.realized_forward(d, x, scale, {("relu", 0, 0): vos})[0][:, 0]
        np.testing.assert_allclose(got, np.maximum(want, 0.0), rtol=1e-12, atol=1e-15)
        assert (want < 0).any() and (want > 0).any()  # both sides of the ReLU exercised


def test_ngspice_difference_summers_equal_exact_model(tmp_path):
    # the two-layer crystal: layer-1 neurons 0 and 1 feed a core neuron (rectifiers, and
    # their positive weights still read inverted inputs); 1_2 a difference summer; 2_0 a
    # clamped summer (a divider would load the rectifier outputs it reads)
    c = tiny_crystal()
    d = design(c, opamp="ideal", relu_stage="difference")
    assert [n.stage for n in d.neurons] == ["rectifier", "rectifier", "difference", "clamp"]
    want_inv = {(n.layer - 1, k) for n in d.neurons if n.stage != "difference"
                for k in np.flatnonzero(c.layers[n.layer].weights[n.index] > 0)}
    assert set(d.inverted) == want_inv and d.opamp_count == 4 + len(want_inv)
    assert all(n.plus for n in d.neurons if n.stage == "difference")
    x = c.reference.x.astype(np.float64)
    write_dc(d, x, tmp_path / "core.cir")
    vec, _ = spice.run_file(tmp_path / "core.cir", points=len(x))
    np.testing.assert_allclose(core_volts(d, vec), exact_volts(d, x), atol=1e-4)
    # the MCP6002 macro-model (A_OL 112 dB): within 0.1 LSB, its saturated outputs read 0
    d = design(c, relu_stage="difference")
    write_dc(d, x, tmp_path / "mcp.cir")
    vec, _ = spice.run_file(tmp_path / "mcp.cir", points=len(x))
    got = core_volts(d, vec)
    np.testing.assert_allclose(got, exact_volts(d, x), atol=0.1 * LSB)
    assert (got[:, 2] == 0).any() and (got[:, 2] > 0).any()


def test_difference_counts_bom_and_boards():
    d = design(wide_crystal(), relu_stage="difference")
    assert d.inverted == [] and d.opamp_count == 9 and d.dac_inputs == [0, 1, 2, 3]
    total = sum(len(n.resistors) for n in d.neurons)
    assert d.resistor_count == total
    bom = flow.bom(d)
    assert (bom["resistors"]["total"], bom["diodes"]["count"], bom["opamps"]["amplifiers"],
            bom["opamps"]["inverters"]) == (total, 0, 9, 0)
    r_scale, vos = flow.draw_board(d, 0.01, True, np.random.default_rng(2))
    key = lambda n: (n.layer, n.index)  # noqa: E731
    assert set(r_scale) == ({("rf",) + key(n) for n in d.neurons}
                            | {("in",) + key(n) + (k,) for n in d.neurons for k, _, _ in n.inputs}
                            | {("bias",) + key(n) for n in d.neurons if n.bias}
                            | {("plus",) + key(n) + (k,) for n in d.neurons for k, _ in n.plus}
                            | {("gplus",) + key(n) for n in d.neurons if n.r_ground_plus}
                            | {("gsum",) + key(n) for n in d.neurons if n.r_ground_sum})
    assert set(vos) == {("relu",) + key(n) for n in d.neurons}
    # every resistor of the board drawn within the tolerance, the new ones included
    assert all(0.99 <= f <= 1.01 for f in r_scale.values())
    assert len({f for k, f in r_scale.items() if k[0] in ("plus", "gplus", "gsum")}) > 1


def test_dac_currents_and_vectors_of_difference_summers_by_hand():
    d = synthetic_design([nl.Neuron(0, 0, 1.0, 1e4, [(1, False, 1e3)], None, "difference",
                                    plus=[(0, 2e3), (1, 4e3)], r_ground_plus=5e3),
                          nl.Neuron(0, 1, 1.0, 1e4, [], None, "difference", plus=[(2, 8e3)])])
    assert flow.transient_vectors(d) == [
        "v(h1_0)", "v(h1_1)", "i(vcc)", "i(vee)", "i(vrefp)", "i(vrefn)", "v(s1_0)",
        "v(p1_0)", "v(p1_1)", "v(x0)", "v(x1)", "v(x2)"]
    tv = {"time": np.array([0.0, 1e-6]), "x0": np.array([1.0, 0.5]), "x1": np.array([0.2, 0.4]),
          "x2": np.array([0.8, 0.0]), "s1_0": np.array([0.3, 0.1]),
          "p1_0": np.array([0.3, 0.1]), "p1_1": np.array([0.6, 0.0])}
    i0, i1, i2 = flow.dac_currents(d, tv)
    np.testing.assert_allclose(i0, [0.7 / 2e3, 0.4 / 2e3], rtol=1e-12)
    # DAC 1 feeds both sides of neuron 0: the summing node (1k) and the divider (4k)
    np.testing.assert_allclose(i1, [-0.1 / 1e3 - 0.1 / 4e3, 0.3 / 1e3 + 0.3 / 4e3], rtol=1e-12)
    np.testing.assert_allclose(i2, [0.2 / 8e3, 0.0], atol=1e-18)
    assert d.resistor_count == 1 + 2 + 1 + 1 + 1 + 1  # in, plus x2, ground, Rf; plus, Rf


def test_headroom_of_difference_summers():
    # bottom binding (usable -1.875..2.125 V): no inverted inputs, so input_v may pass the
    # bottom; no diode, so any drop passes; the output and the + inputs need the top
    op = dataclasses.replace(OPAMPS["mcp6002"], swing_high_v=0.125, swing_low_v=0.375)
    _headroom(op, stages=("difference",), inverted=(), input_v=2.125, adc_ref_v=2.125,
              diode_drop_v=5.0)
    assert _refusal(op, stages=("difference",), inverted=(), input_v=2.125 + 2 ** -20) == \
        _swing_msg("analog.input_v (difference summers' non-inverting inputs)", 2.125, op.part,
                   "-1.88..2.12").replace("2.125 V", "2.125 V")
    assert _refusal(op, stages=("difference",), inverted=(), adc_ref_v=2.125 + 2 ** -20).startswith(
        "analog.adc_ref_v (difference summer output) = 2.125 V does not fit")
    # an inverted input brings the -input_v need back; an inverted core neuron (layer 0)
    # does not (it needs -adc_ref_v instead)
    assert _refusal(op, stages=("difference",), input_v=1.875 + 2 ** -20).startswith(
        "analog.input_v (inverted inputs)")
    _headroom(op, stages=("difference",), inverted=((0, 0),), input_v=2.125, adc_ref_v=1.875)
    # beside a rectifier the difference summer's needs add to the rectifier's: its
    # output (adc_ref_v + drop, 1.875 + 0.5 V) is still checked, and so is the drop
    assert _refusal(op, stages=("rectifier", "difference"), adc_ref_v=1.875).startswith(
        "analog.adc_ref_v + analog.diode_drop_v (rectifier op-amp output) = 2.375 V")
    assert _refusal(op, stages=("rectifier",), adc_ref_v=0.1, diode_drop_v=1.875 + 2 ** -20
                    ).startswith("analog.diode_drop_v (op-amp output clamped below zero)")


# ---- ngspice against the exact model ----------------------------------------------------------
def test_ngspice_ideal_equals_exact_model(tmp_path):
    c = tiny_crystal()
    d = design(c, opamp="ideal")
    x = c.reference.x.astype(np.float64)
    write_dc(d, x, tmp_path / "core.cir")
    vec, _ = spice.run_file(tmp_path / "core.cir", points=len(x))
    np.testing.assert_allclose(core_volts(d, vec), exact_volts(d, x), atol=1e-4)


def test_ngspice_mcp6002_against_golden_values_and_torch(tmp_path):
    c = tiny_crystal()
    d = design(c)
    x = c.reference.x.astype(np.float64)
    nodes = write_dc(d, x, tmp_path / "core.cir")
    vec, _ = spice.run_file(tmp_path / "core.cir", points=len(x))
    assert set(vec) == {"v-sweep"} | {n[2:-1] for n in nodes}  # .save keeps only these
    got = core_volts(d, vec)
    np.testing.assert_allclose(got, exact_volts(d, x), atol=0.1 * LSB)
    # and against torch x gain: resistor snapping (E96, ~1%) keeps it within a few LSB
    want = np.stack([c.reference.outputs[n.layer][:, n.index] * n.gain for n in d.neurons], 1)
    assert np.abs(got - want).max() < 6 * LSB


def test_written_netlist_runs_in_ngspice_by_hand(tmp_path):
    c = tiny_crystal()
    d = design(c)
    write_dc(d, c.reference.x.astype(np.float64), tmp_path / "core.cir")
    res = toolrun.run("ngspice", ["-b", "core.cir"], log=tmp_path / "ngspice.log", cwd=tmp_path,
                      timeout=60)
    assert "h1_0" in res.stdout.lower() and "index" in res.stdout.lower()


def test_transient_settles_to_dc(tmp_path):
    c = tiny_crystal()
    d = design(c)
    x = c.reference.x[:3].astype(np.float64)
    step = 60e-6
    cir = nl.build_circuit(d, x, step_s=step)
    p = tmp_path / "tran.cir"
    atomic_write_bytes(p, flow.netlist_text(cir, f".tran 0.1u {3 * step:g} 0 0.2u", "tran",
                                            [], flow.transient_vectors(d)).encode())
    vec, _ = spice.run_file(p, t_stop=3 * step)
    end = np.searchsorted(vec["time"], np.arange(1, 4) * step - 1e-6)
    got = core_volts(d, vec)[end]
    np.testing.assert_allclose(got, exact_volts(d, x), atol=0.5 * LSB)
    assert vec["i(vcc)"].max() < 0 < vec["i(vee)"].min()  # both rails deliver current


# ---- measurement steps on hand-made data ----------------------------------------------------
def test_settling_on_synthetic_waveforms():
    step, band = 1e-6, 0.01
    t = np.round(np.arange(0, 3e-6, 10e-9), 15)  # 10 ns grid: crossings fall between points
    s = t - step  # time into step 1
    # output 0: linear ramp 0 -> 1 V over T; within the band from T * (1 - band)
    T = 0.4e-6
    ramp = np.clip(s / T, 0, 1)
    # output 1: exponential 0.5 -> 0.2 V, tau; within the band from tau * ln(0.3 / band)
    tau = 150e-9
    expo = np.where(s < 0, 0.5, 0.2 + 0.3 * np.exp(-np.maximum(s, 0) / tau))
    # output 2: drives negative; the ADC sees 0, so it is settled from the start
    neg = np.where(s < 0, 0.0, -0.3)
    outs = np.stack([ramp, expo, neg], 1)
    finals = np.array([[0.0, 0.5, 0.0], [1.0, 0.2, 0.0], [1.0, 0.2, 0.0]])  # step 2: no change
    times, unsettled = flow.settling(t, outs, finals, step, band)
    assert unsettled == 0 and times.shape == (2,)
    exact_expo = tau * math.log(0.3 / band)  # 510.2 ns, the slower of the two
    # linear interpolation between 10 ns points: exact on the ramp, within dt^2/(8 tau) here
    assert times[0] == pytest.approx(exact_expo, abs=(10e-9) ** 2 / (8 * tau))
    assert exact_expo > T * (1 - band)
    assert times[1] == 0.0
    only_ramp, _ = flow.settling(t, outs[:, :1], finals[:, :1], step, band)
    assert only_ramp[0] == pytest.approx(T * (1 - band), rel=1e-9)


def test_settling_reports_unsettled_steps():
    step, band = 1e-6, 0.01
    t = np.arange(0, 3e-6, 10e-9)
    slow = np.clip((t - step) / 1.5e-6, 0, 1)  # needs 1.485 us: past the end of step 1
    finals = np.array([[0.0], [1.0], [1.0]])
    times, unsettled = flow.settling(t, slow[:, None], finals, step, band)
    assert unsettled == 1 and math.isnan(times[0])
    # step 2 starts with the ramp still 0.33 V short: settles at 1.485 us - 1 us after it
    assert times[1] == pytest.approx(1.5e-6 * (1 - band) - step, rel=1e-9)


def test_supply_power_on_synthetic_currents():
    t = np.array([0.0, 1e-6, 2e-6, 4e-6])
    i_vcc = -np.array([1.0, 2.0, 3.0, 3.0]) * 1e-3  # delivered from +2.5 V
    i_vee = np.array([1.0, 1.0, 2.0, 2.0]) * 1e-3  # delivered from -2.5 V
    i_ref = np.array([0.1, -0.1, 0.1, -0.1]) * 1e-3  # a reference, both directions
    p = flow.supply_power(t, i_vcc, i_vee, 2.5, -2.5, [i_ref], t_from=1e-6)
    rails = 2.5 * np.array([1 + 1, 2 + 1, 3 + 2, 3 + 2]) * 1e-3  # W, both rails
    total = rails + 2.5 * 0.1e-3
    np.testing.assert_allclose(p.trace, total, rtol=1e-12)
    # trapezoid over 1..4 us: segments of 1 us and 2 us
    avg = ((total[1] + total[2]) / 2 * 1 + (total[2] + total[3]) / 2 * 2) / 3
    assert p.average == pytest.approx(avg, rel=1e-12)
    assert p.peak == pytest.approx(total[2], rel=1e-12)
    assert p.rails_average == pytest.approx(
        ((rails[1] + rails[2]) / 2 + (rails[2] + rails[3])) / 3, rel=1e-12)


def test_error_stats_on_hand_made_arrays():
    volts = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[5.0], [6.0]])]
    ref = [np.array([[0.0, 9.0], [3.0, 9.0]]), np.array([[5.0], [4.0]])]
    masks = [np.array([True, False]), np.array([True])]  # errors 1, 0 and 0, 2
    stats, errs = flow.error_stats(volts, ref, masks, 0.5)
    assert stats == pytest.approx({"rms_v": math.sqrt(5 / 4), "max_v": 2.0,
                                   "rms_lsb": math.sqrt(5 / 4) / 0.5, "max_lsb": 4.0})
    np.testing.assert_array_equal(errs, [2.0, 0.0, 0.0, 4.0])


# ---- the stage's steps one by one ------------------------------------------------------------
def test_prepare_references_in_volts_and_adc_bits():
    c = mixed_crystal()
    b = flow.prepare(c, acfg(), 6)
    assert b.adc.bits == 6 and b.lsb_v == pytest.approx(1.0 / 63, rel=1e-12)  # adc_ref_v / (2^6 - 1)
    # gain = adc_ref_v (1 V) / calibrated full scale (largest output on the calibration
    # inputs, here the test inputs) for core neurons, 1 elsewhere
    h1, h2 = (c.reference.outputs[li].astype(np.float64) for li in range(2))
    g1, g2 = 1 / h1.max(0), np.array([1.0, 1.0, 1 / h2[:, 2].max()])
    np.testing.assert_allclose(b.gains[0], g1, rtol=1e-6)
    np.testing.assert_allclose(b.gains[1], g2, rtol=1e-6)
    np.testing.assert_allclose(b.torch_v[0], h1 * g1, rtol=1e-6)
    np.testing.assert_allclose(b.torch_v[1], h2 * g2, rtol=1e-6)
    np.testing.assert_array_equal(b.torch_cls, MIXED_CLASSES)  # the readout's, not layer 2's
    assert (c.reference.outputs[1].argmax(1) != MIXED_CLASSES).all()
    assert b.sizes == [3, 3] and [m.tolist() for m in b.masks] == [[True] * 3, [False, False, True]]


def test_prepare_refuses_a_crystal_without_core_neurons():
    with pytest.raises(AnalogError, match=r"^crystal 'mixed' has no core neurons \(nothing frozen\); "
                       r"train longer or relax the freeze section of the config$"):
        flow.prepare(mixed_crystal(frozen=False), acfg(), 8)


def test_prepare_warns_of_clipped_weights():
    lines = []
    flow.prepare(mixed_crystal(), acfg(), 8, lines.append)
    # neuron 1 of layer 1 (gain 1 V / 2.225, Rf 113k): weight -0.5 on input 3 (2 V per
    # unit) needs 113k x 2 / (0.5 / 2.225) = 1.0057M, above r_max: realised with r_max
    assert len(lines) == 1
    assert re.fullmatch(r"analog: warning: 1 weights need a resistor outside analog\.r_min\.\."
                        r"r_max and were clipped \(0 left open\); worst: layer 1 neuron 1, the "
                        r"weight from input 3, [0-9.e-]+ model units at full input", lines[0])
    # 0.2 V inputs and references: every ratio above 1, Rf at r_max, nothing clipped
    flow.prepare(mixed_crystal(), acfg(input_v=0.2, vref_v=0.2), 8, lines.append)
    assert len(lines) == 1  # nothing said


def test_written_netlists_analyses_and_print_lines(tmp_path):
    b = flow.prepare(wide_crystal(), acfg(transient_samples=3, step_us=60.0), 8)
    nets = flow.write_netlists(b, tmp_path)
    assert (nets.dc, nets.tran, nets.n_tr) == (tmp_path / "core.cir", tmp_path / "core_tran.cir", 3)
    assert nets.step_s == pytest.approx(60e-6, rel=1e-12)
    assert nets.t_stop == pytest.approx(3 * 60e-6, rel=1e-12)
    nodes = [f"v(h1_{j})" for j in range(9)]
    dc = nets.dc.read_text().splitlines()
    assert ".dc Vidx 0 11 1" in dc
    assert [ln for ln in dc if ln.startswith(".print")] == [
        ".print dc " + " ".join(nodes[:8]), ".print dc " + nodes[8]]
    # the DC netlist's op-amp: the linear transconductance (slew limit off), gm = 1 mS
    assert "Bgm 0 n1 i=0.001*(v(inp_os)-v(inn)) - " in nets.dc.read_text()
    assert "tanh" not in nets.dc.read_text()
    tran = nets.tran.read_text().splitlines()
    # 60 us steps: time step 60 us / 400, stop 3 x 60 us, max step 60 us / 200
    assert ".tran 1.5e-07 0.00018 0 3e-07" in tran
    assert [ln for ln in tran if ln.startswith(".print")] == [".print tran " + " ".join(nodes[:8])]
    assert "tanh(" in nets.tran.read_text()  # the transient keeps the slew limit


def test_written_netlists_gated_for_half_of_each_step(tmp_path):
    b = flow.prepare(wide_crystal(), acfg(transient_samples=3, step_us=60.0, power_gating=True), 8)
    nets = flow.write_netlists(b, tmp_path)
    assert nets.step_s == pytest.approx(60e-6, rel=1e-12)
    assert nets.gate_s == pytest.approx(30e-6, rel=1e-12)  # on for the first half of each step
    saves = " ".join(ln for ln in nets.tran.read_text().splitlines() if ln.startswith(".save"))
    assert " v(vcc) v(vee) " in f" {saves} "  # the ramping rails are read back


def test_dc_sweep_checks_the_point_count(tmp_path):
    c = tiny_crystal()
    b = flow.prepare(c, acfg(opamp="ideal"), 8)
    short = dataclasses.replace(b, x=b.x[:5])
    nets = flow.write_netlists(short, tmp_path)
    volts, seconds = flow.dc_sweep(short, nets.dc)
    exact = nl.realized_forward(b.design, b.x[:5])
    for li, j in ((0, 0), (0, 1), (0, 2), (1, 0)):
        np.testing.assert_allclose(volts[li][:, j], exact[li][:, j], atol=1e-4)
    np.testing.assert_array_equal(volts[1][:, 1], 0.0)  # outside the core
    assert [v.shape for v in volts] == [(5, 3), (5, 2)] and seconds > 0
    with pytest.raises(SpiceRunError, match=r"stopped after 5 of 12 sweep points of .*core\.cir"):
        flow.dc_sweep(b, nets.dc)  # the 5-sample netlist for the 12 samples of the bench


def test_error_split_on_crafted_volts():
    c = mixed_crystal()
    b = flow.prepare(c, acfg(), 8)
    lsb = 1.0 / 255
    volts = [v.copy() for v in b.torch_v]
    volts[0][:, 1] += 2 * lsb  # layer 1 neuron 1 two LSB high; classes unchanged
    e = flow.error_split(b, volts)
    # 12 samples x 4 core neurons, 12 of the 48 errors 2 LSB: RMS sqrt(12 x 4 / 48) = 1
    assert e["total"] == pytest.approx({"rms_v": lsb, "max_v": 2 * lsb, "rms_lsb": 1.0,
                                        "max_lsb": 2.0}, rel=1e-6)
    assert [(p["layer"], p["neuron"]) for p in e["per_neuron"]] == [(1, 0), (1, 1), (1, 2), (2, 2)]
    assert all(set(p) == {"layer", "neuron", "rms_v", "max_v", "rms_lsb", "max_lsb"}
               for p in e["per_neuron"])
    assert [p["max_lsb"] for p in e["per_neuron"]] == pytest.approx([0, 2, 0, 0], abs=1e-6)
    assert [p["rms_lsb"] for p in e["per_neuron"]] == pytest.approx([0, 2, 0, 0], abs=1e-6)
    # classes: all as torch; labels differ from torch on samples 0 and 1
    assert (e["agreement"], e["agreement_resistors_only"], e["agreement_adc_only"],
            e["accuracy"]) == (1.0, 1.0, 1.0, 10 / 12)
    # a dead core: every logit 0, class 0 everywhere: 5 torch classes and 7 labels are 0
    dead = flow.error_split(b, [np.zeros_like(v) for v in b.torch_v])
    assert (dead["agreement"], dead["agreement_resistors_only"], dead["agreement_adc_only"],
            dead["accuracy"]) == (5 / 12, 1.0, 1.0, 7 / 12)
    assert flow._agreement(b, b.torch_v) == 1.0 and flow._agreement(b, volts) == 1.0


def synthetic_design(neurons, inverted=(), r_inverter=1e4):
    return nl.CoreDesign(crystal_name="synthetic", opamp=spec_for("mcp6002"), series="E96",
                         vcc=2.5, vee=-2.5, vx=2.0, vref=2.0, v_fs=1.0, r_inverter=r_inverter,
                         neurons=neurons, core=(), inverted=list(inverted))


def test_dac_currents_by_hand():
    d = synthetic_design(
        [nl.Neuron(0, 0, 1.0, 1e4, [(0, False, 1e3), (1, True, 2e3)], None),
         nl.Neuron(0, 1, 1.0, 1e4, [(0, False, 4e3), (1, False, 5e3)], None),
         nl.Neuron(1, 0, 1.0, 1e4, [(0, False, 8e3)], None)],  # reads h1_0, not a DAC
        inverted=[(-1, 1), (0, 0)])
    tv = {"time": np.array([0.0, 1e-6]), "x0": np.array([1.0, 0.5]), "x1": np.array([0.2, -0.4]),
          "s1_0": np.array([0.001, -0.002]), "s1_1": np.array([0.003, 0.0])}
    i0, i1 = flow.dac_currents(d, tv)
    # DAC 0 into the sums of neurons 0 (1k) and 1 (4k): (1 - 0.001) / 1k + (1 - 0.003) / 4k,
    # then (0.5 + 0.002) / 1k + 0.5 / 4k
    np.testing.assert_allclose(i0, [0.999e-3 + 0.24925e-3, 0.502e-3 + 0.125e-3], rtol=1e-12)
    # DAC 1: into neuron 1's sum (5k) and its inverter's virtual ground (10k)
    np.testing.assert_allclose(i1, [0.197 / 5e3 + 0.2 / 1e4, -0.4 / 5e3 - 0.4 / 1e4], rtol=1e-12)


def test_transient_vectors_by_hand():
    d = synthetic_design([
        nl.Neuron(0, 0, 1.0, 1e4, [(0, False, 1e3), (1, True, 2e3)], None),  # reads DAC 0 directly
        nl.Neuron(0, 1, 1.0, 1e4, [(1, True, 2e3), (3, True, 2e3)], None),  # only inverted copies
        nl.Neuron(0, 2, 1.0, 1e4, [(4, False, 1e3)], None),  # reads DAC 4 directly
        nl.Neuron(1, 0, 1.0, 1e4, [(0, False, 1e3), (2, False, 1e3)], None)])  # reads h1_0, h1_2
    assert flow.transient_vectors(d) == [
        "v(h1_0)", "v(h1_1)", "v(h1_2)", "v(h2_0)", "i(vcc)", "i(vee)", "i(vrefp)", "i(vrefn)",
        "v(s1_0)", "v(s1_2)", "v(x0)", "v(x1)", "v(x3)", "v(x4)"]

def test_transient_vectors_gated_by_hand():
    d = synthetic_design([
        nl.Neuron(0, 0, 1.0, 1e4, [(0, False, 1e3)], None),
        nl.Neuron(1, 0, 1.0, 1e4, [(0, False, 1e3)], None)])  # reads h1_0
    # gated, the rail voltages too (they ramp), after the four currents
    assert flow.transient_vectors(d, True) == [
        "v(h1_0)", "v(h2_0)", "i(vcc)", "i(vee)", "i(vrefp)", "i(vrefn)", "v(vcc)", "v(vee)",
        "v(s1_0)", "v(x0)"]


def test_transient_on_a_synthetic_run(monkeypatch):
    """One neuron, three 1 us steps; ngspice's vectors made by hand (lsb 10 mV)."""
    step, lsb = 1e-6, 0.01
    d = synthetic_design([nl.Neuron(0, 0, 1.0, 1e4, [(0, False, 1e3)], None)])
    b = flow.Bench(c=None, acfg=None, adc=None, design=d, x=None, sizes=[1], masks=None,
                   gains=None, lsb_v=lsb, torch_mu=None, torch_v=None, torch_cls=None)
    nets = flow.Netlists(dc=None, tran=Path("core_tran.cir"), n_tr=3, step_s=step, t_stop=3 * step)
    # no time point inside the last 1% of step 2 (2.99..3 us)
    t = np.array([0, 0.5, 0.99, 0.995, 1, 1.25, 1.5, 1.99, 1.995, 2, 2.5, 3]) * step
    out = np.array([0, 0.3, 0.33, 0.3, 0.3, 0.7, 0.8, 0.804, 0.8, 0.85, 0.8, 0.8])
    n = len(t)
    x0 = np.where(t >= step, 0.5, 0.0)  # the DAC steps to 0.5 V into a 1k at 0 V: 0.5 mA
    tv = {"time": t, "h1_0": out, "i(vcc)": np.full(n, -1e-3), "i(vee)": np.full(n, 1e-3),
          "i(vrefp)": np.full(n, -0.2e-3), "i(vrefn)": np.full(n, 0.2e-3), "x0": x0,
          "s1_0": np.zeros(n)}
    calls = []

    def run_file(path, **kw):
        calls.append((path, kw))
        return tv, 0.25

    monkeypatch.setattr(spice, "run_file", run_file)
    tr = flow.transient(b, nets, [np.array([[0.3], [0.8], [0.8]])])
    assert calls == [(Path("core_tran.cir"), {"t_stop": 3e-6})]
    assert tr["seconds"] == 0.25 and tr["t"] is t
    np.testing.assert_array_equal(tr["outs"], out[:, None])
    # band 0.5 LSB = 5 mV. Step 1: errors 0.5, 0.1, 0 V at 1, 1.25, 1.5 us (0.804 at
    # 1.99 us is inside): crossing at 1.25 + 0.25 x (0.1 - 0.005) / 0.1 = 1.4875 us.
    # Step 2: 0.05 V at 2 us, 0 at 2.5 us: 2 + 0.5 x (0.05 - 0.005) / 0.05 = 2.45 us.
    np.testing.assert_allclose(tr["settle_s"], [0.4875e-6, 0.45e-6], rtol=1e-9)
    assert tr["unsettled"] == 0
    # end of each step (its last 1%) vs DC: 30 mV at 0.99 us, 4 mV at 1.99 us, no point
    # in 2.99..3 us; the points at 1 and 2 us belong to the next step
    assert tr["end_vs_dc_max_lsb"] == pytest.approx(3.0, rel=1e-9)
    # from 1 us on: rails 2 x 2.5 V x 1 mA, references 2.5 V x 0.4 mA, the DAC 2.5 V x 0.5 mA
    assert tr["power"].average == pytest.approx(5e-3 + 1e-3 + 1.25e-3, rel=1e-12)
    assert tr["power"].peak == pytest.approx(7.25e-3, rel=1e-12)
    assert tr["power"].rails_average == pytest.approx(5e-3, rel=1e-12)
    np.testing.assert_allclose(tr["power"].trace, np.where(t >= step, 7.25e-3, 6e-3), rtol=1e-12)



def test_transient_gated_on_a_synthetic_run(monkeypatch):
    """Power gating, one neuron, three 1 us steps each on for 0.5 us: the rails ramp (their
    vectors enter the power), each step's end is judged in its on-window's last 1% and the
    window energy is taken from every step; an unsettled step leaves it None."""
    step, gate, lsb = 1e-6, 0.5e-6, 0.01
    d = synthetic_design([nl.Neuron(0, 0, 1.0, 1e4, [(0, False, 1e3)], None)])
    b = flow.Bench(c=None, acfg=None, adc=None, design=d, x=None, sizes=[1], masks=None,
                   gains=None, lsb_v=lsb, torch_mu=None, torch_v=None, torch_cls=None)
    nets = flow.Netlists(dc=None, tran=Path("core_tran.cir"), n_tr=3, step_s=step,
                         t_stop=3 * step, gate_s=gate)
    # per step i: i, +0.01 (ramped up), +0.25, +0.497 (inside the last 1% of the on-time),
    # +0.5 (off from here), +0.75 us
    t = (np.arange(3)[:, None] + np.array([0, 0.01, 0.25, 0.497, 0.5, 0.75])).ravel() * step
    vcc = np.tile([0.0, 2.5, 2.5, 2.5, 2.5, 0.0], 3)
    out = np.array([0, 0.1, 0.3, 0.301, 0.3, 0, 0, 0.4, 0.8, 0.803, 0.8, 0,
                    0, 0.25, 0.5, 0.504, 0.5, 0])
    n = len(t)
    tv = {"time": t, "h1_0": out, "vcc": vcc, "vee": -vcc, "i(vcc)": np.full(n, -1e-3),
          "i(vee)": np.full(n, 1e-3), "i(vrefp)": np.full(n, -0.2e-3),
          "i(vrefn)": np.full(n, 0.2e-3), "x0": np.zeros(n), "s1_0": np.zeros(n)}
    monkeypatch.setattr(spice, "run_file", lambda path, **kw: (tv, 0.25))
    finals = [np.array([[0.3], [0.8], [0.5]])]
    tr = flow.transient(b, nets, finals)
    # band 5 mV. Step 1: 0.8, 0.4 V off at 1, 1.01 us, in the band at 1.25 us: crossing at
    # 1.01 + 0.24 x (0.4 - 0.005) / 0.4 = 1.247 us; step 2: 2.01 + 0.24 x 0.245 / 0.25
    np.testing.assert_allclose(tr["settle_s"], [0.247e-6, 0.2452e-6], rtol=1e-9)
    assert tr["unsettled"] == 0
    # ends (0.497 us into each step) vs DC: 1, 3, 4 mV: the last step's is the worst
    assert tr["end_vs_dc_max_lsb"] == pytest.approx(0.4, rel=1e-9)
    # rails at the ramping voltage: vcc x 1 mA from each rail, the references vcc x 0.4 mA
    np.testing.assert_allclose(tr["power"].trace, 2.4e-3 * vcc, rtol=1e-12, atol=1e-18)
    # window 0.247 us from each power-on: the rails reach 2.5 V (6 mW) 0.01 us in, so
    # 6 mW x (0.247 - 0.01 / 2) us = 1.452 nJ, both steps
    np.testing.assert_allclose(tr["gated_energy_j"], [1.452e-9, 1.452e-9], rtol=1e-9)
    # step 2 still 10 mV off at its last point: unsettled, no window energy
    tv["h1_0"] = np.where(np.isclose(t, 2.497 * step), 0.51, out)
    tr = flow.transient(b, nets, finals)
    assert tr["unsettled"] == 1 and tr["gated_energy_j"] is None
    assert tr["end_vs_dc_max_lsb"] == pytest.approx(1.0, rel=1e-9)


# ---- the stage ------------------------------------------------------------------------------
@pytest.fixture(scope=shared_scope)
def settled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("analog_settled")
    cfg = config(transient_samples=3, step_us=60.0, monte_carlo_runs=3)
    lines = []
    res = flow.run(tiny_crystal(), cfg, Paths(root, "tiny"), lines.append)
    return res, root / "tiny" / "analog", lines


@pytest.fixture(scope=shared_scope)
def unsettled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("analog_unsettled")
    cfg = config(transient_samples=4, step_us=0.1, monte_carlo_runs=0, relu_stage="rectifier")
    return flow.run(tiny_crystal(), cfg, Paths(root, "tiny")), root / "tiny" / "analog"


def test_stage_writes_result(settled_run):
    res, out, lines = settled_run
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["stage"] == "analog" and on_disk["experiment"] == "tiny"
    assert on_disk["crystal_digest"] == cm.digest(tiny_crystal())
    for key in ("opamp", "e_series", "neurons", "resistors", "opamps",
                "class_agreement_with_torch", "rms_error_lsb", "max_error_lsb",
                "settling_time_us", "power_mw", "energy_per_inference_nj",
                "samples_per_second", "monte_carlo", "method", "measured", "summary"):
        assert key in on_disk, key
    assert on_disk["monte_carlo"]["runs"] == 3 and 0 <= on_disk["monte_carlo"]["yield"] <= 1
    assert res["neurons"] == 4 and res["opamps"] == 4 + res["inverters"]
    per = on_disk["per_neuron_error"]
    assert len(per) == 4
    assert max(p["max_lsb"] for p in per) == pytest.approx(on_disk["max_error_lsb"])
    for f in ("core.cir", "core_tran.cir", "core.log", "core_tran.log", "core.raw", "bom.json",
              "transient.png", "error_histogram.png", "monte_carlo_tol0.01_board0.log"):
        assert (out / f).exists(), f
    bom = json.loads((out / "bom.json").read_text())
    assert bom["resistors"]["total"] == res["resistors"]
    assert bom["opamps"]["amplifiers"] == res["opamps"]
    assert any("DC operating points of 12 test samples" in ln for ln in lines)


def test_stage_settling_energy_and_power_floor(settled_run):
    res = settled_run[0]
    assert res["unsettled_steps"] == 0 and res["transient_steps"] == 2
    steps = res["settling_times_us"]
    assert len(steps) == 2 and res["settling_time_us"] == max(steps) < 60.0
    assert res["transient_end_vs_dc_max_lsb"] < 0.5  # each step ends on its DC value
    assert res["energy_per_inference_nj"] == pytest.approx(
        res["power_mw"] * 1e-3 * res["settling_time_us"] * 1e-6 * 1e9, rel=1e-12)
    # the op-amps' quiescent current alone: n x I_q x the 5 V between the rails
    floor_mw = res["opamps"] * OPAMPS["mcp6002"].iq_a * 5.0 * 1e3
    assert res["power_opamps_mw"] >= floor_mw * (1 - 1e-6)
    assert res["power_mw"] >= res["power_opamps_mw"] and res["power_peak_mw"] >= res["power_mw"]
    assert res["summary"][2].startswith(f"settling {res['settling_time_us']:.2f} us (worst step)")


def test_stage_reports_unsettled_steps(unsettled_run):
    res, out = unsettled_run
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["transient_steps"] == 3 and on_disk["unsettled_steps"] == 3
    for key in ("settling_time_us", "settling_time_median_us", "energy_per_inference_nj",
                "energy_per_neuron_nj"):
        assert on_disk[key] is None, key
    assert on_disk["settling_times_us"] == [None, None, None]
    assert on_disk["power_mw"] > 0 and on_disk["monte_carlo"] == {"runs": 0}
    # relu_stage 'rectifier': every neuron a precision rectifier, two diodes each
    assert (on_disk["relu_stages"], on_disk["diodes"]) == ({"rectifier": 4}, 8)
    line = res["summary"][2]
    assert line.startswith("did not settle within analog.step_us = 0.1 us in 3 of 3 steps; "
                           "raise analog.step_us"), line
    assert "worst step" not in line and "nJ" not in line


def test_cli_names_the_missing_crystal(tmp_path, capsys):
    from crystalbench import cli

    code = cli.main(["--build-dir", str(tmp_path), "sim-analog", "--config",
                     str(Path(__file__).parents[1] / "configs" / "digits.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert "crystal" in err and "crystalbench train" in err


# ---- Monte Carlo, the hybrid classes, the source claim ----------------------------------------
def testdraw_boards_by_distribution():
    d = design(tiny_crystal())
    op = d.opamp
    rng = np.random.default_rng(5)
    draws = [flow.draw_board(d, 0.01, True, rng) for _ in range(300)]
    want = ({("rf", n.layer, n.index) for n in d.neurons}
            | {("in", n.layer, n.index, k) for n in d.neurons for k, _, _ in n.inputs}
            | {("bias", n.layer, n.index) for n in d.neurons if n.bias is not None}
            | {("inv", li, k) for li, k in d.inverted})
    assert all(set(r) == want for r, _ in draws)
    assert all(set(v) == {("relu", n.layer, n.index) for n in d.neurons}
               | {("inv", li, k) for li, k in d.inverted} for _, v in draws)
    plain = np.array([x for r, _ in draws for key, x in r.items() if key[0] != "inv"])
    assert plain.min() >= 0.99 and plain.max() <= 1.01  # uniform within +-1%
    assert plain.min() < 0.9905 and plain.max() > 1.0095 and abs(plain.mean() - 1) < 1e-3
    inv = np.array([x for r, _ in draws for key, x in r.items() if key[0] == "inv"])
    assert inv.min() >= 0.99 / 1.01 and inv.max() <= 1.01 / 0.99 and inv.max() > 1.01
    vos = np.array([x for _, v in draws for x in v.values()])
    assert np.abs(vos).max() <= op.vos_max_v  # clipped to the datasheet maximum
    assert vos.std() == pytest.approx(op.vos_typ_v, rel=0.1) and abs(vos.mean()) < op.vos_typ_v / 5
    assert flow.draw_board(d, 0.01, False, rng)[1] == {}  # offsets off
    ideal = design(tiny_crystal(), opamp="ideal")
    assert flow.draw_board(ideal, 0.01, True, rng)[1] == {}  # no offset to draw


def test_monte_carlo_figures_follow_from_the_boards(settled_run):
    mc = settled_run[0]["monte_carlo"]
    by = mc["by_tolerance"]
    assert set(by) == {"0.01", "0.001"} and mc["tolerance"] == 0.01
    for tol, t in by.items():
        a = np.array(t["agreements"])
        assert t["runs"] == len(a) == 3
        assert t["mean_agreement"] == pytest.approx(a.mean(), abs=1e-5)
        assert t["min_agreement"] == pytest.approx(a.min(), abs=1e-5)
        assert t["yield"] == np.mean(a >= mc["yield_threshold"])
        # Board 0 in ngspice against the exact numpy board: the classes agree; volts differ
        # by up to ~2 LSB on this crystal, whose second core layer reads rectifiers (the
        # macro-model's off rectifier and finite gain, which the numpy board leaves out).
        chk = mc["ngspice_check"][tol]
        assert chk["max_diff_lsb"] < 3.0
        assert chk["ngspice_agreement"] == chk["numpy_agreement"] == pytest.approx(a[0], abs=1e-5)
    assert (mc["mean_agreement"], mc["yield"]) == (by["0.01"]["mean_agreement"], by["0.01"]["yield"])


def _board_agreements(b, tolerances, runs, offsets, seed):
    """The Monte Carlo's boards again: one generator, tolerances in order, boards drawn,
    evaluated exactly in numpy and classified through the ADC."""
    rng = np.random.default_rng(seed)
    out = {}
    for tol in tolerances:
        out[tol] = []
        for _ in range(runs):
            r_scale, vos = flow.draw_board(b.design, tol, offsets, rng)
            v = nl.realized_forward(b.design, b.x, r_scale, vos)
            cls = flow.hybrid_classes(b.c, b.adc, [vv / g for vv, g in zip(v, b.gains)], b.x)
            out[tol].append(float(np.mean(cls == MIXED_CLASSES)))
    return out


def _instance_offsets(path):
    """vos of every op-amp stage the netlist places (not the subcircuit definitions)."""
    return [float(m.group(1)) for ln in path.read_text().splitlines() if ln.startswith("X")
            and not ln.startswith("Xop ") for m in [re.search(r"\bvos=(\S+)", ln)]]


def test_monte_carlo_one_board_per_tolerance(tmp_path, monkeypatch):
    """One board (the `runs <= 0` edge) per tolerance; the first tolerance is the
    headline; the yield threshold exactly at the board's agreement counts it good."""
    c = mixed_crystal()
    b = flow.prepare(c, acfg(monte_carlo_runs=1, tolerances=[0.2, 0.001], yield_threshold=10 / 12), 8)
    want = _board_agreements(b, [0.2, 0.001], 1, True, seed=0)
    assert want == {0.2: [10 / 12], 0.001: [1.0]}  # at 20% two near ties flip
    calls, real = [], spice.run_file

    def run_file(path, **kw):
        calls.append((Path(path).name, kw))
        return real(path, **kw)

    monkeypatch.setattr(spice, "run_file", run_file)
    lines = []
    mc = flow.monte_carlo(b, 0, tmp_path, lines.append)
    assert lines == ["analog: Monte Carlo, 1 boards x tolerances [0.2, 0.001] ..."]
    assert set(mc) == {"runs", "tolerance", "mean_agreement", "min_agreement", "yield",
                       "yield_threshold", "opamp_offset", "by_tolerance", "ngspice_check", "method"}
    assert {k: v for k, v in mc.items() if k not in ("by_tolerance", "ngspice_check")} == {
        "runs": 1, "tolerance": 0.2, "mean_agreement": 10 / 12, "min_agreement": 10 / 12,
        "yield": 1.0, "yield_threshold": 10 / 12, "opamp_offset": True,
        "method": flow.MONTE_CARLO_METHOD}
    assert mc["by_tolerance"] == {
        "0.2": {"runs": 1, "mean_agreement": 10 / 12, "min_agreement": 10 / 12, "yield": 1.0,
                "agreements": [0.83333]},
        "0.001": {"runs": 1, "mean_agreement": 1.0, "min_agreement": 1.0, "yield": 1.0,
                  "agreements": [1.0]}}
    # board 0 of each tolerance through ngspice, its sweep checked for all 12 points
    assert calls == [("monte_carlo_tol0.2_board0.cir", {"points": 12}),
                     ("monte_carlo_tol0.001_board0.cir", {"points": 12})]
    assert set(mc["ngspice_check"]) == {"0.2", "0.001"}
    for tol, a in (("0.2", 10 / 12), ("0.001", 1.0)):
        chk = mc["ngspice_check"][tol]
        assert (chk["numpy_agreement"], chk["ngspice_agreement"]) == (a, a)
        text = (tmp_path / f"monte_carlo_tol{tol}_board0.cir").read_text()
        assert ".dc Vidx 0 11 1" in text.splitlines()
        assert ".print dc v(h1_0) v(h1_1) v(h1_2) v(h2_2)" in text.splitlines()
        assert "tanh" not in text  # DC: the linear op-amp input stage
        # 4 neurons + 4 inverters, each with its own drawn offset (never exactly 0)
        offsets = _instance_offsets(tmp_path / f"monte_carlo_tol{tol}_board0.cir")
        assert len(offsets) == 8 and all(v != 0 for v in offsets)


def test_monte_carlo_without_offsets(tmp_path):
    b = flow.prepare(mixed_crystal(), acfg(monte_carlo_runs=1, tolerances=[0.2],
                                           opamp_offset=False), 8)
    mc = flow.monte_carlo(b, 0, tmp_path)
    a = _board_agreements(b, [0.2], 1, False, seed=0)[0.2][0]
    assert a == 8 / 12  # other draws than with offsets: four samples flip
    assert (mc["opamp_offset"], mc["by_tolerance"]["0.2"]["agreements"]) == (False, [0.66667])
    assert _instance_offsets(tmp_path / "monte_carlo_tol0.2_board0.cir") == [0.0] * 8


def test_hybrid_classes_with_the_core_forced_by_hand():
    c = tiny_crystal()
    adc = adc_mod.adc_for(c, 16)
    x = c.reference.x.astype(np.float64)
    exact = [c.reference.outputs[li].astype(np.float64) for li in range(2)]
    # a 16-bit ADC on the torch outputs changes no class
    np.testing.assert_array_equal(flow.hybrid_classes(c, adc, exact, x),
                                  c.reference.outputs[-1].argmax(1))
    # a dead core: layer-1 outputs 0, so the frontier neuron of layer 2 sees only its bias
    zeros = [np.zeros_like(e) for e in exact]
    l2, l3 = c.layers[1], c.layers[2]
    h2 = np.maximum(np.zeros((len(x), 3)) @ l2.weights.T + l2.bias, 0.0)
    h2[:, 0] = 0.0  # the core neuron of layer 2 (through the ADC: its forced output)
    want = (h2 @ l3.weights.T + l3.bias).argmax(1)
    np.testing.assert_array_equal(flow.hybrid_classes(c, adc, zeros, x), want)


def test_hybrid_classes_quantize_the_raw_inputs_the_frontier_reads():
    """4 inputs -> h1_0 = x0 (core), h1_1 = x1 (frontier: reads raw input 1) -> layer 2 without
    a core neuron: m0 = h1_1, m1 = h1_0 -> readout (m0, m1 + 0.3). With a 2-bit converter
    (levels 0, 1/3, 2/3, 1 on 0..1) the frontier sees x1 rounded to thirds and the core's
    h1_0 through its ADC (full scale 1: thirds too); class 0 iff x1' > h1_0' + 0.3."""
    def layer(w, b, act, frozen):
        w = np.array(w, np.float32)
        n = w.shape[0]
        frozen = np.array(frozen, bool)
        return cm.Layer(weights=w, bias=np.array(b, np.float32), mask=w != 0, activation=act,
                        position=np.zeros((n, 2), np.float32), radius=np.full(n, 1.5, np.float32),
                        frozen=frozen, epoch_frozen=np.where(frozen, 3, -1).astype(np.int32))

    layers = (layer([[1, 0, 0, 0], [0, 1, 0, 0]], [0, 0], "relu", [True, False]),
              layer([[0, 1], [1, 0]], [0, 0], "relu", [False, False]),
              layer([[1, 0], [0, 1]], [0, 0.3], "linear", [False, False]))
    ref_x = np.array([[1.0, 1.0, 0.5, 0.5], [0.25, 0.5, 0.0, 1.0]], np.float32)  # x0 max 1
    c = _crystal("frontier", layers, ref_x)
    part = c.partition
    assert part.frontier_inputs.tolist() == [False, True, False, False]
    assert [k.tolist() for k in part.core] == [[True, False], [False, False], [False, False]]
    adc = adc_mod.adc_for(c, 2)
    # per sample: x1 and the core's h1_0 (model units) forced by hand; x0 = 0 throughout
    x1 = np.array([0.6, 0.9, 0.2, 0.1, 1.0, 0.7])
    u0 = np.array([0.4, 0.55, 0.0, 0.0, 0.9, 0.1])
    # x1' = 2/3, 1, 1/3, 0, 1, 2/3 against h1_0' + 0.3 = 0.63, 0.97, 0.3, 0.3, 1.3, 0.3
    want = [0, 0, 0, 1, 1, 0]  # raw x1 would give 1, 1, 1, 1, 1, 0
    x = np.zeros((6, 4))
    x[:, 1] = x1
    units = [np.stack([u0, np.full(6, 5.0)], 1), np.full((6, 2), 7.0)]  # 5, 7: never read
    np.testing.assert_array_equal(flow.hybrid_classes(c, adc, units, x), want)

def test_source_claim_by_hand():
    s = flow._source_claim()
    assert s["power_per_neuron_mw"] == pytest.approx(500 / 1512)
    assert s["energy_per_inference_nj"] == pytest.approx(500.0)  # 500 mW x 1 us
    assert s["energy_per_neuron_nj"] == pytest.approx(500 / 1512)


def test_stage_result_keys(settled_run):
    res = settled_run[0]
    # the settings the figures depend on, which sim-hybrid checks before using them
    assert res["config"] == {"analog": dict(config(transient_samples=3, step_us=60.0,
                                                   monte_carlo_runs=3).analog), "adc_bits": 8}
    assert set(res) == {
        "stage", "experiment", "crystal", "crystal_digest", "config", "opamp", "opamp_part",
        "e_series",
        "supply_v", "neurons", "resistors", "opamps", "inverters", "diodes", "relu_stages",
        "adc_bits", "adc_ref_v", "lsb_mv", "test_samples", "class_agreement_with_torch",
        "class_agreement_resistors_only", "class_agreement_adc_only", "test_accuracy_analog",
        "test_accuracy_torch", "rms_error_lsb", "max_error_lsb", "rms_error_v", "max_error_v",
        "per_neuron_error", "error_resistor_quantization", "error_opamp_nonideal",
        "clipped_weights", "step_us", "settling_time_us", "settling_time_median_us",
        "settling_times_us", "unsettled_steps", "transient_steps",
        "transient_end_vs_dc_max_lsb", "power_gating", "gate_window_us",
        "energy_per_inference_steps_nj", "power_mw", "power_peak_mw", "power_opamps_mw",
        "power_per_neuron_mw", "decoupling_energy_nj", "energy_per_inference_nj",
        "energy_per_neuron_nj", "samples_per_second", "simulation_seconds", "monte_carlo",
        "source_claim", "files",
        "method", "wall_seconds", "summary", "result_file"}
    d = res
    assert d["power_gating"] is False and d["gate_window_us"] is None
    assert d["energy_per_inference_steps_nj"] is None
    assert d["decoupling_energy_nj"] == 0.0  # rails stay up: no recharge per inference
    assert d["supply_v"] == [-2.5, 2.5] and d["adc_bits"] == 8 and d["lsb_mv"] == pytest.approx(
        1000 / 255)
    assert d["diodes"] == 2 * d["relu_stages"].get("rectifier", 0) + d["relu_stages"].get("clamp", 0)
    assert d["power_per_neuron_mw"] == pytest.approx(d["power_mw"] / d["neurons"])
    assert d["energy_per_neuron_nj"] == pytest.approx(d["energy_per_inference_nj"] / d["neurons"])
    assert d["test_samples"] == 12 and d["test_accuracy_torch"] == 1.0  # labels = torch classes


@pytest.mark.parametrize("frozen1, frozen2", [
    ([True, True, False], [False, False, False]),  # layer 1's last neuron not core; layer 2 none
    ([True, True, True], [True, False, False]),  # layer 2's highest neurons not core
])
def test_partly_frozen_layers_keep_their_width(frozen1, frozen2):
    """Every layer's volts have the layer's width, core neurons or not (an array sized by
    the highest core neuron broke the error split of such crystals)."""
    layers = (_layer([[1, 0, 0, -0.25], [0, 2, 0, -0.5], [0, 0, 0.5, -0.125]], [0.3, 0.6, 0.15],
                     "relu", frozen1),
              _layer([[1, 0, 0], [0, 0.5, 0], [0, 0, 2]], [0, 0, 0], "relu", frozen2),
              _layer([[0, 1, 0], [0, 0, 1], [1, 0, 0]], [0, 0, 0], "linear", False))
    c = _crystal("partly", layers, MIXED_X)
    b = flow.prepare(c, acfg(), 8)
    v = nl.realized_forward(b.design, b.x)
    assert [a.shape for a in v] == [(12, 3), (12, 3)]
    core = c.partition.core
    for li in range(2):
        assert not v[li][:, ~core[li]].any()  # zeros outside the core
    split = flow.error_split(b, v)  # the ideal board against torch: resistor snapping only
    assert split["resistors_only"]["max_lsb"] == split["total"]["max_lsb"] < 2.0
    assert split["agreement"] == 1.0


def test_clipped_weight_error_in_model_units_by_hand():
    a = acfg()  # E96, 1 k .. 1 M
    table = eseries.values_in("E96", 1e3, 1e6)
    clipped = {"above_r_max_open": 0, "above_r_max_at_r_max": 0, "below_r_min": 0, "worst": None}
    # rf 1 M: a gain of 0.001 needs 1 G: left open (below half the gain 1 M gives), so the
    # realized weight is 0; weight = ratio x source scale / g = 0.001 x 2 / 0.5 = 0.004
    assert nl._place(0.001, 2.0, "w", (0, 3, 0.5, 1e6), a, table, clipped) is None
    assert clipped["worst"]["error_model_units"] == pytest.approx(0.004)
    # a gain of 0.8 needs 1.25 M: clipped to 1 M (gain 1): error (1 - 0.8) x 2 / 0.5 = 0.8
    assert nl._place(0.8, 2.0, "w", (0, 4, 0.5, 1e6), a, table, clipped) == 1e6
    assert clipped["worst"] == {"layer": 1, "neuron": 4, "what": "w", "needed_ohm": 1.25e6,
                                "used_ohm": 1e6, "error_model_units": pytest.approx(0.8)}
    # a gain of 2000 needs 500 ohm: r_min; gain 1000: error 1000 x 0.1 / 0.5 = 200
    assert nl._place(2000.0, 0.1, "b", (1, 0, 0.5, 1e6), a, table, clipped) == 1e3
    assert clipped["worst"]["error_model_units"] == pytest.approx(200.0)
    assert (clipped["above_r_max_open"], clipped["above_r_max_at_r_max"],
            clipped["below_r_min"]) == (1, 1, 1)
    # inside the range: 1 M / 2 = 500 k snapped to E96's 499 k, nothing counted
    assert nl._place(2.0, 2.0, "w", (0, 5, 0.5, 1e6), a, table, clipped) == 4.99e5
    assert sum(v for k, v in clipped.items() if k != "worst") == 3


def test_error_lines_of_a_log_by_hand():
    log = "note\nError: a\nfine\nERROR: b\nError: a\nsomething errored\n"
    assert spice._errors(log) == "Error: a; ERROR: b; something errored"  # once each, in order
    long = "\n".join(f"error {i:03d} " + "x" * 40 for i in range(20))
    assert len(spice._errors(long)) == 400 and spice._errors(long).startswith("error 000 ")
    assert spice._errors("all good\n") == ""


def _synthetic_report(tmp_path, settle_s, unsettled):
    c = tiny_crystal()
    b = flow.prepare(c, acfg(transient_samples=4, step_us=10.0), 8)
    nets = flow.Netlists(dc=tmp_path / "core.cir", tran=tmp_path / "core_tran.cir", n_tr=4,
                         step_s=10e-6, t_stop=40e-6)
    errors = flow.error_split(b, nl.realized_forward(b.design, b.x))
    t = np.linspace(0, 40e-6, 9)
    tr = {"t": t, "outs": np.zeros((9, 4)), "settle_s": np.array(settle_s), "unsettled": unsettled,
          "power": flow.Power(trace=np.full(9, 2e-3), average=2e-3, peak=5e-3, rails_average=1.5e-3),
          "end_vs_dc_max_lsb": 0.1, "seconds": 0.5}
    return b, nets, flow.report(b, nets, errors, tr, {"runs": 0}, 0.25, tmp_path)


def test_report_figures_from_a_synthetic_transient(tmp_path):
    b, nets, res = _synthetic_report(tmp_path, [1e-6, 3e-6, 2e-6], 0)
    assert res["settling_time_us"] == pytest.approx(3.0)  # the worst step
    assert res["settling_time_median_us"] == pytest.approx(2.0, rel=1e-12)
    assert res["settling_times_us"] == pytest.approx([1.0, 3.0, 2.0])
    assert (res["power_mw"], res["power_peak_mw"], res["power_opamps_mw"]) == pytest.approx(
        (2.0, 5.0, 1.5))
    assert res["power_per_neuron_mw"] == pytest.approx(2.0 / 4)
    assert res["energy_per_inference_nj"] == pytest.approx(2e-3 * 3e-6 * 1e9)  # 6 nJ
    assert res["energy_per_neuron_nj"] == pytest.approx(6.0 / 4)
    assert res["samples_per_second"] == pytest.approx(12 / 0.25)
    assert res["simulation_seconds"] == {"dc": 0.25, "transient": 0.5}
    assert res["transient_steps"] == 3 and res["unsettled_steps"] == 0
    assert res["files"] == {"netlist": str(tmp_path / "core.cir"),
                            "netlist_transient": str(tmp_path / "core_tran.cir"),
                            "bom": str(tmp_path / "bom.json"),
                            "plot_transient": str(tmp_path / "transient.png"),
                            "plot_error_histogram": str(tmp_path / "error_histogram.png")}
    assert json.loads((tmp_path / "bom.json").read_text()) == json.loads(
        json.dumps(flow.bom(b.design)))
    op = b.design.opamp
    assert res["method"] == {**flow.METHOD, "opamp_model": (
        f"{op.part} behavioural macro-model (GBW, slew, A_OL, swing, I_q, offset; figures from "
        f"{op.source})"), "data": "Crystal 'tiny' reference test split (12 samples)"}


def test_report_of_an_unsettled_transient(tmp_path):
    _, _, res = _synthetic_report(tmp_path, [1e-6, math.nan, 2e-6], 1)
    assert res["settling_time_us"] is None and res["settling_time_median_us"] is None
    assert res["settling_times_us"][0] == pytest.approx(1.0) and res["settling_times_us"][1] is None
    assert res["energy_per_inference_nj"] is None and res["energy_per_neuron_nj"] is None
    assert res["power_mw"] == pytest.approx(2.0)  # power is measured all the same


def test_summary_lines_by_hand():
    res = {"neurons": 48, "opamps": 112, "opamp_part": "Microchip MCP6002", "resistors": 1245,
           "e_series": "E96", "clipped_weights": {"above_r_max_open": 4,
                                                  "above_r_max_at_r_max": 20, "below_r_min": 4,
                                                  "worst": {"layer": 1}},
           "class_agreement_with_torch": 0.99443, "class_agreement_resistors_only": 0.99443,
           "class_agreement_adc_only": 1.0, "rms_error_lsb": 0.6375, "max_error_lsb": 4.9459,
           "power_mw": 149.2079, "power_peak_mw": 166.21, "samples_per_second": 167.84,
           "settling_time_us": 6.6895, "energy_per_inference_nj": 998.1196, "step_us": 60.0,
           "unsettled_steps": 0, "transient_steps": 15,
           "monte_carlo": {"runs": 20, "tolerance": 0.01, "mean_agreement": 0.99387,
                           "min_agreement": 0.98886, "yield": 1.0, "yield_threshold": 0.98},
           "files": {"netlist": "build/digits/analog/core.cir"}, "wall_seconds": 17.4}
    assert flow.summary_lines(res) == [
        "48 neurons, 112 op-amps (Microchip MCP6002), 1245 resistors (E96); 28 weights clipped",
        "class agreement with torch 0.9944 (resistors only 0.9944, ADC only 1.0000); error RMS "
        "0.637 LSB, max 4.95 LSB",
        "settling 6.69 us (worst step), power 149.2 mW avg / 166.2 mW peak, 998.1 nJ per "
        "inference; ngspice 167.8 samples/s",
        "Monte Carlo (20 boards, 0.01 tolerance): agreement mean 0.9939, min 0.9889, yield "
        "1.00 at >= 0.98",
        "netlist build/digits/analog/core.cir (17 s)"]
    res.update(settling_time_us=None, energy_per_inference_nj=None, unsettled_steps=3,
               step_us=0.1, monte_carlo={"runs": 0})
    assert flow.summary_lines(res)[2:] == [
        "did not settle within analog.step_us = 0.1 us in 3 of 15 steps; raise analog.step_us "
        "(power 149.2 mW avg / 166.2 mW peak; no settling time or energy; ngspice 167.8 "
        "samples/s)", "netlist build/digits/analog/core.cir (17 s)"]


def test_summary_line_of_a_gated_run_by_hand():
    res = {"neurons": 4, "opamps": 6, "opamp_part": "TI OPA835", "resistors": 20,
           "e_series": "E96", "clipped_weights": {"below_r_min": 0},
           "class_agreement_with_torch": 1.0, "class_agreement_resistors_only": 1.0,
           "class_agreement_adc_only": 1.0, "rms_error_lsb": 0.1, "max_error_lsb": 0.2,
           "power_mw": 4.5, "power_peak_mw": 5.5, "samples_per_second": 100.0,
           "settling_time_us": 0.25, "energy_per_inference_nj": 3001.2, "step_us": 10.0,
           "unsettled_steps": 0, "transient_steps": 3, "power_gating": True,
           "decoupling_energy_nj": 2700.0, "monte_carlo": {"runs": 0},
           "files": {"netlist": "core.cir"}, "wall_seconds": 3.0}
    assert flow.summary_lines(res)[2] == (
        "settling 0.25 us (worst step), power 4.5 mW avg / 5.5 mW peak, 3001.2 nJ per "
        "inference (of which 2700.0 nJ recharging the decoupling capacitors at power-up); "
        "ngspice 100.0 samples/s")
    res["power_gating"] = False
    assert flow.summary_lines(res)[2] == (
        "settling 0.25 us (worst step), power 4.5 mW avg / 5.5 mW peak, 3001.2 nJ per "
        "inference; ngspice 100.0 samples/s")


@pytest.mark.parametrize("ohms, label", [
    (1e6, "1M"), (2.49e6, "2.49M"), (999999.0, "1e+03k"), (4.99e5, "499k"), (1e3, "1k"),
    (1000.5, "1k"), (999.0, "999"), (12.4, "12.4"), (1.0, "1"), (0.5, "0.5")])
def test_resistor_labels_by_hand(ohms, label):
    assert flow._fmt_ohm(ohms) == label


@pytest.mark.parametrize("part", ["mcp6002", "opa2333", "tlv9062", "lm358", "ideal"])
def test_bom_by_hand(part):
    d = design(tiny_crystal(), opamp=part, supply_v=10.0 if part == "lm358" else None)
    values = [r for n in d.neurons for _, _, r in n.inputs] + [n.rf for n in d.neurons] + [
        n.bias[1] for n in d.neurons if n.bias is not None] + [d.r_inverter] * (2 * len(d.inverted))
    distinct = sorted(set(round(v, 3) for v in values))
    got = flow.bom(d)
    assert got["resistors"]["series"] == "E96" and got["resistors"]["total"] == len(values)
    assert got["resistors"]["distinct"] == len(distinct)
    assert [v["ohm"] for v in got["resistors"]["values"]] == distinct
    assert [v["count"] for v in got["resistors"]["values"]] == [
        sum(round(x, 3) == v for x in values) for v in distinct]
    assert [v["label"] for v in got["resistors"]["values"]] == [flow._fmt_ohm(v) for v in distinct]
    amps = len(d.neurons) + len(d.inverted)
    assert got["opamps"] == {"part": d.opamp.part, "amplifiers": amps,
                             "packages": None if part == "ideal" else (amps + 1) // 2,
                             "neurons": 4, "inverters": len(d.inverted)}
    assert got["diodes"] == {"part": "low-leakage small-signal diode (BAS116 class)",
                             "count": 2 * 2 + 1 * 2}  # two rectifiers, two clamps
    assert got["supplies"] == {"rails_v": [d.vee, d.vcc], "references_v": [-2.0, 2.0]}
    assert got["converters"] == {"dac_channels": 4, "adc_channels": 4, "adc_reference_v": 1.0}


def test_bom_merges_values_equal_to_a_milliohm():
    d = design(tiny_crystal())
    n0 = d.neurons[0]
    d.neurons[0] = dataclasses.replace(n0, inputs=[(k, inv, 1000.0004) for k, inv, _ in n0.inputs],
                                       rf=1000.0)
    got = {v["ohm"]: v["count"] for v in flow.bom(d)["resistors"]["values"]}
    assert got[1000.0] >= len(n0.inputs) + 1
    # below 100 ohm the E-series has fractions: 10.2 and 10.5 are two parts, not one
    d.neurons[0] = dataclasses.replace(n0, inputs=[(k, inv, 10.2) for k, inv, _ in n0.inputs],
                                       rf=10.5)
    got = {v["ohm"]: v["count"] for v in flow.bom(d)["resistors"]["values"]}
    assert got[10.2] == len(n0.inputs) and got[10.5] == 1


def test_bom_diodes_two_per_rectifier_one_per_clamp():
    d = design(tiny_crystal())
    assert sorted(n.stage for n in d.neurons) == ["clamp", "clamp", "rectifier", "rectifier"]
    d.neurons[:] = [dataclasses.replace(n, stage="rectifier") for n in d.neurons[:3]] + d.neurons[3:]
    assert flow.bom(d)["diodes"]["count"] == 3 * 2 + 1


def test_settling_edges_by_hand():
    t = np.arange(7.0)  # steps of 2: step 1 holds t = 2, 3; step 2 t = 4, 5
    outs = np.array([[0.0], [0.0], [1.1], [1.0], [2.0], [2.0], [2.0]])
    finals = np.array([[0.0], [1.0], [2.0]])
    # an error exactly at the band counts as settled (only > is outside): step 1 ends
    # 0.5 away from its final value with a band of 0.5
    exact = np.array([[0.0], [0.0], [1.0], [1.5], [2.0], [2.0], [2.0]])
    times, unsettled = flow.settling(t, exact, finals, 2.0, 0.5)
    assert unsettled == 0 and times.tolist() == [0.0, 0.0]
    # a band under the error: step 1 enters it halfway from t=2 (0.1) to t=3 (0)
    times, _ = flow.settling(t, outs, finals, 2.0, 0.05)
    assert times.tolist() == pytest.approx([0.5, 0.0])
    # an unsettled step does not end the scan: the step after it is still measured
    outs2 = np.array([[0.0], [0.0], [0.0], [0.0], [2.0], [2.0], [2.0]])
    times, unsettled = flow.settling(t, outs2, finals, 2.0, 0.1)
    assert unsettled == 1 and math.isnan(times[0]) and times[1] == 0.0


def test_settling_takes_the_last_exit_from_the_band():
    t = np.arange(6.0)  # one step of 3: t = 3, 4, 5
    outs = np.array([[0.0], [0.0], [0.0], [1.1], [2.0], [1.0]])  # in, out (error 1), in
    times, _ = flow.settling(t, outs, np.array([[0.0], [1.0]]), 3.0, 0.5)
    assert times[0] == pytest.approx(1.5)  # 1.0 -> 0.0 crosses 0.5 halfway: t = 4.5


def test_time_average_with_repeated_time_points():
    """ngspice repeats a time point at a breakpoint: the trapezoid weighs it zero."""
    y = np.array([4.0, 1.0, 3.0])
    assert flow._time_average(np.array([0.0, 0.0, 1.0]), y) == pytest.approx(2.0)  # (1+3)/2
    assert flow._time_average(np.array([0.0, 1.0, 1.0]), y) == pytest.approx(2.5)  # (4+1)/2
    assert flow._time_average(np.array([0.0, 0.0, 0.0]), y) == pytest.approx(8.0 / 3)  # no span


def test_time_average_by_hand():
    t = np.array([0.0, 1.0, 3.0])
    y = np.array([0.0, 2.0, 2.0])
    assert flow._time_average(t, y) == pytest.approx((1.0 + 4.0) / 3.0)  # trapezoids
    assert flow._time_average(np.array([0.0, 2.0]), np.array([1.0, 3.0])) == pytest.approx(2.0)
    assert flow._time_average(np.array([5.0]), np.array([7.0])) == 7.0  # one point: its value
    assert flow._time_average(np.array([1.0, 1.0]), np.array([2.0, 4.0])) == 3.0  # no span: mean


def test_supply_power_defaults_and_asymmetric_rails():
    t = np.array([0.0, 0.5, 1.0, 2.0])
    i_vcc = np.array([-1e-3, -1e-3, -2e-3, -2e-3])
    i_vee = np.array([1e-3, 1e-3, 1e-3, 1e-3])
    p = flow.supply_power(t, i_vcc, i_vee, 2.0, -3.0)  # no drivers, from t = 0
    rails = -(2.0 * i_vcc - 3.0 * i_vee)  # 5, 5, 7, 7 mW
    np.testing.assert_allclose(p.trace, rails)
    # trapezoids over 0..2 s: 0.5 x 5 + 0.5 x 6 + 1 x 7 = 12.5 mJ -> 6.25 mW
    assert p.average == pytest.approx(6.25e-3) and p.rails_average == p.average
    assert p.peak == pytest.approx(7e-3)
    assert flow.supply_power(t, i_vcc, i_vee, 2.0, -3.0, t_from=1.0).average == pytest.approx(7e-3)
    p = flow.supply_power(t, i_vcc, i_vee, 2.0, -3.0, drivers=[np.full(4, -1e-3)])
    np.testing.assert_allclose(p.trace, rails + 3.0 * 1e-3)  # drawn at the larger rail, |i|


def test_stage_progress_lines_and_a_second_run_in_the_same_folder(tmp_path):
    cfg = cfgmod.validate(
        {"seed": 4, "analog": {"transient_samples": 3, "step_us": 60.0, "monte_carlo_runs": 2,
                               "tolerances": [0.2]}}, "<t>")
    c = mixed_crystal()
    lines = []
    res = flow.run(c, cfg, Paths(tmp_path, "mixed"), lines.append)
    warned = []
    flow.prepare(c, cfg.analog, cfg.adc.bits, warned.append)  # the design's one clip warning
    assert len(warned) == 1 and warned[0].startswith("analog: warning: 1 weights need")
    assert lines == warned + [
        "analog: DC operating points of 12 test samples (4 neurons, Microchip MCP6002) ...",
        "analog: transient over 3 samples x 60 us ...",
        "analog: Monte Carlo, 2 boards x tolerances [0.2] ..."]
    # the boards come from the config's seed
    b = flow.prepare(c, cfg.analog, cfg.adc.bits)
    want = flow.monte_carlo(b, 4, tmp_path / "again")
    assert res["monte_carlo"]["by_tolerance"] == want["by_tolerance"]
    assert 0 < res["wall_seconds"] < 300
    again = flow.run(c, cfg, Paths(tmp_path, "mixed"))  # the folder exists: fine
    assert again["class_agreement_with_torch"] == res["class_agreement_with_torch"]


# ---- run_file's checks, with a stand-in for the ngspice process -------------------------------
def fake_ngspice(monkeypatch, raw: bytes | None = None, log: bytes | None = None,
                 fail: str | None = None):
    """Replace the ngspice process: write `raw` as its raw file and `log` as its log, or
    raise ToolFailed(`fail`); record the arguments it was given."""
    calls = []

    def run(tool, args, log=None, cwd=None, timeout=None, env=None):
        calls.append({"tool": tool, "args": args, "timeout": timeout})
        cwd = Path(cwd)
        if log_bytes is not None:
            Path(log).write_bytes(log_bytes)
        if fail is not None:
            raise ToolFailed(fail, Path(log), 1)
        if raw is not None:
            (cwd / args[2]).write_bytes(raw)

    log_bytes = log
    monkeypatch.setattr(spice.toolrun, "run", run)
    return calls


def test_run_file_passes_the_timeout_and_times_the_run(tmp_path, monkeypatch):
    import time as time_mod

    net = tmp_path / "n.cir"
    net.write_text("* stand-in\n")
    calls = fake_ngspice(monkeypatch, raw=raw_plot(["v(a)"], 1, binary_points([[2.0]])))
    t0 = time_mod.perf_counter()
    vec, seconds = spice.run_file(net, timeout=7.5)
    wall = time_mod.perf_counter() - t0
    assert calls == [{"tool": "ngspice", "args": ["-b", "-r", "n.raw", "n.cir"], "timeout": 7.5}]
    assert vec["a"].tolist() == [2.0] and 0 <= seconds <= wall


def test_run_file_failure_quotes_the_log_or_the_error(tmp_path, monkeypatch):
    net = tmp_path / "n.cir"
    net.write_text("* stand-in\n")
    # a log with bytes that are not UTF-8: read with replacement, its error lines quoted
    fake_ngspice(monkeypatch, log=b"ok line\n\xff\xfe Error: singular matrix\n", fail="exit 1")
    with pytest.raises(SpiceRunError) as e:
        spice.run_file(net)
    assert str(e.value) == (f"ngspice failed on {net}: \ufffd\ufffd Error: singular matrix; "
                            f"see {tmp_path / 'n.log'}")
    (tmp_path / "n.log").unlink()
    fake_ngspice(monkeypatch, fail="ngspice timed out after 5 s")  # no log written
    with pytest.raises(SpiceRunError) as e:
        spice.run_file(net)
    assert str(e.value) == (f"ngspice failed on {net}: ngspice timed out after 5 s; see "
                            f"{tmp_path / 'n.log'}")


def test_run_file_no_raw_no_data_short_transient(tmp_path, monkeypatch):
    net = tmp_path / "n.cir"
    net.write_text("* stand-in\n")
    fake_ngspice(monkeypatch)  # ran, wrote nothing
    with pytest.raises(SpiceRunError) as e:
        spice.run_file(net)
    assert str(e.value) == (f"ngspice ran {net} but wrote no raw file (no analysis in the "
                            f"netlist?); see {tmp_path / 'n.log'}")
    fake_ngspice(monkeypatch, raw=raw_plot(["v(a)", "v(b)"], 0, b""))  # a plot of no points
    with pytest.raises(SpiceRunError) as e:
        spice.run_file(net)
    assert str(e.value) == (f"ngspice returned no data for {net} (no convergence?); see "
                            f"{tmp_path / 'n.log'}")
    # a transient must reach t_stop, to within a millionth
    end = 2e-3 * (1 - 1e-6)
    fake_ngspice(monkeypatch, raw=raw_plot(["time", "v(a)"], 2,
                                           binary_points([[0.0, 1.0], [end, 1.0]])))
    vec, _ = spice.run_file(net, t_stop=2e-3)
    assert vec["time"][-1] == end
    fake_ngspice(monkeypatch, raw=raw_plot(["time", "v(a)"], 2,
                                           binary_points([[0.0, 1.0], [1e-3, 1.0]])))
    with pytest.raises(SpiceRunError, match=r"transient of .*n\.cir stopped before 0\.002 s"):
        spice.run_file(net, t_stop=2e-3)


def test_read_raw_names_the_file(tmp_path):
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"junk\n")
    with pytest.raises(SpiceRunError) as e:
        spice.read_raw(junk)
    assert str(e.value) == f"{junk}: not an ngspice raw file (unexpected header line b'junk')"
    blank = tmp_path / "blank.raw"
    blank.write_bytes(b"\n \n")
    with pytest.raises(SpiceRunError) as e:
        spice.read_raw(blank)
    assert str(e.value) == f"{blank}: raw file holds no analysis"


def test_netlist_text_by_hand():
    class Cir:
        def __str__(self):
            return ".title t\nR1 a 0 1k\n\n"

    names = [f"v(n{i})" for i in range(9)]
    text = flow.netlist_text(Cir(), ".op", "dc", names[:2], names)
    assert text == (".title t\nR1 a 0 1k\n.options noacct\n.op\n"
                    ".save " + " ".join(names[:8]) + "\n.save v(n8)\n"
                    ".print dc v(n0) v(n1)\n.end\n")
    assert flow.netlist_text(Cir(), ".op", "dc", [], []) == \
        ".title t\nR1 a 0 1k\n.options noacct\n.op\n.end\n"
