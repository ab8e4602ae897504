"""Training: grow + freeze a crystal net, with telemetry, atomic checkpoints and resume.

Checkpoints hold tensors and plain values only and are read with
`torch.load(weights_only=True)`; one is written (atomically) when a run starts and after
every `train.checkpoint_every` epochs, so an interrupted run can always be resumed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from crystalbench import config as cfgmod
from crystalbench.errors import TrainError
from crystalbench.results import atomic_write_bytes, atomic_write_json

from . import torchfile
from .data import Dataset
from .net import CrystalNet, Frontier

# 2: the config is stored as plain dicts (version 1 pickled crystalbench's config class,
# which weights_only loading cannot read).
CHECKPOINT_VERSION = 2
CHECKPOINT_KEYS = ("version", "config_digest", "config", "epoch", "net", "gen", "best_loss",
                   "stall", "telemetry")
TELEMETRY_FIELDS = ["epoch", "lr", "loss", "train_accuracy", "validation_accuracy",
                    "test_accuracy", "neurons_total", "neurons_frozen", "frozen_fraction",
                    "grown", "froze", "epoch_seconds", "cache_seconds", "step_ms",
                    "step_ms_all_active", "speedup", "cpu_seconds", "seconds_cum",
                    "all_active_seconds_cum"]
TRAINING_SECTIONS = ("seed", "data", "net", "train", "growth", "freeze")
# knobs added later: the value that trains as before
AS_BEFORE = {("freeze", "max_layer"): None, ("data", "validation_fraction"): 0.0,
             ("freeze", "layer_epochs"): None, ("data", "validation_draw"): 0,
             ("data", "augment_warps"): 0,
             # without copies the warp sizes train nothing: left out at their defaults
             **{("data", k): cfgmod.SCHEMA["data"][k].default
                for k in ("warp_px", "warp_deg", "warp_scale")}}


def lr_at(epoch: int, tc) -> float:
    """Cosine decay from train.lr to train.lr_final over the run."""
    if tc.epochs <= 1:
        return tc.lr
    frac = epoch / (tc.epochs - 1)
    return tc.lr_final + 0.5 * (tc.lr - tc.lr_final) * (1 + math.cos(math.pi * frac))


def layer_lrs(epoch: int, cfg) -> list[float] | float:
    """The learning rate of each layer (hidden layers, then the readout) at `epoch`. With
    freeze.layer_epochs, hidden layer l decays (cosine, train.lr -> train.lr_final) over
    its own first layer_epochs[l] epochs and then stays at lr_final (it freezes there);
    the readout follows the run's schedule. Without it, one rate for every layer."""
    tc, ends = cfg.train, cfg.freeze.layer_epochs
    if not ends:
        return lr_at(epoch, tc)
    hidden = [lr_at(min(epoch, t - 1), _Schedule(t, tc.lr, tc.lr_final)) for t in ends]
    return hidden + [lr_at(epoch, tc)]


@dataclass
class _Schedule:
    epochs: int
    lr: float
    lr_final: float


@dataclass
class RunState:
    net: CrystalNet
    gen: torch.Generator
    epoch: int = 0  # next epoch to run
    best_loss: float = math.inf
    stall: int = 0
    telemetry: list = field(default_factory=list)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by `Trainer`, checked; every problem is a TrainError naming it."""
    ck = torchfile.load(path, "crystalbench checkpoint", TrainError,
                        refused="A checkpoint holds only tensors and plain values; one written "
                                "by an older crystalbench (holding crystalbench.config.Section) "
                                "cannot be read safely: train again without --resume")
    if not isinstance(ck, dict) or "version" not in ck:
        raise TrainError(f"{path}: not a crystalbench checkpoint (no version field); "
                         "`crystalbench train` writes them as "
                         "build/<experiment>/train/checkpoint.pt")
    if ck["version"] != CHECKPOINT_VERSION:
        raise TrainError(f"{path}: checkpoint version {ck['version']} is not "
                         f"{CHECKPOINT_VERSION}; train again without --resume")
    missing = [k for k in CHECKPOINT_KEYS if k not in ck]
    if missing:
        raise TrainError(f"{path}: checkpoint lacks {', '.join(missing)}; train again "
                         "without --resume")
    return ck


def training_digest(cfg) -> str:
    """What a checkpoint is tied to: only what shapes the training result (editing a
    backend's section, analog or rtl, must not invalidate a checkpoint). A knob added
    later is left out while it holds the value that trains as before (AS_BEFORE), so
    runs written before it existed still resume."""
    sections = {k: dict(cfg[k]) if isinstance(cfg[k], dict) else cfg[k]
                for k in TRAINING_SECTIONS}
    for (section, key), value in AS_BEFORE.items():
        if sections[section].get(key, value) == value:
            sections[section].pop(key, None)
    return cfgmod.digest(sections)


def plain(cfg) -> dict:
    """A config as plain dicts and lists (what a weights-only checkpoint may hold)."""
    return json.loads(json.dumps(cfg))


def _timed_steps(frontier: Frontier, x, y, batches, lr, wd) -> tuple[list[float], float]:
    """Train steps over `batches`: each step's seconds, and the summed loss x batch size."""
    times, loss_sum = [], 0.0
    for idx in batches:
        t0 = time.perf_counter()
        loss = frontier.step(x[idx], y[idx], idx, lr, wd)
        times.append(time.perf_counter() - t0)
        loss_sum += loss * len(idx)
    return times, loss_sum


class Trainer:
    """Runs one training job into `out_dir` (build/<experiment>/train). It never replaces
    a run: starting afresh where a checkpoint exists is refused (the train stage moves
    the old run aside first)."""

    def __init__(self, cfg: cfgmod.Section, ds: Dataset, out_dir: str | Path,
                 net: CrystalNet | None = None, progress: bool = True, checkpoints: bool = True,
                 log=None):
        self.cfg = cfg
        self.ds = ds
        self.out = Path(out_dir)
        self.progress = progress
        self.checkpoints = checkpoints
        self.log = log or (lambda msg: None)
        self.x = torch.from_numpy(ds.x_train)
        self.y = torch.from_numpy(ds.y_train)
        self.xt = torch.from_numpy(ds.x_test)
        self.yt = torch.from_numpy(ds.y_test)
        self.xv = None if ds.x_val is None else torch.from_numpy(ds.x_val)
        self.yv = None if ds.y_val is None else torch.from_numpy(ds.y_val)
        self._initial_net = net
        self._cache_key = None  # the frozen set the core cache was built for
        self._cache = None
        self.digest = training_digest(cfg)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    # ---- state ---------------------------------------------------------------------------
    def fresh_state(self) -> RunState:
        gen = torch.Generator().manual_seed(self.cfg.seed)
        if self._initial_net is not None:
            net = self._initial_net.clone()
        else:
            net = CrystalNet(self.ds.geometry, self.ds.n_classes, self.cfg.net.hidden, gen)
        return RunState(net=net, gen=gen)

    def save_checkpoint(self, st: RunState) -> None:
        buf = io.BytesIO()
        torch.save({"version": CHECKPOINT_VERSION, "config_digest": self.digest,
                    "config": plain(self.cfg), "epoch": st.epoch, "net": st.net.state(),
                    "gen": st.gen.get_state(), "best_loss": st.best_loss, "stall": st.stall,
                    "telemetry": st.telemetry}, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self) -> RunState:
        p = self.checkpoint_path
        ck = read_checkpoint(p)
        if ck["config_digest"] != self.digest:
            raise TrainError(f"{p}: was written with a different config; resume with the same "
                             "config, or train without --resume to start over (the old run is "
                             "then moved aside as train.prev-<date>-<time>)")
        gen = torch.Generator()
        gen.set_state(ck["gen"])
        return RunState(net=CrystalNet.from_state(ck["net"]), gen=gen, epoch=ck["epoch"],
                        best_loss=ck["best_loss"], stall=ck["stall"], telemetry=ck["telemetry"])

    def _start(self, resume: bool) -> RunState:
        if resume and self.checkpoint_path.exists():
            st = self.load_checkpoint()
            self.log(f"resuming {self.checkpoint_path} at epoch {st.epoch}")
            return st
        if self.checkpoints and self.checkpoint_path.exists():
            raise TrainError(f"{self.out} already holds a run ({self.checkpoint_path.name}); "
                             "resume it, or move it aside before training afresh")
        st = self.fresh_state()
        if self.checkpoints:  # from the start on, an interrupted run leaves a checkpoint
            self.save_checkpoint(st)
        return st

    # ---- the loop ------------------------------------------------------------------------
    def run(self, resume: bool = False, stop_after: int | None = None, on_epoch=None) -> RunState:
        """Train to cfg.train.epochs (or stop after `stop_after` epochs of this call).
        `on_epoch(state)` is called after each epoch, once its checkpoint is written."""
        if stop_after is not None and stop_after < 1:
            raise TrainError(f"stop after {stop_after} epochs: give at least 1")
        threads_before = torch.get_num_threads()
        if self.cfg.train.threads:
            torch.set_num_threads(self.cfg.train.threads)
        try:
            return self._run(resume, stop_after, on_epoch)
        finally:  # the process's own setting back (a bench or a test trains many runs)
            torch.set_num_threads(threads_before)

    def _run(self, resume, stop_after, on_epoch) -> RunState:
        st = self._start(resume)
        self._cache_key = self._cache = None
        tc = self.cfg.train
        end = tc.epochs if stop_after is None else min(tc.epochs, st.epoch + stop_after)
        bar = tqdm(total=tc.epochs, initial=st.epoch, desc=self.cfg.experiment, unit="epoch",
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        try:
            while st.epoch < end:
                row = self._epoch(st)
                st.telemetry.append(row)
                st.epoch += 1
                if self.checkpoints and (st.epoch % tc.checkpoint_every == 0 or st.epoch == end):
                    self.save_checkpoint(st)
                    # Telemetry on disk as the run goes, so a long run can be watched.
                    write_telemetry(st.telemetry, self.out,
                                    plot=st.epoch % 10 == 0 or st.epoch == end)
                if on_epoch is not None:
                    on_epoch(st)
                bar.set_postfix(loss=f"{row['loss']:.3f}", test=f"{row['test_accuracy']:.3f}",
                                neurons=row["neurons_total"],
                                frozen=f"{row['frozen_fraction']:.0%}")
                bar.update(1)
        finally:
            bar.close()
        return st

    def _epoch(self, st: RunState) -> dict:
        """One epoch: train the frontier, grow, freeze, evaluate; its telemetry row."""
        e, tc = st.epoch, self.cfg.train
        lr = lr_at(e, tc)
        lrs = layer_lrs(e, self.cfg)
        frontier = Frontier(st.net)
        cpu0 = time.process_time()  # CPU time: what a shared, busy machine does not inflate
        cache_s = self._attach_cache(frontier)
        n = len(self.y)
        perm = torch.randperm(n, generator=st.gen)
        batches = [perm[i:i + tc.batch_size] for i in range(0, n, tc.batch_size)]
        t0 = time.perf_counter()
        step_times, loss_sum = _timed_steps(frontier, self.x, self.y, batches, lrs,
                                            tc.weight_decay)
        epoch_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
        loss = loss_sum / n
        frontier.write_back()
        ref_ms = self._all_active_ms(st.net, batches[:tc.speedup_batches], lrs)
        grown = self._grow(st, loss, e)
        fc = self.cfg.freeze
        # freeze.layer_epochs: hidden layer l freezes whole at the end of its schedule
        force = None if not fc.layer_epochs else [e >= t - 1 for t in fc.layer_epochs]
        froze = st.net.check_freeze(e, fc.threshold, fc.patience, fc.min_age, fc.enabled,
                                    fc.max_layer, force)
        _, train_acc = st.net.evaluate(self.x, self.y)
        _, test_acc = st.net.evaluate(self.xt, self.yt)
        val_acc = math.nan if self.yv is None else st.net.evaluate(self.xv, self.yv)[1]
        step_ms = statistics.median(step_times) * 1e3
        total, frozen = st.net.n_hidden(), st.net.n_frozen()
        # Whole-run compute so far: this run's training steps and cache builds, beside what
        # the same epochs would have cost all-active (median all-active step x steps).
        prev = st.telemetry[-1] if st.telemetry else {}
        cum = (prev.get("seconds_cum") or 0.0) + epoch_s + cache_s
        ref_cum = (prev.get("all_active_seconds_cum") or 0.0) + ref_ms * 1e-3 * len(batches)
        return {"epoch": e, "lr": lr, "loss": loss, "train_accuracy": train_acc,
                "validation_accuracy": val_acc, "test_accuracy": test_acc,
                "neurons_total": total, "neurons_frozen": frozen,
                "frozen_fraction": frozen / total, "grown": grown, "froze": froze,
                "epoch_seconds": epoch_s, "cache_seconds": cache_s, "step_ms": step_ms,
                "step_ms_all_active": ref_ms, "speedup": ref_ms / step_ms,
                "cpu_seconds": cpu_s, "seconds_cum": cum, "all_active_seconds_cum": ref_cum}

    def _attach_cache(self, frontier: Frontier) -> float:
        """Give the frontier the frozen core's outputs, rebuilt only when the frozen set
        changed; the seconds spent building."""
        if not (self.cfg.train.cache and frontier.n_frozen):
            return 0.0
        key = tuple(tuple(f.tolist()) for f in frontier.frozen_idx)
        seconds = 0.0
        if key != self._cache_key:
            t0 = time.perf_counter()
            frontier.build_cache(self.x)
            seconds = time.perf_counter() - t0
            self._cache, self._cache_key = frontier.cache, key
        frontier.cache = self._cache
        return seconds

    def _all_active_ms(self, net: CrystalNet, batches, lr: float) -> float:
        """Median ms of an all-active step of the same net, on a throwaway copy of its
        weights (the measured-speedup telemetry); NaN when off."""
        if not batches:
            return math.nan
        shadow = Frontier(net, all_active=True)
        times, _ = _timed_steps(shadow, self.x, self.y, batches, lr, self.cfg.train.weight_decay)
        return statistics.median(times) * 1e3

    def _grow(self, st: RunState, loss: float, epoch: int) -> int:
        """Count a stall or progress; nucleate neurons after enough stalled epochs."""
        gc = self.cfg.growth
        if not gc.enabled:
            return 0
        if loss < st.best_loss * (1 - gc.min_improvement):
            st.best_loss, st.stall = loss, 0
        else:
            st.stall += 1
        may_grow = gc.until_epoch is None or epoch < gc.until_epoch
        if st.stall < gc.stall_epochs or not may_grow:
            return 0
        ends = self.cfg.freeze.layer_epochs
        # a layer on a freeze schedule grows only while a new neuron still gets
        # freeze.min_age epochs of training before the layer freezes
        layers = None if not ends else [li for li, t in enumerate(ends)
                                        if epoch < t - self.cfg.freeze.min_age]
        if layers == []:
            return 0
        sample = torch.randperm(len(self.y), generator=st.gen)[:gc.score_samples]
        grown = st.net.grow(self.x[sample], self.y[sample], gc.count, gc.candidates, st.gen,
                            epoch, layers)
        st.stall, st.best_loss = 0, loss
        return grown


# ---- telemetry -------------------------------------------------------------------------------
def write_telemetry(rows: list[dict], out: Path, plot: bool = True) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TELEMETRY_FIELDS)
    w.writeheader()
    for r in rows:  # rows of a run resumed from an older checkpoint may lack newer fields
        w.writerow({k: r.get(k, math.nan) for k in TELEMETRY_FIELDS})
    atomic_write_bytes(out / "telemetry.csv", buf.getvalue().encode())
    atomic_write_json(out / "telemetry.json", rows)
    if rows and plot:
        plot_telemetry(rows, out / "training.png")


def plot_telemetry(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    a = ax[0, 0]
    a.plot(ep, [r["loss"] for r in rows], label="training loss")
    a.set_yscale("log")
    a.set_title("Loss")
    a2 = a.twinx()
    a2.plot(ep, [r["test_accuracy"] for r in rows], color="tab:green", label="test accuracy")
    a2.set_ylabel("test accuracy", color="tab:green")
    a = ax[0, 1]
    a.plot(ep, [r["neurons_total"] for r in rows], label="total")
    a.plot(ep, [r["neurons_frozen"] for r in rows], label="frozen")
    a.set_title("Hidden neurons: total vs frozen")
    a.legend()
    a = ax[1, 0]
    a.plot(ep, [100 * r["frozen_fraction"] for r in rows], color="tab:purple")
    a.set_ylim(0, 100)
    a.set_title("Crystallization (% of hidden neurons frozen)")
    a = ax[1, 1]
    a.plot(ep, [r["speedup"] for r in rows], color="tab:red", label="per step")
    a.axhline(1.0, color="grey", lw=0.8, ls="--")
    a.set_ylabel("speedup per step", color="tab:red")
    a.set_title("Measured speedup per step (median all-active / crystallized step)\n"
                "and cumulative training compute (s): all-active equivalent vs crystal")
    a2 = a.twinx()
    a2.plot(ep, [r.get("all_active_seconds_cum", math.nan) for r in rows], color="tab:grey",
            label="all-active equivalent")
    a2.plot(ep, [r.get("seconds_cum", math.nan) for r in rows], color="tab:blue",
            label="crystal")
    a2.set_ylabel("cumulative seconds")
    a2.legend(loc="upper left")
    for a in ax.flat:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# ---- measurement --------------------------------------------------------------------------
def median_speedup(slow: list[float], fast: list[float]) -> float:
    """Speedup from repeated timings: median of the slow ones over median of the fast ones
    (medians: a shared, noisy machine inflates some repeats, never deflates them)."""
    return statistics.median(slow) / statistics.median(fast)


def measure_epoch_speedup(net: CrystalNet, ds: Dataset, cfg, repeats: int = 5) -> dict:
    """Time whole epochs of the final net, all-active vs crystallized (frontier on the
    cache), interleaved so machine load hits both alike; medians. Nothing is written back."""
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    tc = cfg.train
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n = len(y)
    t0 = time.perf_counter()
    base = Frontier(net)
    base.build_cache(x)
    cache_s = time.perf_counter() - t0
    times = {"all_active": [], "crystallized": []}
    for _ in range(repeats):
        perm = torch.randperm(n, generator=gen)
        batches = [perm[i:i + tc.batch_size] for i in range(0, n, tc.batch_size)]
        for mode in ("all_active", "crystallized"):
            f = Frontier(net, all_active=(mode == "all_active"))
            if mode == "crystallized":
                f.cache = base.cache
            t = time.perf_counter()
            for idx in batches:
                f.step(x[idx], y[idx], idx, tc.lr_final, tc.weight_decay)
            times[mode].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"epoch_seconds_all_active": med["all_active"],
            "epoch_seconds_crystallized": med["crystallized"],
            "speedup": median_speedup(times["all_active"], times["crystallized"]),
            "cache_build_seconds": cache_s, "repeats": repeats,
            "method": "median wall-clock of whole training epochs (forward, backward, Adam) of the "
                      "final net, all neurons trainable vs only the frontier trained on cached "
                      "core outputs; interleaved in one process on this CPU"}
