"""Analog core: E-series, design, golden netlist, ngspice against the exact model, errors.

Tolerances: ngspice with the ideal op-amp equals the numpy model of the snapped
resistors to 1e-4 V (solver precision); with the MCP6002 macro-model (A_OL 112 dB, no
offset) to 0.1 ADC LSB.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from crystalbench import adc as adc_mod
from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench import toolrun
from crystalbench.analog import eseries, flow, spice
from crystalbench.analog import netlist as nl
from crystalbench.analog.opamps import OPAMPS, spec_for

GOLDEN = Path(__file__).parent / "golden" / "tiny_core.cir"


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


def acfg(**changes):
    return cfgmod.validate({"analog": changes}, "<test>").analog


def design(c, **changes):
    a = acfg(**changes)
    return nl.design_core(c, a, adc_mod.adc_for(c, 8), spec_for(a.opamp))


def write_dc(d, x, path):
    cir = nl.build_circuit(d, x, slew=False)
    nodes = [f"v(h{n.layer + 1}_{n.index})" for n in d.neurons]
    cm.atomic_write_bytes(path, flow._netlist_text(cir, f".dc Vidx 0 {len(x) - 1} 1", "dc",
                                                   nodes).encode())
    return nodes


def core_volts(d, vec):
    """Neuron outputs as the ADC converts them (negatives -> 0: the clamp stages' ReLU)."""
    return np.maximum(np.stack([vec[f"h{n.layer + 1}_{n.index}"] for n in d.neurons], 1), 0.0)


def exact_volts(d, x):
    v = nl.realized_forward(d, x)
    return np.stack([v[n.layer][:, n.index] for n in d.neurons], 1)


def test_e_series_values():
    e96 = eseries.mantissas("E96")
    assert len(e96) == 96 and e96[0] == 1.0 and 9.76 in e96 and 4.99 in e96
    assert len(eseries.mantissas("E192")) == 192 and 9.2 in eseries.mantissas("E192")
    assert 4.7 in eseries.mantissas("E24") and 3.3 in eseries.mantissas("E24")
    table = eseries.values_in("E96", 1e3, 1e6)
    assert table[0] == 1e3 and table[-1] == 1e6
    np.testing.assert_array_equal(eseries.snap([1005.0, 1040.0, 2e6, 10.0], table),
                                  [1000.0, 1050.0, 1e6, 1e3])


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
    write_dc(d, x, tmp_path / "core.cir")
    vec, _ = spice.run_file(tmp_path / "core.cir", points=len(x))
    lsb = 1.0 / 255
    got = core_volts(d, vec)
    np.testing.assert_allclose(got, exact_volts(d, x), atol=0.1 * lsb)
    # and against torch x gain: resistor snapping (E96, ~1%) keeps it within a few LSB
    want = np.stack([c.reference.outputs[n.layer][:, n.index] * n.gain for n in d.neurons], 1)
    assert np.abs(got - want).max() < 6 * lsb


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
    cm.atomic_write_bytes(p, flow._netlist_text(cir, f".tran 0.1u {3 * step:g} 0 0.2u", "tran",
                                                []).encode())
    vec, _ = spice.run_file(p, t_stop=3 * step)
    end = np.searchsorted(vec["time"], np.arange(1, 4) * step - 1e-6)
    got = core_volts(d, vec)[end]
    np.testing.assert_allclose(got, exact_volts(d, x), atol=0.5 / 255)
    assert vec["i(vcc)"].max() < 0  # the supply delivers current


def test_out_of_range_weights_clipped_or_refused():
    c = tiny_crystal()
    d = design(c, r_min=1e4, r_max=3e4)
    assert sum(v for k, v in d.clipped.items() if k != "worst") > 0
    with pytest.raises(nl.AnalogError, match=r"analog\.out_of_range is 'refuse'.*r_min"):
        design(c, r_min=1e4, r_max=3e4, out_of_range="refuse")


def test_headroom_refused_with_the_key_to_change():
    c = tiny_crystal()
    a = acfg(opamp="lm358", supply_v=5.0)
    d = nl.design_core(c, a, adc_mod.adc_for(c, 8), spec_for("lm358"))
    with pytest.raises(nl.AnalogError, match=r"analog\.supply_v|does not fit"):
        flow.check_headroom(d, a)


def test_failed_run_names_the_netlist(tmp_path):
    bad = tmp_path / "broken.cir"
    bad.write_text(".title broken\nV1 a 0 1\nR1 a b 1k\nXnope b 0 no_such_subckt\n.op\n.end\n")
    with pytest.raises(spice.SpiceRunError, match="broken.cir"):
        spice.run_file(bad)


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


def test_flow_writes_result(tmp_path):
    c = tiny_crystal()
    a = acfg(transient_samples=3, step_us=60.0, monte_carlo_runs=3)
    res = flow.run(c, a, tmp_path, progress=lambda *_: None)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    for key in ("opamp", "e_series", "neurons", "resistors", "opamps",
                "class_agreement_with_torch", "rms_error_lsb", "max_error_lsb",
                "settling_time_us", "power_mw", "energy_per_inference_nj",
                "samples_per_second", "monte_carlo", "method"):
        assert key in on_disk, key
    assert on_disk["monte_carlo"]["runs"] == 3 and 0 <= on_disk["monte_carlo"]["yield"] <= 1
    assert res["neurons"] == 4 and res["power_mw"] > 0 and res["settling_time_us"] > 0
    per = on_disk["per_neuron_error"]
    assert len(per) == 4 and max(p["max_lsb"] for p in per) == pytest.approx(on_disk["max_error_lsb"])
    for f in ("core.cir", "core_tran.cir", "bom.json", "transient.png", "error_histogram.png"):
        assert (tmp_path / f).exists(), f
    bom = json.loads((tmp_path / "bom.json").read_text())
    assert bom["resistors"]["total"] == res["resistors"]
    assert bom["opamps"]["amplifiers"] == res["opamps"]


def test_cli_names_the_missing_crystal(tmp_path, capsys):
    from crystalbench import cli

    code = cli.main(["--build-dir", str(tmp_path), "sim-analog", "--config",
                     str(Path(__file__).parents[1] / "configs" / "digits.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert "crystal" in err and "crystalbench train" in err
