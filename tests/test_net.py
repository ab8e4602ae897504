"""The crystal net: growth, freezing, the core cache, resume."""
import numpy as np
import torch

from crystalbench.model.net import CrystalNet, Frontier
from crystalbench.model.train import Trainer


def train(cfg, ds, out, **kw):
    return Trainer(cfg, ds, out, progress=False).run(**kw)


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


def test_cache_gives_the_same_result_as_recomputing(tiny_cfg, tiny_data, tmp_path):
    with_cache = train(tiny_cfg(train__cache=True), tiny_data, tmp_path / "a")
    without = train(tiny_cfg(train__cache=False), tiny_data, tmp_path / "b")
    assert with_cache.net.n_frozen() > 0
    for la, lb in zip(with_cache.net.layers, without.net.layers):
        assert torch.equal(la.frozen, lb.frozen) and torch.equal(la.mask, lb.mask)
        torch.testing.assert_close(la.W, lb.W, rtol=0, atol=1e-5)
    x = torch.from_numpy(tiny_data.x_test)
    assert torch.equal(with_cache.net.forward_all(x)[-1].argmax(1), without.net.forward_all(x)[-1].argmax(1))


def test_resume_ends_where_an_uninterrupted_run_ends(tiny_cfg, tiny_data, tmp_path):
    cfg = tiny_cfg()
    full = train(cfg, tiny_data, tmp_path / "full")
    part = Trainer(cfg, tiny_data, tmp_path / "split", progress=False)
    first = part.run(stop_after=5)
    assert first.epoch == 5 and part.checkpoint_path.exists()
    resumed = Trainer(cfg, tiny_data, tmp_path / "split", progress=False).run(resume=True)
    assert resumed.epoch == full.epoch == cfg.train.epochs
    for la, lb in zip(full.net.layers, resumed.net.layers):
        for name, t in la.tensors().items():
            assert torch.equal(t, lb.tensors()[name]), name
    keys = ("loss", "test_accuracy", "neurons_total", "neurons_frozen", "grown", "froze")
    assert [[r[k] for k in keys] for r in full.telemetry] == [[r[k] for k in keys] for r in resumed.telemetry]


def test_resume_refuses_a_changed_config(tiny_cfg, tiny_data, tmp_path):
    import pytest

    from crystalbench.model.train import TrainError

    Trainer(tiny_cfg(), tiny_data, tmp_path, progress=False).run(stop_after=1)
    with pytest.raises(TrainError, match=r"checkpoint\.pt: was written with a different config"):
        Trainer(tiny_cfg(train__lr=0.03), tiny_data, tmp_path, progress=False).run(resume=True)


def test_architecture_copy_is_all_active_with_same_connections(tiny_cfg, tiny_data, tmp_path):
    st = train(tiny_cfg(), tiny_data, tmp_path)
    base = st.net.architecture_copy(torch.Generator().manual_seed(1))
    for a, b in zip(st.net.layers, base.layers):
        assert torch.equal(a.mask, b.mask) and not b.frozen.any()
        assert torch.all(b.W[~b.mask] == 0)
    assert np.isfinite([r["speedup"] for r in st.telemetry]).all()
