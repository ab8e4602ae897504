import contextlib
import copy
import io
import os
import shutil
from types import SimpleNamespace

import pytest
import yaml

from crystalbench import config as cfgmod

# A tiny crystal: two hidden layers on the digits grid, eager growth and freezing, so a
# run of a dozen epochs exercises nucleation, freezing front to back and the cache.
TINY = {
    "experiment": "tiny",
    "seed": 3,
    "data": {"dataset": "digits", "max_train": 400, "calibration_samples": 50},
    "net": {"hidden": [{"initial": 6, "cap": 10, "radius": 2.0},
                       {"initial": 4, "cap": 6, "radius": 3.0}]},
    "train": {"epochs": 14, "batch_size": 32, "lr": 0.02, "lr_final": 0.0005,
              "speedup_batches": 2},
    "growth": {"stall_epochs": 1, "min_improvement": 0.5, "count": 2, "until_epoch": 8,
               "score_samples": 64},
    "freeze": {"threshold": 0.2, "patience": 1, "min_age": 2},
}


def write_config(folder, data=None, name="tiny.yaml"):
    p = folder / name
    p.write_text(yaml.safe_dump(copy.deepcopy(TINY) if data is None else data))
    return p


@pytest.fixture
def tiny_cfg():
    def make(**overrides):
        d = copy.deepcopy(TINY)
        for key, value in overrides.items():
            section, name = key.split("__")
            d[section][name] = value
        return cfgmod.validate(d, "<tiny>")
    return make


@pytest.fixture(scope="session")
def tiny_data():
    from crystalbench.model import data

    cfg = cfgmod.validate(copy.deepcopy(TINY), "<tiny>")
    return data.load(cfg.data, cfg.seed)


def write_torch_file(path, content):
    """Raw bytes as they are, anything else through torch.save."""
    import torch

    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


def shared_scope(fixture_name, config):
    """Shared across tests normally; per test under mutation testing (mutmut sets
    MUTANT_UNDER_TEST): mutmut maps each function to the tests that ran it, and a fixture
    computed once would credit only the first test that used it."""
    return "function" if os.environ.get("MUTANT_UNDER_TEST") else "session"


@pytest.fixture(scope=shared_scope)
def trained(tmp_path_factory):
    """One uninterrupted `crystalbench train` of TINY, shared by the tests: its config
    file, build root and printed output. Tests that change a build use `copy_build`."""
    from crystalbench.cli import main

    root = tmp_path_factory.mktemp("trained")
    cfg = write_config(root)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--build-dir", str(root / "build"), "train", "--config", str(cfg),
                     "--quiet"]) == 0
    return SimpleNamespace(config=cfg, build=root / "build", run=root / "build" / "tiny" / "train",
                           crystal=root / "build" / "tiny" / "crystal", out=out.getvalue())


@pytest.fixture
def copy_build(trained, tmp_path):
    """A private copy of the shared build folder."""
    return shutil.copytree(trained.build, tmp_path / "build", symlinks=True)
