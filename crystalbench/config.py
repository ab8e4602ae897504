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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


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
        "max_train": Knob(None, int, "use at most this many training samples (stratified)",
                          min=10, nullable=True),
        "augment_shifts": Knob(0, int, "add copies of the training set shifted by up to this "
                               "many steps along each geometry axis (0 = off)", min=0, max=3),
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
    },
}


class Section(dict):
    """A validated config section: dict with attribute access."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _defaults(schema: dict) -> Section:
    out = Section()
    for key, spec in schema.items():
        if isinstance(spec, dict):
            out[key] = _defaults(spec)
        elif isinstance(spec, ListOf):
            out[key] = [Section(_check_section(spec.item, item, "", key)) for item in spec.default]
        else:
            out[key] = spec.default
    return out


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
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
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
    for i, layer in enumerate(cfg.net.hidden):
        if layer.cap < layer.initial:
            raise ConfigError(f"{file}: net.hidden[{i}].cap {layer.cap} is below initial "
                              f"{layer.initial}; raise cap or lower initial")
    if cfg.train.lr_final > cfg.train.lr:
        raise ConfigError(f"{file}: train.lr_final {cfg.train.lr_final} is above train.lr "
                          f"{cfg.train.lr}; the schedule only decays")
    if cfg.data.dataset == "mnist" and not cfg.data.path:
        raise ConfigError(f"{file}: data.path is required for dataset 'mnist': a folder with "
                          "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
                          "and t10k-labels-idx1-ubyte (optionally .gz)")


def validate(data: dict, file: str = "<config>") -> Section:
    cfg = _check_section(SCHEMA, data, file, "")
    _cross_checks(cfg, file)
    return cfg


def load(path: str | Path) -> Section:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found (see configs/ for examples)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return validate(data or {}, str(path))


def defaults() -> Section:
    return validate({}, "<defaults>")


def digest(cfg: dict) -> str:
    """A stable hash of a config, to refuse resuming a run under a different config."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
