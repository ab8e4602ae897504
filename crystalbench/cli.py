"""The one command-line entry point: `crystalbench <command> ...`.

The only module that imports every stage. Each stage is run the same way (see
crystalbench/stage.py): load the config, load the Crystal (`--crystal DIR`, or
build/<experiment>/crystal), lock the folders the stage writes, call its `run`, print its
summary the same way. Every user-fixable problem is a CrystalbenchError: one line on
stderr, exit status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from pathlib import Path

from . import config as cfgmod
from . import crystal as crystal_mod
from .errors import CrystalbenchError
from .results import Paths, lock

# command -> module holding the stage (NAME, WRITES, NEEDS_CRYSTAL, run)
STAGES = {
    "train": "crystalbench.model.pipeline",
    "quantize": "crystalbench.rtl.quantize",
    "synth": "crystalbench.rtl.flow",
    "sim": "crystalbench.sim.flow",
    "sim-analog": "crystalbench.analog.flow",
    "sim-hybrid": "crystalbench.sim.hybrid",
    "calibrate": "crystalbench.sim.calibrate",
    "compile-c": "crystalbench.cbackend.flow",
    "bitstream": "crystalbench.boards.bitstream",
    "board": "crystalbench.boards.host",
    "manufacture": "crystalbench.analog.manufacture",
    "train-qat": "crystalbench.model.qat",
    "sweep": "crystalbench.sim.sweep",
}
DEFAULT_CONFIG = "configs/digits.yaml"


def print_summary(res: dict) -> None:
    """Every stage's summary, printed the same way."""
    for line in res.get("summary", []):
        print(line)
    if res.get("result_file"):
        print(f"results: {res['result_file']}")


def stage_inputs(args, needs_crystal: bool):
    """(config, Crystal or None, Paths): with --crystal, outputs go to
    build/<the Crystal's name>/, else to build/<config experiment>/."""
    cfg = cfgmod.load(args.config, getattr(args, "set", None))
    if getattr(args, "crystal", None):
        c = crystal_mod.load(args.crystal)
        return cfg, c, Paths(args.build_dir, c.name)
    paths = Paths(args.build_dir, cfg.experiment)
    if not needs_crystal:
        return cfg, None, paths
    if not (paths.crystal / crystal_mod.JSON_NAME).exists():
        raise CrystalbenchError(
            f"{paths.crystal}: no Crystal here; train one with `crystalbench train --config "
            f"{args.config}`, or name one with --crystal DIR")
    return cfg, crystal_mod.load(paths.crystal), paths


def run_stage(command: str, args, **options) -> int:
    mod = importlib.import_module(STAGES[command])
    cfg, c, paths = stage_inputs(args, mod.NEEDS_CRYSTAL)
    with contextlib.ExitStack() as held:
        for name in mod.WRITES:
            held.enter_context(lock(paths.stage(name)))
        res = mod.run(c, cfg, paths, print, **options)
    print_summary(res)
    return 1 if res.get("passed") is False else 0


def cmd_train(args) -> int:
    try:
        return run_stage("train", args, resume=args.resume, stop_after=args.stop_after,
                         progress=not args.quiet)
    except KeyboardInterrupt:
        cfg = cfgmod.load(args.config)
        ck = Paths(args.build_dir, cfg.experiment).stage("train") / "checkpoint.pt"
        if ck.exists():
            print(f"\ninterrupted; the checkpoint {ck} is intact (written atomically after "
                  f"each finished epoch); continue with `crystalbench train --config "
                  f"{args.config} --resume`", file=sys.stderr)
        else:
            print("\ninterrupted before the first checkpoint; nothing to resume: run the same "
                  "command again", file=sys.stderr)
        return 130


def cmd_export(args) -> int:
    from crystalbench.model.pipeline import export_checkpoint

    print_summary(export_checkpoint(args.checkpoint, args.build_dir, print))
    return 0


def parse_sizes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise CrystalbenchError(f"--sizes {text!r}: expected whole numbers separated by commas, "
                                "e.g. 64,32,10") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise CrystalbenchError(f"--sizes {text!r}: give at least the input and output widths, "
                                "each >= 1, e.g. 64,32,10")
    return sizes


def cmd_import_torch(args) -> int:
    from crystalbench.model.pipeline import import_torch

    cfg = cfgmod.load(args.config)
    res = import_torch(args.model, cfg, args.build_dir, name=args.name,
                       sizes=parse_sizes(args.sizes), activation=args.activation,
                       input_scale=args.input_scale, input_offset=args.input_offset, log=print)
    print_summary(res)
    return 0


def cmd_data(args) -> int:
    from crystalbench.model.data import export_split

    cfg = cfgmod.load(args.config)
    print_summary(export_split(cfg, args.export))
    return 0


def cmd_info(args) -> int:
    c = crystal_mod.load(args.crystal)
    print(json.dumps({**c.summary(), "digest": crystal_mod.digest(c)}, indent=2))
    return 0


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2,3,4`: distinct whole numbers >= 0, in the order given."""
    try:
        seeds = [int(t) for t in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise CrystalbenchError(f"--seeds {text!r}: expected distinct whole numbers >= 0 "
                                "separated by commas, e.g. --seeds 0,1,2,3,4")
    return seeds


def cmd_bench(args) -> int:
    from crystalbench.model.pipeline import bench

    # validate all (configs, --set, --seeds) before any training
    cfgs = [cfgmod.load(p, getattr(args, "set", None)) for p in args.config]
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    print_summary(bench(cfgs, args.config, args.build_dir, repeats=args.repeats,
                        progress=not args.quiet, log=print, seeds=seeds))
    return 0


def cmd_report(args) -> int:
    from . import report

    print_summary(report.write(Path(args.build_dir)))
    return 0


def cmd_flash(args) -> int:
    from crystalbench.boards.bitstream import flash

    cfg = cfgmod.load(args.config, getattr(args, "set", None))
    print_summary(flash(Paths(args.build_dir, cfg.experiment), args.board, print))
    return 0


def _stage_parser(sub, command: str, help_text: str, func):
    p = sub.add_parser(command, help=help_text)
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"experiment config (default: {DEFAULT_CONFIG})")
    p.add_argument("--crystal", metavar="DIR",
                   help="the Crystal folder to read (default: build/<experiment>/crystal); "
                        "outputs then go to build/<its name>/")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key for this run, e.g. --set rtl.shapes=serial "
                        "(repeatable; the value is read as YAML)")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crystalbench", description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default="build", help="output root (default: build)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a crystal net and write its Crystal artifact")
    t.add_argument("--config", default=DEFAULT_CONFIG)
    t.add_argument("--resume", action="store_true",
                   help="continue from build/<experiment>/train/checkpoint.pt if it exists")
    t.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs (continue later with --resume)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="write the Crystal from a checkpoint (an older Crystal "
                       "in the way is kept as crystal.prev-<date>)")
    e.add_argument("checkpoint")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import-torch", help="import a trained PyTorch MLP as a Crystal")
    i.add_argument("model", help="torch.save'd nn.Sequential of Linear/ReLU, or its state_dict")
    i.add_argument("--sizes", help="layer widths for a state_dict, e.g. 64,32,10")
    i.add_argument("--activation", choices=("relu",),
                   help="hidden activation of a state_dict's model (a state_dict does not "
                        "record it; crystals need ReLU)")
    i.add_argument("--input-scale", type=float, default=None,
                   help="the model reads (raw - input_offset) * input_scale (default: the data "
                        "set's own scaling, e.g. 1/16 for digits pixels 0..16)")
    i.add_argument("--input-offset", type=float, default=None,
                   help="see --input-scale (default: the data set's own offset)")
    i.add_argument("--config", default=DEFAULT_CONFIG,
                   help="config whose data section gives the reference data")
    i.add_argument("--name", help="experiment name (default: the model file's stem)")
    i.set_defaults(func=cmd_import_torch)

    d = sub.add_parser("data", help="export the config's train/test split (arrays and indices)")
    d.add_argument("--config", default=DEFAULT_CONFIG)
    d.add_argument("--export", required=True, metavar="DIR", help="folder to write into")
    d.set_defaults(func=cmd_data)

    n = sub.add_parser("info", help="validate a Crystal and print its summary")
    n.add_argument("crystal", help="folder holding crystal.json + crystal.npz")
    n.set_defaults(func=cmd_info)

    _stage_parser(sub, "quantize", "fixed-point formats + golden model -> build/<exp>/fixed/",
                  lambda a: run_stage("quantize", a))
    _stage_parser(sub, "synth", "RTL + Yosys gates + iCE40/nextpnr figures -> "
                  "build/<exp>/synth/ (quantizes first when needed)", lambda a: run_stage("synth", a))
    m = _stage_parser(sub, "sim", "cocotb/Icarus regression of RTL and gate netlists against "
                      "the golden model, latency and energy -> build/<exp>/sim/",
                      lambda a: run_stage("sim", a, waves=a.waves, vectors=a.vectors))
    m.add_argument("--waves", action="store_true", help="write a full VCD per run")
    m.add_argument("--vectors", type=int, default=None,
                   help="test vectors per design (default: sim.vectors, else all)")
    _stage_parser(sub, "sim-analog", "the frozen core as op-amp circuits in ngspice -> "
                  "build/<exp>/analog/", lambda a: run_stage("sim-analog", a))
    h = _stage_parser(sub, "sim-hybrid", "the hybrid end to end: ngspice core -> ADC part -> "
                      "the frontier's gate netlist, Monte Carlo boards, system energy and "
                      "latency -> build/<exp>/hybrid/ (after sim-analog and synth)",
                      lambda a: run_stage("sim-hybrid", a, vectors=a.vectors, boards=a.boards))
    h.add_argument("--vectors", type=int, default=None,
                   help="test samples (default: hybrid.vectors, else all)")
    h.add_argument("--boards", type=int, default=None,
                   help="Monte Carlo boards (default: hybrid.boards)")
    k = _stage_parser(sub, "calibrate", "hardware in the loop: per Monte Carlo board, the "
                      "frontier refitted on the codes its ngspice core and ADC give, loaded "
                      "into the gate netlist and re-run -> build/<exp>/calibrate/ (after synth)",
                      lambda a: run_stage("calibrate", a, boards=a.boards))
    k.add_argument("--boards", type=int, default=None,
                   help="boards to calibrate (default: calibrate.boards)")
    cc = _stage_parser(sub, "compile-c", "the Crystal as C99 (float32, and the fixed-point "
                       "nets bit-exact with the golden model), compiled with cc and checked -> "
                       "build/<exp>/c/ (quantizes first when needed)",
                       lambda a: run_stage("compile-c", a, repeats=a.repeats, bench_torch=(
                           importlib.import_module("crystalbench.model.infer").contenders
                           if a.bench else None)))
    cc.add_argument("--bench", action="store_true",
                    help="also time the C against torch eager and numpy in this process: "
                         "latency at batch 1, throughput at batch 1,024, one thread")
    cc.add_argument("--repeats", type=int, default=None,
                    help="interleaved benchmark rounds (default: 25; medians)")

    b = sub.add_parser("bench", help="training benchmarks -> build/bench/train.json")
    b.add_argument("--config", action="append", required=True)
    b.add_argument("--repeats", type=int, default=5, help="timed epochs per mode (median)")
    b.add_argument("--seeds", default=None,
                   help="seeds to run each config with, e.g. 0,1,2,3,4 (default: 0 .. "
                        "bench.seeds-1 of each config)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every config (repeatable)")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("report", help="build/report.md from every result.json present")
    r.set_defaults(func=cmd_report)

    bs = _stage_parser(sub, "bitstream", "the frontier on a board: UART host link + loadable "
                       "serial frontier -> bitstream, utilization, fmax -> "
                       "build/<exp>/boards/<board>/ (quantizes first when needed)",
                       lambda a: run_stage("bitstream", a, board=a.board, adc=a.adc))
    bs.add_argument("--board", default="icebreaker", help="board (default: icebreaker)")
    bs.add_argument("--adc", action="store_true", help="with the SPI ADC front end: the "
                    "frontier reads its inputs from adc.part chips on the board's pins (README)")
    q = _stage_parser(sub, "train-qat", "a small all-digital net trained at its hardware "
                      "widths (quantization-aware) -> build/<exp>/qat/qat_net.json, which synth "
                      "and sim build and check when qat.shapes is set",
                      lambda a: run_stage("train-qat", a, validate=a.validate))
    q.add_argument("--validate", action="store_true",
                   help="train on the training split minus a validation part and report "
                        "validation accuracy only (how the qat settings are chosen)")
    _stage_parser(sub, "manufacture", "the analog core as a board to order: KiCad netlist + "
                  "ERC, BOM with part numbers and cost, the netlist read back and re-run in "
                  "ngspice against the design -> build/<exp>/manufacture/",
                  lambda a: run_stage("manufacture", a))
    bd = _stage_parser(sub, "board", "the host driver of a board running the frontier: info "
                       "(identify, counters), load (write the frontier's weights), run (the test "
                       "split through the board: agreement, vectors/s, line vs frontier time -> "
                       "build/<exp>/board/), calibrate (--sim: the board reads calibrate's Monte "
                       "Carlo board 0 through its SPI ADC, the readout is refitted on those codes, "
                       "loaded and re-run -> build/<exp>/board/calibrate/)",
                       lambda a: run_stage("board", a, action=a.action, port=a.port, sim=a.sim,
                                           board=a.board, vectors=a.vectors, timeout=a.timeout))
    bd.add_argument("action", choices=("info", "load", "run", "calibrate"))
    where = bd.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="the board's serial port (iCEBreaker: the FTDI's second "
                       "interface, usually /dev/ttyUSB1)")
    where.add_argument("--sim", action="store_true",
                       help="the board top simulated in Icarus (cocotb, bit-level UART)")
    bd.add_argument("--board", default="icebreaker", help="board (default: icebreaker)")
    bd.add_argument("--vectors", type=int, default=None,
                    help="run, calibrate: test vectors (default: the whole test split)")
    bd.add_argument("--timeout", type=float, default=1.0,
                    help="seconds to wait for a reply (simulated seconds with --sim; default 1)")
    sw = _stage_parser(sub, "sweep", "co-design sweep: every point of a grid of --set overrides "
                       "through sim-analog and sim-hybrid, the all-digital nets once per digital "
                       "design, as Dask tasks (cached per point, resumable) -> build/<exp>/sweep/ "
                       "(points.csv, Pareto plots, report.md)",
                       lambda a: run_stage("sweep", a, grid=a.grid, config_path=a.config,
                                           scheduler=a.scheduler, workers=a.workers,
                                           vectors=a.vectors, progress=not a.quiet,
                                           sets=a.set))
    sw.add_argument("--grid", required=True, metavar="FILE",
                    help="YAML grid: base / axes / points of --set overrides "
                         "(e.g. configs/grids/digits.yaml)")
    sw.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="an existing Dask scheduler, e.g. tcp://host:8786 (default: a "
                         "LocalCluster on this machine)")
    sw.add_argument("--workers", type=int, default=2,
                    help="LocalCluster worker processes (default: 2)")
    sw.add_argument("--vectors", type=int, default=None,
                    help="test samples per point and per all-digital design (default: 200)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    fl = sub.add_parser("flash", help="write build/<exp>/boards/<board>/top.bin to the board "
                        "(openFPGALoader)")
    fl.add_argument("--config", default=DEFAULT_CONFIG)
    fl.add_argument("--board", default="icebreaker", help="board (default: icebreaker)")
    fl.set_defaults(func=cmd_flash)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CrystalbenchError as e:
        msg = " ".join(str(e).split())  # one line: what, where, the fix
        print(f"crystalbench: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
