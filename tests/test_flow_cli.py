"""A model a user brings (`import-torch`) runs through every backend with `--crystal`,
from the command line, without editing the config's experiment name: outputs go to
build/<the Crystal's name>/. Then `report` collects what each stage wrote."""
import json

import pytest
import torch
import yaml
from torch import nn

from crystalbench import crystal as cm
from crystalbench.cli import main

# Small and quick: the backends' own figures are tested elsewhere; this is the plumbing.
CONFIG = {
    "experiment": "digits",  # deliberately not the Crystal's name
    "data": {"dataset": "digits"},
    "rtl": {"shapes": "serial", "digital_shapes": "none", "large_part": "none"},
    "sim": {"vectors": 4, "power_vectors": 2},
    "analog": {"monte_carlo_runs": 1, "tolerances": [0.01], "transient_samples": 3},
}


@pytest.mark.slow
def test_imported_crystal_through_every_stage(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 3), nn.ReLU(), nn.Linear(3, 10))
    torch.save(model, tmp_path / "mine.pt")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    build = tmp_path / "build"
    base = ["--build-dir", str(build)]
    assert main(base + ["import-torch", str(tmp_path / "mine.pt"), "--config", str(cfg)]) == 0
    crystal = build / "mine" / "crystal"
    digest = cm.digest(cm.load(crystal))
    for stage in ("sim-analog", "synth", "sim"):
        code = main(base + [stage, "--config", str(cfg), "--crystal", str(crystal)])
        out = capsys.readouterr()
        assert code == 0, out.err
    assert not (build / "digits").exists()
    for stage in ("analog", "fixed", "synth", "sim"):
        res = json.loads((build / "mine" / stage / "result.json").read_text())
        assert res["experiment"] == "mine" and res["crystal_digest"] == digest, stage
    sim = json.loads((build / "mine" / "sim" / "result.json").read_text())
    assert sim["all_bit_exact"] and set(sim["runs"]) == {"frontier_serial_rtl",
                                                         "frontier_serial_gates"}
    # the Crystal was read, never written
    assert cm.digest(cm.load(crystal)) == digest
    assert main(base + ["report"]) == 0
    text = (build / "report.md").read_text()
    assert "## Experiment `mine`" in text and "frontier_serial" in text
    assert "Analog core in ngspice" in text
