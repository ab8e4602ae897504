"""The train stage (config -> trained crystal net -> Crystal) and the jobs beside it:
`export` (Crystal from a checkpoint), `import-torch` (Crystal from a PyTorch MLP) and
`bench` (crystal vs never-frozen baseline).

Nothing here replaces what a user had: a fresh run moves the previous train/ folder
aside, and a different Crystal in crystal/ is kept as crystal.prev-<date>-<time>.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

import torch

from crystalbench import config as cfgmod
from crystalbench import crystal as crystal_mod
from crystalbench import results, stage
from crystalbench.results import Paths, atomic_write_json, keep_previous, lock, measured

from . import data as data_mod
from .export import crystal_from_net, crystal_from_torch, load_model
from .net import CrystalNet
from .train import Trainer, measure_epoch_speedup, plain, read_checkpoint, training_digest

NAME = "train"
WRITES = ("train", "crystal")
NEEDS_CRYSTAL = False


def run(crystal, cfg, paths: Paths, log, resume=False, stop_after=None, progress=True) -> dict:
    """Train (or resume) the config's crystal net into build/<experiment>/train and write
    its Crystal to build/<experiment>/crystal. `crystal` is unused (this stage makes it)."""
    ds = data_mod.load(cfg.data, cfg.seed)
    return _train(cfg, ds, paths, log, resume, stop_after, progress)[0]


def _train(cfg, ds, paths: Paths, log, resume, stop_after, progress):
    """The train stage, also handing back the run state (for bench)."""
    out = paths.stage(NAME)
    trainer = Trainer(cfg, ds, out, progress=progress, log=log)
    kept_run = None
    if not (resume and trainer.checkpoint_path.exists()):
        kept_run = keep_previous(out)
    t0 = time.perf_counter()
    st = trainer.run(resume=resume, stop_after=stop_after)
    seconds = time.perf_counter() - t0
    kept_lines = [f"previous run kept in {kept_run}"] if kept_run else []
    if st.epoch < cfg.train.epochs:
        result = {"status": "stopped", "epoch": st.epoch, "epochs": cfg.train.epochs,
                  "checkpoint": str(trainer.checkpoint_path), "previous_run": kept_run}
        summary = [f"stopped after epoch {st.epoch} of {cfg.train.epochs}; the checkpoint "
                   f"{trainer.checkpoint_path} holds the run: continue with `crystalbench "
                   "train --resume` and the same --config"] + kept_lines
        return stage.finish(NAME, paths, result, summary), st
    result, summary = _write_crystal(cfg, ds, st.net, paths)
    last = st.telemetry[-1] if st.telemetry else {}
    out_files = {"telemetry": str(out / "telemetry.csv"), "plot": str(out / "training.png")}
    result.update(status="finished", train_accuracy=last.get("train_accuracy"),
                  validation_accuracy=last.get("validation_accuracy"),
                  train_seconds=seconds, previous_run=kept_run, **out_files,
                  # the whole run's training steps and cache builds, resumed parts included
                  train_step_seconds=sum(r["epoch_seconds"] + r["cache_seconds"]
                                         for r in st.telemetry))
    summary += [f"telemetry: {out_files['telemetry']}", f"plot:      {out_files['plot']}"]
    return stage.finish(NAME, paths, result, summary + kept_lines), st


def _write_crystal(cfg, ds, net: CrystalNet, paths: Paths) -> tuple[dict, list[str]]:
    """Save the net's Crystal (keeping a different one in the way); result and summary."""
    c = crystal_from_net(net, ds, cfg.experiment, cfg.data.calibration_samples, cfg.seed,
                         provenance={"config": plain(cfg), "epochs": cfg.train.epochs})
    kept = crystal_mod.save(c, paths.crystal, keep=True)
    s = c.summary()
    result = {
        "dataset": ds.name, "data": ds.split, "test_accuracy": s["reference_test_accuracy"],
        "neurons_final": s["hidden_neurons"], "frozen_fraction": s["frozen_fraction"],
        "core_neurons": s["core_neurons"], "frontier_neurons": s["frontier_neurons"],
        "boundary_neurons": s["boundary_neurons"], "connections": s["connections"],
        "sizes": s["sizes"], "epochs": cfg.train.epochs, "crystal": str(paths.crystal),
        "crystal_digest": crystal_mod.digest(c), "previous_crystal": kept,
    }
    summary = [f"test accuracy {s['reference_test_accuracy']:.4f}; {s['hidden_neurons']} hidden "
               f"neurons, {s['frozen_fraction']:.1%} frozen ({s['core_neurons']} core, "
               f"{s['frontier_neurons']} frontier incl. readout, {s['boundary_neurons']} "
               "boundary)",
               f"crystal:   {paths.crystal}/crystal.json + crystal.npz"]
    if kept:
        summary.append(f"previous Crystal kept in {kept}")
    return result, summary


def export_checkpoint(checkpoint: str | Path, build_root, log) -> dict:
    """`crystalbench export`: the Crystal of a checkpoint (finished or not) into
    build/<its experiment>/crystal, the result into build/<experiment>/export."""
    ck = read_checkpoint(checkpoint)
    cfg = cfgmod.validate(ck["config"], f"{checkpoint} (its config)")
    paths = Paths(build_root, cfg.experiment)
    ds = data_mod.load(cfg.data, cfg.seed)
    with lock(paths.crystal), lock(paths.stage("export")):
        log(f"writing the Crystal of {checkpoint} (epoch {ck['epoch']} of {cfg.train.epochs})")
        result, summary = _write_crystal(cfg, ds, CrystalNet.from_state(ck["net"]), paths)
        result.update(checkpoint=str(checkpoint), epoch=ck["epoch"])
        summary.insert(1, f"from:      {checkpoint}, after epoch {ck['epoch']} of "
                          f"{cfg.train.epochs}")
        return stage.finish("export", paths, result, summary)


def import_torch(model_path, cfg, build_root, name, sizes, activation, input_scale,
                 input_offset, log) -> dict:
    """`crystalbench import-torch`: a trained PyTorch MLP as a Crystal into
    build/<name>/crystal (a different one there is kept), the result into build/<name>/import."""
    paths = Paths(build_root, name or Path(model_path).stem)
    model = load_model(model_path)
    ds = data_mod.load(cfg.data, cfg.seed)
    log(f"importing {model_path} with the {ds.name} data of the config")
    c = crystal_from_torch(model, ds, name=paths.experiment, sizes=sizes, activation=activation,
                           input_scale=input_scale, input_offset=input_offset,
                           calibration_samples=cfg.data.calibration_samples, seed=cfg.seed,
                           provenance={"model_file": str(model_path)})
    s = c.summary()
    own = input_scale is None and input_offset is None
    with lock(paths.crystal), lock(paths.stage("import")):
        kept = crystal_mod.save(c, paths.crystal, keep=True)
        result = {"model_file": str(model_path), "dataset": ds.name, "data": ds.split,
                  "input_offset": c.input.offset, "input_scale": c.input.scale,
                  "input_scaling": "the data set's own" if own else "given",
                  "test_accuracy": s["reference_test_accuracy"], "sizes": s["sizes"],
                  "core_neurons": s["core_neurons"], "crystal": str(paths.crystal),
                  "crystal_digest": crystal_mod.digest(c), "previous_crystal": kept}
        summary = [f"crystal: {paths.crystal} (sizes {s['sizes']}, {s['core_neurons']} core "
                   f"neurons, reference test accuracy {s['reference_test_accuracy']:.4f})",
                   f"model inputs: x = (raw - {c.input.offset:g}) * {c.input.scale:g}" +
                   (f", the {ds.name} data set's own scaling (a model trained on other units "
                    "needs --input-scale/--input-offset)" if own else "")]
        if kept:
            summary.append(f"previous Crystal kept in {kept}")
        return stage.finish("import", paths, result, summary)


# ---- bench ---------------------------------------------------------------------------------
BENCH_STATS = ("test_accuracy", "baseline_test_accuracy", "accuracy_gap", "frozen_fraction",
               "neurons_final", "speedup", "training_speedup", "training_speedup_wall",
               "validation_accuracy",
               "baseline_validation_accuracy")


def bench_seeds(cfg, seeds=None) -> list[int]:
    """The seeds a config is benched with: `seeds` if given, else 0 .. bench.seeds-1."""
    return list(seeds) if seeds is not None else list(range(cfg.bench.seeds))


def spread(values) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max over seeds, and n;
    values that were not measured (None or NaN) are left out and counted."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def bench(cfgs, config_paths, build_root, repeats, progress, log, seeds=None) -> dict:
    """`crystalbench bench`: per config and seed a crystal run, its never-frozen baseline and
    the epoch speedup, into build/bench/<experiment>/seed<N>/; per config the mean, standard
    deviation, min and max over seeds. Everything in build/bench/train.json (rewritten
    atomically after each run, with the machine, date and commit)."""
    root = Path(build_root) / "bench"
    out = root / "train.json"
    plan = [(path, cfg, bench_seeds(cfg, seeds)) for path, cfg in zip(config_paths, cfgs)]
    total = sum(len(s) for _, _, s in plan)
    records, configs, summary, done = [], [], [], 0
    # The code that runs is the one checked out now: others may commit while a long
    # bench runs, so the commit is taken once, here, and stamped on every record.
    commit = results.git_commit()
    with lock(root):
        for path, cfg, cfg_seeds in plan:
            entry = {"config": cfg.experiment, "config_file": str(path),
                     "config_digest": training_digest(cfg), "seeds": cfg_seeds}
            configs.append(entry)
            mine = []
            for seed in cfg_seeds:
                done += 1
                log(f"bench {done}/{total}: {path} seed {seed} (crystal run, baseline run, "
                    "epoch timing)")
                scfg = cfgmod.validate({**cfg, "seed": seed}, f"{path} (seed {seed})")
                t0 = time.perf_counter()
                rec = bench_one(scfg, Paths(root / cfg.experiment, f"seed{seed}"), progress,
                                repeats)
                rec["measured"]["commit"] = commit
                rec.update(config_file=str(path), bench_seconds=time.perf_counter() - t0)
                records.append(rec)
                mine.append(rec)
                entry["stats"] = {k: spread(r.get(k) for r in mine) for k in BENCH_STATS}
                atomic_write_json(out, {"measured": {**_measured(), "commit": commit},
                                        "configs": configs, "records": records})
            summary.append(headline(entry))
    return {"file": str(out), "records": records, "configs": configs,
            "summary": summary + [f"wrote {out}"]}


def headline(entry: dict) -> str:
    """A config's line: means over seeds, with the spread beside them."""
    st = entry["stats"]

    def pm(k, fmt):
        s = st[k]
        if s["mean"] is None:
            return "n/a"
        return (f"{s['mean']:{fmt}} +- {s['std']:{fmt}} (min {s['min']:{fmt}}, "
                f"max {s['max']:{fmt}})")

    validation = ("" if st["validation_accuracy"]["mean"] is None else
                  f"; validation {pm('validation_accuracy', '.4f')}, its baseline "
                  f"{pm('baseline_validation_accuracy', '.4f')}")
    return (f"{entry['config']} over seeds {','.join(map(str, entry['seeds']))}: test "
            f"{pm('test_accuracy', '.4f')}; baseline {pm('baseline_test_accuracy', '.4f')}; "
            f"frozen {pm('frozen_fraction', '.3f')}; neurons {pm('neurons_final', '.1f')}; "
            f"epoch speedup {pm('speedup', '.2f')}x; whole-run speedup "
            f"{pm('training_speedup', '.2f')}x{validation}")


def _measured() -> dict:
    m = measured()
    # the kernels that ran: the same config and seed give other bits on other kernels
    m["machine"] = {**m["machine"], "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "mkl_cbwr": os.environ.get("MKL_CBWR")}
    return m


def bench_one(cfg, paths: Paths, progress=True, repeats=5) -> dict:
    """One bench record: the crystal, its never-frozen baseline and the epoch speedup, with
    what it came from (commit, config digest, seed, machine, date)."""
    ds = data_mod.load(cfg.data, cfg.seed)
    result, st = _train(cfg, ds, paths, stage.quiet, resume=False, stop_after=None,
                        progress=progress)
    net = st.net
    # Baseline: the same final neurons and connections, fresh weights, never frozen.
    base_cfg = cfgmod.validate({**cfg, "growth": {**cfg.growth, "enabled": False},
                                "freeze": {**cfg.freeze, "enabled": False},
                                "train": {**cfg.train, "speedup_batches": 0}},
                               f"baseline of {cfg.experiment}")
    gen = torch.Generator().manual_seed(cfg.seed)
    base = Trainer(base_cfg, ds, paths.stage("baseline"), net=net.architecture_copy(gen),
                   progress=progress, checkpoints=False).run()
    _, base_acc = base.net.evaluate(torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test))
    base_val = (None if ds.x_val is None else
                base.net.evaluate(torch.from_numpy(ds.x_val), torch.from_numpy(ds.y_val))[1])
    # Training compute only (steps + cache builds), not evaluation, telemetry or checkpoints.
    crystal_s = sum(r["epoch_seconds"] + r["cache_seconds"] for r in st.telemetry)
    base_s = sum(r["epoch_seconds"] for r in base.telemetry)
    # The same in CPU time of this process (one torch thread): on a shared machine the
    # wall clock of two runs minutes apart sees different loads; CPU time much less so.
    crystal_cpu = sum(r["cpu_seconds"] for r in st.telemetry)
    base_cpu = sum(r["cpu_seconds"] for r in base.telemetry)
    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        speed = measure_epoch_speedup(net, ds, cfg, repeats=repeats)
    finally:
        torch.set_num_threads(threads)
    return {
        "config": cfg.experiment,
        "seed": cfg.seed,
        "config_digest": training_digest(cfg),
        "measured": _measured(),
        "torch_threads": cfg.train.threads or threads,
        "dataset": ds.name,
        "test_accuracy": result["test_accuracy"],
        "baseline_test_accuracy": base_acc,
        "accuracy_gap": base_acc - result["test_accuracy"],
        "validation_accuracy": st.telemetry[-1]["validation_accuracy"],
        "baseline_validation_accuracy": base_val,
        "frozen_fraction": result["frozen_fraction"],
        "speedup": speed["speedup"],
        "neurons_final": result["neurons_final"],
        "sizes": result["sizes"],
        "epochs": cfg.train.epochs,
        "crystal_digest": result["crystal_digest"],
        "train_step_seconds": crystal_s,
        "baseline_train_step_seconds": base_s,
        "train_step_cpu_seconds": crystal_cpu,
        "baseline_train_step_cpu_seconds": base_cpu,
        "training_speedup": base_cpu / crystal_cpu,
        "training_speedup_wall": base_s / crystal_s,
        "training_speedup_method": "whole run, training steps + core-cache builds only (not "
                                   "growth scoring, evaluation, checkpoints): baseline CPU "
                                   "seconds / crystal CPU seconds of this process "
                                   "(training_speedup_wall: the same in wall-clock seconds)",
        "epoch_timing": speed,
        "baseline": "same final neurons, positions and connections, fresh initialization, "
                    "all neurons trained every epoch (no freezing, no growth), same epochs and "
                    "learning-rate schedule, same process",
    }
