"""Fixed point, golden model, Amaranth components (in Amaranth's simulator), Yosys/nextpnr."""
import copy
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Fragment, Module
from amaranth.sim import Simulator

from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench import toolrun
from crystalbench.errors import FixedPointError
from crystalbench.results import Paths
from crystalbench.rtl import design, fixed, quantize, synth

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import fp_cfg, quantized, quantized_deep, tiny_crystal, tiny_deep_crystal


def test_golden_matches_float_within_quantization():
    c, fp = quantized(digital_input_bits=8, digital_weight_bits=10, digital_activation_bits=10)
    nets = fixed.nets_of(fp)
    # Frontier: logits * 2**-frac are the float logits up to the ADC + weight rounding.
    # (on the calibration inputs: the ADC's full scale covers them, so nothing clips)
    fr = nets["frontier"]
    cal = c.reference.calibration_x
    g = fr.forward(fixed.input_codes(c, fr, x=cal))
    lg = g["logits"] * 2.0 ** -fr.layers[-1].weight_frac[0]
    ref = c.forward(cal)[-1]
    np.testing.assert_allclose(lg, ref, atol=0.05 * np.abs(ref).max())
    ad = nets["all_digital"]
    g = ad.forward(fixed.input_codes(c, ad, x=cal))
    assert (g["cls"] == ref.argmax(1)).mean() >= 0.9


def test_formats_round_trip_through_their_own_artifact(tmp_path):
    c, fp = quantized()
    fixed.save(fp, tmp_path)
    back = fixed.load(tmp_path, c)
    a, b = fixed.nets_of(fp), fixed.nets_of(back)
    for k in a:
        for la, lb in zip(a[k].layers, b[k].layers):
            np.testing.assert_array_equal(la.weights, lb.weights)
            assert la.acc_bits == lb.acc_bits
    assert back["crystal"]["digest"] == cm.digest(c)


def test_the_crystal_is_not_written_by_quantize(tmp_path):
    c = tiny_crystal()
    cm.save(c, tmp_path / "tiny" / "crystal")
    before = {p.name: p.read_bytes() for p in (tmp_path / "tiny" / "crystal").iterdir()}
    res = quantize.run(c, cfgmod.validate({"experiment": "tiny"}, "<t>"), Paths(tmp_path, "tiny"))
    after = {p.name: p.read_bytes() for p in (tmp_path / "tiny" / "crystal").iterdir()}
    assert before == after
    assert (tmp_path / "tiny" / "fixed" / "fixed_point.json").exists()
    assert res["crystal_digest"] == cm.digest(c)


def test_a_stale_artifact_is_refused_with_what_to_run(tmp_path):
    c, fp = quantized()
    fixed.save(fp, tmp_path)
    other = tiny_crystal(seed=1)
    with pytest.raises(FixedPointError, match=r"made from another Crystal .* stale: run "
                                              r"`crystalbench synth`"):
        fixed.load(tmp_path, other)
    cfg = cfgmod.validate({"fixed_point": {"weight_bits": 7}}, "<t>")
    with pytest.raises(FixedPointError, match=r"other fixed_point/adc settings"):
        fixed.load(tmp_path, c, cfg)
    with pytest.raises(FixedPointError, match=r"fixed_point\.json: not found; run"):
        fixed.load(tmp_path / "nowhere", c)
    # Re-saving the same Crystal (train --resume re-exports it) keeps the artifact valid.
    cm.save(c, tmp_path / "crystal")
    fixed.load(tmp_path, cm.load(tmp_path / "crystal"))


def test_missing_field_refused_naming_it():
    c, fp = quantized()
    fp = copy.deepcopy(fp)
    del fp["nets"]["frontier"]["layers"][0]["acc_bits"]
    with pytest.raises(FixedPointError, match=r"nets\.frontier\.layers\[0\]: missing field 'acc_bits'"):
        fixed.validate_formats(fp, c)


def test_overflowing_width_refused():
    c, fp = quantized()
    fp = copy.deepcopy(fp)
    fp["nets"]["all_digital"]["layers"][1]["acc_bits"] = 4
    with pytest.raises(FixedPointError, match=r"nets\.all_digital\.layers\[1\]: acc_bits 4 would overflow"):
        fixed.validate_formats(fp, c)


def test_unsupported_activation_refused():
    c = tiny_crystal(hidden_act="linear")
    with pytest.raises(FixedPointError,
                       match=r"crystal layer 1: activation 'linear' is not supported .* hidden"):
        fixed.quantize(c, fp_cfg(), 8)
    with pytest.raises(FixedPointError, match=r"max_acc_bits 4"):
        fixed.quantize(tiny_crystal(), fp_cfg(max_acc_bits=4), 8)


def amaranth_run(dut, net, codes, writes=(), max_cycles=None, reset=False):
    """Drive codes through a component in Amaranth's simulator, after `writes` ((address,
    data) through `wr`) and, with `reset`, a reset pulse after them; a design that does not
    answer within `max_cycles` per vector (default: twice its latency + 10) fails."""
    got = []
    limit = max_cycles or 2 * dut.latency + 10
    top = Module()
    top.domains.sync = cd = ClockDomain()  # explicit, so the bench can drive its reset
    top.submodules.dut = dut

    async def tb(ctx):
        for addr, val in writes:
            ctx.set(dut.wr.en, 1)
            ctx.set(dut.wr.addr, addr)
            ctx.set(dut.wr.data, val)
            await ctx.tick()
        if writes:
            ctx.set(dut.wr.en, 0)
        if reset:  # two clock periods in reset (a tick would raise DomainReset)
            ctx.set(cd.rst, 1)
            await ctx.delay(2e-6)
            ctx.set(cd.rst, 0)
        ctx.set(dut.o.ready, 1)
        for n, v in enumerate(codes):
            ctx.set(dut.i.payload, sum(int(x) << (k * net.in_bits) for k, x in enumerate(v)))
            ctx.set(dut.i.valid, 1)
            for _ in range(limit):
                *_, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    break
            else:
                raise AssertionError(f"vector {n}: i.ready never rose within {limit} cycles")
            ctx.set(dut.i.valid, 0)
            for _ in range(limit):
                if ctx.get(dut.o.valid):
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"vector {n}: o.valid never rose within {limit} cycles")
            got.append((ctx.get(dut.o.payload.cls), ctx.get(dut.o.payload.logits)))
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    lb = net.logit_bits
    cls = np.array([g[0] for g in got])
    logits = np.array([[((p >> (j * lb)) & ((1 << lb) - 1)) - (((p >> (j * lb + lb - 1)) & 1) << lb)
                        for j in range(net.n_classes)] for _, p in got])
    return cls, logits


@pytest.mark.parametrize("kind", ["frontier", "all_digital", "all_digital_small"])
@pytest.mark.parametrize("shape, weights", [("parallel", "baked"), ("parallel", "loadable"),
                                            ("serial", "baked"), ("serial", "loadable")])
def test_components_match_golden(kind, shape, weights):
    c, fp = quantized()
    net = fixed.nets_of(fp)[kind]
    codes = fixed.input_codes(c, net)[:5]
    cls, logits = amaranth_run(design.build(net, shape, weights), net, codes)
    g = net.forward(codes)
    np.testing.assert_array_equal(logits, g["logits"])
    np.testing.assert_array_equal(cls, g["cls"])


@pytest.mark.parametrize("shape", ["parallel", "serial"])
def test_loadable_weights_take_writes(shape):
    import dataclasses

    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    last = net.layers[-1]
    new_w = last.weights.copy()
    rows, cols = np.nonzero(last.mask)
    writes = [(0, 37), (3, -50)]  # connection index in row-major order over present ones
    for addr, val in writes:
        new_w[rows[addr], cols[addr]] = val
    net2 = dataclasses.replace(net, layers=net.layers[:-1] + (dataclasses.replace(last, weights=new_w),))
    codes = fixed.input_codes(c, net)[:4]
    cls, logits = amaranth_run(design.build(net, shape, "loadable"), net, codes, writes)
    np.testing.assert_array_equal(logits, net2.forward(codes)["logits"])


@pytest.mark.parametrize("shape", ["parallel", "serial"])
def test_tied_logits_give_the_first_class_in_both_shapes(shape):
    """Equal logits: the first maximum wins, as in numpy's and torch's argmax."""
    _, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    last = net.layers[-1]
    codes = np.array([[0] * net.n_in, [5] * net.n_in])
    for bias, want in (([4, 4, 4], 0), ([1, 9, 9], 1), ([-3, -5, -3], 0), ([2, 1, 7], 2)):
        tied = dataclasses.replace(last, weights=np.zeros_like(last.weights), bias=np.array(bias))
        net2 = dataclasses.replace(net, layers=net.layers[:-1] + (tied,))
        cls, logits = amaranth_run(design.build(net2, shape, "baked"), net2, codes)
        assert cls.tolist() == [want, want] and logits.tolist() == [bias, bias]
        assert net2.forward(codes)["cls"].tolist() == [want, want]


def test_a_design_that_never_answers_fails_at_the_cycle_limit():
    _, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    dut = design.build(net, "serial", "baked")
    with pytest.raises(AssertionError, match=r"never rose within 3 cycles"):
        amaranth_run(dut, net, np.zeros((1, net.n_in), np.int64), max_cycles=3)


def test_csd_digits():
    for w in range(-130, 130):
        assert sum(s << p for s, p in csd_(w)) == w


def csd_(w):
    return design.csd(w)


@pytest.mark.slow
def test_synth_tiny_serial(tmp_path):
    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    fig = synth.synth_design(design.build(net, "serial", "loadable"), "t", tmp_path)
    assert fig["gates"] > 10 and fig["flip_flops"] > 5 and fig["transistors"] > fig["gates"]
    assert fig["lut4"] > 0 and fig["fmax_mhz"] > 10 and fig["part"] == "iCE40UP5K"
    assert (tmp_path / "t" / "gates.v").exists()


def test_yosys_failure_names_its_log(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module top(input a; endmodule\n")
    with pytest.raises(toolrun.ToolFailed, match=r"yosys failed .*see .*yosys\.log"):
        toolrun.run("yosys", ["-q", "-p", f"read_verilog {bad}"], log=tmp_path / "yosys.log")


def test_prune_masks_drop_dead_and_small_connections():
    c = tiny_crystal()
    hidden = c.layers[0]
    w = hidden.weights.copy()
    w[1] = -np.abs(w[1]) - 1.0  # hidden neuron 1 can never fire on inputs in [0, 1]
    c = c.replace(layers=(dataclasses.replace(hidden, weights=w * hidden.mask), c.layers[1]))
    masks = fixed.prune_masks(c, 0.5)
    for m, layer in zip(masks, c.layers):
        assert not (m & ~layer.mask).any()  # only removes
    assert not masks[1][:, 1].any() and not masks[0][1].any()  # dead: no readers, no inputs
    live = c.layers[1].mask.copy()
    live[:, 1] = False
    assert masks[1].sum() == round(0.5 * live.sum())
    # The kept readout connections are the largest |w| x RMS(input).
    h = c.forward(c.reference.calibration_x)[0]
    score = np.abs(c.layers[1].weights) * np.sqrt((h.astype(np.float64) ** 2).mean(0))
    assert score[masks[1]].min() >= score[live & ~masks[1]].max()


def test_serial_skips_neurons_nobody_reads():
    c, fp = quantized()
    net = fixed.nets_of(fp)["all_digital"]
    last = net.layers[-1]
    mask = last.mask.copy()
    mask[:, 2] = False  # nobody reads hidden neuron 2
    net2 = dataclasses.replace(net, layers=(net.layers[0], dataclasses.replace(
        last, mask=mask, weights=last.weights * mask)))
    dut = design.build(net2, "serial", "baked")
    assert 2 not in dut.alive[0] and len(dut.alive[0]) == net.layers[0].n_out - 1
    assert len(dut.prog_k) == (int(net.layers[0].mask[dut.alive[0]].sum()) + int(mask.sum())
                               + design.BUBBLES)
    codes = fixed.input_codes(c, net2)[:4]
    cls, logits = amaranth_run(dut, net2, codes)
    np.testing.assert_array_equal(logits, net2.forward(codes)["logits"])


def test_serial_loadable_takes_an_empty_row():
    """An empty row is one placeholder step, not a weight word: the words after it still
    land on their connections."""
    net = fixed.nets_of(quantized_deep()[1])["frontier"]
    hid = net.layers[0]
    mask = hid.mask.copy()
    mask[1] = False
    net2 = dataclasses.replace(net, layers=(dataclasses.replace(
        hid, mask=mask, weights=hid.weights * mask),) + net.layers[1:])
    dut = design.build(net2, "serial", "loadable")
    r0, n1 = int(mask[0].sum()), int(mask.sum())
    assert dut.inserted == [(r0, 1), (n1, design.BUBBLES)]  # (weight words before, steps)
    assert len(dut.prog_k) == int(mask.sum()) + 1 + design.BUBBLES + int(net.layers[1].mask.sum())
    new = fixed.loadable_update(net2, [hid.weights * mask // 2, net.layers[1].weights // 2],
                                [hid.bias + 9, net.layers[1].bias - 40])
    codes = fixed.input_codes(quantized_deep()[0], net2)[:4]
    cls, logits = amaranth_run(dut, net2, codes, design.load_words(new, live=net2))
    np.testing.assert_array_equal(logits, new.forward(codes)["logits"])


def _hand_two_layer_net():
    l1 = fixed.IntLayer(weights=np.array([[1, 0, -2], [0, 3, 0]]),
                        mask=np.array([[1, 0, 1], [0, 1, 0]], bool), bias=np.array([4, -5]),
                        activation="relu", in_bits=2, weight_bits=4, weight_frac=np.zeros(2, np.int64),
                        acc_bits=12, shift=np.zeros(2, np.int64), out_bits=2)
    l2 = fixed.IntLayer(weights=np.array([[6, 7]]), mask=np.ones((1, 2), bool), bias=np.array([-8]),
                        activation="linear", in_bits=2, weight_bits=5, weight_frac=np.zeros(1, np.int64),
                        acc_bits=10, shift=np.zeros(1, np.int64), out_bits=10)
    return fixed.IntNet("frontier", "adc_codes", 1, np.arange(3), (l1, l2))


def test_the_write_address_map_by_hand():
    net = _hand_two_layer_net()
    # weights of present connections, layer by layer, row-major; then every bias
    assert design.weight_words(net) == [(0, 0, 0), (0, 0, 2), (0, 1, 1), (1, 0, 0), (1, 0, 1)]
    assert design.load_words(net) == [(0, 1), (1, -2), (2, 3), (3, 6), (4, 7), (5, 4), (6, -5),
                                      (7, -8)]
    moved = fixed.loadable_update(net, [None, np.array([[6, 0]])], [np.array([4, 9]), None])
    assert design.load_words(moved, live=net) == [(4, 0), (6, 9)]  # only what changed
    assert design.load_words(net, live=net) == []
    # 8 words: 3 address bits; data as wide as the widest weight or bias (acc_bits 12)
    for shape in ("parallel", "serial"):
        dut = design.build(net, shape, "loadable")
        Fragment.get(dut, None)  # elaborated (Amaranth warns about a component never used)
        assert (len(dut.wr.addr), len(dut.wr.data)) == (3, 12)
    assert dut.inserted == [(3, design.BUBBLES)]  # the bubbles before layer 2's first word


def _reloaded_deep():
    """The deep frontier and a different weight set for it that the host accepts."""
    c, fp = quantized_deep()
    net = fixed.nets_of(fp)["frontier"]
    rng = np.random.default_rng(1)
    ws = [(ly.weights * 3) // 4 + rng.integers(-3, 4, ly.weights.shape) * ly.mask for ly in net.layers]
    bs = [ly.bias + rng.integers(-60, 61, ly.n_out) for ly in net.layers]
    return c, net, fixed.loadable_update(net, ws, bs)


@pytest.mark.parametrize("shape", ["parallel", "serial"])
def test_an_accepted_set_loaded_through_wr_gives_the_golden_outputs(shape):
    """Weights and biases of the hidden frontier layer and the readout, loaded word by word:
    the design then computes the golden model of the loaded net, bit for bit."""
    c, net, new = _reloaded_deep()
    codes = fixed.input_codes(c, net)
    before = net.forward(codes)["logits"]
    want = new.forward(codes)
    assert not np.array_equal(want["logits"], before)  # the load changes the results
    cls, logits = amaranth_run(design.build(net, shape, "loadable"), net, codes,
                               design.load_words(new))
    np.testing.assert_array_equal(logits, want["logits"])
    np.testing.assert_array_equal(cls, want["cls"])


@pytest.mark.parametrize("shape", ["parallel", "serial"])
def test_a_reset_keeps_the_loaded_weights(shape):
    """As the module docstring says: load, reset, run gives the loaded net, in both shapes
    (the live weights are the ones whose digest the host kept)."""
    c, net, new = _reloaded_deep()
    assert fixed.weights_digest(new) != fixed.weights_digest(net)
    codes = fixed.input_codes(c, net)[:4]
    cls, logits = amaranth_run(design.build(net, shape, "loadable"), net, codes,
                               design.load_words(new, live=net), reset=True)
    np.testing.assert_array_equal(logits, new.forward(codes)["logits"])
    # Without a load, a reset leaves the built (trained) net.
    cls, logits = amaranth_run(design.build(net, shape, "loadable"), net, codes, reset=True)
    np.testing.assert_array_equal(logits, net.forward(codes)["logits"])


@pytest.mark.parametrize("shape, weights", [("parallel", "baked"), ("parallel", "loadable"),
                                            ("serial", "baked"), ("serial", "loadable")])
def test_a_frontier_with_a_hidden_layer_matches_golden(shape, weights):
    c, fp = quantized_deep()
    net = fixed.nets_of(fp)["frontier"]
    codes = fixed.input_codes(c, net)
    cls, logits = amaranth_run(design.build(net, shape, weights), net, codes)
    g = net.forward(codes)
    np.testing.assert_array_equal(logits, g["logits"])
    np.testing.assert_array_equal(cls, g["cls"])


@pytest.mark.slow
def test_synth_a_frontier_with_a_hidden_layer(tmp_path):
    _, fp = quantized_deep()
    net = fixed.nets_of(fp)["frontier"]
    fig = synth.synth_design(design.build(net, "serial", "loadable"), "deep", tmp_path)
    assert fig["gates"] > 10 and fig["flip_flops"] > 5 and fig["lut4"] > 0
    # program, weights and biases stay memory macros; the weights and biases take writes
    assert {m["name"]: m["kind"] for m in fig["memories"]} == {"prog": "rom", "wmem": "ram",
                                                                "bmem": "ram"}
    assert fig["fmax_mhz"] > 10 and (tmp_path / "deep" / "gates.v").exists()


def _prune_reference(c, keep):
    """prune_masks written out with loops, from its docstring: dead hidden neurons lose their
    inputs and readers; per layer the round(keep x remaining) connections with the largest
    |w| x RMS(input) stay (ties: the earlier connection in row-major order); then, from the
    back, a hidden neuron nobody reads loses its inputs."""
    x = c.reference.calibration_x.astype(np.float64)
    outs = c.forward(c.reference.calibration_x)
    reads = [x] + [o.astype(np.float64) for o in outs[:-1]]
    masks = [layer.mask.copy() for layer in c.layers]
    for li in range(len(masks) - 1):
        for j in range(masks[li].shape[0]):
            if max(outs[li][:, j]) <= 0:
                masks[li][j, :] = False
                masks[li + 1][:, j] = False
    for li, layer in enumerate(c.layers):
        rms = [np.sqrt(sum(v * v for v in reads[li][:, i]) / len(reads[li]))
               for i in range(reads[li].shape[1])]
        conns = [(-abs(float(layer.weights[o, i])) * rms[i], o * 10_000 + i, o, i)
                 for o in range(masks[li].shape[0]) for i in range(masks[li].shape[1])
                 if masks[li][o, i]]
        n_keep = int(round(keep * len(conns)))
        if 0 < n_keep < len(conns):
            for _, _, o, i in sorted(conns)[n_keep:]:
                masks[li][o, i] = False
    for li in reversed(range(len(masks) - 1)):
        for j in range(masks[li].shape[0]):
            if not masks[li + 1][:, j].any():
                masks[li][j, :] = False
    return masks


@pytest.mark.parametrize("keep", [0.01, 0.1, 0.3, 0.5, 0.75, 1.0])
def test_prune_masks_match_a_loop_written_reference_on_two_hidden_layers(keep):
    """keep=0.01 leaves every layer's count at round(...) = 0: nothing is pruned; 0.1 keeps
    one readout connection (n_keep = 1) and strands hidden neurons, which cascades back
    through both hidden layers; 1.0 keeps all."""
    c = tiny_deep_crystal()
    first = c.layers[0]
    w = first.weights.copy()
    w[2] = -np.abs(w[2]) - 1.0  # first-layer neuron 2 never fires on inputs in [0, 1)
    c = c.replace(layers=(dataclasses.replace(first, weights=w * first.mask), *c.layers[1:]))
    masks = fixed.prune_masks(c, keep)
    expect = _prune_reference(c, keep)
    for li, (m, e) in enumerate(zip(masks, expect)):
        assert m.dtype == bool
        np.testing.assert_array_equal(m, e, err_msg=f"layer {li}, keep {keep}")
    assert not masks[0][2].any() and not masks[1][:, 2].any()
    for li in (0, 1):  # a hidden neuron nobody reads has no inputs left
        assert not masks[li][~masks[li + 1].any(axis=0)].any()
    if keep == 0.1:
        assert masks[2].sum() == 1  # round(0.1 x count) = 1


def test_prune_masks_break_ties_by_connection_order():
    """Three score levels over 48 connections, more than numpy's insertion-sort cutoff (16),
    where an unstable sort reorders equal scores: all 16 of the top level stay, then the
    first 8 (row-major) of the middle level."""
    c = tiny_crystal(n_in=8, n_hidden=6, n_cls=3)
    hidden, out = c.layers
    level = (np.arange(48) * 7) % 3 + 1.0  # 1, 2, 3, 1, 2, 3, ... (16 of each)
    c = c.replace(layers=(dataclasses.replace(
        hidden, mask=np.ones((6, 8), bool), weights=level.reshape(6, 8).astype(np.float32),
        bias=np.zeros(6, np.float32)), out))
    cal = np.full_like(c.reference.calibration_x, 0.5)
    c = c.replace(reference=dataclasses.replace(c.reference, calibration_x=cal))
    masks = fixed.prune_masks(c, 0.5)
    expect = level == 3
    expect[np.flatnonzero(level == 2)[:8]] = True
    np.testing.assert_array_equal(masks[0].ravel(), expect)
