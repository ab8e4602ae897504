"""Train -> Crystal: the `train`, `export` and bench jobs behind the CLI."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from crystalbench import config as cfgmod
from crystalbench import crystal as crystal_mod
from crystalbench.crystal import atomic_write_json

from . import data as data_mod
from .export import crystal_from_net
from .net import CrystalNet
from .train import Trainer, TrainError, measure_epoch_speedup


def stage_dir(build_root: str | Path, experiment: str, stage: str) -> Path:
    return Path(build_root) / experiment / stage


def train_experiment(cfg, build_root="build", resume=False, progress=True, stop_after=None) -> dict:
    """Train (or resume), export the Crystal, write train/result.json; return the result."""
    return _train(cfg, build_root, resume, progress, stop_after)[0]


def _train(cfg, build_root, resume, progress, stop_after):
    """train_experiment, also handing back the data set and the run state (for bench)."""
    ds = data_mod.load(cfg.data, cfg.seed)
    out = stage_dir(build_root, cfg.experiment, "train")
    t0 = time.perf_counter()
    trainer = Trainer(cfg, ds, out, progress=progress)
    st = trainer.run(resume=resume, stop_after=stop_after)
    seconds = time.perf_counter() - t0
    if st.epoch < cfg.train.epochs:
        return ({"status": "interrupted", "epoch": st.epoch,
                 "checkpoint": str(trainer.checkpoint_path)}, ds, st)
    return finish(cfg, ds, st.net, st.telemetry, build_root, seconds), ds, st


def finish(cfg, ds, net: CrystalNet, telemetry: list, build_root, seconds: float | None) -> dict:
    out = stage_dir(build_root, cfg.experiment, "train")
    c = crystal_from_net(net, ds, cfg.experiment, cfg.data.calibration_samples, cfg.seed,
                         provenance={"config": dict(cfg), "epochs": cfg.train.epochs})
    cdir = crystal_mod.save(c, stage_dir(build_root, cfg.experiment, "crystal"))
    s = c.summary()
    last = telemetry[-1] if telemetry else {}
    result = {
        "stage": "train",
        "experiment": cfg.experiment,
        "dataset": ds.name,
        "data": ds.split,
        "test_accuracy": s["reference_test_accuracy"],
        "train_accuracy": last.get("train_accuracy"),
        "neurons_final": s["hidden_neurons"],
        "frozen_fraction": s["frozen_fraction"],
        "core_neurons": s["core_neurons"],
        "frontier_neurons": s["frontier_neurons"],
        "boundary_neurons": s["boundary_neurons"],
        "connections": s["connections"],
        "sizes": s["sizes"],
        "epochs": cfg.train.epochs,
        "train_seconds": seconds,
        "crystal": str(cdir),
        "telemetry": str(out / "telemetry.csv"),
        "plot": str(out / "training.png"),
    }
    atomic_write_json(out / "result.json", result)
    return result


def export_checkpoint(checkpoint: str | Path, build_root="build") -> dict:
    """Write the Crystal from a checkpoint (finished or not): `crystalbench export`."""
    p = Path(checkpoint)
    if not p.exists():
        raise TrainError(f"{p}: checkpoint not found")
    ck = torch.load(p, weights_only=False)
    cfg = cfgmod.validate(ck["config"], str(p))
    ds = data_mod.load(cfg.data, cfg.seed)
    net = CrystalNet.from_state(ck["net"])
    return finish(cfg, ds, net, ck["telemetry"], build_root, None)


def bench_train(cfg, build_root="build", progress=True, repeats=5) -> dict:
    """One bench record: the crystal, its never-frozen baseline, and the epoch speedup."""
    result, ds, st = _train(cfg, build_root, resume=False, progress=progress, stop_after=None)
    net = st.net
    # Baseline: the same final neurons and connections, fresh weights, never frozen.
    base_cfg = cfgmod.validate({**cfg, "growth": {**cfg.growth, "enabled": False},
                                "freeze": {**cfg.freeze, "enabled": False},
                                "train": {**cfg.train, "speedup_batches": 0}},
                               f"baseline of {cfg.experiment}")
    gen = torch.Generator().manual_seed(cfg.seed)
    base = Trainer(base_cfg, ds, stage_dir(build_root, cfg.experiment, "baseline"),
                   net=net.architecture_copy(gen), progress=progress, checkpoints=False).run()
    _, base_acc = base.net.evaluate(torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test))
    # Training compute only (steps + cache builds), not evaluation, telemetry or checkpoints.
    crystal_s = sum(r["epoch_seconds"] + r["cache_seconds"] for r in st.telemetry)
    base_s = sum(r["epoch_seconds"] for r in base.telemetry)
    speed = measure_epoch_speedup(net, ds, cfg, repeats=repeats)
    return {
        "config": cfg.experiment,
        "dataset": ds.name,
        "test_accuracy": result["test_accuracy"],
        "baseline_test_accuracy": base_acc,
        "frozen_fraction": result["frozen_fraction"],
        "speedup": speed["speedup"],
        "neurons_final": result["neurons_final"],
        "sizes": result["sizes"],
        "epochs": cfg.train.epochs,
        "train_step_seconds": crystal_s,
        "baseline_train_step_seconds": base_s,
        "training_speedup": base_s / crystal_s,
        "epoch_timing": speed,
        "baseline": "same final neurons, positions and connections, fresh initialization, "
                    "all neurons trained every epoch (no freezing, no growth), same epochs and "
                    "learning-rate schedule",
    }
