"""The command line, as a user runs it: train -> Crystal -> info / export / import-torch /
data / bench; every user mistake one line on stderr and exit status 2."""
import json
import os

import numpy as np
import pytest
import torch

from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench import results
from crystalbench.cli import main
from crystalbench.model import train as train_mod

from .conftest import TINY, write_config


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crystalbench: error: "), err
    return lines[0]


def prev_folders(folder, name):
    return sorted(p.name for p in folder.glob(f"{name}.prev-*"))


def test_train_writes_crystal_telemetry_and_plot(trained, capsys):
    c = cm.load(trained.crystal)
    ref = c.reference
    acc = float((ref.outputs[-1].argmax(1) == ref.y).mean())
    hidden = sum(layer.n_out for layer in c.layers[:-1])
    core = int(sum(x.sum() for x in c.partition.core))
    frontier = sum(layer.n_out for layer in c.layers) - core
    boundary = int(sum(b.sum() for b in c.partition.boundary))
    assert trained.out.splitlines()[0] == (
        f"test accuracy {acc:.4f}; {hidden} hidden neurons, {core / hidden:.1%} frozen ({core} "
        f"core, {frontier} frontier incl. readout, {boundary} boundary)")
    assert f"crystal:   {trained.crystal}/crystal.json + crystal.npz" in trained.out
    assert f"results: {trained.run / 'result.json'}" in trained.out
    res = json.loads((trained.run / "result.json").read_text())
    assert res["status"] == "finished" and res["stage"] == "train"
    assert res["test_accuracy"] == acc and res["neurons_final"] == hidden
    assert res["crystal_digest"] == cm.digest(c) == json.loads(
        (trained.crystal / "crystal.json").read_text())["digest"]
    assert (trained.run / "training.png").stat().st_size > 10_000
    rows = json.loads((trained.run / "telemetry.json").read_text())
    assert [r["epoch"] for r in rows] == list(range(TINY["train"]["epochs"]))
    assert rows[-1]["neurons_total"] == hidden and rows[-1]["neurons_frozen"] == core
    assert (trained.run / "telemetry.csv").read_text().count("\n") == len(rows) + 1

    assert main(["info", str(trained.crystal)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sizes"] == [64] + [layer.n_out for layer in c.layers]
    assert info["digest"] == cm.digest(c)


def test_ctrl_c_then_stop_then_resume_gives_the_same_crystal(trained, tmp_path, capsys,
                                                             monkeypatch):
    cfg = write_config(tmp_path)
    build = tmp_path / "build"
    argv = ["--build-dir", str(build), "train", "--config", str(cfg), "--quiet"]
    save = train_mod.Trainer.save_checkpoint

    def ctrl_c_after_epoch_3(self, st):
        save(self, st)
        if st.epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.Trainer, "save_checkpoint", ctrl_c_after_epoch_3)
    assert main(argv) == 130
    ck = build / "tiny" / "train" / "checkpoint.pt"
    err = capsys.readouterr().err.strip()
    assert err == (f"interrupted; the checkpoint {ck} is intact (written atomically after each "
                   f"finished epoch); continue with `crystalbench train --config {cfg} --resume`")
    assert train_mod.read_checkpoint(ck)["epoch"] == 3
    monkeypatch.undo()

    assert main(argv + ["--resume", "--stop-after", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"resuming {ck} at epoch 3",
        f"stopped after epoch 5 of 14; the checkpoint {ck} holds the run: continue with "
        "`crystalbench train --resume` and the same --config"]
    assert not (build / "tiny" / "crystal").exists()
    assert main(argv + ["--resume"]) == 0
    assert cm.digest(cm.load(build / "tiny" / "crystal")) == cm.digest(cm.load(trained.crystal))
    rows = json.loads((build / "tiny" / "train" / "telemetry.json").read_text())
    assert [r["epoch"] for r in rows] == list(range(14))


def test_a_fresh_run_keeps_every_previous_run(copy_build, tmp_path, capsys):
    cfg = write_config(tmp_path)
    exp = copy_build / "tiny"
    finished = (exp / "train" / "checkpoint.pt").read_bytes()
    argv = ["--build-dir", str(copy_build), "train", "--config", str(cfg), "--quiet",
            "--stop-after", "1"]
    assert main(argv) == 0
    assert main(argv) == 0
    kept = prev_folders(exp, "train")
    assert len(kept) == 2 and f"previous run kept in {exp / kept[0]}" in capsys.readouterr().out
    first, second = (train_mod.read_checkpoint(exp / k / "checkpoint.pt") for k in kept)
    assert (exp / kept[0] / "checkpoint.pt").read_bytes() == finished and first["epoch"] == 14
    assert second["epoch"] == 1 and (exp / kept[0] / "result.json").exists()
    assert train_mod.read_checkpoint(exp / "train" / "checkpoint.pt")["epoch"] == 1
    assert prev_folders(exp, "crystal") == []  # a stopped run writes no Crystal


def test_a_second_run_on_a_locked_folder_is_refused(copy_build, capsys):
    run = copy_build / "tiny" / "train"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with results.lock(run):
        assert main(["--build-dir", str(copy_build), "train", "--config",
                     str(write_config(copy_build)), "--quiet"]) == 2
    line = one_line_error(capsys)
    assert f"{run} is being written by another crystalbench run (pid " in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert prev_folders(copy_build / "tiny", "train") == []


def test_export_of_another_checkpoint_keeps_the_current_crystal(copy_build, trained, tmp_path,
                                                                capsys):
    exp = copy_build / "tiny"
    current = cm.digest(cm.load(exp / "crystal"))
    early = tmp_path / "early"  # a checkpoint after 2 epochs: another Crystal
    from crystalbench import config as cfgmod
    from crystalbench.model import data

    cfg = cfgmod.load(trained.config)
    train_mod.Trainer(cfg, data.load(cfg.data, cfg.seed), early, progress=False).run(stop_after=2)
    assert main(["--build-dir", str(copy_build), "export", str(early / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    kept = prev_folders(exp, "crystal")
    assert len(kept) == 1 and cm.digest(cm.load(exp / kept[0])) == current
    assert f"previous Crystal kept in {exp / kept[0]}" in out
    res = json.loads((exp / "export" / "result.json").read_text())
    new = cm.load(exp / "crystal")
    assert res["epoch"] == 2 and res["crystal_digest"] == cm.digest(new) != current
    assert res["previous_crystal"] == str(exp / kept[0])
    # Exporting the Crystal already there changes nothing and keeps nothing more.
    assert main(["--build-dir", str(copy_build), "export", str(early / "checkpoint.pt")]) == 0
    assert prev_folders(exp, "crystal") == kept


def test_import_torch_keeps_the_crystal_it_replaces(copy_build, tmp_path, capsys):
    exp = copy_build / "tiny"
    current = cm.digest(cm.load(exp / "crystal"))
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    path = tmp_path / "mine.pt"
    torch.save(model.state_dict(), path)
    cfg = write_config(tmp_path)
    base = ["--build-dir", str(copy_build), "import-torch", str(path), "--config", str(cfg),
            "--sizes", "64,8,10"]
    assert main(base + ["--name", "tiny"]) == 2
    assert "does not record the activation" in one_line_error(capsys)
    assert prev_folders(exp, "crystal") == []
    assert main(base + ["--name", "tiny", "--activation", "relu", "--input-scale", "1"]) == 0
    out = capsys.readouterr().out
    kept = prev_folders(exp, "crystal")
    assert len(kept) == 1 and cm.digest(cm.load(exp / kept[0])) == current
    c = cm.load(exp / "crystal")
    assert c.summary()["core_neurons"] == 8 and (c.input.offset, c.input.scale) == (0.0, 1.0)
    with torch.no_grad():
        np.testing.assert_array_equal(c.reference.outputs[-1],
                                      model(torch.from_numpy(c.reference.x)).numpy())
    assert "model inputs: x = (raw - 0) * 1\n" in out
    res = json.loads((exp / "import" / "result.json").read_text())
    assert res["previous_crystal"] == str(exp / kept[0]) and res["input_scale"] == 1.0
    # Default name: the file's stem; default scaling: the data set's own, said so.
    assert main(["--build-dir", str(copy_build), "import-torch", str(path), "--config", str(cfg),
                 "--sizes", "64,8,10", "--activation", "relu"]) == 0
    assert "x = (raw - 0) * 0.0625, the digits data set's own scaling" in capsys.readouterr().out
    assert cm.load(copy_build / "mine" / "crystal").input.scale == 0.0625


def test_import_torch_refuses_a_tanh_model(tmp_path, capsys):
    path = tmp_path / "tanh.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Tanh(),
                                   torch.nn.Linear(8, 10)), path)
    assert main(["--build-dir", str(tmp_path), "import-torch", str(path), "--config",
                 str(write_config(tmp_path))]) == 2
    assert f"{path}: holds torch.nn.modules.activation.Tanh" in one_line_error(capsys)
    assert not (tmp_path / "tanh").exists()  # refused before anything is written


@pytest.mark.parametrize("argv, message", [
    (["import-torch", "{model}", "--sizes", "64,x,10"],
     "--sizes '64,x,10': expected whole numbers separated by commas, e.g. 64,32,10"),
    (["import-torch", "{text}"], "{text}: not a PyTorch model written by torch.save"),
    (["train", "--config", "{tmp}"], "{tmp}: is a folder, not a config file"),
    (["train", "--config", "{binary}"], "{binary}: not a text file"),
    (["train", "--config", "{empty}"], "{empty}: the config is empty"),
    (["export", "{text}"], "{text}: not a crystalbench checkpoint written by torch.save"),
])
def test_user_mistakes_are_one_line_with_the_fix(tmp_path, capsys, argv, message):
    files = {"tmp": tmp_path, "model": tmp_path / "m.pt", "text": tmp_path / "notes.txt",
             "binary": tmp_path / "model.bin", "empty": tmp_path / "empty.yaml"}
    torch.save(torch.nn.Linear(64, 10).state_dict(), files["model"])
    files["text"].write_text("a note\n")
    files["binary"].write_bytes(bytes(range(256)))
    files["empty"].write_text("# nothing yet\n\n")
    cfg = write_config(tmp_path)
    argv = [a.format(**files) for a in argv]
    if argv[0] == "import-torch":
        argv += ["--config", str(cfg)]
    assert main(["--build-dir", str(tmp_path / "build"), *argv]) == 2
    assert message.format(**files) in one_line_error(capsys)
    assert not (tmp_path / "build" / "digits").exists()  # no schema-default run


def test_bad_config_is_a_clear_error_before_work(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  lr: -1\n")
    assert main(["--build-dir", str(tmp_path), "train", "--config", str(p)]) == 2
    assert "bad.yaml: train.lr: -1.0 is below the minimum 0.0" in one_line_error(capsys)
    assert not (tmp_path / "digits").exists()


def test_bench_runs_every_seed_and_reports_the_spread(tmp_path, capsys):
    d = json.loads(json.dumps(TINY))
    d.update(experiment="benchy", bench={"seeds": 2})  # no --seeds: 0 .. bench.seeds-1
    d["train"].update(epochs=3, speedup_batches=0)
    cfg = write_config(tmp_path, d)
    threads = torch.get_num_threads()
    assert main(["--build-dir", str(tmp_path), "bench", "--config", str(cfg), "--repeats", "1",
                 "--quiet", "--set", "data.validation_fraction=0.2"]) == 0
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "bench" / "train.json").read_text())
    m = report["measured"]
    assert m["machine"]["torch"] == torch.__version__
    assert m["machine"]["torch_threads"] == torch.get_num_threads()
    # the kernels that ran
    assert m["machine"]["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["machine"]["mkl_cbwr"] == os.environ["MKL_CBWR"]
    assert m["machine"]["cores"] == results.machine()["cores"] and m["date"][:2] == "20"
    assert m["commit"] == results.git_commit()
    recs = report["records"]
    assert [r["seed"] for r in recs] == [0, 1]
    validated = cfgmod.load(cfg, ["data.validation_fraction=0.2"])
    for seed, rec in enumerate(recs):
        # where each record came from: commit, config digest, seed, machine and date
        assert rec["measured"]["commit"] == results.git_commit()
        assert rec["measured"]["date"][:2] == "20" and rec["measured"]["machine"]["cpu"]
        assert rec["config_digest"] == train_mod.training_digest(
            cfgmod.validate({**validated, "seed": seed}, "<seed>"))
        assert rec["torch_threads"] == 1 and rec["config_file"] == str(cfg)
        assert rec["config"] == "benchy" and rec["epochs"] == 3
        assert rec["epoch_timing"]["repeats"] == 1
        assert rec["training_speedup"] == (rec["baseline_train_step_cpu_seconds"]
                                           / rec["train_step_cpu_seconds"])
        assert rec["training_speedup_wall"] == (rec["baseline_train_step_seconds"]
                                                / rec["train_step_seconds"])
        rows = json.loads((tmp_path / "bench" / "benchy" / f"seed{seed}" / "train" /
                           "telemetry.json").read_text())
        assert rec["train_step_cpu_seconds"] == sum(r["cpu_seconds"] for r in rows) > 0
        assert rec["accuracy_gap"] == rec["baseline_test_accuracy"] - rec["test_accuracy"]
        c = cm.load(tmp_path / "bench" / "benchy" / f"seed{seed}" / "crystal")
        s = c.summary()
        assert (rec["test_accuracy"], rec["neurons_final"], rec["frozen_fraction"],
                rec["sizes"], rec["crystal_digest"]) == (
            s["reference_test_accuracy"], s["hidden_neurons"], s["frozen_fraction"], s["sizes"],
            cm.digest(c))
        assert 0 <= rec["validation_accuracy"] <= 1 and 0 <= rec["baseline_validation_accuracy"] <= 1
    assert recs[0]["config_digest"] != recs[1]["config_digest"]
    [entry] = report["configs"]
    assert entry["seeds"] == [0, 1] and entry["config"] == "benchy"
    for key in ("test_accuracy", "baseline_test_accuracy", "frozen_fraction", "neurons_final",
                "speedup", "training_speedup", "validation_accuracy"):
        v = np.array([r[key] for r in recs], dtype=float)
        st = entry["stats"][key]
        assert st["n"] == 2 and st["min"] == v.min() and st["max"] == v.max()
        assert st["mean"] == pytest.approx(v.mean(), rel=1e-12)
        assert st["std"] == pytest.approx(v.std(ddof=1), rel=1e-9, abs=1e-15)
    assert out.splitlines()[-1] == f"wrote {tmp_path / 'bench' / 'train.json'}"
    t = entry["stats"]["test_accuracy"]
    assert out.splitlines()[-2].startswith(
        f"benchy over seeds 0,1: test {t['mean']:.4f} +- {t['std']:.4f} (min {t['min']:.4f}, "
        f"max {t['max']:.4f}); baseline ")

    def pm(key):
        s = entry["stats"][key]
        return f"{s['mean']:.4f} +- {s['std']:.4f} (min {s['min']:.4f}, max {s['max']:.4f})"

    assert out.splitlines()[-2].endswith(
        f"x; validation {pm('validation_accuracy')}, its baseline "
        f"{pm('baseline_validation_accuracy')}")
    # the report: per config the mean +- std (min .. max), then a row per seed
    from crystalbench import report

    lines = report.bench_section(tmp_path)
    row = next(line for line in lines if line.startswith("| benchy | 0,1 | "))
    assert row.split(" | ")[2] == (f"{t['mean']:.4f} +- {t['std']:.4f} "
                                   f"({t['min']:.4f} .. {t['max']:.4f})")
    v, vb = (entry["stats"][k] for k in ("validation_accuracy", "baseline_validation_accuracy"))
    assert row.split(" | ")[-2:] == [
        f"{v['mean']:.4f} +- {v['std']:.4f} ({v['min']:.4f} .. {v['max']:.4f})",
        f"{vb['mean']:.4f} +- {vb['std']:.4f} ({vb['min']:.4f} .. {vb['max']:.4f}) |"]
    assert sum(line.startswith("| benchy | ") for line in lines) == 3


def test_bench_seeds_option_overrides_the_config(tmp_path, capsys):
    d = json.loads(json.dumps(TINY))
    d["train"].update(epochs=1, speedup_batches=0)
    cfg = write_config(tmp_path, d)
    assert main(["--build-dir", str(tmp_path), "bench", "--config", str(cfg), "--repeats", "1",
                 "--quiet", "--seeds", "4"]) == 0
    report = json.loads((tmp_path / "bench" / "train.json").read_text())
    assert [r["seed"] for r in report["records"]] == [4]
    st = report["configs"][0]["stats"]["test_accuracy"]
    assert st["std"] == 0.0 and st["mean"] == st["min"] == st["max"] == report["records"][0][
        "test_accuracy"]
    assert st["n"] == 1 and report["configs"][0]["stats"]["validation_accuracy"]["n"] == 0
    # no validation set: the headline ends at the whole-run speedup
    headline = capsys.readouterr().out.splitlines()[-2]
    assert headline.endswith("x") and "validation" not in headline


@pytest.mark.parametrize("seeds", ["0,x", "", "1,1", "-1,2", "0,,1"])
def test_bad_seeds_are_refused_before_training(tmp_path, capsys, seeds):
    cfg = write_config(tmp_path)
    assert main(["--build-dir", str(tmp_path), "bench", "--config", str(cfg),
                 f"--seeds={seeds}"]) == 2
    assert (f"--seeds {seeds!r}: expected distinct whole numbers >= 0 separated by commas, "
            "e.g. --seeds 0,1,2,3,4") in one_line_error(capsys)
    assert not (tmp_path / "bench").exists()


def test_spread_by_hand():
    from crystalbench.model.pipeline import spread

    assert spread([0.96, 0.98, None, float("nan")]) == {
        "mean": pytest.approx(0.97), "std": pytest.approx(0.0141421356, rel=1e-8),
        "min": 0.96, "max": 0.98, "n": 2}
    assert spread([]) == {"mean": None, "std": None, "min": None, "max": None, "n": 0}
