import copy

import pytest

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
