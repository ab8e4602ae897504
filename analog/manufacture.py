"""Stage `manufacture` (`crystalbench manufacture`): the analog core as a board a user can
order, and proof that the board is the circuit that was simulated.

Steps, each a function the tests call directly:

    board_for        the core `sim-analog` designs (analog.flow.prepare, same config) as
                     parts on nets: 0603 resistors, dual op-amps two channels per package
                     (a spare channel wired as a grounded follower), one decoupling
                     capacitor per package, rectifier/clamp diodes, connectors for the DAC
                     inputs, the ADC outputs and power
    kicad_netlist    the board through skidl: a KiCad netlist and skidl's ERC
    parse_netlist    a KiCad netlist file read back (our own s-expression reader)
    spice_text       the parsed netlist as a SPICE deck with the same op-amp macro-model
    bom_rows         the bill of materials from the parsed netlist, priced
    round_trip       ngspice on the read-back netlist vs the design run directly

The round trip reads only the KiCad netlist (parts, values, footprints, fields, nets); the
DAC tables, supply voltages and which nets are outputs come from the connector nets' names.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySpice.Spice.Netlist import Circuit

from crystalbench import stage, toolrun
from crystalbench.crystal import Crystal, digest
from crystalbench.errors import AnalogError
from crystalbench.results import Paths, atomic_write_bytes

from . import flow
from . import netlist as nl
from .opamps import OPAMPS, OpAmpMacro

NAME = "manufacture"
WRITES = (NAME,)
NEEDS_CRYSTAL = True


class ManufactureError(AnalogError):
    """A core that cannot become an orderable board, or a netlist that cannot be read back;
    names the key or file and the fix."""


# ---- parts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpAmpPart:
    mpn: str  # orderable part number (package + tape and reel)
    manufacturer: str
    package: str
    footprint: str
    source: str


SOIC8 = "Package_SO:SOIC-8_3.9x4.9mm_P1.27mm"
# Orderable numbers of the modelled duals, all in the 150-mil SOIC-8 ("SN" at Microchip,
# "D"/"DR" at TI), as the ordering tables of the datasheets cited in analog/opamps.py list
# them. The LM358 macro-model takes the LM358B's dynamics; the classic LM358DR is ordered.
OPAMP_PARTS = {
    "mcp6002": OpAmpPart("MCP6002T-I/SN", "Microchip", "SOIC-8", SOIC8, "Microchip DS21733J"),
    "opa2333": OpAmpPart("OPA2333AIDR", "Texas Instruments", "SOIC-8", SOIC8, "TI SBOS351"),
    "tlv9062": OpAmpPart("TLV9062IDR", "Texas Instruments", "SOIC-8", SOIC8, "TI SBOS839"),
    "lm358": OpAmpPart("LM358DR", "Texas Instruments", "SOIC-8", SOIC8, "TI SLOS068"),
}
# The industry-standard dual op-amp pinout every part above shares (SOIC-8, top view):
# 1 OUTA, 2 INA-, 3 INA+, 4 V-, 5 INB+, 6 INB-, 7 OUTB, 8 V+.
CHANNEL_PINS = ({"out": 1, "inn": 2, "inp": 3}, {"out": 7, "inn": 6, "inp": 5})
PIN_VNEG, PIN_VPOS = 4, 8
UNITS = "AB"

RESISTOR_FP = "Resistor_SMD:R_0603_1608Metric"
CAP_FP = "Capacitor_SMD:C_0603_1608Metric"
DIODE_FP = "Diode_SMD:D_SOD-323"
# A low-leakage diode in SOD-323, of the BAS116 class that analog/netlist.py models
# (its model is generic, not fitted to this part: unconfirmed).
DIODE_MPN, DIODE_MFR = "BAS416,115", "Nexperia"
DECOUPLING = ("100n", nl.DECOUPLING_F, "CC0603KRX7R9BB104", "Yageo")  # 100 nF X7R 50 V, 0603
# KiCad's Device:D numbering: pin 1 cathode, pin 2 anode (pad 1 of SOD-323 is the band).
D_CATHODE, D_ANODE = 1, 2

# Connectors: 2.54 mm headers, two rows, each signal beside its own ground pin.
SIGNALS_PER_HEADER = 16
POWER_PINS = ("vcc", "GND", "vee", "vrefp", "vrefn")  # the references only where a bias reads one
GROUND = "GND"
DAC_VALUE, ADC_VALUE, POWER_VALUE = "DAC_IN", "ADC_OUT", "POWER"

# Resistors: Yageo 0603 chip resistors. Thick film RC0603 for 1% and looser, thin film
# RT0603 below 1% (pattern unconfirmed). Tolerance letter per tolerance.
YAGEO_TOLERANCE = {0.05: "J", 0.02: "G", 0.01: "F", 0.005: "D", 0.001: "B"}


def resistor_mpn(ohm: float, tolerance: float) -> tuple[str, str]:
    """(pattern, part number) of a Yageo 0603 resistor: RC0603FR-07<value>L for 1%."""
    letter = YAGEO_TOLERANCE.get(round(tolerance, 6))
    if letter is None:
        raise ManufactureError(
            f"analog.tolerances[0] = {tolerance:g} is not an orderable resistor tolerance; "
            f"use one of {', '.join(f'{t:g}' for t in YAGEO_TOLERANCE)}")
    pattern = (f"RC0603{letter}R-07<value>L" if tolerance >= 0.01
               else f"RT0603{letter}RD07<value>L")
    return pattern, pattern.replace("<value>", yageo_value(ohm))


def yageo_value(ohm: float) -> str:
    """Yageo's value code: 49R9, 100R, 4K99, 10K, 1M, 1M5 (the unit letter is the decimal
    point)."""
    for div, unit in ((1e6, "M"), (1e3, "K"), (1.0, "R")):
        if ohm >= div or div == 1.0:
            text = f"{ohm / div:.6g}"
            whole, _, frac = text.partition(".")
            return f"{whole}{unit}{frac}" if frac or unit == "R" else f"{whole}{unit}"
    raise AssertionError("unreachable")


def ohm_label(ohm: float) -> str:
    """A resistor's value as KiCad shows it and `parse_value` reads it back exactly:
    4.99k, 10k, 1M, 499."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if ohm >= div:
            return f"{ohm / div:.6g}{unit}"
    return f"{ohm:.6g}"


_SUFFIX = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "K": 1e3,
           "M": 1e6, "G": 1e9}
_VALUE = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)([fpnumkKMG]?)$")


def parse_value(text: str, where: str = "value") -> float:
    """A component value as KiCad writes it (4.99k, 100n, 1M, 499) in SI units. 'M' is mega,
    as in KiCad (SPICE would read it as milli: the reason values never go raw to SPICE)."""
    m = _VALUE.match(text.strip())
    if not m:
        raise ManufactureError(f"{where}: {text!r} is not a component value (e.g. 4.99k, "
                               "100n); fix the value in the netlist")
    return float(m.group(1)) * _SUFFIX.get(m.group(2), 1.0)


# Prices (USD per unit, quantity tiers for one board). Cited where a stored, dated catalogue
# record gives one; every other line stays an ASSUMPTION and says so. Statuses:
#   exact       the BOM's own part number, as the record lists it
#   equivalent  another maker's part of the same class, value, package and tolerance; the
#               BOM keeps its own orderable number (either fits the board)
#   proxy       a part of the same class and package but not a drop-in (named, with why)
#   assumed     no stored record: an order of magnitude written down on ASSUMED_DATE
CATALOGUE_DATE = "2026-07-24"
CATALOGUE = ("JLCPCB/LCSC Basic+Preferred catalogue scraped 2026-07-24T02:36:27Z, "
             "github.com/bandrews/whichpart basicpart/raw-data/jlcpcb-basic-parts-2026-07-24.json "
             "(commit 407926d)")
ASSUMED_DATE = "2026-11-27"


@dataclass(frozen=True)
class Price:
    status: str  # exact, equivalent, proxy, assumed
    tiers: tuple  # ((from quantity, USD per unit), ...), ascending
    part: str = ""  # the priced record: LCSC number and part number
    note: str = ""  # how the priced part relates to the BOM's

    def unit(self, quantity: int) -> tuple[float, int]:
        """(USD per unit, the tier's first quantity) for `quantity` units."""
        tier = max((t for t in self.tiers if t[0] <= max(quantity, 1)), key=lambda t: t[0])
        return tier[1], tier[0]

    @property
    def date(self) -> str:
        return ASSUMED_DATE if self.status == "assumed" else CATALOGUE_DATE


# LCSC tiers copied from the snapshot's "prices" (startNumber, productPrice) of each record.
PRICES = {
    # 10 kOhm, the basic part most boards carry; in the same snapshot 0603 1% values cost
    # 0.0025 (C25803 100k) to 0.0085 (C7250 10M) at 1-999: the class price is per value,
    # this line uses one value. The Basic tier holds 1% thick film only (no 5%, no thin film).
    "resistor_thick_film_0603_1pct": Price(
        "equivalent", ((1, 0.0076), (1000, 0.0068), (5000, 0.0064), (10000, 0.0061),
                       (50000, 0.006), (100000, 0.0059)),
        "LCSC C25804 UNI-ROYAL 0603WAF1002T5E (10 kOhm 1% 100 ppm/C 0603 thick film)",
        "UNI-ROYAL part of the Yageo RC0603FR-07 class, priced at its 10 kOhm value"),
    "resistor_thick_film_0603": Price("assumed", ((1, 0.01),)),  # 5% / 2%: not in the snapshot
    "resistor_thin_film_0603": Price("assumed", ((1, 0.10),)),  # below 1%: not in the snapshot
    "capacitor_0603_x7r": Price(
        "exact", ((1, 0.0241), (500, 0.0202), (1500, 0.0184), (4000, 0.0168), (24000, 0.0163),
                  (48000, 0.0159)),
        "LCSC C14663 YAGEO CC0603KRX7R9BB104 (100 nF 50 V X7R 10% 0603)"),
    "diode_sod323": Price(
        "proxy", ((1, 0.0132), (500, 0.0108), (3000, 0.01), (6000, 0.0092), (24000, 0.0089),
                  (51000, 0.0087)),
        "LCSC C2128 CJ 1N4148WS (SOD-323 switching diode)",
        "same package and class, not the BOM's low-leakage BAS416 (1 uA vs nA-class reverse "
        "leakage); the snapshot holds no BAS416"),
    "header_pin": Price("assumed", ((1, 0.02),)),  # per pin; no 2.54 mm header in the snapshot
    "opamp:mcp6002": Price(
        "exact", ((1, 0.2989), (50, 0.2372), (150, 0.207), (500, 0.1801), (3300, 0.1645),
                  (6600, 0.1602)),
        "LCSC C7377 Microchip MCP6002T-I/SN"),
    "opamp:lm358": Price(
        "equivalent", ((1, 0.0569), (100, 0.0456), (300, 0.0398), (2500, 0.0348),
                       (5000, 0.0332), (10000, 0.0321)),
        "LCSC C7950 onsemi LM358DR2G (dual LM358, SOIC-8, same pinout)",
        "onsemi second source of the BOM's TI LM358DR"),
    "opamp:opa2333": Price("assumed", ((1, 2.50),)),  # not in the snapshot
    "opamp:tlv9062": Price("assumed", ((1, 0.45),)),  # not in the snapshot
}


def price_basis(price: Price, quantity: int) -> str:
    """One BOM line's basis: where its unit price comes from, of which date and tier."""
    unit, tier = price.unit(quantity)
    if price.status == "assumed":
        return (f"assumed: no stored catalogue record for this part; an order of magnitude "
                f"written down {price.date}, not a quote")
    what = {"exact": "the BOM's part", "equivalent": "an equivalent part",
            "proxy": "a proxy part"}[price.status]
    note = f"; {price.note}" if price.note else ""
    return (f"cited ({what}): {price.part}, {unit:g} USD/unit at the {tier}+ tier, "
            f"{CATALOGUE}{note}")


# Courtyard (mm x mm) of each footprint, from KiCad's library files (KiCad/kicad-footprints,
# F.CrtYd lines): R/C 0603 +-1.48 x +-0.73; SOIC-8 +-3.7 x +-2.7; SOD-323 +-1.6 x +-0.95.
COURTYARD_MM = {
    RESISTOR_FP: (2.96, 1.46),
    CAP_FP: (2.96, 1.46),
    SOIC8: (7.4, 5.4),
    DIODE_FP: (3.2, 1.9),
}
# Board area is the courtyards' sum times this: room for routing and spacing. An
# assumption (a common rule of thumb for two-layer boards), not a layout.
ROUTING_FACTOR = 2.0


def header_footprint(rows: int, pins_per_row: int) -> str:
    return (f"Connector_PinHeader_2.54mm:PinHeader_{rows}x{pins_per_row:02d}_P2.54mm_Vertical")


_HEADER_FP = re.compile(r"PinHeader_(\d)x(\d+)_P2\.54mm_Vertical$")


def _header_span(pins: int) -> float:
    """Courtyard length of a 2.54 mm header along `pins` pins, as KiCad's generator draws
    it: from 1.8 mm before the first pin to 0.5 mm past the body (1.27 mm past the last
    pin), that end rounded up to a 0.05 mm grid (2x07: -1.8..17.05, 2x08: -1.8..19.55)."""
    end = math.ceil(round(((pins - 1) * 2.54 + 1.77) / 0.05, 6)) * 0.05
    return 1.8 + end


def courtyard_mm2(footprint: str) -> float:
    """Courtyard area of a footprint (table, or the pin-header rule)."""
    if footprint in COURTYARD_MM:
        w, h = COURTYARD_MM[footprint]
        return w * h
    m = _HEADER_FP.search(footprint)
    if not m:
        raise ManufactureError(f"footprint {footprint!r} has no courtyard size in "
                               "analog/manufacture.py COURTYARD_MM; add it there")
    return _header_span(int(m.group(1))) * _header_span(int(m.group(2)))


# ---- the board as data -----------------------------------------------------------------------
@dataclass
class Comp:
    """One part on the board: reference, value, footprint, fields, {pin number: net}."""

    ref: str
    kind: str  # R, C, D, U, J
    value: str
    footprint: str
    pins: dict
    fields: dict = field(default_factory=dict)
    pin_names: dict = field(default_factory=dict)  # for skidl: {pin number: name}


@dataclass
class Board:
    comps: list[Comp]
    opamp_key: str
    channels: list  # (ref, unit letter, role) per op-amp channel, in packing order
    spare_channels: int
    dac_inputs: list  # input indices with a DAC pin
    adc_outputs: list  # output net names, ADC connector order
    power_pins: list = field(default_factory=list)  # J1's nets, pin order

    def of_kind(self, kind: str) -> list[Comp]:
        return [c for c in self.comps if c.kind == kind]


def _header_pins(nets: list[str]) -> dict:
    """A two-row header: signal i on pin 2i+1, ground beside it on pin 2i+2."""
    pins = {}
    for i, net in enumerate(nets):
        pins[2 * i + 1] = net
        pins[2 * i + 2] = GROUND
    return pins


def _chunks(seq: list, n: int) -> list[list]:
    return [seq[i:i + n] for i in range(0, len(seq), n)]


def board_for(design: nl.CoreDesign, tolerance: float) -> Board:
    """Every part of the core board with its nets. Designators in this order: per neuron
    (design order) its input resistors (input order), bias resistor, feedback resistor;
    then per inverted source its input and feedback resistors. Op-amp channels: the
    neurons, then the inverters, two per package (A, B); an odd count leaves the last B
    channel a grounded follower. One decoupling capacitor per package (V+ to V-), diodes
    per neuron (rectifier: clamp, then output; clamp stage: one), connectors: power, DAC
    inputs, ADC outputs."""
    if design.opamp.ideal or design.opamp.key not in OPAMP_PARTS:
        why = ("" if design.opamp.ideal else
               " (it is modelled, but analog/manufacture.py OPAMP_PARTS has no orderable dual "
               "package with a checked pinout for it)")
        raise ManufactureError(
            f"analog.opamp {design.opamp.key!r} is not a part one can order{why}; set "
            f"analog.opamp to one of {', '.join(OPAMP_PARTS)} (e.g. --set analog.opamp=mcp6002)")
    part = OPAMP_PARTS[design.opamp.key]
    comps: list[Comp] = []
    n_r = 0

    def resistor(a: str, b: str, ohm: float) -> None:
        nonlocal n_r
        n_r += 1
        pattern, mpn = resistor_mpn(ohm, tolerance)
        comps.append(Comp(f"R{n_r}", "R", ohm_label(ohm), RESISTOR_FP, {1: a, 2: b},
                          {"Tolerance": f"{tolerance * 100:g}%", "MPN": mpn,
                           "MPN pattern": pattern, "Manufacturer": "Yageo",
                           "Series": design.series}))

    # (inp, inn, out) nets per channel, and the diodes to place after the resistors
    channels, diodes = [], []
    for nr in design.neurons:
        tag = f"{nr.layer + 1}_{nr.index}"
        s, h = f"s{tag}", f"h{tag}"
        for k, inv, ohm in nr.inputs:
            resistor(design.source_node(nr.layer - 1, k, inv), s, ohm)
        if nr.bias is not None:
            pos, ohm = nr.bias
            resistor("vrefp" if pos else "vrefn", s, ohm)
        resistor(h, s, nr.rf)
        if nr.r_ground_sum is not None:
            resistor(s, GROUND, nr.r_ground_sum)
        if nr.stage == "difference":  # positive weights through a divider to the + input
            p = f"p{tag}" if nr.plus else GROUND
            for k, ohm in nr.plus:
                resistor(design.source_node(nr.layer - 1, k, False), p, ohm)
            if nr.r_ground_plus is not None:  # set only where the divider has inputs
                resistor(p, GROUND, nr.r_ground_plus)
            channels.append((p, s, h, f"neuron {tag} (difference)"))
        elif nr.stage == "rectifier":  # op-amp drives node a; D clamp sum->a, D out a->h
            channels.append((GROUND, s, f"a{tag}", f"neuron {tag} (rectifier)"))
            diodes += [(s, f"a{tag}"), (f"a{tag}", h)]
        else:
            channels.append((GROUND, s, h, f"neuron {tag} (clamp)"))
            diodes.append((s, h))
    for li, k in design.inverted:
        src = design.source_node(li, k, False)
        resistor(src, f"si_{src}", design.r_inverter)
        resistor(f"si_{src}", design.source_node(li, k, True), design.r_inverter)
        channels.append((GROUND, f"si_{src}", design.source_node(li, k, True),
                         f"inverter of {src}"))
    for i, (anode, cathode) in enumerate(diodes, 1):
        comps.append(Comp(f"D{i}", "D", "BAS416", DIODE_FP, {D_ANODE: anode, D_CATHODE: cathode},
                          {"MPN": DIODE_MPN, "Manufacturer": DIODE_MFR},
                          {D_ANODE: "A", D_CATHODE: "K"}))
    n_pkg = math.ceil(len(channels) / 2)
    spare = 2 * n_pkg - len(channels)
    placed = []
    for p in range(n_pkg):
        ref = f"U{p + 1}"
        pins = {PIN_VPOS: "vcc", PIN_VNEG: "vee"}
        for u in range(2):
            pin = CHANNEL_PINS[u]
            if 2 * p + u < len(channels):
                inp, inn, out, role = channels[2 * p + u]
            else:  # spare: a follower of ground, so it neither oscillates nor rails
                inp, inn, out, role = GROUND, f"spare_{ref}{UNITS[u]}", f"spare_{ref}{UNITS[u]}", \
                    "spare (follower of ground)"
            pins.update({pin["inp"]: inp, pin["inn"]: inn, pin["out"]: out})
            placed.append((ref, UNITS[u], role))
        names = {PIN_VPOS: "V+", PIN_VNEG: "V-"}
        for u, pin in enumerate(CHANNEL_PINS):
            names.update({pin["out"]: f"OUT{UNITS[u]}", pin["inn"]: f"IN{UNITS[u]}-",
                          pin["inp"]: f"IN{UNITS[u]}+"})
        comps.append(Comp(ref, "U", part.mpn, part.footprint, pins,
                          {"MPN": part.mpn, "Manufacturer": part.manufacturer,
                           "Model": design.opamp.key}, names))
        comps.append(Comp(f"C{p + 1}", "C", DECOUPLING[0], CAP_FP, {1: "vcc", 2: "vee"},
                          {"MPN": DECOUPLING[2], "Manufacturer": DECOUPLING[3],
                           "Tolerance": "10%", "Note": f"decoupling of {ref}, V+ to V-"}))
    dac = design.dac_inputs
    outs = [f"h{nr.layer + 1}_{nr.index}" for nr in design.neurons]
    n_j = 1
    used = {net for comp in comps for net in comp.pins.values()}
    power = [net for net in POWER_PINS if net in used or net in ("vcc", GROUND, "vee")]
    comps.append(Comp("J1", "J", POWER_VALUE, header_footprint(1, len(power)),
                      {i + 1: net for i, net in enumerate(power)}, {"Pins": ", ".join(power)}))
    for value, nets in ((DAC_VALUE, [f"x{k}" for k in dac]), (ADC_VALUE, outs)):
        for chunk in _chunks(nets, SIGNALS_PER_HEADER):
            n_j += 1
            comps.append(Comp(f"J{n_j}", "J", value, header_footprint(2, len(chunk)),
                              _header_pins(chunk), {"Signals": ", ".join(chunk)}))
    return Board(comps=comps, opamp_key=design.opamp.key, channels=placed,
                 spare_channels=spare, dac_inputs=dac, adc_outputs=outs, power_pins=power)


# ---- KiCad netlist through skidl, and its ERC ------------------------------------------------
@dataclass
class Erc:
    errors: list
    warnings: list

    @property
    def passed(self) -> bool:
        return not self.errors


def _skidl():
    """skidl, imported quietly (it warns about KiCad libraries this flow does not use)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import skidl
    except ImportError:
        raise ManufactureError("skidl is not installed (it writes the KiCad netlist); run "
                               "`make setup` or `.venv/bin/pip install -e .`") from None
    return skidl


def kicad_netlist(board: Board) -> tuple[str, Erc]:
    """The board as a KiCad netlist (skidl's KiCad 6 writer: KiCad 6 is what Debian 12
    ships) and skidl's ERC of it (unconnected pins, single-pin nets, pin-type conflicts,
    undriven power inputs)."""
    skidl = _skidl()
    from skidl.logger import erc_logger, rt_logger

    cir = skidl.Circuit()
    cir.no_files = True  # no log or .erc files in the working folder
    types = skidl.Pin.types
    nets: dict[str, object] = {}
    templates: dict[tuple, object] = {}
    for comp in board.comps:
        key = (comp.kind, comp.value if comp.kind in "UJ" else "", comp.footprint)
        if key not in templates:
            pins = []
            for num in sorted(comp.pins):
                name = comp.pin_names.get(num, "~")
                kind = types.PASSIVE  # R, C, D, headers; op-amp pins by their role
                if comp.kind == "U":
                    kind = (types.OUTPUT if name.startswith("OUT") else
                            types.INPUT if name.startswith("IN") else types.PWRIN)
                pins.append(skidl.Pin(num=num, name=name, func=kind))
            templates[key] = skidl.Part(name=comp.kind if comp.kind in "RCD" else comp.value,
                                        tool=skidl.SKIDL, dest=skidl.TEMPLATE,
                                        ref_prefix=comp.kind, footprint=comp.footprint,
                                        pins=pins)
        part = templates[key](circuit=cir, ref=comp.ref, value=comp.value, tag=comp.ref)
        for name, text in comp.fields.items():
            part.fields[name] = text
        for num, net in comp.pins.items():
            if net not in nets:
                nets[net] = skidl.Net(net, circuit=cir)
                if net in ("vcc", "vee", GROUND):  # supplied through J1 (KiCad: PWR_FLAG)
                    nets[net].drive = skidl.POWER
            nets[net] += part[num]
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    keep = _Keep(level=logging.WARNING)
    erc_logger.addHandler(keep)
    level = rt_logger.level
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            cir.ERC()
            # the writer warns that the circuit's top node has no tag (parts all have)
            rt_logger.setLevel(logging.ERROR)
            text = str(cir.generate_netlist(tool="kicad6", do_backup=False, track_src=False))
    finally:
        erc_logger.removeHandler(keep)
        rt_logger.setLevel(level)
    msgs = [(r.levelno, r.getMessage().strip()) for r in records]
    erc = Erc(errors=[m for lv, m in msgs if lv >= logging.ERROR],
              warnings=[m for lv, m in msgs if logging.WARNING <= lv < logging.ERROR])
    return text, erc


# ---- reading a KiCad netlist back ------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


def parse_sexpr(text: str, source: str = "<netlist>") -> list:
    """An s-expression as nested lists of strings (quoted strings unescaped)."""
    stack: list[list] = [[]]
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ManufactureError(f"{source}: cannot read the netlist at character {pos} "
                                   f"({text[pos:pos + 30]!r}); regenerate it with "
                                   "`crystalbench manufacture`")
        pos = m.end()
        if m.group(1):
            stack.append([])
        elif m.group(2):
            if len(stack) == 1:
                raise ManufactureError(f"{source}: unbalanced ')' at character {pos}")
            done = stack.pop()
            stack[-1].append(done)
        elif m.group(3) is not None:
            stack[-1].append(re.sub(r"\\(.)", r"\1", m.group(3)))
        else:
            stack[-1].append(m.group(4))
    if len(stack) != 1 or len(stack[0]) != 1:
        raise ManufactureError(f"{source}: the netlist ends inside an expression (cut short?); "
                               "regenerate it with `crystalbench manufacture`")
    return stack[0][0]


def _child(node: list, key: str) -> list | None:
    return next((c for c in node[1:] if isinstance(c, list) and c and c[0] == key), None)


def _children(node: list, key: str) -> list[list]:
    return [c for c in node[1:] if isinstance(c, list) and c and c[0] == key]


def _atom(node: list | None, default: str = "") -> str:
    return node[1] if node is not None and len(node) > 1 and isinstance(node[1], str) \
        else default


@dataclass
class Parsed:
    """A KiCad netlist: {ref: component} and {net name: [(ref, pin)]}."""

    comps: dict
    nets: dict
    _pins: dict = field(default_factory=dict, repr=False)

    def pins_of(self, ref: str) -> dict:
        """{pin number: net name} of one component."""
        if not self._pins:
            for name, nodes in self.nets.items():
                for r, pin in nodes:
                    self._pins.setdefault(r, {})[pin] = name
        return self._pins.get(ref, {})


def parse_netlist(text: str, source: str = "<netlist>") -> Parsed:
    """A KiCad (eeschema `export`) netlist: components with value, footprint and fields,
    nets with their nodes. Refuses anything else, naming the file."""
    tree = parse_sexpr(text, source)
    if not tree or tree[0] != "export":
        raise ManufactureError(f"{source}: not a KiCad netlist (no '(export' at the top)")
    comps_node, nets_node = _child(tree, "components"), _child(tree, "nets")
    if comps_node is None or nets_node is None:
        raise ManufactureError(f"{source}: KiCad netlist without a components or nets section; "
                               "regenerate it with `crystalbench manufacture`")
    comps = {}
    for comp in _children(comps_node, "comp"):
        ref = _atom(_child(comp, "ref"))
        if not ref:
            raise ManufactureError(f"{source}: a component without a reference")
        fields = {}
        for f in _children(_child(comp, "fields") or ["fields"], "field"):
            name = _atom(_child(f, "name"))
            values = [v for v in f[1:] if isinstance(v, str)]
            fields[name] = values[0] if values else ""
        comps[ref] = {"value": _atom(_child(comp, "value")),
                      "footprint": _atom(_child(comp, "footprint")), "fields": fields,
                      "part": _atom(_child(_child(comp, "libsource") or ["x"], "part"))}
    nets = {}
    for net in _children(nets_node, "net"):
        name = _atom(_child(net, "name"))
        nodes = []
        for node in _children(net, "node"):
            ref, pin = _atom(_child(node, "ref")), _atom(_child(node, "pin"))
            if ref not in comps:
                raise ManufactureError(f"{source}: net {name!r} names component {ref!r}, which "
                                       "the components section does not hold")
            nodes.append((ref, int(pin) if pin.isdigit() else pin))
        nets[name] = nodes
    return Parsed(comps=comps, nets=nets)


# ---- the netlist read back as SPICE ------------------------------------------------------------
def _node(net: str) -> str:
    return "0" if net == GROUND else net


def spice_circuit(p: Parsed, x: np.ndarray, vx: float, rails: tuple, vref: float,
                  source: str = "<netlist>") -> tuple[Circuit, list[str]]:
    """The parsed board as a PySpice Circuit for a DC sweep over the samples x (model
    units): each op-amp channel the macro-model of the part its MPN names (slew limit
    off: DC), resistors and capacitors by value, diodes with the design's diode model;
    J1's nets get the supplies (rails, +-vref), each DAC pin's net x<k> a table of
    x[:, k] * vx indexed by v(idx). Returns (circuit, ADC output nets in pin order)."""
    by_mpn = {part.mpn: key for key, part in OPAMP_PARTS.items()}
    models = {by_mpn.get(c["fields"].get("MPN")) for c in p.comps.values()
              if c["footprint"] == SOIC8}
    if None in models or len(models) > 1:
        raise ManufactureError(f"{source}: op-amps {sorted(str(m) for m in models)} are not one "
                               f"modelled part ({', '.join(OPAMP_PARTS)}): set each op-amp's MPN "
                               "field to a part of analog/manufacture.py OPAMP_PARTS")
    cir = Circuit("round trip of a KiCad netlist written by crystalbench manufacture")
    model = next(iter(models), None)
    if model is not None:
        amp = OpAmpMacro(OPAMPS[model], slew=False)
        cir.subcircuit(amp)
    cir.model(nl.DIODE_MODEL, "D", **nl.DIODE_PARAMS)
    supply = {"vcc": rails[1], "vee": rails[0], "vrefp": vref, "vrefn": -vref}
    outputs = []
    for ref in sorted(p.comps, key=_ref_key):
        c = p.comps[ref]
        where = f"{source}: {ref}"
        pins = _Pins(p.pins_of(ref), where)
        kind = ref.rstrip("0123456789")
        if kind == "R":
            cir.R(ref[1:], _node(pins[1]), _node(pins[2]), f"{parse_value(c['value'], where):.9g}")
        elif kind == "C":
            cir.C(ref[1:], _node(pins[1]), _node(pins[2]), f"{parse_value(c['value'], where):.9g}")
        elif kind == "D":
            cir.D(ref[1:], _node(pins[D_ANODE]), _node(pins[D_CATHODE]), model=nl.DIODE_MODEL)
        elif kind == "U":
            for u, pin in enumerate(CHANNEL_PINS):
                cir.X(f"{ref}{UNITS[u]}", amp.NAME, _node(pins[pin["inp"]]),
                      _node(pins[pin["inn"]]), pins[PIN_VPOS], pins[PIN_VNEG],
                      _node(pins[pin["out"]]))
        elif kind == "J" and c["value"] == POWER_VALUE:
            for net in sorted(set(pins.values()) - {GROUND}):
                if net not in supply:
                    raise ManufactureError(f"{where}: power pin on net {net!r}; expected "
                                           f"{', '.join(supply)}")
                cir.V(net, net, cir.gnd, supply[net])
        elif kind == "J" and c["value"] in (DAC_VALUE, ADC_VALUE):
            signals = [pins[n] for n in sorted(pins) if pins[n] != GROUND]
            if c["value"] == ADC_VALUE:
                outputs += signals
                continue
            for net in signals:
                m = re.fullmatch(r"x(\d+)", net)
                if not m or int(m.group(1)) >= x.shape[1]:
                    raise ManufactureError(f"{where}: DAC pin on net {net!r}, which names no "
                                           f"input x0..x{x.shape[1] - 1}")
                cir.B(f"dac{m.group(1)}", net, cir.gnd,
                      voltage_expression=nl._pwl_expr(x[:, int(m.group(1))] * vx))
        else:
            raise ManufactureError(f"{where}: no SPICE model for this component "
                                   f"({c['value']!r}); the round trip knows R, C, D, U, J")
    cir.V("idx", "idx", cir.gnd, 0)
    return cir, outputs


class _Pins(dict):
    """{pin: net} of one component; a pin on no net is the netlist's fault, named."""

    def __init__(self, pins: dict, where: str):
        super().__init__(pins)
        self.where = where

    def __missing__(self, pin):
        raise ManufactureError(f"{self.where}: pin {pin} is on no net; every pin of the board "
                               "must be connected (regenerate the netlist)")


def _ref_key(ref: str) -> tuple:
    m = re.fullmatch(r"([A-Za-z]+)(\d+)", ref)
    return (m.group(1), int(m.group(2))) if m else (ref, 0)


def spice_text(cir: Circuit, outputs: list[str], n: int) -> str:
    """A DC sweep of the sample index over n samples, saving the ADC output nets."""
    vecs = [f"v({o})" for o in outputs]
    return flow.netlist_text(cir, f".dc Vidx 0 {n - 1} 1", "dc", vecs, vecs)


# ---- BOM ----------------------------------------------------------------------------------------
BOM_COLUMNS = ("references", "quantity", "value", "tolerance", "footprint", "manufacturer",
               "mpn", "mpn_pattern", "unit_usd", "line_usd", "price_key", "price_status",
               "price_date", "price_basis")


def _price_key(comp: dict, ref: str) -> str:
    kind = ref.rstrip("0123456789")
    if kind == "R":
        mpn = comp["fields"].get("MPN", "")
        if mpn.startswith("RT"):
            return "resistor_thin_film_0603"
        return "resistor_thick_film_0603_1pct" if mpn.startswith("RC0603F") \
            else "resistor_thick_film_0603"
    if kind == "C":
        return "capacitor_0603_x7r"
    if kind == "D":
        return "diode_sod323"
    if kind == "J":
        return "header_pin"
    return f"opamp:{comp['fields'].get('Model', '')}"


def _pins_in(footprint: str) -> int:
    m = _HEADER_FP.search(footprint)
    return int(m.group(1)) * int(m.group(2)) if m else 1


def bom_rows(p: Parsed) -> list[dict]:
    """One row per distinct part (value, footprint, part number), references in order.
    Priced for one board: each line's unit price is the tier of PRICES that holds the line's
    quantity (headers per pin: the tier of the line's pin count)."""
    groups: dict[tuple, list[str]] = {}
    for ref in sorted(p.comps, key=_ref_key):
        c = p.comps[ref]
        key = (ref.rstrip("0123456789"), c["value"], c["footprint"], c["fields"].get("MPN", ""))
        groups.setdefault(key, []).append(ref)
    rows = []
    for (_, value, fp, mpn), refs in sorted(groups.items(), key=lambda g: _ref_key(g[1][0])):
        c = p.comps[refs[0]]
        pkey = _price_key(c, refs[0])
        if pkey not in PRICES:
            raise ManufactureError(f"{refs[0]}: no price for {pkey!r} in analog/manufacture.py "
                                   "PRICES; add one with its source")
        price, pins = PRICES[pkey], _pins_in(fp)
        unit = price.unit(len(refs) * pins)[0] * pins
        rows.append({"references": " ".join(refs), "quantity": len(refs), "value": value,
                     "tolerance": c["fields"].get("Tolerance", ""), "footprint": fp,
                     "manufacturer": c["fields"].get("Manufacturer", ""), "mpn": mpn,
                     "mpn_pattern": c["fields"].get("MPN pattern", ""),
                     "unit_usd": round(unit, 6), "line_usd": round(unit * len(refs), 6),
                     "price_key": pkey, "price_status": price.status, "price_date": price.date,
                     "price_basis": price_basis(price, len(refs) * pins)})
    return rows


def bom_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=BOM_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# ---- the stage ---------------------------------------------------------------------------------
METHOD = {
    "design": "the core as `sim-analog` designs it (analog.flow.prepare with the same config "
              "and --set overrides)",
    "netlist": "skidl (pinned in pyproject.toml) writes a KiCad 6 netlist; parts are skidl "
               "parts with KiCad library footprint names (no KiCad symbol libraries needed)",
    "erc": "skidl's ERC (unconnected pins, single-pin nets, pin-type conflicts, power "
           "inputs without a power driver; vcc, vee and GND are marked driven, like "
           "KiCad's PWR_FLAG, because J1 supplies them). KiCad's own ERC is not run: it "
           "checks schematics, and no schematic is drawn",
    "round_trip": "the KiCad netlist file read back by analog/manufacture.py parse_netlist, "
                  "turned into SPICE (same op-amp macro-model, chosen by the MPN field; slew "
                  "off, as sim-analog's DC sweep) and run in ngspice over the test split; "
                  "compared with the design's own netlist (analog.netlist.build_circuit) run "
                  "directly: max |difference| of every core output in ADC LSB, classes "
                  "through the ADC model and the float frontier",
    "area": "sum of KiCad footprint courtyards (COURTYARD_MM, from KiCad's footprint "
            f"library) x {ROUTING_FACTOR:g} for routing (assumed)",
    "cost": "for one board: sum over BOM lines of quantity x unit price, the unit price at "
            "the quantity tier that holds the line's quantity; cited lines from "
            f"{CATALOGUE}, the rest assumed (each line's price_status and price_basis)",
}


def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet) -> dict:
    """Board, KiCad netlist + ERC, BOM, round trip through ngspice, result."""
    toolrun.require("ngspice")
    t_start = time.perf_counter()
    acfg = cfg.analog
    b = flow.prepare(c, acfg, cfg.adc.bits, log)
    board = board_for(b.design, float(acfg.tolerances[0]))
    out_dir = paths.stage(NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"manufacture: {len(board.comps)} parts; KiCad netlist and ERC (skidl) ...")
    text, erc = kicad_netlist(board)
    net_path = out_dir / "core.net"
    atomic_write_bytes(net_path, text.encode())
    erc_path = out_dir / "erc.txt"
    atomic_write_bytes(erc_path, ("".join(f"ERROR: {m}\n" for m in erc.errors) +
                                  "".join(f"WARNING: {m}\n" for m in erc.warnings) +
                                  f"{len(erc.errors)} errors, {len(erc.warnings)} warnings\n"
                                  ).encode())
    parsed = parse_netlist(net_path.read_text(), str(net_path))
    rows = bom_rows(parsed)
    bom_path = out_dir / "bom.csv"
    atomic_write_bytes(bom_path, bom_csv(rows).encode())
    log(f"manufacture: round trip, ngspice on the read-back netlist and on the design "
        f"({len(b.x)} test samples) ...")
    rt = round_trip(b, parsed, out_dir, str(net_path))
    res = report(b, board, parsed, rows, erc, rt,
                 {"netlist": net_path, "erc": erc_path, "bom": bom_path,
                  "spice_round_trip": rt.pop("path_rt"), "spice_direct": rt.pop("path_direct")})
    res["wall_seconds"] = time.perf_counter() - t_start
    return stage.finish(NAME, paths, res, summary_lines(res))


def round_trip(b: flow.Bench, parsed: Parsed, out_dir: Path, source: str) -> dict:
    """ngspice on the netlist read back and on the design's own netlist; their difference."""
    d = b.design
    n = len(b.x)
    cir, outputs = spice_circuit(parsed, b.x, d.vx, (d.vee, d.vcc), d.vref, source)
    expected = [f"h{nr.layer + 1}_{nr.index}" for nr in d.neurons]
    if sorted(outputs) != sorted(expected):
        raise ManufactureError(f"{source}: the ADC connectors carry {len(outputs)} outputs, the "
                               f"core has {len(expected)} neurons; regenerate the netlist")
    rt_path = out_dir / "round_trip.cir"
    atomic_write_bytes(rt_path, spice_text(cir, outputs, n).encode())
    direct_path = out_dir / "direct.cir"
    direct = nl.build_circuit(d, b.x, slew=False)
    atomic_write_bytes(direct_path, flow.netlist_text(direct, f".dc Vidx 0 {n - 1} 1", "dc",
                                                      b.out_nodes, b.out_nodes).encode())
    rt_volts, rt_s = flow.dc_sweep(b, rt_path)
    direct_volts, direct_s = flow.dc_sweep(b, direct_path)
    return compare(b, rt_volts, direct_volts) | {
        "seconds": {"round_trip": rt_s, "direct": direct_s},
        "path_rt": rt_path, "path_direct": direct_path}


def compare(b: flow.Bench, rt_volts: list, direct_volts: list) -> dict:
    """Round trip vs direct: max |difference| (volts, LSB) and class agreement."""
    diff, _ = flow.error_stats(rt_volts, direct_volts, b.masks, b.lsb_v)
    cls_rt = flow.hybrid_classes(b.c, b.adc, [v / g for v, g in zip(rt_volts, b.gains)], b.x)
    cls_d = flow.hybrid_classes(b.c, b.adc, [v / g for v, g in zip(direct_volts, b.gains)], b.x)
    return {"max_diff_v": diff["max_v"], "max_diff_lsb": diff["max_lsb"],
            "rms_diff_lsb": diff["rms_lsb"],
            "class_agreement": float((cls_rt == cls_d).mean()),
            "class_agreement_with_torch": float((cls_rt == b.torch_cls).mean()),
            "samples": len(b.x)}


ROUND_TRIP_TOLERANCE_LSB = 0.01  # the bar: every neuron output within 0.01 LSB


def report(b: flow.Bench, board: Board, parsed: Parsed, rows: list, erc: Erc, rt: dict,
           files: dict) -> dict:
    d = b.design
    kinds = Counter(ref.rstrip("0123456789") for ref in parsed.comps)
    courtyard = sum(courtyard_mm2(c["footprint"]) for c in parsed.comps.values())
    packages = kinds["U"]
    rt["passed"] = rt["max_diff_lsb"] <= ROUND_TRIP_TOLERANCE_LSB and rt["class_agreement"] == 1.0
    rt["tolerance_lsb"] = ROUND_TRIP_TOLERANCE_LSB
    return {
        "crystal": b.c.name, "crystal_digest": digest(b.c),
        "config": flow.config_stamp(b.acfg, b.adc.bits),
        "opamp": d.opamp.key, "opamp_part": OPAMP_PARTS[d.opamp.key].mpn,
        "components": {"total": len(parsed.comps), "resistors": kinds["R"],
                       "capacitors": kinds["C"], "diodes": kinds["D"], "opamps": packages,
                       "connectors": kinds["J"]},
        "packages": {"opamp_packages": packages, "channels": len(board.channels),
                     "channels_used": len(board.channels) - board.spare_channels,
                     "spare_channels": board.spare_channels,
                     "decoupling_capacitors": kinds["C"],
                     "package": OPAMP_PARTS[d.opamp.key].package},
        "nets": len(parsed.nets),
        "connectors": {"dac_inputs": len(board.dac_inputs), "adc_outputs": len(board.adc_outputs),
                       "power_pins": board.power_pins},
        "board_area": {"courtyard_mm2": courtyard,
                       "estimated_mm2": courtyard * ROUTING_FACTOR,
                       "routing_factor": ROUTING_FACTOR},
        "cost": cost_summary(rows),
        "bom_quantity": sum(r["quantity"] for r in rows),
        "erc": {"passed": erc.passed, "errors": len(erc.errors), "warnings": len(erc.warnings),
                "messages": erc.errors + erc.warnings, "tool": "skidl ERC",
                "kicad_erc": "not run (KiCad's ERC checks schematics; none is drawn)"},
        "round_trip": rt,
        "power_gating": {
            "on": bool(b.acfg.get("power_gating")),
            "board": "no switch on the board: vcc, vee, the references (J1) and the DAC inputs "
                     "are all driven through the headers, so whatever drives them gates the "
                     "core, as the transient models it; the round trip is a DC sweep, which "
                     "gating does not change",
            # the supply charges every decoupling capacitor from 0 to vcc - vee at each
            # power-up: C V^2 drawn (half stored, half lost in the charging path), and the
            # stored half is lost at power-down; sim-analog adds the same term to a gated
            # core's energy (CoreDesign.decoupling_j_per_power_up), from its op-amp count
            "decoupling_j_per_power_up": d.decoupling_j_per_power_up},
        "passed": bool(erc.passed and rt["passed"]),
        "files": {k: str(v) for k, v in files.items()},
        "method": METHOD,
    }


def cost_summary(rows: list[dict]) -> dict:
    """Total, the cited and assumed shares, and a one-line basis that says which is which."""
    total = sum(r["line_usd"] for r in rows)
    assumed = [r for r in rows if r["price_status"] == "assumed"]
    dates = sorted({r["price_date"] for r in rows if r["price_status"] != "assumed"})
    cited = len(rows) - len(assumed)
    parts = []
    if cited:
        parts.append(f"cited prices ({', '.join(dates)}) on {cited} of {len(rows)} lines")
    if assumed:
        parts.append(f"{len(assumed)} of {len(rows)} lines assumed "
                     f"({sum(r['line_usd'] for r in assumed):.2f} USD)")
    return {"total_usd": total, "lines": len(rows), "lines_cited": cited,
            "lines_assumed": len(assumed),
            "cited_usd": total - sum(r["line_usd"] for r in assumed),
            "assumed_usd": sum(r["line_usd"] for r in assumed),
            "by_status": {k: sum(1 for r in rows if r["price_status"] == k)
                          for k in ("exact", "equivalent", "proxy", "assumed")},
            "catalogue": CATALOGUE, "catalogue_date": CATALOGUE_DATE,
            "assumed_date": ASSUMED_DATE, "per": "one board (tier of each line's quantity)",
            "basis": "; ".join(parts)}


def summary_lines(res: dict) -> list[str]:
    """What `crystalbench manufacture` prints."""
    c, p, rt = res["components"], res["packages"], res["round_trip"]
    return [
        f"{c['total']} parts: {c['resistors']} resistors, {p['opamp_packages']} x "
        f"{res['opamp_part']} ({p['channels_used']} channels, {p['spare_channels']} spare), "
        f"{c['capacitors']} decoupling capacitors, {c['diodes']} diodes, {c['connectors']} "
        f"connectors; {res['nets']} nets",
        f"ERC (skidl): {res['erc']['errors']} errors, {res['erc']['warnings']} warnings; "
        f"board ~{res['board_area']['estimated_mm2'] / 100:.1f} cm^2 (courtyards "
        f"{res['board_area']['courtyard_mm2'] / 100:.1f} cm^2); cost ~{res['cost']['total_usd']:.2f}"
        f" USD per board ({res['cost']['basis']})",
        f"round trip (KiCad netlist -> SPICE -> ngspice) vs the design run directly: max "
        f"{rt['max_diff_lsb']:.2g} LSB, class agreement {rt['class_agreement']:.4f} over "
        f"{rt['samples']} samples ({'pass' if rt['passed'] else 'FAIL'} at "
        f"{rt['tolerance_lsb']:g} LSB)",
        f"netlist {res['files']['netlist']}, BOM {res['files']['bom']} "
        f"({res['wall_seconds']:.0f} s)",
    ]
