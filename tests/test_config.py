import re

import pytest

from crystalbench import config as cfgmod
from crystalbench.config import ConfigError


def write(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_validate():
    from pathlib import Path

    configs = sorted(Path(__file__).parent.parent.glob("configs/*.yaml"))
    assert configs, "configs/ holds no YAML files"
    for p in configs:
        cfgmod.load(p)


def test_shipped_grids_load_with_the_points_they_name():
    """configs/grids/ holds sweep grids (not configs): each loads, every point's overrides
    apply to the default digits config."""
    from pathlib import Path

    from crystalbench.sim import sweep

    grids = sorted(Path(__file__).parent.parent.glob("configs/grids/*.yaml"))
    assert grids, "configs/grids/ holds no grid"
    for p in grids:
        points = sweep.load_grid(p)
        # the default grid (make sweep) holds the 24 points at least; others any
        assert len(points) >= (24 if p.name == "digits.yaml" else 1), p
        for point in points:
            cfg = cfgmod.load(Path(__file__).parent.parent / "configs" / "digits.yaml",
                              sweep.set_args(point))
            for key, value in point.items():  # each override lands where it names
                section, name = key.split(".", 1)
                assert getattr(getattr(cfg, section), name) == value, (p, key)


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: unknown key 'train\.epochz'; "
                                          r"allowed keys: .*did you mean 'epochs'\?"):
        cfgmod.load(p)


def test_bad_choice_lists_allowed_values(tmp_path):
    p = write(tmp_path, "data:\n  dataset: cifar\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: data\.dataset: 'cifar' is not allowed; "
                                          r"choose one of digits, mnist1d, mnist"):
        cfgmod.load(p)


@pytest.mark.parametrize("text, message", [
    ("train:\n  epochs: 0\n", r"train\.epochs: 0 is below the minimum 1"),
    ("train:\n  epochs: ten\n", r"train\.epochs: 'ten' is not a whole number"),
    ("train:\n  cache: 3\n", r"train\.cache: 3 is not true/false"),
    ("net:\n  hidden: []\n", r"net\.hidden: expected a list of at least 1"),
    ("net:\n  hidden:\n    - {initial: 9, cap: 4}\n", r"net\.hidden\[0\]\.cap 4 is below initial 9"),
    ("net:\n  hidden:\n    - {initial: 4, cap: 8, size: 3}\n", r"unknown key 'net\.hidden\[0\]\.size'"),
    ("data:\n  dataset: mnist\n", r"data\.path is required for dataset 'mnist'"),
    ("train: [1, 2]\n", r"exp\.yaml: train: expected a mapping"),
])
def test_bad_values_are_refused(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        cfgmod.load(write(tmp_path, text))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        cfgmod.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfgmod.load(write(tmp_path, "train: {epochs: [\n"))


def test_defaults_fill_in(tmp_path):
    cfg = cfgmod.load(write(tmp_path, "seed: 5\n"))
    assert cfg.seed == 5 and cfg.train.epochs == cfgmod.SCHEMA["train"]["epochs"].default
    assert cfg.net.hidden[0].radius == 2.5


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n# and another\n", "{}\n"])
def test_empty_config_is_refused_not_trained_with_defaults(tmp_path, text):
    with pytest.raises(ConfigError, match=r"exp\.yaml: the config is empty; start from a copy of "
                       r"configs/digits\.yaml"):
        cfgmod.load(write(tmp_path, text))


def test_folder_and_binary_file_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r": is a folder, not a config file; name a YAML file"):
        cfgmod.load(tmp_path)
    p = tmp_path / "model.pt"
    p.write_bytes(b"PK\x03\x04\x00\xff\xfe\x80binary")
    with pytest.raises(ConfigError, match=r"model\.pt: not a text file; a config is YAML text"):
        cfgmod.load(p)


def test_yaml_1_1_float_strings_are_floats(tmp_path):
    # YAML 1.1 reads 1.0e6 (no sign in the exponent) as the string '1.0e6'
    cfg = cfgmod.load(write(tmp_path, "analog:\n  r_min: 1.0e6\n  r_max: 5.0e7\n"
                                      "  r_inverter: 2e6\ntrain:\n  lr: 1e-2\n"))
    assert (cfg.analog.r_min, cfg.analog.r_max, cfg.analog.r_inverter) == (1e6, 5e7, 2e6)
    assert cfg.train.lr == 0.01
    assert all(isinstance(v, float) for v in (cfg.analog.r_min, cfg.analog.r_max,
                                              cfg.analog.r_inverter))
    with pytest.raises(ConfigError, match=r"analog\.r_min: '1\.0e6x' is not a float"):
        cfgmod.load(write(tmp_path, "analog:\n  r_min: 1.0e6x\n"))


@pytest.mark.parametrize("text, message", [
    ("rtl:\n  sim_vectors: 10\n", r"exp\.yaml: key 'rtl\.sim_vectors' is now 'sim\.vectors'; rename it"),
    ("rtl:\n  power_vectors: 4\n",
     r"exp\.yaml: key 'rtl\.power_vectors' is now 'sim\.power_vectors'; rename it"),
    ("rtl:\n  package: sg48\n", r"exp\.yaml: key 'rtl\.package' is no longer used; delete it"),
])
def test_moved_keys_name_their_new_place(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        cfgmod.load(write(tmp_path, text))


def _knobs(schema=None, prefix=""):
    """Every scalar knob of the schema: (dotted name, Knob)."""
    for key, spec in (schema or cfgmod.SCHEMA).items():
        name = f"{prefix}{key}"
        if isinstance(spec, dict):
            yield from _knobs(spec, name + ".")
        elif isinstance(spec, cfgmod.Knob):
            yield name, spec


def _with(name: str, value) -> dict:
    """A minimal config setting one knob (the hidden-layer list is not a scalar knob)."""
    d: dict = {"experiment": "edges"}
    *path, last = name.split(".")
    node = d
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    return d


# Cross-checks that tie one knob to another: the edges below move a knob alone.
_TIED = {"train.lr": {"train": {"lr_final": 0.0}}, "train.lr_final": {"train": {"lr": 10.0}},
         "analog.r_min": {"analog": {"r_max": 1e9, "r_inverter": 1e6}},
         "analog.r_max": {"analog": {"r_min": 10.0, "r_inverter": 100.0}},
         "analog.r_inverter": {"analog": {"r_min": 10.0, "r_max": 1e9}}}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("name, knob", [k for k in _knobs() if k[1].min is not None
                                         or k[1].max is not None], ids=lambda v: str(v)[:30])
def test_every_numeric_knob_takes_its_limits_and_refuses_beyond(name, knob):
    step = 1 if knob.kind is int else 1e-9 * max(1.0, abs(knob.min or 0), abs(knob.max or 0))
    base = _TIED.get(name, {})
    for edge, beyond, word in ((knob.min, -step, "below the minimum"),
                               (knob.max, step, "above the maximum")):
        if edge is None:
            continue
        edge = knob.kind(edge)
        cfg = cfgmod.validate(_merge(base, _with(name, edge)), "<t>")
        section, _, key = name.rpartition(".")
        got = cfg[key] if not section else cfg[section][key]
        assert got == edge and type(got) is knob.kind
        shown = re.escape(repr(float(edge)) if knob.kind is float else str(edge))
        with pytest.raises(ConfigError, match=rf"<t>: {re.escape(name)}: .* is {word} {shown}"):
            cfgmod.validate(_merge(base, _with(name, edge + beyond)), "<t>")


@pytest.mark.parametrize("name, knob", list(_knobs()), ids=lambda v: str(v)[:30])
def test_every_knob_checks_its_type_and_null(name, knob):
    if knob.nullable:
        cfg = cfgmod.validate(_with(name, None), "<t>")
        section, _, key = name.rpartition(".")
        assert (cfg[key] if not section else cfg[section][key]) is None
    else:
        with pytest.raises(ConfigError, match=rf"<t>: {re.escape(name)}: must not be null"):
            cfgmod.validate(_with(name, None), "<t>")
    wrong = {str: 3, int: "3", float: "three", bool: 1, list: "x"}[knob.kind]
    if knob.kind is int:
        wrong = True  # a bool is not a whole number either
    with pytest.raises(ConfigError, match=rf"<t>: {re.escape(name)}: "):
        cfgmod.validate(_with(name, wrong), "<t>")


@pytest.mark.parametrize("name, knob", [k for k in _knobs() if k[1].choices],
                         ids=lambda v: str(v)[:30])
def test_every_choice_is_accepted_and_others_refused(name, knob):
    for choice in knob.choices:
        extra = {"data": {"path": "/x"}} if choice == "mnist" else {}
        section, _, key = name.rpartition(".")
        cfg = cfgmod.validate(_merge(extra, _with(name, choice)), "<t>")
        assert (cfg[key] if not section else cfg[section][key]) == choice
    with pytest.raises(ConfigError, match=rf"{re.escape(name)}: 'nope' is not allowed; choose one "
                                          rf"of {re.escape(', '.join(map(str, knob.choices)))}"):
        cfgmod.validate(_with(name, "nope"), "<t>")


@pytest.mark.parametrize("value, want", [
    ("1.0e6", 1e6), ("+2.5", 2.5), ("-3e-2", -0.03), (".5", 0.5), ("7", 7.0), (" 1e3 ", 1e3),
    (4, 4.0), (True, True), ("e5", "e5"), ("1.0e", "1.0e"), ("0x10", "0x10"), ("nan", "nan")])
def test_float_text_by_hand(value, want):
    got = cfgmod.as_float(value)
    assert got == want and type(got) is type(want)


def test_float_knobs_refuse_inf_and_nan():
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ConfigError, match=r"train\.lr: .* is not a finite number"):
            cfgmod.validate({"train": {"lr": bad}}, "<t>")


def test_tolerances_take_number_text_and_refuse_out_of_range():
    cfg = cfgmod.validate({"analog": {"tolerances": ["1e-2", 0.2]}}, "<t>")
    assert cfg.analog.tolerances == [0.01, 0.2]
    for bad in ([], [0.0], [0.21], ["x"], [True]):
        with pytest.raises(ConfigError, match=r"analog\.tolerances .* must be a non-empty list "
                                              r"of fractions in \(0, 0\.2\]"):
            cfgmod.validate({"analog": {"tolerances": bad}}, "<t>")
    with pytest.raises(ConfigError, match=r"analog\.tolerances: '0\.01' is not a list"):
        cfgmod.validate({"analog": {"tolerances": "0.01"}}, "<t>")


@pytest.mark.parametrize("analog, message", [
    ({"r_min": 1e5, "r_max": 1e5, "r_inverter": 1e5}, r"analog\.r_max 100000 must be above "
                                                       r"analog\.r_min 100000"),
    ({"r_inverter": 999.0}, r"analog\.r_inverter 999 lies outside analog\.r_min\.\.r_max"),
    ({"r_inverter": 1.0e6 + 1}, r"analog\.r_inverter 1e\+06 lies outside"),
])
def test_resistor_range_cross_checks(analog, message):
    with pytest.raises(ConfigError, match=message):
        cfgmod.validate({"analog": analog}, "<t>")
    edge = cfgmod.validate({"analog": {"r_inverter": 1e3}}, "<t>")  # r_inverter == r_min
    assert edge.analog.r_inverter == 1e3


def test_cap_equal_to_initial_and_lr_final_equal_to_lr_are_fine():
    cfg = cfgmod.validate({"net": {"hidden": [{"initial": 4, "cap": 4}]},
                           "train": {"lr": 0.01, "lr_final": 0.01}}, "<t>")
    assert cfg.net.hidden[0].cap == 4 and cfg.train.lr_final == 0.01
    with pytest.raises(ConfigError, match=r"train\.lr_final 0\.02 is above train\.lr 0\.01"):
        cfgmod.validate({"train": {"lr": 0.01, "lr_final": 0.02}}, "<t>")


def test_digest_is_stable_and_sensitive():
    a = cfgmod.validate({"seed": 1}, "<t>")
    b = cfgmod.validate({"seed": 1}, "<u>")
    assert cfgmod.digest(a) == cfgmod.digest(b) and len(cfgmod.digest(a)) == 16
    assert cfgmod.digest(a) != cfgmod.digest(cfgmod.validate({"seed": 2}, "<t>"))


def test_unknown_key_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'sed'; allowed keys: .*; did you mean "
                                          r"'seed'\?$"):
        cfgmod.validate({"sed": 1}, "<t>")
    with pytest.raises(ConfigError, match=r"unknown key 'zzzzzz'; allowed keys: adc, analog, "
                                          r"bench, calibrate, data, experiment, fixed_point, "
                                          r"freeze, growth, hybrid, net, qat, rtl, seed, sim, "
                                          r"train$"):
        cfgmod.validate({"zzzzzz": 1}, "<t>")


def test_set_overrides_on_top_of_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("experiment: x\nrtl: {shapes: both}\nanalog: {tolerances: [0.01]}\n")
    cfg = cfgmod.load(p, ["rtl.shapes=serial", "analog.tolerances=[0.05, 0.001]",
                          "hybrid.vectors=null", "adc.bits=6", "seed=3"])
    assert cfg.rtl.shapes == "serial" and cfg.analog.tolerances == [0.05, 0.001]
    assert cfg.hybrid.vectors is None and cfg.adc.bits == 6 and cfg.seed == 3
    assert cfg.experiment == "x" and cfg.rtl.clock_mhz == cfgmod.SCHEMA["rtl"]["clock_mhz"].default
    assert cfgmod.load(p).rtl.shapes == "both"  # the file is untouched
    # the override is validated like the file, and the error names both
    with pytest.raises(ConfigError, match=r"c.yaml with --set rtl.shapes=diagonal.*'diagonal' is "
                                          r"not allowed"):
        cfgmod.load(p, ["rtl.shapes=diagonal"])
    with pytest.raises(ConfigError, match=r"rtl.shapez.*did you mean 'shapes'"):
        cfgmod.load(p, ["rtl.shapez=serial"])
    for bad in ("rtl.shapes", "=3", "rtl..shapes=1"):
        with pytest.raises(ConfigError, match=r"expected KEY=VALUE with a dotted key"):
            cfgmod.load(p, [bad])
    with pytest.raises(ConfigError, match=r"'experiment' is a value, not a section"):
        cfgmod.load(p, ["experiment.name=y"])
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        cfgmod.load(p, ["rtl.shapes=[serial"])


def test_qat_stamp_keeps_every_setting_but_shapes_and_validation():
    """What a trained QAT net is stamped with: the `qat` section under the key "qat", less
    the four settings that pick designs and validation (they do not change the net)."""
    qat = {"shapes": "ring", "hidden": 8, "validation_fraction": 0.1, "shift": 2,
           "validation_folds": 5, "validation_seeds": [3], "lr": 0.5}
    assert cfgmod.qat_stamp(qat) == {"qat": {"hidden": 8, "shift": 2, "lr": 0.5}}
    assert cfgmod.qat_stamp(cfgmod.validate({}, "<t>").qat) == {"qat": {
        "hidden": 32, "input_bits": 2, "weight_bits": 2, "readout_weight_bits": 3,
        "activation_bits": 2, "shift": 3, "epochs": 100, "lr": 0.03, "batch_size": 32,
        "augment_shifts": 0, "weight_decay": 0.0, "input_dropout": 0.0, "distill": 0.0,
        "teacher_hidden": 128, "warp_px": 0.0, "warp_deg": 0.0, "warp_scale": 0.0, "seed": 0}}


def test_qat_validation_folds_refuses_one_fold():
    """One fold would train on nothing: refused when the config is read, naming the fix."""
    assert cfgmod.validate({"qat": {"validation_folds": 2}}, "<t>").qat.validation_folds == 2
    with pytest.raises(ConfigError, match=r"<t>: qat\.validation_folds: 1 would train on "
                                          r"nothing; set 0 .* or 2 or more folds"):
        cfgmod.validate({"qat": {"validation_folds": 1}}, "<t>")


def _refusal(fn, *args):
    with pytest.raises(ConfigError) as e:
        fn(*args)
    return str(e.value)


def test_layer_epochs_edges_and_message():
    """freeze.layer_epochs: one whole number per hidden layer, each in 1..train.epochs,
    non-decreasing (equal neighbours allowed); anything else is refused with one message."""
    two = {"net": {"hidden": [{"initial": 4, "cap": 4}, {"initial": 4, "cap": 4}]},
           "train": {"epochs": 10}}

    def cfg(ends):
        return _merge(two, {"freeze": {"layer_epochs": ends}})

    for ends in ([1, 10], [5, 5], [10, 10], None):
        assert cfgmod.validate(cfg(ends), "<t>").freeze.layer_epochs == ends
    for ends in ([5], [5, 5, 5], [True, 5], [5.0, 5], [0, 5], [5, 11], [6, 5]):
        assert _refusal(cfgmod.validate, cfg(ends), "<t>") == (
            f"<t>: freeze.layer_epochs {ends!r}: give 2 whole number(s), one per hidden layer, "
            "non-decreasing, each from 1 to train.epochs (10), or null")
    three = {"net": {"hidden": [{"initial": 4, "cap": 4}] * 3}, "train": {"epochs": 10},
             "freeze": {"layer_epochs": [1, 3, 2]}}  # the decrease is between the last two
    assert _refusal(cfgmod.validate, three, "<t>") == (
        "<t>: freeze.layer_epochs [1, 3, 2]: give 3 whole number(s), one per hidden layer, "
        "non-decreasing, each from 1 to train.epochs (10), or null")


def test_validate_messages_in_full():
    """The refusals of `validate`, word for word (the knob's doc where the message gives it)."""
    v = cfgmod.validate
    assert _refusal(v, {"seed": -1}) == ("<config>: seed: -1 is below the minimum 0 (seed for "
                                         "the split, initialization, shuffling and growth)")
    assert _refusal(v, {"seed": None}, "<t>") == ("<t>: seed: must not be null (seed for the "
                                                  "split, initialization, shuffling and growth)")
    assert _refusal(v, {"train": {"epochs": "ten"}}, "<t>") == (
        "<t>: train.epochs: 'ten' is not a whole number (training epochs)")
    assert _refusal(v, {"train": {"cache": 3}}, "<t>") == (
        "<t>: train.cache: 3 is not true/false (train the frontier on cached outputs of the "
        "frozen core)")
    assert _refusal(v, {"experiment": 3}, "<t>") == (
        "<t>: experiment: 3 is not a str (name of the run; outputs go to build/<experiment>/)")
    assert _refusal(v, {"train": {"lr": float("inf")}}, "<t>") == (
        "<t>: train.lr: inf is not a finite number")
    assert _refusal(v, {"train": {"lr": 11}}, "<t>") == (
        "<t>: train.lr: 11.0 is above the maximum 10.0 (Adam learning rate)")
    assert _refusal(v, {"data": {"dataset": "cifar"}}, "<t>") == (
        "<t>: data.dataset: 'cifar' is not allowed; choose one of digits, mnist1d, mnist")
    assert _refusal(v, {"train": [1, 2]}, "<t>") == (
        "<t>: train: expected a mapping of keys, got list")
    assert _refusal(v, [1, 2], "<t>") == "<t>: expected a mapping of keys, got list"
    assert _refusal(v, {"net": {"hidden": [{"initial": 4}, {"initial": 0}]}}, "<t>") == (
        "<t>: net.hidden[1].initial: 0 is below the minimum 1 (neurons at the start)")
    assert _refusal(v, {"net": {"hidden": []}}, "<t>") == (
        "<t>: net.hidden: expected a list of at least 1 item(s) (hidden layers, input side first)")
    assert _refusal(v, {"net": {"hidden": [{"initial": 9, "cap": 4}]}}, "<t>") == (
        "<t>: net.hidden[0].cap 4 is below initial 9; raise cap or lower initial")
    assert _refusal(v, {"train": {"lr": 0.01, "lr_final": 0.02}}, "<t>") == (
        "<t>: train.lr_final 0.02 is above train.lr 0.01; the schedule only decays")
    for path in (None, ""):
        assert _refusal(v, {"data": {"dataset": "mnist", "path": path}}, "<t>") == (
            "<t>: data.path is required for dataset 'mnist': a folder with "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte (optionally .gz)")
    assert _refusal(v, {"analog": {"r_min": 1e5, "r_max": 1e5, "r_inverter": 1e5}}, "<t>") == (
        "<t>: analog.r_max 100000 must be above analog.r_min 100000")
    assert _refusal(v, {"analog": {"r_inverter": 999.0}}, "<t>") == (
        "<t>: analog.r_inverter 999 lies outside analog.r_min..r_max (1000..1e+06)")
    assert _refusal(v, {"analog": {"tolerances": ["x", 0.0]}}, "<t>") == (
        "<t>: analog.tolerances ['x', 0.0] must be a non-empty list of fractions in (0, 0.2], "
        "e.g. [0.01, 0.001]")
    assert _refusal(v, {"rtl": {"package": "sg48"}}, "<t>") == (
        "<t>: key 'rtl.package' is no longer used; delete it")
    with pytest.raises(AttributeError) as e:
        _ = cfgmod.validate({}, "<t>").train.nope
    assert str(e.value) == "nope"


def test_load_and_set_messages_in_full(tmp_path):
    """The refusals of `load` and `--set`, word for word: the file, the problem, the fix."""
    p = tmp_path / "exp.yaml"
    assert _refusal(cfgmod.load, p) == f"{p}: config file not found (see configs/ for examples)"
    assert _refusal(cfgmod.load, tmp_path) == (
        f"{tmp_path}: is a folder, not a config file; name a YAML file such as "
        "configs/digits.yaml")
    p.write_bytes(b"\xff\xfe\x80binary")
    assert _refusal(cfgmod.load, p) == (f"{p}: not a text file; a config is YAML text such as "
                                        "configs/digits.yaml")
    p.write_text("train: {epochs: [\n")
    assert _refusal(cfgmod.load, p).startswith(f"{p}: not valid YAML: ")
    p.write_text("{}\n")
    assert _refusal(cfgmod.load, p) == (
        f"{p}: the config is empty; start from a copy of configs/digits.yaml (every key not "
        "given takes its default)")
    p.write_text("- 1\n- 2\n")
    assert _refusal(cfgmod.load, p) == f"{p}: expected a mapping of keys at the top, got list"
    p.write_text("experiment: x\n")
    assert _refusal(cfgmod.load, p, ["rtl.shapes=serial", "adc.bits=1"]) == (
        f"{p} with --set rtl.shapes=serial adc.bits=1: adc.bits: 1 is below the minimum 2 (bits "
        "per ADC code between the analog core and the frontier)")
    assert _refusal(cfgmod.load, p, ["rtl.shapes"]) == (
        "--set 'rtl.shapes': expected KEY=VALUE with a dotted key, e.g. --set rtl.shapes=serial")
    assert _refusal(cfgmod.load, p, ["rtl.shapes=[serial"]).startswith(
        "--set 'rtl.shapes=[serial': the value is not valid YAML: ")
    assert _refusal(cfgmod.load, p, ["experiment.name=y"]) == (
        f"{p}: --set 'experiment.name=y': 'experiment' is a value, not a section")
    # the value is everything after the first '='
    assert cfgmod.load(p, ["experiment=a=b"]).experiment == "a=b"
    data = {"rtl": {"shapes": "both"}}
    got = cfgmod.apply_overrides(data, ["rtl.shapes=serial", "sim.vectors=3"], "f")
    assert got == {"rtl": {"shapes": "serial"}, "sim": {"vectors": 3}}
    assert data == {"rtl": {"shapes": "both"}}  # the caller's data is left alone


def test_digest_is_the_sorted_json_hash():
    import hashlib

    want = hashlib.sha256(b'{"a": 2, "b": {"c": 1, "d": [1]}}').hexdigest()[:16]
    assert cfgmod.digest({"a": 2, "b": {"c": 1, "d": [1]}}) == want
    assert cfgmod.digest({"b": {"d": [1], "c": 1}, "a": 2}) == want  # key order is no change
