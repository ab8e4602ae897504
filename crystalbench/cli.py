"""The one command-line entry point: `crystalbench <command> ...`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import config as cfgmod
from . import crystal as crystal_mod

# Errors a user can fix: print the message (it names the file/key/fix), exit 2.
USER_ERRORS: tuple[type[Exception], ...] = (cfgmod.ConfigError, crystal_mod.CrystalError)


def _user_errors():
    from crystalbench.model.data import DataError
    from crystalbench.model.train import TrainError

    from crystalbench.rtl.fixed import FixedPointError
    from crystalbench.rtl.synth import SynthError
    from crystalbench.sim.runner import SimError
    from crystalbench.toolrun import ToolFailed, ToolNotFound
    from crystalbench.analog.netlist import AnalogError

    return USER_ERRORS + (DataError, TrainError, FixedPointError, SynthError, SimError,
                          ToolFailed, ToolNotFound, AnalogError)


def cmd_train(args) -> int:
    from crystalbench.model.pipeline import train_experiment

    cfg = cfgmod.load(args.config)
    res = train_experiment(cfg, args.build_dir, resume=args.resume, progress=not args.quiet,
                           stop_after=args.stop_after)
    if res.get("status") == "interrupted":
        print(f"stopped after epoch {res['epoch']}; continue with --resume ({res['checkpoint']})")
        return 0
    print(f"test accuracy {res['test_accuracy']:.4f}; {res['neurons_final']} hidden neurons, "
          f"{res['frozen_fraction']:.1%} frozen ({res['core_neurons']} core, "
          f"{res['frontier_neurons']} frontier incl. readout, {res['boundary_neurons']} boundary)")
    print(f"crystal:   {res['crystal']}/crystal.json + crystal.npz")
    print(f"telemetry: {res['telemetry']}")
    print(f"plot:      {res['plot']}")
    return 0


def cmd_export(args) -> int:
    from crystalbench.model.pipeline import export_checkpoint

    res = export_checkpoint(args.checkpoint, args.build_dir)
    print(f"crystal: {res['crystal']} (test accuracy {res['test_accuracy']:.4f}, "
          f"{res['frozen_fraction']:.1%} frozen)")
    return 0


def cmd_import_torch(args) -> int:
    import torch

    from crystalbench.model import data as data_mod
    from crystalbench.model.export import crystal_from_torch

    cfg = cfgmod.load(args.config)
    obj = torch.load(args.model, weights_only=False)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    ds = data_mod.load(cfg.data, cfg.seed)
    name = args.name or Path(args.model).stem
    c = crystal_from_torch(obj, ds, name=name, sizes=sizes,
                           calibration_samples=cfg.data.calibration_samples, seed=cfg.seed)
    out = crystal_mod.save(c, Path(args.build_dir) / name / "crystal")
    print(f"crystal: {out} ({json.dumps(c.summary())})")
    return 0


def cmd_synth(args) -> int:
    from crystalbench.rtl.flow import run_synth

    cfg = cfgmod.load(args.config)
    res = run_synth(cfg, args.build_dir)
    out = Path(args.build_dir) / cfg.experiment / "synth"
    print(f"results: {out / 'result.json'}, {out / 'result.md'}; profile plot: {res['profile_plot']}"
          f" ({res['seconds']} s)")
    return 0


def cmd_sim(args) -> int:
    from crystalbench.sim.flow import run_sim

    cfg = cfgmod.load(args.config)
    res = run_sim(cfg, args.build_dir, waves=args.waves, vectors=args.vectors)
    print(f"results: {Path(args.build_dir) / cfg.experiment / 'sim' / 'result.json'} "
          f"({res['seconds']} s)")
    return 0 if res["all_bit_exact"] else 1


def cmd_sim_analog(args) -> int:
    from crystalbench.analog.flow import run

    cfg = cfgmod.load(args.config)  # validates the analog section before any work
    folder = Path(args.build_dir) / cfg.experiment / "crystal"
    if not (folder / crystal_mod.JSON_NAME).exists():
        raise crystal_mod.CrystalError(
            f"{folder}: no Crystal here; train one first with "
            f"`crystalbench train --config {args.config}`")
    c = crystal_mod.load(folder)
    out = Path(args.build_dir) / cfg.experiment / "analog"
    res = run(c, cfg.analog, out, seed=cfg.seed, progress=print, adc_bits=cfg.adc.bits)
    mc = res["monte_carlo"]
    print(f"{res['neurons']} neurons, {res['opamps']} op-amps ({res['opamp_part']}), "
          f"{res['resistors']} resistors ({res['e_series']}); "
          f"{sum(v for k, v in res['clipped_weights'].items() if k != 'worst')} weights clipped")
    print(f"class agreement with torch {res['class_agreement_with_torch']:.4f} "
          f"(resistors only {res['class_agreement_resistors_only']:.4f}, ADC only "
          f"{res['class_agreement_adc_only']:.4f}); error RMS {res['rms_error_lsb']:.3f} LSB, "
          f"max {res['max_error_lsb']:.2f} LSB")
    print(f"settling {res['settling_time_us']:.2f} us (worst step), power {res['power_mw']:.1f} mW "
          f"avg / {res['power_peak_mw']:.1f} mW peak, {res['energy_per_inference_nj']:.1f} nJ "
          f"per inference; ngspice {res['samples_per_second']:.1f} samples/s")
    if mc.get("runs"):
        print(f"Monte Carlo ({mc['runs']} boards, {mc['tolerance']:g} tolerance): agreement "
              f"mean {mc['mean_agreement']:.4f}, min {mc['min_agreement']:.4f}, yield "
              f"{mc['yield']:.2f} at >= {mc['yield_threshold']:g}")
    print(f"results: {out / 'result.json'} (netlist {res['files']['netlist']}; "
          f"{res['wall_seconds']:.0f} s)")
    return 0


def cmd_info(args) -> int:
    c = crystal_mod.load(args.crystal)
    print(json.dumps(c.summary(), indent=2))
    return 0


def cmd_bench(args) -> int:
    from crystalbench.model.pipeline import bench_train

    records = []
    out = Path(args.build_dir) / "bench" / "train.json"
    cfgs = [cfgmod.load(p) for p in args.config]  # validate all before any training
    for path, cfg in zip(args.config, cfgs):
        t0 = time.perf_counter()
        # Bench runs live under build/bench/<experiment>/, apart from the demo's outputs.
        rec = bench_train(cfg, out.parent, progress=not args.quiet, repeats=args.repeats)
        rec["config_file"] = str(path)
        rec["bench_seconds"] = time.perf_counter() - t0
        records.append(rec)
        crystal_mod.atomic_write_json(out, {"machine": _machine(), "records": records})
        print(f"{rec['config']}: test {rec['test_accuracy']:.4f} (baseline "
              f"{rec['baseline_test_accuracy']:.4f}), frozen {rec['frozen_fraction']:.1%}, "
              f"{rec['neurons_final']} neurons, epoch speedup {rec['speedup']:.2f}x, "
              f"training speedup {rec['training_speedup']:.2f}x")
    print(f"wrote {out}")
    return 0


def _machine() -> dict:
    import os
    import platform

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crystalbench", description=__doc__)
    p.add_argument("--build-dir", default="build", help="output root (default: build)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a crystal net and write its Crystal artifact")
    t.add_argument("--config", default="configs/digits.yaml")
    t.add_argument("--resume", action="store_true",
                   help="continue from build/<experiment>/train/checkpoint.pt if it exists")
    t.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs (continue later with --resume)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="write the Crystal from a checkpoint")
    e.add_argument("checkpoint")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import-torch", help="import a trained PyTorch MLP as a Crystal")
    i.add_argument("model", help="torch.save'd nn.Sequential of Linear/ReLU, or its state_dict")
    i.add_argument("--sizes", help="layer widths for a state_dict, e.g. 64,32,10")
    i.add_argument("--config", default="configs/digits.yaml",
                   help="config whose data section gives the reference data")
    i.add_argument("--name", help="experiment name (default: the model file's stem)")
    i.set_defaults(func=cmd_import_torch)

    a = sub.add_parser("sim-analog", help="the frozen core as op-amp circuits in ngspice "
                       "-> build/<experiment>/analog/")
    a.add_argument("--config", default="configs/digits.yaml")
    a.set_defaults(func=cmd_sim_analog)

    n = sub.add_parser("info", help="validate a Crystal and print its summary")
    n.add_argument("crystal", help="folder holding crystal.json + crystal.npz")
    n.set_defaults(func=cmd_info)

    s = sub.add_parser("synth", help="fixed point + RTL + Yosys/nextpnr figures -> "
                       "build/<experiment>/synth/")
    s.add_argument("--config", default="configs/digits.yaml")
    s.set_defaults(func=cmd_synth)

    m = sub.add_parser("sim", help="cocotb/Icarus regression of RTL and gate netlists against "
                       "the golden model -> build/<experiment>/sim/")
    m.add_argument("--config", default="configs/digits.yaml")
    m.add_argument("--waves", action="store_true", help="write a VCD per run")
    m.add_argument("--vectors", type=int, default=None,
                   help="test vectors per design (default: rtl.sim_vectors, else all)")
    m.set_defaults(func=cmd_sim)

    b = sub.add_parser("bench", help="training benchmarks -> build/bench/train.json")
    b.add_argument("--config", action="append", required=True)
    b.add_argument("--repeats", type=int, default=5, help="timed epochs per mode (median)")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"crystalbench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
