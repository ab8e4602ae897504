"""`crystalbench sweep`: the hybrid against the all-digital net over a grid of design
points, as tasks on dask.distributed.

    grid      a YAML file of `--set`-style overrides (load_grid): `base` applies to every
              point, `axes` multiply out, `points` adds single points
    digital   once per digital design (what the fixed-point formats, the RTL shapes and
              adc.bits define): synth (crystalbench.rtl.flow) and sim (crystalbench.sim.flow)
              on the first `vectors` test samples -> the frontier's gates and the
              all-digital nets' accuracy, energy and latency (run_digital)
    analog    once per analog design (what the analog section, the seed and adc.bits
              define): sim-analog (crystalbench.analog.flow; run_analog), so points that
              differ only in the ADC part share one core
    point     sim-hybrid (crystalbench.sim.hybrid) in the point's own folder, reading its
              analog design's folder and its digital design's synth, fixed and sim folders
              through symlinks (run_point)
    outputs   build/<exp>/sweep/: points.csv, pareto_energy_accuracy.png,
              pareto_latency_energy.png, report.md, result.json

Every task is cached by the digest of what defines it (the Crystal, the config sections it
reads, the number of test vectors, VERSION): a finished task leaves point.json (or
digital.json) in its folder, so an interrupted sweep resumes and a re-run only computes
new points. A task that fails records its error, traceback and log there (status
"failed"; retried on the next run) and the sweep goes on.

Points run as tasks on a `LocalCluster` (processes, one thread each) or, with
`--scheduler ADDRESS`, on an existing Dask cluster whose workers see the same file system
(the build folder and the Crystal copy in it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import platform
import time
import traceback
from pathlib import Path

import yaml

from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench import stage
from crystalbench.errors import ConfigError, CrystalbenchError
from crystalbench.results import Paths, atomic_write_bytes, atomic_write_json

NAME = "sweep"
WRITES = (NAME,)
NEEDS_CRYSTAL = True
VERSION = 4  # bump when what a point computes changes: every cached point is then redone
# (2: the core held on through the ADC's conversions, gated cores recharge decoupling;
# 3: every part over one inference interval; 4: the recharge bounded by the off-time)
VECTORS = 200  # test samples per point (hybrid) and per digital design (all-digital)
AGREEMENT_MIN = 0.99  # class agreement with torch a point needs to be reported as a design
DIGITAL_SECTIONS = ("seed", "fixed_point", "rtl", "sim")
POINT_SECTIONS = ("seed", "fixed_point", "rtl", "sim", "analog", "adc", "hybrid")
ANALOG_SECTIONS = ("seed", "analog")  # and adc.bits: what sim-analog reads

METHOD = {
    "engine": "dask.distributed: one task per digital design, one sim-analog task per "
              "analog design (points that differ only in the ADC part share it), one "
              "sim-hybrid task per point (which waits for both); LocalCluster of worker "
              "processes with one thread each, or --scheduler ADDRESS",
    "hybrid": "per point: sim-analog (ngspice DC sweep of the whole test split, transient "
              "over analog.transient_samples for settling and supply energy, Monte Carlo "
              "as analog.monte_carlo_runs) then sim-hybrid (ngspice core -> ADC part -> the "
              "frontier's gate netlist under cocotb + Icarus, on the first `vectors` test "
              "samples); energy per inference = analog + ADC + frontier and latency = "
              "settling + conversions + frontier cycles at rtl.clock_mhz, as sim-hybrid "
              "prices them (the method.energy of each point's hybrid result.json; "
              "crystalbench.sim.hybrid)",
    "all_digital": "per digital design: sim's gate-level run of every all-digital design "
                   "synth built (rtl.digital_shapes), on the same first `vectors` test "
                   "samples; energy from the same iCE40 toggle model at rtl.clock_mhz, latency "
                   "= cycles / rtl.clock_mhz (as sim-hybrid shows it)",
    "agreement": f"class agreement with torch on the same samples; a design counts as a "
                 f"candidate when it is >= {AGREEMENT_MIN}",
    "cache": "per task: sha256 of the Crystal digest, the config sections the task reads, "
             "the vector count and the sweep VERSION",
}

CSV_COLUMNS = (
    "kind", "point", "status", "label", "design", "accuracy", "agreement", "agreement_ok",
    "agreement_analog_full_split", "vectors", "energy_nj", "analog_nj", "adc_nj",
    "digital_nj", "analog_wait_nj", "digital_idle_nj", "interval_us", "adc_channels",
    "adc_chips", "adc_nj_per_conversion", "latency_us", "analog_us",
    "adc_us", "digital_us", "analog_nj_per_neuron",
    "neurons", "opamps", "resistors", "luts", "opamp", "supply_v", "power_gating", "r_min",
    "r_max", "adc_part", "adc_bits", "seconds", "error", "folder", "overrides")


# ---- the grid -------------------------------------------------------------------------------
def load_grid(path: str | Path) -> list[dict]:
    """The grid file -> one dict of overrides (dotted key -> value) per point.

        base:   {analog.monte_carlo_runs: 0, ...}   every point
        axes:                                       the cartesian product of the axes
          analog.supply_v: [3.0, 5.0]               a scalar: the axis name is the key
          part:                                     a mapping: several keys move together
            - {analog.opamp: mcp6002, analog.step_us: 60}
            - {analog.opamp: opa835, analog.step_us: 4}
        points:                                     single points (over base)
          - {analog.opamp: opa2333}
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: grid file not found; write one like configs/grids/digits.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: the grid is not valid YAML: {e}") from None
    if not isinstance(data, dict) or not set(data) <= {"base", "axes", "points"} or not data:
        raise ConfigError(f"{path}: a grid is a mapping with keys base, axes and/or points "
                          f"(got {sorted(data) if isinstance(data, dict) else type(data).__name__})")
    base = _overrides(data.get("base") or {}, path, "base")
    axes = data.get("axes") or {}
    if not isinstance(axes, dict):
        raise ConfigError(f"{path}: axes must map a key (or a label) to a list of values")
    choices = []
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: axes.{name} must be a non-empty list of values")
        choices.append([_overrides(v, path, f"axes.{name}[{i}]") if isinstance(v, dict)
                        else _overrides({name: v}, path, f"axes.{name}[{i}]")
                        for i, v in enumerate(values)])
    points = [dict(itertools.chain.from_iterable(d.items() for d in combo))
              for combo in itertools.product(*choices)] if choices else []
    extra = data.get("points") or []
    if not isinstance(extra, list):
        raise ConfigError(f"{path}: points must be a list of mappings of overrides")
    points += [_overrides(p, path, f"points[{i}]") for i, p in enumerate(extra)]
    if not points:
        raise ConfigError(f"{path}: the grid has no points; give axes or points")
    return [{**base, **p} for p in points]


def _overrides(d, path: Path, where: str) -> dict:
    if not isinstance(d, dict) or not all(isinstance(k, str) and "." in k for k in d):
        raise ConfigError(f"{path}: {where} must map dotted config keys to values, e.g. "
                          "{analog.opamp: opa835}")
    return dict(d)


def set_args(overrides: dict) -> list[str]:
    """The overrides as `--set KEY=VALUE` strings (values as JSON, which YAML reads)."""
    return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]


def label(overrides: dict, base: dict) -> str:
    """What sets a point apart from the grid's base, short."""
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items()
                    if k not in base or base[k] != v) or "base"


def task_key(crystal_digest: str, cfg, sections: tuple, vectors: int, **extra) -> str:
    stamp = {"crystal": crystal_digest, "vectors": vectors, "version": VERSION,
             **{s: cfg[s] for s in sections}, **extra}
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


# ---- tasks (run on the workers) -----------------------------------------------------------------
class _Log:
    """A task's progress lines, appended to its log file."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a")

    def __call__(self, line: str) -> None:
        self.fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        self.fh.flush()

    def close(self):
        self.fh.close()


def _cached(path: Path) -> dict | None:
    if path.exists():
        try:
            done = json.loads(path.read_text())
        except ValueError:
            return None
        if done.get("status") == "ok":
            return done
    return None


def _failed(path: Path, e: BaseException, log: _Log, t0: float, extra: dict) -> dict:
    tb = traceback.format_exc()
    log(f"FAILED: {type(e).__name__}: {e}")
    log(tb)
    res = {**extra, "status": "failed", "error": f"{type(e).__name__}: {' '.join(str(e).split())}",
           "traceback": tb.splitlines()[-12:], "log": str(log.path),
           "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(path, res)
    return res


def _task(folder: str | Path, file_name: str, what: str, body, extra: dict | None = None) -> dict:
    """One cached task in `folder`: its result file when it already holds a success, else
    body(log) -> result, written with its seconds; a failure is recorded with its error
    and log, and returned (the sweep goes on)."""
    folder = Path(folder)
    out = folder / file_name
    done = _cached(out)
    if done:
        return done
    t0 = time.perf_counter()
    log = _Log(folder / "log.txt")
    try:
        res = {**body(log), "seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_json(out, res)
        log(f"{what} done in {res['seconds']} s")
        return res
    except Exception as e:  # recorded; the sweep goes on
        return _failed(out, e, log, t0, extra or {"folder": str(folder)})
    finally:
        log.close()


def _load(crystal_dir: str, cfg_data: dict, folder: Path):
    """A task's Crystal, validated config and experiment folders."""
    c = cm.load(crystal_dir)
    return c, cfgmod.validate(cfg_data, f"{folder}: config"), Paths(folder, c.name)


def run_digital(crystal_dir: str, cfg_data: dict, folder: str, vectors: int) -> dict:
    """One digital design: synth (frontier and all-digital nets) and sim on `vectors`
    test samples. Cached in folder/digital.json."""
    from crystalbench.rtl import flow as synth_stage

    from . import flow as sim_flow

    def body(log):
        c, cfg, paths = _load(crystal_dir, cfg_data, Path(folder))
        sres = synth_stage.run(c, cfg, paths, log)
        simres = sim_flow.run(c, cfg, paths, log, vectors=vectors)
        clock = cfg.rtl.clock_mhz
        designs = []
        for name, d in sres["designs"].items():
            g = simres["runs"][f"{name}_gates"]
            designs.append({
                "design": name, "kind": d["kind"], "lut4": d.get("lut4"),
                "accuracy": g["fixed_point_test_accuracy"],
                "agreement": g["class_agreement_with_torch"],
                "bit_exact": g["bit_exact_fraction"],
                "energy_nj": g.get("energy_per_inference_nj"),
                "latency_us": g["latency_cycles"] / clock, "latency_cycles": g["latency_cycles"],
                "clock_mhz": clock, "fmax_mhz": d.get("fmax_mhz")})
        return {"status": "ok", "folder": str(Path(folder)), "vectors": simres["vectors"],
                "frontier": sres.get("frontier", {}).get("design"), "designs": designs}

    return _task(folder, "digital.json", "digital design", body)


def _link(paths: Paths, digital_folder: Path, name: str) -> None:
    """The point's synth/fixed/sim folder: its digital design's, through a symlink."""
    link = paths.stage(name)
    target = (digital_folder / paths.experiment / name).resolve()
    if link.is_symlink() or link.exists():
        if link.is_symlink() and link.resolve() == target:
            return
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


def run_analog(crystal_dir: str, cfg_data: dict, folder: str) -> dict:
    """One analog design: sim-analog in `folder` (it needs no digital design, so it runs
    while the digital designs are synthesized; every point of this analog design reads
    it). Cached in folder/analog.json."""
    from crystalbench.analog import flow as analog_flow

    def body(log):
        c, cfg, paths = _load(crystal_dir, cfg_data, Path(folder))
        return {"status": "ok", "folder": str(Path(folder)),
                "result": analog_flow.run(c, cfg, paths, log)["result_file"]}

    return _task(folder, "analog.json", "sim-analog", body)


def run_point(crystal_dir: str, cfg_data: dict, folder: str, digital: dict, analog: dict,
              vectors: int, info: dict) -> dict:
    """One hybrid point: sim-hybrid in `folder` after its analog design (run_analog) and
    its digital design (run_digital), whose folders are linked in. Cached in
    folder/point.json."""
    from . import hybrid

    base = {"folder": str(Path(folder)), **info}

    def body(log):
        if analog.get("status") != "ok":
            raise CrystalbenchError(f"sim-analog failed: {analog.get('error')}")
        if digital.get("status") != "ok":
            raise CrystalbenchError(f"its digital design failed ({digital.get('error')}); see "
                                    f"{digital.get('log')}")
        c, cfg, paths = _load(crystal_dir, cfg_data, Path(folder))
        for name in ("fixed", "synth", "sim"):
            _link(paths, Path(digital["folder"]), name)
        if analog.get("folder"):  # an analog design of its own folder (else: in this one)
            _link(paths, Path(analog["folder"]), "analog")
        a = json.loads(Path(analog["result"]).read_text())
        h = hybrid.run(c, cfg, paths, log, vectors=vectors, boards=cfg.hybrid.boards)
        luts = next((d["lut4"] for d in digital["designs"] if d["design"] == h["frontier_design"]),
                    None)
        e, lat = h["energy_nj"], h["latency_parts_us"]
        return {**base, "status": "ok", "design": h["frontier_design"],
                "accuracy": h["test_accuracy"], "agreement": h["class_agreement_with_torch"],
                "agreement_analog_full_split": a["class_agreement_with_torch"],
                "vectors": h["vectors"], "energy_nj": h["energy_per_inference_nj"],
                "analog_nj": e["analog_nj"], "adc_nj": e["adc_nj"], "digital_nj": e["digital_nj"],
                "analog_wait_nj": h["analog_parts_nj"]["waiting_for_frontier_nj"],
                "digital_idle_nj": h["digital_parts_nj"]["idle_nj"],
                "interval_us": h["inference_interval_us"],
                "latency_us": h["latency_us"], "analog_us": lat["analog_us"],
                "adc_us": lat["adc_us"], "digital_us": lat["digital_us"],
                "analog_nj_per_neuron": a["energy_per_neuron_nj"], "neurons": a["neurons"],
                "opamps": a["opamps"], "resistors": a["resistors"], "luts": luts,
                "clipped_weights": sum(v for k, v in a["clipped_weights"].items() if k != "worst"),
                "bit_exact": h["bit_exact_fraction"], "adc_chips": h["adc"]["chips"]}

    return _task(folder, "point.json", "point", body, base)


# ---- the stage (the client) ---------------------------------------------------------------------
def plan(c, cfg_path: str, points: list[dict], out: Path, vectors: int,
         sets: list[str] | None = None) -> tuple[dict, list]:
    """Validate every point's config (before any work) and name its task folders:
    ({digital key: (config data, folder)}, [(point key, config data, folder, digital key,
    info, analog key)]). Points with equal keys are one point; the analog design's folder
    is out/analog/<analog key>."""
    dig, todo, seen = {}, [], set()
    cdig = cm.digest(c)
    base = points[0] if len(points) == 1 else {k: v for k, v in points[0].items()
                                               if all(p.get(k) == v for p in points)}
    for i, over in enumerate(points):
        try:
            cfg = cfgmod.load(cfg_path, list(sets or []) + set_args(over))
        except ConfigError as e:
            raise ConfigError(f"grid point {i + 1} ({label(over, base)}): {e}") from None
        data = json.loads(json.dumps(cfg))
        dkey = task_key(cdig, cfg, DIGITAL_SECTIONS, vectors, adc_bits=cfg.adc.bits)
        dig.setdefault(dkey, (data, out / "digital" / dkey))
        pkey = task_key(cdig, cfg, POINT_SECTIONS, vectors)
        akey = task_key(cdig, cfg, ANALOG_SECTIONS, 0, adc_bits=cfg.adc.bits)
        if pkey in seen:
            continue
        seen.add(pkey)
        a = cfg.analog
        info = {"kind": "hybrid", "point": pkey, "label": label(over, base),
                "overrides": json.dumps(over, sort_keys=True), "opamp": a.opamp,
                "supply_v": a.supply_v, "power_gating": a.power_gating, "r_min": a.r_min,
                "r_max": a.r_max, "adc_part": cfg.adc.part, "adc_bits": cfg.adc.bits}
        todo.append((pkey, data, out / "points" / pkey, dkey, info, akey))
    return dig, todo


def _client(scheduler: str | None, workers: int):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    return Client(cluster), cluster


def run(c, cfg, paths: Paths, log: stage.Log = stage.quiet, grid: str | None = None,
        config_path: str | None = None, scheduler: str | None = None, workers: int = 2,
        vectors: int | None = None, progress: bool = True, sets: list[str] | None = None) -> dict:
    """Every grid point (sim-analog, then sim-hybrid) and digital design as Dask tasks;
    the table, plots and report."""
    t_all = time.perf_counter()
    started = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "load_average": [round(x, 2) for x in os.getloadavg()]}
    if not grid or not config_path:
        raise ConfigError("sweep needs --grid FILE (a YAML grid of --set overrides) and --config")
    vectors = VECTORS if vectors is None else int(vectors)  # 0 is refused, not the default
    if vectors < 2:
        raise ConfigError(f"--vectors {vectors}: need at least 2 (energy is measured between results)")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: need at least 1")
    points = load_grid(grid)
    out = paths.stage(NAME)
    out.mkdir(parents=True, exist_ok=True)
    dig, todo = plan(c, config_path, points, out, vectors, sets)
    crystal_dir = out / "crystal"
    cm.save(c, crystal_dir, keep=False)
    done = {pk: _cached(f / "point.json") for pk, _, f, *_rest in todo}
    run_now = [t for t in todo if done[t[0]] is None]
    cached = len(todo) - len(run_now)
    digital = {k: _cached(folder / "digital.json") for k, (_, folder) in dig.items()}
    dig_now = {k: dig[k] for k in {t[3] for t in run_now} | {k for k, v in digital.items() if v is None}}
    engine = f"scheduler {scheduler}" if scheduler else f"LocalCluster of {workers} worker processes"
    log(f"sweep: {len(todo)} points ({cached} cached), {len(dig)} digital design(s) "
        f"({len(dig) - len(dig_now)} cached), {vectors} test vectors each; {engine}")
    rows = [r for r in done.values() if r is not None]
    if run_now or dig_now:
        rows += _compute(run_now, dig_now, digital, crystal_dir, vectors, scheduler, workers,
                         progress)
    for r in rows:  # the converter's facts, from the point's own sim-hybrid result
        hres = Path(r.get("folder", "")) / c.name / "hybrid" / "result.json"
        if r.get("status") == "ok" and hres.is_file():
            adc = json.loads(hres.read_text())["adc"]
            r["adc_channels"], r["adc_nj_per_conversion"] = (adc["channels"],
                                                             adc["energy_per_conversion_nj"])
    order = {pk: i for i, (pk, *_rest) in enumerate(todo)}
    rows.sort(key=lambda r: order.get(r.get("point"), 0))
    res = summarize(rows, digital, out, vectors, grid, scheduler or f"LocalCluster({workers})")
    res["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    res["computed_points"] = len(run_now)
    res["machine"] = {"host": platform.node(), "cpus": os.cpu_count(), **started,
                      "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    report_md(res, out)
    return stage.finish(NAME, paths, res, summary_lines(res))


def _compute(todo: list, dig: dict, digital: dict, crystal_dir: Path, vectors: int,
             scheduler: str | None, workers: int, progress: bool) -> list[dict]:
    """Submit the digital designs, the analog cores and the points still to do; collect
    the point rows (and the digital results into `digital`) as they finish."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    client, cluster = _client(scheduler, workers)
    rows = []
    try:
        dfut = {k: client.submit(run_digital, str(crystal_dir), data, str(folder), vectors,
                                 key=f"digital-{k}", pure=False)
                for k, (data, folder) in dig.items()}
        afut = {}
        for _pk, data, folder, _dk, _info, ak in todo:
            if ak not in afut:
                afut[ak] = client.submit(run_analog, str(crystal_dir), data,
                                         str(Path(folder).parent.parent / "analog" / ak),
                                         key=f"analog-{ak}", pure=False)
        pfut = [client.submit(run_point, str(crystal_dir), data, str(folder), dfut[dk],
                              afut[ak], vectors, info, key=f"point-{pk}", pure=False)
                for pk, data, folder, dk, info, ak in todo]
        names = {f.key: k for k, f in dfut.items()}
        points = {f.key for f in pfut}
        tasks = list(dfut.values()) + list(afut.values()) + pfut
        bar = tqdm(total=len(tasks), desc="sweep", unit="task", disable=not progress)
        failed = 0
        for fut in as_completed(tasks):
            r = fut.result()
            if fut.key in names:
                digital[names[fut.key]] = r
            elif fut.key in points:
                rows.append(r)
            if r.get("status") != "ok" and not fut.key.startswith("analog-"):
                failed += 1
                bar.write(f"sweep: {fut.key} failed: {r.get('error')} (log {r.get('log')})")
            bar.set_postfix(failed=failed)
            bar.update(1)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return rows


# ---- outputs --------------------------------------------------------------------------------
def digital_rows(digital: dict) -> list[dict]:
    """One row per all-digital design (kind all_digital*) of every digital design."""
    rows = []
    for key, d in sorted(digital.items()):
        if d.get("status") != "ok":
            rows.append({"kind": "all-digital", "point": key, "status": "failed",
                         "error": d.get("error"), "folder": d.get("folder")})
            continue
        for x in d["designs"]:
            if x["kind"].startswith("all_digital"):
                # priced at rtl.clock_mhz: above the design's fmax no board reaches that figure
                # (sim-hybrid refuses such a clock for the frontier: hybrid.check_clock)
                clock, fmax = x.get("clock_mhz"), x.get("fmax_mhz")
                over = clock is not None and fmax is not None and clock > fmax
                rows.append({"kind": "all-digital", "point": key,
                             "status": "over fmax" if over else "ok",
                             **({"error": f"priced at rtl.clock_mhz = {clock:g}, above its "
                                          f"{fmax:.2f} MHz fmax"} if over else {}),
                             "label": x["design"], "design": x["design"],
                             "accuracy": x["accuracy"], "agreement": x["agreement"],
                             "vectors": d["vectors"], "energy_nj": x["energy_nj"],
                             "digital_nj": x["energy_nj"], "latency_us": x["latency_us"],
                             "digital_us": x["latency_us"], "luts": x["lut4"],
                             "seconds": d["seconds"], "folder": d["folder"]})
    return rows


def _ok(r: dict) -> bool:
    # a NaN energy would compare false both ways and could be taken as the best
    return (r.get("status") == "ok" and r.get("energy_nj") is not None
            and math.isfinite(r["energy_nj"])
            and r.get("agreement") is not None and r["agreement"] >= AGREEMENT_MIN)


def best(rows: list[dict]) -> dict | None:
    ok = [r for r in rows if _ok(r)]
    return min(ok, key=lambda r: r["energy_nj"]) if ok else None


def _none_counts(what: str, rows) -> str:
    """Why no row counts: none agrees, or the agreeing ones were kept out by their status
    (an all-digital design priced above its fmax, a failed or unpriced point)."""
    agreeing = [r for r in rows if r.get("agreement") is not None
                and r["agreement"] >= AGREEMENT_MIN]
    if not agreeing:
        return f"no {what} reached agreement >= {AGREEMENT_MIN}"
    def why(r):
        if r.get("status") == "ok":  # agreeing and ok, so its energy is missing or NaN
            return "no energy figure"
        return str(r.get("status")) + (f", {r['error']}" if r.get("error") else "")
    return (f"no {what} counts: those with agreement >= {AGREEMENT_MIN} are kept out ("
            + "; ".join(f"{r.get('label') or r.get('point')}: {why(r)}" for r in agreeing) + ")")


def verdict(h: dict | None, d: dict | None, rows=(), drows=()) -> dict:
    """Best hybrid against best all-digital: who wins, by how much, and which term stops
    the hybrid when it loses. `rows`, `drows` (the hybrid and all-digital rows) say why
    there is no best when there is none."""
    if h is None or d is None:
        return {"winner": None, "text": "no comparison: " + (
            _none_counts("hybrid point", rows) if h is None
            else _none_counts("all-digital design", drows))}
    eh, ed = h["energy_nj"], d["energy_nj"]
    if eh < ed:
        return {"winner": "hybrid", "ratio": ed / eh, "text": (
            f"the hybrid wins: {eh:.4g} nJ against {ed:.4g} nJ per inference "
            f"({ed / eh:.3g}x less)")}
    a, adc, f = h["analog_nj"], h["adc_nj"], h["digital_nj"]
    if adc + f >= ed:
        term = "ADC" if adc >= f else "digital frontier"
        why = (f"ADC {adc:.4g} nJ + frontier {f:.4g} nJ = {adc + f:.4g} nJ already exceed the "
               f"all-digital {ed:.4g} nJ by {adc + f - ed:.4g} nJ, so no analog core can win "
               f"with this converter and frontier; the {term} is the largest of the two")
        n = h.get("adc_channels")
        if term == "ADC" and n and ed > f:
            why += (f"; even with a core of 0 nJ, the {n} conversions would have to cost at most "
                    f"{(ed - f) / n:.3g} nJ each, against the {h.get('adc_part')}'s "
                    f"{h['adc_nj_per_conversion']:.3g} nJ")
    else:
        term = "analog core"
        budget = ed - adc - f
        why = (f"the analog core's {a:.4g} nJ exceeds the {budget:.4g} nJ left after ADC "
               f"{adc:.4g} nJ and frontier {f:.4g} nJ by {a - budget:.4g} nJ "
               f"({a / budget:.3g}x)" if budget > 0 else "")
        wait = h.get("analog_wait_nj") or 0.0
        if why and wait > 0:
            why += (f"; {wait:.4g} nJ of the core's energy is its on-power while it waits for "
                    f"the frontier (one inference per {h['interval_us']:.4g} us)")
    return {"winner": "all-digital", "ratio": eh / ed, "stopped_by": term, "text": (
        f"the all-digital net wins: {ed:.4g} nJ against the best hybrid's {eh:.4g} nJ "
        f"({eh / ed:.3g}x); what stops the hybrid: {why}")}


def summarize(rows: list[dict], digital: dict, out: Path, vectors: int, grid: str,
              engine: str) -> dict:
    drows = digital_rows(digital)
    table = rows + drows
    for r in table:
        r["agreement_ok"] = None if r.get("agreement") is None else r["agreement"] >= AGREEMENT_MIN
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in table:
        w.writerow({k: _cell(r.get(k)) for k in CSV_COLUMNS})
    atomic_write_bytes(out / "points.csv", buf.getvalue().encode())
    bh, bd = best(rows), best(drows)
    per_neuron = [r["analog_nj_per_neuron"] for r in rows if _ok(r)
                  and r.get("analog_nj_per_neuron") is not None]
    # the core's whole share of one inference (settle + hold + waiting), per neuron
    core_per_neuron = [r["analog_nj"] / r["neurons"] for r in rows if _ok(r)
                       and r.get("analog_nj") is not None and r.get("neurons")]
    files = {"table": str(out / "points.csv"), **_plots(out, rows, drows)}
    return {"grid": str(grid), "vectors": vectors, "engine": engine,
            "points": len(rows), "points_ok": sum(r.get("status") == "ok" for r in rows),
            "points_failed": [{"point": r["point"], "label": r.get("label"), "error": r.get("error"),
                               "log": r.get("log")} for r in rows if r.get("status") != "ok"],
            "points_agreeing": sum(_ok(r) for r in rows),
            "digital_designs": len(digital), "all_digital_rows": len(drows),
            "best_hybrid": bh, "best_all_digital": bd, "verdict": verdict(bh, bd, rows, drows),
            "lowest_analog_nj_per_neuron": min(per_neuron) if per_neuron else None,
            "lowest_core_nj_per_neuron": min(core_per_neuron) if core_per_neuron else None,
            "agreement_min": AGREEMENT_MIN, "files": files, "method": METHOD}


def _cell(v):
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return "" if v is None else v


def _front(xs, ys) -> list[int]:
    """Indices on the Pareto front: lower x, higher y."""
    idx = sorted(range(len(xs)), key=lambda i: (xs[i], -ys[i]))
    front, top = [], -math.inf
    for i in idx:
        if ys[i] > top:
            front.append(i)
            top = ys[i]
    return front


def _plots(out: Path, rows: list[dict], drows: list[dict]) -> dict:  # pragma: no mutate block
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = [r for r in rows if r.get("status") == "ok" and r.get("energy_nj") is not None]
    d = [r for r in drows if r.get("status") == "ok" and r.get("energy_nj") is not None]
    files = {}
    for name, ykey, ylabel, front_y in (
            ("pareto_energy_accuracy.png", "accuracy", "test accuracy (first vectors)", True),
            ("pareto_latency_energy.png", "latency_us", "latency per inference (us)", False)):
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        parts = sorted({r["opamp"] for r in h})
        for ci, part in enumerate(parts):
            mine = [r for r in h if r["opamp"] == part]
            ax.scatter([r["energy_nj"] for r in mine], [r[ykey] for r in mine], s=28,
                       color=f"C{ci}", label=f"hybrid, {part}",
                       edgecolors=["k" if _ok(r) else "none" for r in mine])
        if d:
            ax.scatter([r["energy_nj"] for r in d], [r[ykey] for r in d], marker="s", s=50,
                       color="k", label="all-digital")
        if h:
            xs = [r["energy_nj"] for r in h]
            ys = [r[ykey] if front_y else -r[ykey] for r in h]
            f = _front(xs, ys)
            ax.plot([xs[i] for i in f], [h[i][ykey] for i in f], color="0.5", lw=1, ls="--",
                    label="hybrid Pareto front")
        ax.set_xscale("log")
        if not front_y:
            ax.set_yscale("log")
        ax.set_xlabel("energy per inference (nJ): analog + ADC + digital")
        ax.set_ylabel(ylabel)
        ax.set_title("co-design sweep (black edge: agreement with torch >= "
                     f"{AGREEMENT_MIN})", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        b = io.BytesIO()
        fig.savefig(b, format="png", dpi=110)
        plt.close(fig)
        atomic_write_bytes(out / name, b.getvalue())
        files[name.split(".")[0]] = str(out / name)
    return files


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _row_line(r: dict) -> str:
    if r["kind"] == "all-digital":
        return (f"{r['design']}: {r['energy_nj']:.4g} nJ, {r['latency_us']:.4g} us, accuracy "
                f"{r['accuracy']:.4f}, agreement {r['agreement']:.4f}, {r['luts']} LUT4")
    per = r.get("analog_nj_per_neuron")
    return (f"{r['label']} ({r['opamp']}, {r['opamps']} op-amps, {r['resistors']} resistors, "
            f"{r.get('adc_chips')} x {r['adc_part']}, {r['adc_bits']} bits, {r['design']} "
            f"{r['luts']} LUT4): "
            f"{r['energy_nj']:.4g} nJ = analog {r['analog_nj']:.4g} + ADC {r['adc_nj']:.4g} + "
            f"digital {r['digital_nj']:.4g}, one inference per {_num(r.get('interval_us'))} us "
            f"(analog waiting for the frontier {_num(r.get('analog_wait_nj'))}, frontier idle "
            f"{_num(r.get('digital_idle_nj'))}); latency {r['latency_us']:.4g} us; accuracy "
            f"{r['accuracy']:.4f}, agreement {r['agreement']:.4f} (analog, whole test split: "
            f"{r['agreement_analog_full_split']:.4f}); analog "
            + (f"{per:.3g} nJ per neuron" if per is not None else "n/a"))


def summary_lines(res: dict) -> list[str]:
    lines = [f"{res['points']} points ({res['points_ok']} ok, {len(res['points_failed'])} failed, "
             f"{res['points_agreeing']} with agreement >= {res['agreement_min']}), "
             f"{res['computed_points']} computed now; {res['digital_designs']} digital design(s); "
             f"{res['vectors']} vectors; {res['wall_seconds']:.0f} s on {res['engine']}"]
    if res["best_hybrid"]:
        lines.append("best hybrid: " + _row_line(res["best_hybrid"]))
    if res["best_all_digital"]:
        lines.append("best all-digital: " + _row_line(res["best_all_digital"]))
    lines.append(res["verdict"]["text"])
    if res["lowest_analog_nj_per_neuron"] is not None:
        lines.append(f"lowest analog energy per neuron among agreeing points: "
                     f"{res['lowest_analog_nj_per_neuron']:.3g} nJ to settle (sim-analog), "
                     f"{_num(res['lowest_core_nj_per_neuron'])} nJ for the whole inference")
    lines.append(f"table {res['files']['table']}")
    return lines


def _manufacture_line(r: dict) -> list[str]:
    """The command that builds a point as an orderable board: its analog and ADC overrides
    (what `manufacture` reads), after the sweep's own --config and --set."""
    import shlex

    from crystalbench.analog.manufacture import OPAMP_PARTS

    over = {k: v for k, v in json.loads(r.get("overrides") or "{}").items()
            if k.startswith(("analog.", "adc."))}
    cmd = " ".join(["crystalbench manufacture --config CONFIG"] +
                   [f"--set {shlex.quote(a)}" for a in set_args(over)])
    lines = ["Build it as a board (CONFIG, and any --crystal and --set, as given to the sweep):",
             "",
             f"    {cmd}", ""]
    if r.get("opamp") not in OPAMP_PARTS:
        lines += [f"Its op-amp `{r.get('opamp')}` has no orderable dual in "
                  "analog/manufacture.py OPAMP_PARTS yet: manufacture refuses it.", ""]
    return lines


def _machine_text(m: dict | None) -> str:
    if not m:
        return ""
    return (f" Started {m['date_utc']} on {m['host']} ({m['cpus']} CPUs), load average "
            f"(1/5/15 min) {'/'.join(str(x) for x in m['load_average'])} at the start, "
            f"{'/'.join(str(x) for x in m['load_average_end'])} at the end.")


def report_md(res: dict, out: Path) -> None:
    lines = ["# Co-design sweep", "",
             f"Grid `{res['grid']}`; {res['vectors']} test vectors per point; engine "
             f"{res['engine']}; {res['computed_points']} of {res['points']} points computed by "
             f"this run (the rest from the cache) in {res['wall_seconds']:.0f} s wall time (this "
             "machine, as loaded at the time; not an idle-machine figure)."
             + _machine_text(res.get("machine")), "",
             "## Verdict", "", res["verdict"]["text"], ""]
    if res["best_hybrid"]:
        lines += ["Best hybrid point (lowest energy with agreement >= "
                  f"{res['agreement_min']}):", "", "- " + _row_line(res["best_hybrid"]), ""]
        lines += _manufacture_line(res["best_hybrid"])
    if res["best_all_digital"]:
        lines += ["Best all-digital design:", "", "- " + _row_line(res["best_all_digital"]), ""]
    if res["lowest_analog_nj_per_neuron"] is not None:
        lines += [f"Lowest analog energy per neuron per inference among agreeing points: "
                  f"{res['lowest_analog_nj_per_neuron']:.3g} nJ to settle (sim-analog; target "
                  f"0.33 nJ); {_num(res['lowest_core_nj_per_neuron'])} nJ with the hold for the "
                  f"ADC and the wait for the frontier (sim-hybrid's core share).", ""]
    table = list(csv.DictReader(io.StringIO((out / "points.csv").read_text())))
    cols = ("kind", "label", "status", "energy_nj", "analog_nj", "adc_nj", "digital_nj",
            "latency_us", "accuracy", "agreement", "opamps", "resistors", "adc_part",
            "adc_chips", "luts")
    lines += ["## Every point", "", "| " + " | ".join(cols) + " |",
              "|" + "---|" * len(cols)]
    for r in sorted(table, key=lambda r: float(r["energy_nj"] or "inf")):
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if res["points_failed"]:
        lines += ["", "## Failed points", ""]
        lines += [f"- {f['label']}: {f['error']} (log {f['log']})" for f in res["points_failed"]]
    lines += ["", "## Method", ""] + [f"- {k}: {v}" for k, v in res["method"].items()]
    lines += ["", f"Plots: {', '.join(Path(v).name for k, v in res['files'].items() if k != 'table')}",
              ""]
    atomic_write_bytes(out / "report.md", "\n".join(lines).encode())


def read_points(out: Path) -> list[dict]:
    """points.csv as dicts (strings), for tests and the report."""
    return list(csv.DictReader(io.StringIO((Path(out) / "points.csv").read_text())))


__all__ = ["load_grid", "run", "run_point", "run_digital", "read_points"]
