"""The crystal net: growth, freezing, the core cache, checkpoints, interrupt and resume."""
import numpy as np
import pytest
import torch

from crystalbench.errors import TrainError
from crystalbench.model.net import CrystalNet, Frontier
from crystalbench.model.train import Trainer, read_checkpoint

from .conftest import write_torch_file


def train(cfg, ds, out, **kw):
    return Trainer(cfg, ds, out, progress=False).run(**kw)


def assert_same_net(state_a: dict, state_b: dict):
    for la, lb in zip(state_a["layers"], state_b["layers"], strict=True):
        for name, t in la.items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, lb[name]), name


def test_growth_preserves_the_function(tiny_cfg, tiny_data):
    cfg = tiny_cfg()
    gen = torch.Generator().manual_seed(0)
    net = CrystalNet(tiny_data.geometry, 10, cfg.net.hidden, gen)
    x = torch.from_numpy(tiny_data.x_train[:200])
    y = torch.from_numpy(tiny_data.y_train[:200])
    f = Frontier(net)
    for _ in range(20):  # move away from the initialization first
        f.step(x[:64], y[:64], None, 0.02, 0.0)
    f.write_back()
    before = [o.clone() for o in net.forward_all(x)]
    sizes = [layer.n for layer in net.hidden]
    grown = net.grow(x, y, count=2, candidates=2, gen=gen, epoch=5)
    after = net.forward_all(x)
    assert grown == 4 and [layer.n for layer in net.hidden] == [s + 2 for s in sizes]
    torch.testing.assert_close(after[-1], before[-1], rtol=0, atol=1e-6)
    # The new neurons exist and compute something; their outgoing weights are zero.
    assert net.layers[1].W[:, -2:].abs().sum() == 0 and net.layers[2].W[:, -2:].abs().sum() == 0
    assert after[0][:, -2:].abs().sum() > 0


def test_growth_nucleates_where_the_gradient_is_largest(tiny_cfg, tiny_data):
    cfg = tiny_cfg()
    gen = torch.Generator().manual_seed(0)
    net = CrystalNet(tiny_data.geometry, 10, cfg.net.hidden, gen)
    x = torch.from_numpy(tiny_data.x_train[:128])
    y = torch.from_numpy(tiny_data.y_train[:128])
    # Candidates at the always-blank left/right image columns see no signal: never chosen.
    net.grow(x, y, count=4, candidates=2, gen=gen, epoch=0)
    new_pos = net.layers[0].pos[-4:]
    assert set(new_pos[:, 1].tolist()).isdisjoint({0.0})


def test_frozen_neurons_never_change_and_core_grows_front_to_back(tiny_cfg, tiny_data, tmp_path):
    cfg = tiny_cfg()
    seen = {}  # (layer, neuron) -> (weights row, bias) at the epoch it froze
    checks = []

    def on_epoch(st):
        for li, layer in enumerate(st.net.hidden):
            for j in torch.nonzero(layer.frozen).flatten().tolist():
                row = (layer.W[j].clone(), layer.b[j].clone())
                if (li, j) not in seen:
                    seen[(li, j)] = row
                else:
                    w0, b0 = seen[(li, j)]
                    # Growth may append columns (zero, absent) but never touch the old ones.
                    assert torch.equal(layer.W[j, :len(w0)], w0) and torch.equal(layer.b[j], b0)
                    assert torch.all(layer.W[j, len(w0):] == 0)
                    assert not layer.mask[j, len(w0):].any()
                    checks.append((li, j))
        prev = torch.ones(st.net.n_inputs, dtype=torch.bool)
        for layer in st.net.hidden:  # every frozen neuron reads only frozen neurons
            assert not (layer.mask[layer.frozen] & ~prev[None, :]).any()
            prev = layer.frozen
        assert not st.net.layers[-1].frozen.any()

    st = train(cfg, tiny_data, tmp_path, on_epoch=on_epoch)
    grown = sum(r["grown"] for r in st.telemetry)
    assert grown > 0, "the tiny config should grow"
    assert {li for li, _ in seen} == {0, 1}, "both hidden layers should freeze"
    assert len(checks) > 20
    first = {li: min(st.net.hidden[li].epoch_frozen[st.net.hidden[li].frozen].tolist()) for li in (0, 1)}
    assert first[0] <= first[1], "the core crystallizes from the input side"


def test_cache_gives_the_same_result_as_recomputing(tiny_cfg, tiny_data, tmp_path, trained):
    with_cache = CrystalNet.from_state(read_checkpoint(trained.run / "checkpoint.pt")["net"])
    without = train(tiny_cfg(train__cache=False), tiny_data, tmp_path).net
    assert with_cache.n_frozen() > 0
    for la, lb in zip(with_cache.layers, without.layers):
        assert torch.equal(la.frozen, lb.frozen) and torch.equal(la.mask, lb.mask)
        torch.testing.assert_close(la.W, lb.W, rtol=0, atol=1e-5)
    x = torch.from_numpy(tiny_data.x_test)
    assert torch.equal(with_cache.forward_all(x)[-1].argmax(1), without.forward_all(x)[-1].argmax(1))


def test_interrupted_run_leaves_a_checkpoint_and_resume_ends_bit_identical(
        tiny_cfg, tiny_data, tmp_path, trained):
    cfg = tiny_cfg()
    full = read_checkpoint(trained.run / "checkpoint.pt")  # the uninterrupted run

    def ctrl_c_after_5(st):
        if st.epoch == 5:
            raise KeyboardInterrupt

    trainer = Trainer(cfg, tiny_data, tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(on_epoch=ctrl_c_after_5)
    ck = read_checkpoint(trainer.checkpoint_path)  # weights-only loadable
    assert ck["epoch"] == 5 and [r["epoch"] for r in ck["telemetry"]] == [0, 1, 2, 3, 4]
    resumed = Trainer(cfg, tiny_data, tmp_path, progress=False).run(resume=True)
    assert resumed.epoch == full["epoch"] == cfg.train.epochs == 14
    assert_same_net(full["net"], resumed.net.state())
    keys = ("loss", "test_accuracy", "neurons_total", "neurons_frozen", "grown", "froze")
    assert [[r[k] for k in keys] for r in full["telemetry"]] == \
           [[r[k] for k in keys] for r in resumed.telemetry]


def test_a_checkpoint_exists_from_the_start(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    def ctrl_c(self, st):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_epoch", ctrl_c)
    trainer = Trainer(tiny_cfg(), tiny_data, tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    ck = read_checkpoint(trainer.checkpoint_path)
    assert ck["epoch"] == 0 and ck["telemetry"] == []
    fresh = trainer.fresh_state()
    assert_same_net(ck["net"], fresh.net.state())
    assert torch.equal(ck["gen"], fresh.gen.get_state())


def test_a_fresh_start_never_overwrites_a_run(tiny_cfg, tiny_data, tmp_path):
    Trainer(tiny_cfg(), tiny_data, tmp_path, progress=False).run(stop_after=1)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainError, match=r"already holds a run \(checkpoint\.pt\); resume it"):
        Trainer(tiny_cfg(), tiny_data, tmp_path, progress=False).run()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    with pytest.raises(TrainError, match=r"stop after 0 epochs: give at least 1"):
        Trainer(tiny_cfg(), tiny_data, tmp_path, progress=False).run(resume=True, stop_after=0)


def test_resume_refuses_a_changed_config(tiny_cfg, tiny_data, tmp_path):
    Trainer(tiny_cfg(), tiny_data, tmp_path, progress=False).run(stop_after=1)
    with pytest.raises(TrainError, match=r"checkpoint\.pt: was written with a different config"):
        Trainer(tiny_cfg(train__lr=0.03), tiny_data, tmp_path, progress=False).run(resume=True)


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint\n",
     r"bad\.pt: not a crystalbench checkpoint written by torch\.save \(torch cannot read it"),
    ({"weights": torch.zeros(2)}, r"bad\.pt: not a crystalbench checkpoint \(no version field\)"),
    ({"version": 1, "x": 0}, r"bad\.pt: checkpoint version 1 is not 2; train again"),
    ({"version": 2, "epoch": 3}, r"bad\.pt: checkpoint lacks config_digest, config, net, gen"),
    (torch.nn.Linear(2, 2), r"bad\.pt: holds torch\.nn\.modules\.linear\.Linear, which a "
                            r"crystalbench checkpoint may not hold; it was not loaded"),
])
def test_unreadable_checkpoints_are_named(tmp_path, content, message):
    p = write_torch_file(tmp_path / "bad.pt", content)
    with pytest.raises(TrainError, match=message):
        read_checkpoint(p)


def test_architecture_copy_is_all_active_with_same_connections(trained):
    ck = read_checkpoint(trained.run / "checkpoint.pt")
    net = CrystalNet.from_state(ck["net"])
    base = net.architecture_copy(torch.Generator().manual_seed(1))
    for a, b in zip(net.layers, base.layers):
        assert torch.equal(a.mask, b.mask) and not b.frozen.any()
        assert torch.all(b.W[~b.mask] == 0)
        assert not torch.equal(a.W, b.W) and torch.all(b.epoch_frozen == -1)
    assert np.isfinite([r["speedup"] for r in ck["telemetry"]]).all()


def test_speedup_is_a_ratio_of_medians():
    from crystalbench.model.train import median_speedup

    assert median_speedup([3.0, 1.0, 2.0], [1.0, 1.0, 4.0]) == 2.0  # 2 / 1; means: 2 / 2
    assert median_speedup([1.0, 2.0, 3.0, 10.0], [1.0]) == 2.5  # even count: middle pair
    assert median_speedup([5.0], [2.0, 2.0, 200.0]) == 2.5  # one slow outlier ignored


@pytest.mark.parametrize("max_layer, frozen", [(None, [True, True]), (0, [False, False]),
                                               (1, [True, False]), (2, [True, True])])
def test_freeze_max_layer_keeps_deeper_hidden_layers_active(tiny_cfg, tiny_data, max_layer, frozen):
    cfg = tiny_cfg()
    net = CrystalNet(tiny_data.geometry, 10, cfg.net.hidden, torch.Generator().manual_seed(0))
    for epoch in range(3):  # the weights never move: every neuron is stable at every check
        net.check_freeze(epoch, threshold=0.1, patience=1, min_age=0, max_layer=max_layer)
    assert [bool(layer.frozen.all()) for layer in net.hidden] == frozen
    assert [bool(layer.frozen.any()) for layer in net.hidden] == frozen
    assert not net.layers[-1].frozen.any()


def test_training_honours_freeze_max_layer(tiny_cfg, tiny_data, tmp_path):
    st = train(tiny_cfg(freeze__max_layer=1, train__epochs=6, train__speedup_batches=0),
               tiny_data, tmp_path)
    assert st.net.hidden[0].frozen.any() and not st.net.hidden[1].frozen.any()
    assert st.telemetry[-1]["neurons_frozen"] == int(st.net.hidden[0].frozen.sum())


def test_a_knob_added_later_keeps_old_checkpoints_resumable(tiny_cfg):
    """freeze.max_layer at null trains as before it existed: the checkpoint digest leaves it
    out, so runs written before it still resume; any other value is a different run."""
    from crystalbench import config as cfgmod
    from crystalbench.model.train import TRAINING_SECTIONS, training_digest

    def by_hand(cfg, drop_max_layer, drop_validation=True):
        d = {k: (dict(cfg[k]) if isinstance(cfg[k], dict) else cfg[k]) for k in TRAINING_SECTIONS}
        if drop_max_layer:
            del d["freeze"]["max_layer"]
        if drop_validation:
            del d["data"]["validation_fraction"]
        if d["freeze"]["layer_epochs"] is None:
            del d["freeze"]["layer_epochs"]
        if d["data"]["validation_draw"] == 0:
            del d["data"]["validation_draw"]
        for key, before in (("augment_warps", 0), ("warp_px", 0.5), ("warp_deg", 6.0),
                            ("warp_scale", 0.05)):
            if d["data"][key] == before:
                del d["data"][key]
        return cfgmod.digest(d)

    cfg = tiny_cfg()
    assert cfg.freeze.max_layer is None and training_digest(cfg) == by_hand(cfg, True)
    one = tiny_cfg(freeze__max_layer=1)
    assert training_digest(one) == by_hand(one, False) != training_digest(cfg)
    assert training_digest(tiny_cfg(freeze__max_layer=0)) != training_digest(one)
    # data.validation_fraction at 0 (none held out) trains as before it existed
    assert cfg.data.validation_fraction == 0.0
    val = tiny_cfg(data__validation_fraction=0.2)
    assert training_digest(val) == by_hand(val, True, False) != training_digest(cfg)
    # data.validation_draw at 0 (no fresh draw) trains as before it existed
    drawn = tiny_cfg(data__validation_draw=100)
    assert training_digest(drawn) == by_hand(drawn, True) != training_digest(cfg)
    # data.augment_warps at 0 (and its warp sizes at their defaults) trains as before
    warped = tiny_cfg(data__augment_warps=4)
    assert training_digest(warped) == by_hand(warped, True) != training_digest(cfg)
    bigger = tiny_cfg(data__augment_warps=4, data__warp_deg=10.0)
    assert training_digest(bigger) == by_hand(bigger, True) != training_digest(warped)
    # freeze.layer_epochs at null (no schedule) trains as before it existed
    sched = tiny_cfg(freeze__layer_epochs=[3, 4])
    assert training_digest(sched) == by_hand(sched, True) != training_digest(cfg)


def test_two_thread_counts_give_the_identical_crystal_file(tmp_path):
    """The same config and seed trained with 1 and with 2 torch threads (5 epochs of TINY:
    growth, freezing and the cache all happen): byte for byte the same crystal.npz; the
    process's thread count is restored after each run."""
    import contextlib
    import copy
    import io

    from crystalbench.cli import main

    from .conftest import TINY, write_config

    before = torch.get_num_threads()
    files = []
    for threads in (1, 2):
        d = copy.deepcopy(TINY)
        d["train"].update(threads=threads, epochs=5)
        folder = tmp_path / f"t{threads}"
        folder.mkdir()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--build-dir", str(folder), "train", "--config",
                         str(write_config(folder, d)), "--quiet"]) == 0
        assert torch.get_num_threads() == before
        files.append((folder / "tiny" / "crystal" / "crystal.npz").read_bytes())
    c = np.load(tmp_path / "t1" / "tiny" / "crystal" / "crystal.npz")
    assert c["layer1.frozen"].any() and len(c["layer1.frozen"]) > TINY["net"]["hidden"][0]["initial"]
    assert files[0] == files[1]


def test_validation_accuracy_is_recorded_only_with_a_validation_part(tiny_cfg, tiny_data,
                                                                     tmp_path):
    import math

    from crystalbench.model import data

    cfg = tiny_cfg(data__validation_fraction=0.25, train__epochs=2)
    ds = data.load(cfg.data, cfg.seed)
    st = train(cfg, ds, tmp_path / "v")
    _, acc = st.net.evaluate(torch.from_numpy(ds.x_val), torch.from_numpy(ds.y_val))
    assert st.telemetry[-1]["validation_accuracy"] == acc
    st = train(tiny_cfg(train__epochs=1), tiny_data, tmp_path / "none")
    assert math.isnan(st.telemetry[-1]["validation_accuracy"])


def test_cumulative_compute_adds_up_epoch_by_epoch(trained):
    import json

    rows = json.loads((trained.run / "telemetry.json").read_text())
    batches = 13  # TINY: 400 training samples in batches of 32 -> 12 full + 1 partial
    cum = ref = 0.0
    for r in rows:
        cum += r["epoch_seconds"] + r["cache_seconds"]
        ref += r["step_ms_all_active"] * 1e-3 * batches
        assert r["seconds_cum"] == pytest.approx(cum, rel=1e-12)
        assert r["all_active_seconds_cum"] == pytest.approx(ref, rel=1e-12)
    # Which of the two is larger is a timing on a shared machine (make bench measures it).


def test_layer_schedule_freezes_front_to_back_on_time(tiny_cfg, tiny_data, tmp_path):
    """freeze.layer_epochs [4, 6] with min_age 2: layer 1 frozen whole at the end of epoch 3,
    layer 2 by the end of epoch 5; layer l grows only before epoch t_l - min_age."""
    cfg = tiny_cfg(train__epochs=8, freeze__layer_epochs=[4, 6])
    st = train(cfg, tiny_data, tmp_path / "run")
    l1, l2 = st.net.hidden
    assert bool(l1.frozen.all()) and bool(l2.frozen.all())
    assert int(l1.epoch_frozen.max()) <= 3 and int(l2.epoch_frozen.max()) <= 5
    assert int(l1.born.max()) < 4 - 2 and int(l2.born.max()) < 6 - 2
    rows = st.telemetry
    assert rows[3]["neurons_frozen"] >= l1.n
    assert all(r["grown"] == 0 for r in rows[4:])


def test_layer_learning_rates_by_hand(tiny_cfg):
    import math

    from crystalbench.model.train import layer_lrs, lr_at

    cfg = tiny_cfg(train__epochs=10, train__lr=0.02, train__lr_final=0.0005,
                   freeze__layer_epochs=[3, 5])
    a, b = 0.02, 0.0005
    # layer 1: cosine over epochs 0..2, then lr_final; layer 2 over 0..4; readout over 0..9
    assert layer_lrs(0, cfg) == [a, a, a]
    h1, h2, out = layer_lrs(1, cfg)
    assert h1 == pytest.approx(b + 0.5 * (a - b) * (1 + math.cos(math.pi / 2)), rel=1e-12)
    assert h2 == pytest.approx(b + 0.5 * (a - b) * (1 + math.cos(math.pi / 4)), rel=1e-12)
    assert out == lr_at(1, cfg.train)
    assert layer_lrs(2, cfg)[0] == pytest.approx(b, rel=1e-12)
    assert layer_lrs(7, cfg)[:2] == [pytest.approx(b, rel=1e-12)] * 2
    assert layer_lrs(4, tiny_cfg()) == lr_at(4, tiny_cfg().train)  # no schedule: one rate


def test_one_rate_per_layer_equal_to_a_single_rate_gives_the_same_step(trained):
    from crystalbench.model.train import read_checkpoint

    ck = read_checkpoint(trained.run / "checkpoint.pt")
    x = torch.rand(16, 64)
    y = torch.arange(16) % 10
    nets = [CrystalNet.from_state(ck["net"]) for _ in range(2)]
    for net, lr in zip(nets, (0.01, [0.01, 0.01, 0.01])):
        f = Frontier(net, all_active=True)
        f.step(x, y, None, lr, 0.0)
        f.write_back()
    assert_same_net(nets[0].state(), nets[1].state())


@pytest.mark.parametrize("ends", [[3], [5, 3], [0, 4], [4, 99], [2.5, 4], [True, 4]])
def test_bad_layer_schedules_are_refused(tiny_cfg, ends):
    from crystalbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^<tiny>: freeze.layer_epochs .*: give 2 whole "
                       r"number\(s\), one per hidden layer, non-decreasing, each from 1 to "
                       r"train.epochs \(14\), or null$"):
        tiny_cfg(freeze__layer_epochs=ends)


def test_cpu_flags_are_read_from_the_cpuinfo_flags_line(tmp_path):
    import crystalbench

    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx2 fma\n"
                 "processor\t: 1\nflags\t\t: fpu\n")
    assert crystalbench.cpu_flags(str(f)) == {"fpu", "sse2", "avx2", "fma"}  # the first CPU's
    assert crystalbench.cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.parametrize("flags, pins", [
    ({"sse2", "avx", "avx2", "fma", "avx512f"}, {"MKL_CBWR": "AVX2,STRICT",
                                                "ATEN_CPU_CAPABILITY": "avx2"}),
    ({"sse2", "avx", "avx2"}, {"MKL_CBWR": "AUTO,STRICT"}),  # no FMA: nothing pinned
    ({"sse2", "fma"}, {"MKL_CBWR": "AUTO,STRICT"}),
    (set(), {"MKL_CBWR": "AUTO,STRICT"}),  # not Linux, or not x86
])
def test_kernel_pins_hold_avx2_cpus_on_avx2_code_only(flags, pins):
    import crystalbench

    assert crystalbench.kernel_pins(flags) == pins


def test_importing_crystalbench_pins_the_kernels_torch_then_runs():
    """A fresh interpreter without the variables: importing crystalbench before torch sets
    them, and torch runs the kernels they name; a user's own values are kept."""
    import os
    import subprocess
    import sys

    import crystalbench

    code = ("import os, crystalbench, torch; torch.ones(3).sum(); "
            "print(os.environ['MKL_CBWR'], torch.backends.cpu.get_cpu_capability())")
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    pins = crystalbench.kernel_pins(crystalbench.cpu_flags())
    assert out[0] == pins["MKL_CBWR"]
    if "ATEN_CPU_CAPABILITY" in pins:
        assert out[1] == "AVX2"
    own = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**env, "MKL_CBWR": "COMPATIBLE,STRICT",
                                          "ATEN_CPU_CAPABILITY": "default"}).stdout.split()
    assert own == ["COMPATIBLE,STRICT", "DEFAULT"]
