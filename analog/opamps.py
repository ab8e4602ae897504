"""Op-amp macro-models with datasheet figures, as PySpice subcircuits.

One behavioural model serves every part, parameterised by the datasheet figures:

* input stage: a transconductance with a tanh limit into an RC node. The small-signal
  gain is A_OL, the unity-gain frequency is GBW, and the largest current into C gives
  the slew rate (SR = I_max / C);
* the RC node is clamped (sharp diodes) to the output swing limits, so a saturated
  amplifier recovers at once instead of winding up;
* output: a buffer behind R_out; the current it sources is drawn from VCC and the
  current it sinks from VEE (B-sources mirror it), and I_q flows from VCC to VEE, so
  ngspice's supply currents are the board's supply currents;
* input offset: a parameter `vos` (volts) in series with the non-inverting input,
  0 for the nominal board, drawn per amplifier in the Monte Carlo.

Figures are typical values at 25 C and 5 V unless said otherwise. Each cites its
datasheet by document number; those marked "unconfirmed" were not checked against that
document when written down: check them there before relying on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PySpice.Spice.Netlist import SubCircuitFactory

from crystalbench.errors import AnalogError


@dataclass(frozen=True)
class OpAmpSpec:
    key: str
    part: str
    gbw_hz: float  # gain-bandwidth product
    slew_v_per_us: float
    iq_a: float  # quiescent current per amplifier
    aol_db: float  # open-loop DC gain
    swing_high_v: float  # output swing limit below VCC (light load)
    swing_low_v: float  # output swing limit above VEE
    vos_typ_v: float  # input offset, typical (used as the Monte Carlo sigma)
    vos_max_v: float
    r_out: float  # open-loop output resistance, ohms (modelling choice)
    supply_min_v: float
    supply_max_v: float
    supply_default_v: float  # total rail-to-rail supply used when the config says null
    source: str

    @property
    def ideal(self) -> bool:
        return self.key == "ideal"


# Datasheet figures. "unconfirmed" = not checked against the cited datasheet.
OPAMPS: dict[str, OpAmpSpec] = {
    "ideal": OpAmpSpec(
        key="ideal", part="ideal op-amp (VCVS, A=1e6, no rails, no supply current)",
        gbw_hz=math.inf, slew_v_per_us=math.inf, iq_a=0.0, aol_db=120.0, swing_high_v=0.0,
        swing_low_v=0.0, vos_typ_v=0.0, vos_max_v=0.0, r_out=0.0, supply_min_v=0.0,
        supply_max_v=1e3, supply_default_v=5.0, source="idealisation"),
    # Microchip MCP6001/1R/1U/2/4 datasheet DS21733J (2009): GBW 1 MHz typ; I_Q 100 uA typ per
    # amplifier; supply 1.8-6.0 V; rail-to-rail in/out (these four rechecked on page 1,
    # Features and Description). SR 0.6 V/us typ (unconfirmed);
    # V_OS +-4.5 mV max at 25 C, no typical given (unconfirmed; sigma = max/3 used);
    # A_OL 112 dB typ (unconfirmed); swing V_DD-25 mV / V_SS+25 mV at R_L=10k (unconfirmed).
    "mcp6002": OpAmpSpec(
        key="mcp6002", part="Microchip MCP6002", gbw_hz=1.0e6, slew_v_per_us=0.6,
        iq_a=100e-6, aol_db=112.0, swing_high_v=0.025, swing_low_v=0.025,
        vos_typ_v=4.5e-3 / 3, vos_max_v=4.5e-3, r_out=100.0, supply_min_v=1.8,
        supply_max_v=6.0, supply_default_v=5.0, source="Microchip DS21733J"),
    # TI OPA2333 datasheet (SBOS351): I_Q 17 uA typ per amplifier; V_OS 2 uV typ, 10 uV
    # max; 1.8-5.5 V; rail-to-rail in/out. GBW 350 kHz and SR 0.16 V/us (unconfirmed);
    # A_OL 130 dB (unconfirmed); swing 50 mV from the rails at R_L=10k (unconfirmed).
    "opa2333": OpAmpSpec(
        key="opa2333", part="TI OPA2333", gbw_hz=350e3, slew_v_per_us=0.16, iq_a=17e-6,
        aol_db=130.0, swing_high_v=0.05, swing_low_v=0.05, vos_typ_v=2e-6, vos_max_v=10e-6,
        r_out=500.0, supply_min_v=1.8, supply_max_v=5.5, supply_default_v=5.0,
        source="TI SBOS351 (OPA2333)"),
    # TI TLV9062 datasheet (SBOS839): GBW 10 MHz, SR 6.5 V/us, I_Q 538 uA typ per amplifier
    # (all three unconfirmed); V_OS +-0.3 mV typ, +-1.6 mV max (unconfirmed);
    # A_OL 120 dB (unconfirmed); swing 20 mV from the rails at R_L=10k (unconfirmed);
    # 1.8-5.5 V, rail-to-rail in/out.
    "tlv9062": OpAmpSpec(
        key="tlv9062", part="TI TLV9062", gbw_hz=10e6, slew_v_per_us=6.5, iq_a=538e-6,
        aol_db=120.0, swing_high_v=0.02, swing_low_v=0.02, vos_typ_v=0.3e-3,
        vos_max_v=1.6e-3, r_out=50.0, supply_min_v=1.8, supply_max_v=5.5,
        supply_default_v=5.0, source="TI SBOS839 (TLV9062)"),
    # TI LM358 family datasheet SLOS068: LM358B GBW 1.2 MHz, SR 0.5 V/us (unconfirmed);
    # classic LM358 supply current 0.7 mA typ for both amplifiers at 5 V -> 350 uA each;
    # V_OS 3 mV typ, 7 mV max (unconfirmed); A_OL 100 dB (unconfirmed); output high
    # V_CC-1.5 V (not rail-to-rail), low ~5 mV above V_EE at light load (unconfirmed);
    # 3-32 V. Default supply +-5 V so the rectifier output plus a diode drop fits.
    "lm358": OpAmpSpec(
        key="lm358", part="TI LM358 (LM358B dynamics)", gbw_hz=1.2e6, slew_v_per_us=0.5,
        iq_a=350e-6, aol_db=100.0, swing_high_v=1.5, swing_low_v=0.005, vos_typ_v=3e-3,
        vos_max_v=7e-3, r_out=100.0, supply_min_v=3.0, supply_max_v=32.0,
        supply_default_v=10.0, source="TI SLOS068 (LM358, LM358B)"),
    # TI OPAx835 datasheet SLOS713H (January 2011, revised November 2015), page 1
    # (Features, Description): 2.5-5.5 V; I_Q 250 uA per channel typ; 56 MHz bandwidth at
    # A_V = 1 V/V; SR 160 V/us; V_OS 100 uV typ, +-500 uV max; rail-to-rail output,
    # negative-rail input (-0.2 V .. V+ - 1.1 V on 5 V). GBW: estimated, not a datasheet
    # figure: the 56 MHz A_V = 1 bandwidth / 2.1, the ratio of the OPA837's bandwidth at
    # A_V = 1 to its gain-bandwidth product (105 / 50 MHz, SBOS673D page 1); the table's GBP
    # was not reachable here. A_OL 100 dB and swing 0.1 V from the rails (unconfirmed).
    # A power-down pin (0.5 uA typ) lets a board gate the core (analog.power_gating).
    "opa835": OpAmpSpec(
        key="opa835", part="TI OPA835", gbw_hz=56e6 / 2.1, slew_v_per_us=160.0, iq_a=250e-6,
        aol_db=100.0, swing_high_v=0.1, swing_low_v=0.1, vos_typ_v=100e-6, vos_max_v=500e-6,
        r_out=50.0, supply_min_v=2.5, supply_max_v=5.5, supply_default_v=5.0,
        source="TI SLOS713H (OPA835, OPA2835), page 1; GBW estimated (see analog/opamps.py)"),
    # TI OPAx837 datasheet SBOS673D (September 2017, revised December 2018), page 1
    # (Features, Description): I_Q 600 uA per channel typ at 5 V; gain-bandwidth product
    # 50 MHz; 105 MHz at A_V = 1; SR 105 V/us; single supply 2.7-5.4 V; V_OS +-130 uV max at
    # 25 C (no typical on page 1: sigma = max/3 used); negative-rail input, rail-to-rail
    # output; 5 uA shutdown. A_OL 110 dB and swing 0.1 V from the rails (unconfirmed).
    "opa837": OpAmpSpec(
        key="opa837", part="TI OPA837", gbw_hz=50e6, slew_v_per_us=105.0, iq_a=600e-6,
        aol_db=110.0, swing_high_v=0.1, swing_low_v=0.1, vos_typ_v=130e-6 / 3,
        vos_max_v=130e-6, r_out=50.0, supply_min_v=2.7, supply_max_v=5.4,
        supply_default_v=5.0, source="TI SBOS673D (OPA837, OPA2837), page 1"),
}

G_CLAMP = 1.0  # S: pull of the swing limits on the RC node
GM = 1e-3  # input-stage transconductance (S); C and R follow from GBW and A_OL


class OpAmpMacro(SubCircuitFactory):
    """Behavioural op-amp: NODES inp, inn, vcc, vee, out; parameter vos (volts)."""

    NODES = ("inp", "inn", "vcc", "vee", "out")

    def __init__(self, spec: OpAmpSpec, slew: bool = True):
        self.NAME = f"opamp_{spec.key}"
        super().__init__(vos=0)
        aol = 10 ** (spec.aol_db / 20)
        if spec.ideal:
            self.VCVS("gain", "out", self.gnd, "inp_os", "inn", voltage_gain=aol)
            self.V("os", "inp_os", "inp", "{vos}")
            return
        c = GM / (2 * math.pi * spec.gbw_hz)
        i_max = spec.slew_v_per_us * 1e6 * c
        self.V("os", "inp_os", "inp", "{vos}")
        if slew:
            gm = f"{i_max:.6g}*tanh({GM / i_max:.6g}*(v(inp_os)-v(inn)))"
        else:  # DC: the slew limit cannot change an operating point, and a linear
            gm = f"{GM:.6g}*(v(inp_os)-v(inn))"  # stage converges far more easily
        hi = f"(v(vcc)-{spec.swing_high_v:.6g})"
        lo = f"(v(vee)+{spec.swing_low_v:.6g})"
        # Swing limits: a stiff piecewise-linear pull keeps the RC node between the output
        # limits (no wind-up; no exponential clamp diodes that stall Newton).
        self.B("gm", self.gnd, "n1", current_expression=(
            f"{gm} - {G_CLAMP:g}*(max(v(n1)-{hi},0) - max({lo}-v(n1),0))"))
        self.R("aol", "n1", self.gnd, f"{aol / GM:.6g}")
        self.C("pole", "n1", self.gnd, f"{c:.6g}")
        # Output buffer; its current comes from the rails, plus the quiescent current.
        self.B("out", "n2", self.gnd, voltage_expression="v(n1)")
        self.V("sense", "n2", "n3", 0)
        self.R("out", "n3", "out", f"{spec.r_out:.6g}")
        self.B("src", "vcc", self.gnd, current_expression="max(i(vsense),0)")
        self.B("snk", self.gnd, "vee", current_expression="max(-i(vsense),0)")
        self.I("q", "vcc", "vee", f"{spec.iq_a:.6g}")


def spec_for(key: str) -> OpAmpSpec:
    """The figures of the part named by `analog.opamp`."""
    try:
        return OPAMPS[key]
    except (KeyError, TypeError):
        raise AnalogError(f"analog.opamp {key!r} is not a modelled part; choose one of "
                          f"{', '.join(OPAMPS)}") from None
