"""Manufacture: the analog core as an orderable board (KiCad netlist, ERC, BOM, cost) and
the round trip (netlist read back -> SPICE -> ngspice) against the design run directly.

Counts, designators, nets, part numbers, courtyards and cost are computed by hand here
from the Crystal's weights and the tables the module cites. Tolerances: the round trip
agrees with the direct ngspice run within 0.01 ADC LSB on every core output (the issue's
bar; the two decks differ only in element order and flattened subcircuits, so ngspice
lands within solver precision); the saved inverting amplifier (gain -2, MCP6002
macro-model, A_OL 112 dB) matches -2 x within 1e-4 V (gain error ~3 / 4e5).
"""

import csv
import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench.analog import eseries, flow, spice
from crystalbench.analog import manufacture as mf
from crystalbench.cli import main
from crystalbench.errors import AnalogError, CrystalbenchError
from crystalbench.results import Paths, read_json
from crystalbench.sim import sweep

from .hw_tiny import tiny_crystal
from .test_analog import tiny_crystal as two_layer_crystal

DATA = Path(__file__).parent / "data"
SAVED = DATA / "kicad_inverting_amp.net"  # written by kicad_netlist (skidl 3.0.0)
ROOT = Path(__file__).resolve().parents[1]


def cfg(**analog):
    return cfgmod.validate({"experiment": "tiny", "analog": analog}, "<test>")


def bench(c, **analog):
    return flow.prepare(c, cfg(**analog).analog, 8)


def refs(board, kind):
    return [c.ref for c in board.of_kind(kind)]


# ---- values and part numbers ----------------------------------------------------------------
def test_yageo_value_codes_by_hand():
    assert mf.yageo_value(49.9) == "49R9"
    assert mf.yageo_value(100.0) == "100R"
    assert mf.yageo_value(1000.0) == "1K"
    assert mf.yageo_value(1020.0) == "1K02"
    assert mf.yageo_value(4990.0) == "4K99"
    assert mf.yageo_value(10e3) == "10K"
    assert mf.yageo_value(976e3) == "976K"
    assert mf.yageo_value(1e6) == "1M"
    assert mf.yageo_value(1.5e6) == "1M5"


def test_resistor_part_numbers_per_tolerance():
    assert mf.resistor_mpn(4990.0, 0.01) == ("RC0603FR-07<value>L", "RC0603FR-074K99L")
    assert mf.resistor_mpn(10e3, 0.05) == ("RC0603JR-07<value>L", "RC0603JR-0710KL")
    assert mf.resistor_mpn(10e3, 0.02)[1] == "RC0603GR-0710KL"
    assert mf.resistor_mpn(10e3, 0.005)[1] == "RT0603DRD0710KL"  # thin film below 1%
    assert mf.resistor_mpn(1e6, 0.001)[1] == "RT0603BRD071ML"
    with pytest.raises(mf.ManufactureError, match=r"^analog\.tolerances\[0\] = 0\.03 is not an "
                       r"orderable resistor tolerance; use one of 0\.05, 0\.02, 0\.01, 0\.005, "
                       r"0\.001$"):
        mf.resistor_mpn(10e3, 0.03)


def test_values_read_back_exactly():
    assert mf.ohm_label(4990.0) == "4.99k"
    assert mf.ohm_label(1e6) == "1M"
    assert mf.ohm_label(499.0) == "499"
    assert mf.parse_value("100n") == pytest.approx(100e-9, rel=1e-12)
    assert mf.parse_value("1M") == 1e6  # mega, as in KiCad, never SPICE's milli
    assert mf.parse_value("2.5") == 2.5
    for series in ("E24", "E96", "E192"):
        for v in eseries.values_in(series, 10.0, 10e6):
            assert mf.parse_value(mf.ohm_label(float(v))) == pytest.approx(float(v), rel=1e-12)
    with pytest.raises(mf.ManufactureError, match=r"^R7: '4\.99x' is not a component value"):
        mf.parse_value("4.99x", "R7")
    assert issubclass(mf.ManufactureError, AnalogError)


def test_courtyards_as_kicad_draws_them():
    # F.CrtYd of KiCad's footprint files: 0603 +-1.48 x +-0.73, SOIC-8 +-3.7 x +-2.7,
    # SOD-323 +-1.6 x +-0.95; PinHeader_1x05 x -1.8..1.8, y -1.8..11.95; PinHeader_2x07
    # x -1.8..4.35, y -1.8..17.05; PinHeader_2x08 y -1.8..19.55.
    assert mf.courtyard_mm2(mf.RESISTOR_FP) == pytest.approx(2.96 * 1.46)
    assert mf.courtyard_mm2(mf.CAP_FP) == pytest.approx(2.96 * 1.46)
    assert mf.courtyard_mm2(mf.SOIC8) == pytest.approx(7.4 * 5.4)
    assert mf.courtyard_mm2(mf.DIODE_FP) == pytest.approx(3.2 * 1.9)
    assert mf.courtyard_mm2(mf.header_footprint(1, 5)) == pytest.approx(3.6 * 13.75)
    assert mf.courtyard_mm2(mf.header_footprint(2, 7)) == pytest.approx(6.15 * 18.85)
    assert mf.courtyard_mm2(mf.header_footprint(2, 8)) == pytest.approx(6.15 * 21.35)
    with pytest.raises(mf.ManufactureError, match="no courtyard size .* add it there"):
        mf.courtyard_mm2("Package_QFP:LQFP-48")


# ---- the board ----------------------------------------------------------------------------------
def _by_hand(c):
    """Counts of the tiny crystal's board from its weights: one neuron a summer, a positive
    weight reads an inverted copy (one inverter per such input), resistors = connections +
    biases + feedback + 2 per inverter."""
    layer = c.layers[0]
    w = layer.weights * layer.mask
    inverted = int((w > 0).any(0).sum())
    n = w.shape[0]
    resistors = int((w != 0).sum()) + int((layer.bias != 0).sum()) + n + 2 * inverted
    dac = int((w != 0).any(0).sum())
    return {"neurons": n, "inverted": inverted, "resistors": resistors, "dac": dac}


def test_designators_and_counts_by_hand():
    c = tiny_crystal()
    d = bench(c).design
    hand = _by_hand(c)
    assert hand == {"neurons": 4, "inverted": 6, "resistors": 37, "dac": 7}
    board = mf.board_for(d, 0.01)
    assert refs(board, "R") == [f"R{i}" for i in range(1, 38)]
    channels = hand["neurons"] + hand["inverted"]  # 10: five duals, none spare
    assert refs(board, "U") == ["U1", "U2", "U3", "U4", "U5"]
    assert refs(board, "C") == ["C1", "C2", "C3", "C4", "C5"]
    assert refs(board, "D") == ["D1", "D2", "D3", "D4"]  # one clamp diode per neuron
    assert refs(board, "J") == ["J1", "J2", "J3"]  # power, 7 DAC inputs, 4 ADC outputs
    assert len(board.channels) == channels and board.spare_channels == 0
    j = {x.ref: x for x in board.of_kind("J")}
    assert j["J1"].pins == {1: "vcc", 2: "GND", 3: "vee", 4: "vrefp", 5: "vrefn"}
    assert j["J2"].value == "DAC_IN" and j["J2"].footprint.endswith("PinHeader_2x07_P2.54mm_Vertical")
    dac_inputs = [k for k in range(8) if (c.layers[0].weights[:, k] != 0).any()]
    assert [j["J2"].pins[2 * i + 1] for i in range(7)] == [f"x{k}" for k in dac_inputs]
    assert all(j["J2"].pins[2 * i + 2] == "GND" for i in range(7))
    assert [j["J3"].pins[p] for p in (1, 3, 5, 7)] == ["h1_0", "h1_1", "h1_2", "h1_3"]
    # R1: neuron 0's first connection; a negative weight reads x directly, a positive one
    # its inverted copy nx; to the sum node s1_0
    k0 = int(np.flatnonzero(c.layers[0].weights[0])[0])
    w0 = float(c.layers[0].weights[0, k0])
    r1 = board.comps[0]
    assert r1.pins == {1: ("nx" if w0 > 0 else "x") + str(k0), 2: "s1_0"}
    assert r1.fields["MPN"] == "RC0603FR-07" + mf.yageo_value(mf.parse_value(r1.value)) + "L"
    assert r1.fields["Tolerance"] == "1%" and r1.footprint == "Resistor_SMD:R_0603_1608Metric"


def test_duals_packed_two_per_package_odd_count():
    c = tiny_crystal(seed=3)
    hand = _by_hand(c)
    assert hand["neurons"] + hand["inverted"] == 11
    d = bench(c).design
    board = mf.board_for(d, 0.01)
    assert refs(board, "U") == [f"U{i}" for i in range(1, 7)]  # ceil(11 / 2)
    assert board.spare_channels == 1
    assert [(r, u) for r, u, _ in board.channels] == [(f"U{p}", u) for p in range(1, 7)
                                                      for u in "AB"]
    assert board.channels[-1][2].startswith("spare")
    # channel A of U1 is neuron 1_0: + to ground, - the sum node, output its ADC net
    u = {x.ref: x for x in board.of_kind("U")}
    assert (u["U1"].pins[3], u["U1"].pins[2], u["U1"].pins[1]) == ("GND", "s1_0", "h1_0")
    # the spare B channel of U6: a follower of ground (5 = GND, 6 tied to 7)
    assert u["U6"].pins[5] == "GND" and u["U6"].pins[6] == u["U6"].pins[7] == "spare_U6B"
    # channel A of U6 is the last inverter (channel 11): - its own sum, output the copy
    li, k = d.inverted[-1]
    src = d.source_node(li, k, False)
    assert (u["U6"].pins[2], u["U6"].pins[1]) == (f"si_{src}", "n" + src)


def test_one_decoupling_capacitor_per_package():
    board = mf.board_for(bench(tiny_crystal(seed=3)).design, 0.01)
    caps, amps = board.of_kind("C"), board.of_kind("U")
    assert len(caps) == len(amps) == 6
    for cap in caps:
        assert cap.pins == {1: "vcc", 2: "vee"} and cap.value == "100n"
        assert cap.footprint == "Capacitor_SMD:C_0603_1608Metric"
    for amp in amps:
        assert amp.pins[8] == "vcc" and amp.pins[4] == "vee"
        assert amp.fields["MPN"] == "MCP6002T-I/SN"
        assert amp.footprint == "Package_SO:SOIC-8_3.9x4.9mm_P1.27mm"


def test_rectifier_diodes_and_references_only_where_used():
    # layer-2 core neuron 0 reads layer-1 neurons 0 and 1 (mask row [1, 1, 0]): those two
    # get precision rectifiers (two diodes), neurons 1_2 and 2_0 clamps (one)
    c = two_layer_crystal()
    d = bench(c).design
    board = mf.board_for(d, 0.01)
    assert [nr.stage for nr in d.neurons] == ["rectifier", "rectifier", "clamp", "clamp"]
    diodes = board.of_kind("D")
    assert len(diodes) == 2 * 2 + 2
    # neuron 1_0: clamp diode sum -> op-amp output a, output diode a -> h (anode pin 2)
    assert diodes[0].pins == {2: "s1_0", 1: "a1_0"}
    assert diodes[1].pins == {2: "a1_0", 1: "h1_0"}
    assert diodes[-1].pins == {2: "s2_0", 1: "h2_0"}
    signs = {nr.bias[0] for nr in d.neurons if nr.bias is not None}
    power = board.of_kind("J")[0].pins
    assert ("vrefp" in power.values()) == (True in signs)
    assert ("vrefn" in power.values()) == (False in signs)


def test_ideal_opamp_is_refused():
    d = bench(tiny_crystal(), opamp="ideal").design
    with pytest.raises(mf.ManufactureError, match=r"^analog\.opamp 'ideal' is not a part one "
                       r"can order; set analog\.opamp to one of mcp6002, opa2333, tlv9062, "
                       r"lm358 \(e\.g\. --set analog\.opamp=mcp6002\)$"):
        mf.board_for(d, 0.01)
    # a modelled part the sweep grid uses, without an orderable dual with a checked pinout
    d = bench(tiny_crystal(), opamp="opa835").design
    with pytest.raises(mf.ManufactureError, match=r"^analog\.opamp 'opa835' is not a part one "
                       r"can order \(it is modelled, but analog/manufacture\.py OPAMP_PARTS has "
                       r"no orderable dual package with a checked pinout for it\); set "):
        mf.board_for(d, 0.01)


# ---- KiCad netlist and ERC ----------------------------------------------------------------------
def test_kicad_netlist_holds_the_board_and_passes_erc():
    board = mf.board_for(bench(tiny_crystal(seed=3)).design, 0.01)
    text, erc = mf.kicad_netlist(board)
    assert erc.passed and erc.errors == [] and erc.warnings == []
    p = mf.parse_netlist(text)
    assert set(p.comps) == {x.ref for x in board.comps}
    for comp in board.comps:
        assert p.pins_of(comp.ref) == comp.pins, comp.ref
        assert p.comps[comp.ref]["value"] == comp.value
        assert p.comps[comp.ref]["footprint"] == comp.footprint
        for name, value in comp.fields.items():
            assert p.comps[comp.ref]["fields"][name] == value


def test_erc_finds_conflicts_and_lonely_pins():
    board = mf.board_for(bench(tiny_crystal()).design, 0.01)
    amp = board.of_kind("U")[0]
    amp.pins[7] = amp.pins[1]  # two op-amp outputs on one net
    board.comps[0].pins[1] = "lonely"
    _, erc = mf.kicad_netlist(board)
    assert not erc.passed
    assert len(erc.errors) == 1 and "OUTPUT connected to OUTPUT" in erc.errors[0]
    assert erc.warnings == ["Only one pin (PASSIVE pin 1/~ of R/R1) attached to net lonely."]


# ---- reading a saved netlist back --------------------------------------------------------------
def test_parser_reads_a_saved_kicad_netlist():
    p = mf.parse_netlist(SAVED.read_text(), str(SAVED))
    assert sorted(p.comps) == ["C1", "J1", "J2", "J3", "R1", "R2", "U1"]
    assert p.comps["R2"]["value"] == "20k"
    assert p.comps["R1"]["fields"]["MPN"] == "RC0603FR-0710KL"
    assert p.comps["U1"]["footprint"] == "Package_SO:SOIC-8_3.9x4.9mm_P1.27mm"
    assert p.comps["U1"]["fields"]["Model"] == "mcp6002"
    assert p.comps["U1"]["part"] == "MCP6002T-I/SN"
    assert p.nets["s1_0"] == [("R1", 2), ("R2", 2), ("U1", 2)]
    assert p.nets["GND"] == [("J1", 2), ("J2", 2), ("J3", 2), ("U1", 3), ("U1", 5)]
    assert p.nets["spare_U1B"] == [("U1", 6), ("U1", 7)]
    assert sorted(p.nets) == ["GND", "h1_0", "s1_0", "spare_U1B", "vcc", "vee", "x0"]
    assert p.pins_of("U1") == {1: "h1_0", 2: "s1_0", 3: "GND", 4: "vee", 5: "GND",
                               6: "spare_U1B", 7: "spare_U1B", 8: "vcc"}


def test_saved_netlist_simulates_as_an_inverting_amplifier(tmp_path):
    p = mf.parse_netlist(SAVED.read_text(), str(SAVED))
    x = np.array([[-0.1], [-0.25], [-0.5]])
    cir, outputs = mf.spice_circuit(p, x, 1.0, (-2.5, 2.5), 2.0, str(SAVED))
    assert outputs == ["h1_0"]
    deck = tmp_path / "amp.cir"
    deck.write_text(mf.spice_text(cir, outputs, len(x)))
    vec, _ = spice.run_file(deck, points=3)
    np.testing.assert_allclose(vec["h1_0"], [0.2, 0.5, 1.0], atol=1e-4)  # -20k/10k * x


def test_parser_refuses_what_is_not_a_netlist():
    with pytest.raises(mf.ManufactureError, match=r"^f\.net: not a KiCad netlist"):
        mf.parse_netlist("(kicad_pcb (version 1))", "f.net")
    text = SAVED.read_text()
    with pytest.raises(mf.ManufactureError, match=r"^f\.net: the netlist ends inside an "
                       r"expression \(cut short\?\); regenerate it"):
        mf.parse_netlist(text[: len(text) // 2], "f.net")
    with pytest.raises(mf.ManufactureError, match=r"unbalanced '\)'"):
        mf.parse_netlist(text + ")", "f.net")
    with pytest.raises(mf.ManufactureError, match=r"^f\.net: net 's1_0' names component 'R9'"):
        mf.parse_netlist(text.replace('(ref "R1")\n        (pin "2")',
                                      '(ref "R9")\n        (pin "2")'), "f.net")
    with pytest.raises(mf.ManufactureError, match="without a components or nets section"):
        mf.parse_netlist("(export (version D))", "f.net")


def test_round_trip_refuses_unknown_parts():
    p = mf.parse_netlist(SAVED.read_text(), str(SAVED))
    p.comps["U1"]["fields"]["MPN"] = "NE5532DR"
    x = np.zeros((2, 1))
    with pytest.raises(mf.ManufactureError, match=r"^f\.net: op-amps \['None'\] are not one "
                       r"modelled part"):
        mf.spice_circuit(p, x, 1.0, (-2.5, 2.5), 2.0, "f.net")
    p = mf.parse_netlist(SAVED.read_text(), str(SAVED))
    p.nets["x3"] = p.nets.pop("x0")
    with pytest.raises(mf.ManufactureError, match=r"^f\.net: J2: DAC pin on net 'x3', which "
                       r"names no input x0\.\.x0$"):
        mf.spice_circuit(p, x, 1.0, (-2.5, 2.5), 2.0, "f.net")
    p = mf.parse_netlist(SAVED.read_text(), str(SAVED))
    p.nets["h1_0"].remove(("R2", 1))
    p._pins.clear()
    with pytest.raises(mf.ManufactureError, match=r"^f\.net: R2: pin 1 is on no net"):
        mf.spice_circuit(p, x, 1.0, (-2.5, 2.5), 2.0, "f.net")


# ---- prices ----------------------------------------------------------------------------------------
def _parsed(parts):
    """A parsed netlist of bare parts: {ref: (value, footprint, fields)}."""
    return mf.Parsed(comps={ref: {"value": v, "footprint": fp, "fields": f, "part": ""}
                            for ref, (v, fp, f) in parts.items()}, nets={})


def _amps(n, key, mpn):
    return {f"U{i + 1}": (mpn, mf.SOIC8, {"MPN": mpn, "Model": key}) for i in range(n)}


@pytest.mark.parametrize("n, unit", [(49, 0.2989), (50, 0.2372), (149, 0.2372), (150, 0.207)])
def test_opamp_line_priced_at_the_tier_of_its_quantity(n, unit):
    # C7377 MCP6002T-I/SN in the 2026-07-24 snapshot: 1-49 0.2989, 50-149 0.2372, 150-499 0.207
    (row,) = mf.bom_rows(_parsed(_amps(n, "mcp6002", "MCP6002T-I/SN")))
    assert row["quantity"] == n and row["unit_usd"] == pytest.approx(unit)
    assert row["line_usd"] == pytest.approx(n * unit)
    assert row["price_status"] == "exact" and row["price_date"] == "2026-07-24"
    tier = {0.2989: 1, 0.2372: 50, 0.207: 150}[unit]
    assert row["price_basis"].startswith(f"cited (the BOM's part): LCSC C7377 Microchip "
                                         f"MCP6002T-I/SN, {unit:g} USD/unit at the {tier}+ tier, "
                                         "JLCPCB/LCSC Basic+Preferred catalogue scraped 2026-07-24")
    assert "bandrews/whichpart" in row["price_basis"]


def test_assumed_and_cited_lines_say_which_they_are():
    parts = _amps(2, "opa2333", "OPA2333AIDR")
    r1, _ = mf.resistor_mpn(10e3, 0.01)
    r5, _ = mf.resistor_mpn(10e3, 0.05)
    parts |= {"R1": ("10k", mf.RESISTOR_FP, {"MPN": r1.replace("<value>", "10K")}),
              "R2": ("10k", mf.RESISTOR_FP, {"MPN": r5.replace("<value>", "10K")}),
              "D1": ("BAS416", mf.DIODE_FP, {"MPN": mf.DIODE_MPN})}
    rows = {r["price_key"]: r for r in mf.bom_rows(_parsed(parts))}
    amp = rows["opamp:opa2333"]
    assert (amp["price_status"], amp["price_date"]) == ("assumed", "2026-11-27")
    assert amp["price_basis"].startswith("assumed: no stored catalogue record")
    assert amp["line_usd"] == pytest.approx(2 * 2.50)
    one = rows["resistor_thick_film_0603_1pct"]
    assert (one["price_status"], one["unit_usd"]) == ("equivalent", 0.0076)
    assert "C25804 UNI-ROYAL 0603WAF1002T5E" in one["price_basis"]
    assert rows["resistor_thick_film_0603"]["price_status"] == "assumed"  # 5%: not in it
    diode = rows["diode_sod323"]
    assert diode["price_status"] == "proxy" and "not the BOM's low-leakage BAS416" in \
        diode["price_basis"]
    cost = mf.cost_summary(list(rows.values()))
    assert cost["by_status"] == {"exact": 0, "equivalent": 1, "proxy": 1, "assumed": 2}
    assert cost["total_usd"] == pytest.approx(2 * 2.50 + 0.0076 + 0.01 + 0.0132)
    assert cost["basis"] == "cited prices (2026-07-24) on 2 of 4 lines; 2 of 4 lines assumed " \
        "(5.01 USD)"
    everything_assumed = mf.cost_summary([amp])
    assert everything_assumed["basis"] == "1 of 1 lines assumed (5.00 USD)"


# ---- the stage ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mf")
    c = tiny_crystal(seed=3)
    res = mf.run(c, cfg(), Paths(root, "tiny"))
    return c, res, root


def test_stage_bom_matches_the_netlist_and_costs_by_hand(tiny_run):
    c, res, root = tiny_run
    hand = _by_hand(c)
    assert hand == {"neurons": 4, "inverted": 7, "resistors": 46, "dac": 8}
    comps = res["components"]
    assert comps == {"total": 46 + 6 + 4 + 6 + 3, "resistors": 46, "capacitors": 6, "diodes": 4,
                     "opamps": 6, "connectors": 3}
    p = mf.parse_netlist(Path(res["files"]["netlist"]).read_text())
    with open(res["files"]["bom"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(int(r["quantity"]) for r in rows) == len(p.comps) == comps["total"]
    assert sorted(ref for r in rows for ref in r["references"].split()) == sorted(p.comps)
    # J1 5 pins (biases of both signs: both references), J2 2x08, J3 2x04
    assert (c.layers[0].bias > 0).any() and (c.layers[0].bias < 0).any()
    pins = 5 + 16 + 8
    # one board, each line at the tier of its quantity, prices as the 2026-07-24 JLCPCB/LCSC
    # snapshot lists them (bandrews/whichpart raw-data, 1+ tier for all: no line reaches the
    # next): C25804 10k 0603 1% 0.0076, C14663 100 nF 0.0241, C2128 1N4148WS 0.0132, C7377
    # MCP6002T-I/SN 0.2989 (1-49; 6 packages); headers assumed at 0.02 per pin
    cost = 46 * 0.0076 + 6 * 0.0241 + 4 * 0.0132 + 6 * 0.2989 + pins * 0.02
    assert res["cost"]["total_usd"] == pytest.approx(cost, abs=1e-9)
    assert sum(float(r["line_usd"]) for r in rows) == pytest.approx(cost, abs=1e-9)
    for r in rows:
        assert float(r["line_usd"]) == pytest.approx(int(r["quantity"]) * float(r["unit_usd"]))
    status = {r["price_key"]: (r["price_status"], r["price_date"]) for r in rows}
    assert status == {"resistor_thick_film_0603_1pct": ("equivalent", "2026-07-24"),
                      "capacitor_0603_x7r": ("exact", "2026-07-24"),
                      "diode_sod323": ("proxy", "2026-07-24"),
                      "opamp:mcp6002": ("exact", "2026-07-24"),
                      "header_pin": ("assumed", "2026-11-27")}
    n = len(rows)
    assert res["cost"]["lines_assumed"] == 3  # the three headers
    assert res["cost"]["assumed_usd"] == pytest.approx(pins * 0.02)
    assert res["cost"]["basis"] == (f"cited prices (2026-07-24) on {n - 3} of {n} lines; "
                                    f"3 of {n} lines assumed ({pins * 0.02:.2f} USD)")
    amp = next(r for r in rows if r["references"].startswith("U1"))
    assert (amp["mpn"], amp["quantity"], amp["manufacturer"]) == ("MCP6002T-I/SN", "6", "Microchip")
    # headers: 1x05 3.6 x 13.75, 2x08 6.15 x 21.35, 2x04 6.15 x (1.8 + 9.40)
    courtyard = (46 + 6) * 2.96 * 1.46 + 4 * 3.2 * 1.9 + 6 * 7.4 * 5.4 + 3.6 * 13.75 + \
        6.15 * 21.35 + 6.15 * 11.2
    assert res["board_area"]["courtyard_mm2"] == pytest.approx(courtyard)
    assert res["board_area"]["estimated_mm2"] == pytest.approx(2 * courtyard)
    assert res["packages"] == {"opamp_packages": 6, "channels": 12, "channels_used": 11,
                               "spare_channels": 1, "decoupling_capacitors": 6,
                               "package": "SOIC-8"}
    assert res["erc"]["passed"] and res["erc"]["errors"] == 0 and res["erc"]["warnings"] == 0
    assert read_json(Path(res["result_file"]))["passed"] is True
    # power gating off here; the decoupling a gated board would charge per power-up:
    # 6 x 100 nF x (5 V, the MCP6002's default supply)^2
    assert res["power_gating"]["on"] is False
    assert res["power_gating"]["decoupling_j_per_power_up"] == pytest.approx(6 * 100e-9 * 25)


def test_stage_round_trip_equals_the_direct_run(tiny_run):
    c, res, root = tiny_run
    rt = res["round_trip"]
    assert rt["passed"] and rt["class_agreement"] == 1.0 and rt["samples"] == 10
    assert rt["max_diff_lsb"] <= 0.01
    # independently of the stage's comparison: run both decks again and compare every
    # core output, in LSB of the 8-bit ADC at adc_ref_v 1 V
    v_rt, _ = spice.run_file(res["files"]["spice_round_trip"], points=10)
    v_d, _ = spice.run_file(res["files"]["spice_direct"], points=10)
    for j in range(4):
        diff = np.abs(np.maximum(v_rt[f"h1_{j}"], 0) - np.maximum(v_d[f"h1_{j}"], 0))
        assert diff.max() * 255 / 1.0 <= 0.01
        assert np.ptp(v_d[f"h1_{j}"]) > 0  # outputs that move: the comparison means something
    # the direct deck is the one sim-analog writes for the same design
    b = bench(c)
    nets = flow.write_netlists(b, root)
    assert Path(res["files"]["spice_direct"]).read_text() == nets.dc.read_text()


def test_round_trip_that_differs_fails_the_stage(tiny_run):
    c, _, _ = tiny_run
    b = bench(c)
    v = [np.zeros((10, 4))]
    v[0][:, 0] = 1.0
    w = [v[0].copy()]
    w[0][3, 0] += 0.02 / 255  # 0.02 LSB on one output of one sample
    out = mf.compare(b, w, v)
    assert out["max_diff_lsb"] == pytest.approx(0.02)
    assert out["class_agreement"] == 1.0
    board = mf.board_for(b.design, 0.01)
    text, erc = mf.kicad_netlist(board)
    parsed = mf.parse_netlist(text)
    rows = mf.bom_rows(parsed)
    assert mf.report(b, board, parsed, rows, erc, dict(out), {})["passed"] is False
    ok = mf.compare(b, v, v)
    assert mf.report(b, board, parsed, rows, erc, dict(ok), {})["passed"] is True
    at_bar = dict(ok, max_diff_lsb=0.01)
    assert mf.report(b, board, parsed, rows, erc, at_bar, {})["passed"] is True
    bad_erc = mf.Erc(errors=["Pin conflict"], warnings=[])
    res = mf.report(b, board, parsed, rows, bad_erc, dict(ok), {})
    assert res["passed"] is False and res["erc"]["errors"] == 1
    assert mf.report(b, board, parsed, rows, erc, dict(ok, class_agreement=0.9), {})[
        "passed"] is False


def test_cli_manufacture_on_a_crystal_folder(tmp_path, capsys):
    c = tiny_crystal()
    cm.save(c, tmp_path / "crystal")
    code = main(["--build-dir", str(tmp_path / "build"), "manufacture", "--config",
                 str(ROOT / "configs" / "digits.yaml"), "--crystal", str(tmp_path / "crystal")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"^54 parts: 37 resistors, 5 x MCP6002T-I/SN \(10 channels, 0 spare\)", out,
                     re.M)
    assert (tmp_path / "build" / "tiny" / "manufacture" / "core.net").exists()
    code = main(["--build-dir", str(tmp_path / "build"), "manufacture", "--config",
                 str(ROOT / "configs" / "digits.yaml"), "--crystal", str(tmp_path / "crystal"),
                 "--set", "analog.opamp=ideal"])
    err = capsys.readouterr().err
    assert code == 2 and "analog.opamp 'ideal' is not a part one can order" in err
    assert math.isfinite(read_json(tmp_path / "build" / "tiny" / "manufacture" /
                                   "result.json")["round_trip"]["max_diff_lsb"])
    assert isinstance(mf.ManufactureError("x"), CrystalbenchError)


def test_sweep_report_command_builds_the_swept_point(tmp_path, capsys):
    """The line the sweep's report.md prints for its best hybrid, run as written (CONFIG
    filled in): the board is the swept design (same analog section), and a point whose
    op-amp cannot be ordered says so in the report and is refused by the command."""
    grid = sweep.load_grid(ROOT / "configs" / "grids" / "digits.yaml")
    point = next(p for p in grid if p.get("analog.opamp") == "mcp6002"
                 and p.get("analog.supply_v") == 3.0 and p.get("analog.power_gating"))
    row = {"overrides": json.dumps(point, sort_keys=True), "opamp": "mcp6002"}
    lines = sweep._manufacture_line(row)
    (cmd,) = [ln.strip() for ln in lines if ln.strip().startswith("crystalbench manufacture")]
    assert not any("no orderable dual" in ln for ln in lines)
    c = tiny_crystal()
    cm.save(c, tmp_path / "crystal")
    args = shlex.split(cmd.replace("CONFIG", str(ROOT / "configs" / "digits.yaml")))[1:]
    assert main(["--build-dir", str(tmp_path / "b")] + args +
                ["--crystal", str(tmp_path / "crystal")]) == 0, capsys.readouterr()
    res = read_json(tmp_path / "b" / "tiny" / "manufacture" / "result.json")
    want = cfgmod.load(ROOT / "configs" / "digits.yaml", sweep.set_args(point)).analog
    assert res["config"]["analog"] == dict(want)  # the sweep's point: digits.yaml + overrides
    assert want.supply_v == 3.0 and want.adc_ref_v == 0.5 and want.power_gating is True
    assert res["passed"] and res["power_gating"]["on"] is True
    # 3 V across the rails: decoupling charge per power-up, n packages x 100 nF x 9 V^2
    assert res["power_gating"]["decoupling_j_per_power_up"] == pytest.approx(
        res["packages"]["opamp_packages"] * 100e-9 * 9.0)
    row = {"overrides": json.dumps(dict(point, **{"analog.opamp": "opa835"})), "opamp": "opa835"}
    lines = sweep._manufacture_line(row)
    assert any("`opa835` has no orderable dual" in ln for ln in lines)
    (cmd,) = [ln.strip() for ln in lines if ln.strip().startswith("crystalbench manufacture")]
    args = shlex.split(cmd.replace("CONFIG", str(ROOT / "configs" / "digits.yaml")))[1:]
    assert main(["--build-dir", str(tmp_path / "b")] + args +
                ["--crystal", str(tmp_path / "crystal")]) == 2
    assert "'opa835' is not a part one can order" in capsys.readouterr().err


def test_difference_summers_on_the_board_round_trip(tmp_path):
    # relu_stage 'difference': one op-amp per neuron (no inverters), no diodes; each
    # channel's non-inverting input is its divider node, and the board re-simulates as
    # the design does
    c = tiny_crystal(seed=3)
    d = bench(c, relu_stage="difference").design
    assert {nr.stage for nr in d.neurons} == {"difference"} and d.inverted == []
    board = mf.board_for(d, 0.01)
    assert board.channels == [("U1", "A", "neuron 1_0 (difference)"),
                              ("U1", "B", "neuron 1_1 (difference)"),
                              ("U2", "A", "neuron 1_2 (difference)"),
                              ("U2", "B", "neuron 1_3 (difference)")]
    assert refs(board, "D") == [] and len(refs(board, "R")) == d.resistor_count
    inputs = {v for comp in board.of_kind("U") for v in comp.pins.values()}
    assert {f"p1_{nr.index}" for nr in d.neurons if nr.plus} <= inputs
    res = mf.run(c, cfg(relu_stage="difference"), Paths(tmp_path, "tiny"))
    assert res["components"]["diodes"] == 0 and res["components"]["opamps"] == 2
    assert res["components"]["resistors"] == d.resistor_count
    rt = res["round_trip"]
    assert rt["passed"] and rt["class_agreement"] == 1.0 and rt["max_diff_lsb"] <= 0.01
