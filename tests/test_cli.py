"""The command line, as a user runs it: train -> Crystal -> info / export / import-torch."""
import copy
import json

import torch
import yaml

from crystalbench import crystal as cm
from crystalbench.cli import main

from .conftest import TINY


def write_cfg(tmp_path, **train):
    d = copy.deepcopy(TINY)
    d["train"].update(train)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_train_writes_crystal_telemetry_and_plot(tmp_path, capsys):
    cfg = write_cfg(tmp_path)
    build = tmp_path / "build"
    assert main(["--build-dir", str(build), "train", "--config", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "training.png" in out
    run = build / "tiny" / "train"
    res = json.loads((run / "result.json").read_text())
    c = cm.load(build / "tiny" / "crystal")
    assert res["test_accuracy"] == c.summary()["reference_test_accuracy"]
    assert (run / "training.png").stat().st_size > 10_000
    rows = json.loads((run / "telemetry.json").read_text())
    assert len(rows) == TINY["train"]["epochs"]
    assert {"loss", "neurons_total", "neurons_frozen", "frozen_fraction", "epoch_seconds", "speedup"} <= rows[0].keys()
    assert (run / "telemetry.csv").read_text().count("\n") == len(rows) + 1

    assert main(["info", str(build / "tiny" / "crystal")]) == 0
    assert json.loads(capsys.readouterr().out)["sizes"][0] == 64

    # export from the checkpoint gives the same Crystal
    assert main(["--build-dir", str(tmp_path / "b2"), "export", str(run / "checkpoint.pt")]) == 0
    d = cm.load(tmp_path / "b2" / "tiny" / "crystal")
    for a, b in zip(c.layers, d.layers):
        assert (a.weights == b.weights).all()


def test_stop_and_resume_from_the_command_line(tmp_path, capsys):
    cfg = write_cfg(tmp_path)
    build = str(tmp_path / "build")
    assert main(["--build-dir", build, "train", "--config", str(cfg), "--quiet", "--stop-after", "4"]) == 0
    assert "continue with --resume" in capsys.readouterr().out
    assert main(["--build-dir", build, "train", "--config", str(cfg), "--quiet", "--resume"]) == 0
    rows = json.loads((tmp_path / "build" / "tiny" / "train" / "telemetry.json").read_text())
    assert [r["epoch"] for r in rows] == list(range(TINY["train"]["epochs"]))
    # A fresh run keeps the old one aside instead of deleting it.
    assert main(["--build-dir", build, "train", "--config", str(cfg), "--quiet", "--stop-after", "1"]) == 0
    assert (tmp_path / "build" / "tiny" / "train.prev" / "checkpoint.pt").exists()


def test_bad_config_is_a_clear_error_before_work(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  lr: -1\n")
    assert main(["--build-dir", str(tmp_path), "train", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: train.lr: -1.0 is below the minimum 0.0" in err
    assert not (tmp_path / "digits").exists()


def test_import_torch_from_the_command_line(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    path = tmp_path / "mine.pt"
    torch.save(model.state_dict(), path)
    cfg = write_cfg(tmp_path)
    assert main(["--build-dir", str(tmp_path), "import-torch", str(path), "--sizes", "64,8,10",
                 "--config", str(cfg)]) == 0
    c = cm.load(tmp_path / "mine" / "crystal")
    assert c.summary()["core_neurons"] == 8
    assert main(["--build-dir", str(tmp_path), "import-torch", str(path), "--config", str(cfg)]) == 2
    assert "needs sizes" in capsys.readouterr().err
