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
