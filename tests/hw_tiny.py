"""A tiny hand-built Crystal for the hardware tests: 8 inputs -> 4 ReLU (frozen, sparse)
-> 3 linear. Small enough that every real tool runs in seconds."""

import numpy as np

from crystalbench import crystal as cm


def tiny_crystal(seed=0, n_in=8, n_hidden=4, n_cls=3, n_test=10, hidden_act="relu"):
    rng = np.random.default_rng(seed)
    m1 = rng.random((n_hidden, n_in)) < 0.6
    m1[:, 0] = True
    m2 = np.ones((n_cls, n_hidden), bool)

    def layer(mask, act, frozen):
        n = mask.shape[0]
        fr = np.full(n, frozen)
        return cm.Layer(weights=(rng.normal(size=mask.shape) * mask).astype(np.float32),
                        bias=(rng.normal(size=n) * 0.2).astype(np.float32), mask=mask,
                        activation=act, position=np.zeros((n, 1), np.float32),
                        radius=np.full(n, np.inf, np.float32), frozen=fr,
                        epoch_frozen=np.where(fr, 2, -1).astype(np.int32))

    layers = (layer(m1, hidden_act, True), layer(m2, "linear", False))
    return _assemble("tiny", layers, rng, n_in, n_test)


def _assemble(name: str, layers: tuple, rng, n_in: int, n_test: int):
    """A Crystal of these layers on random inputs in [0, 1): labels are the net's own
    classes, 64 calibration inputs."""
    x = rng.random((n_test, n_in)).astype(np.float32)
    cal = rng.random((64, n_in)).astype(np.float32)
    proto = cm.Crystal.__new__(cm.Crystal)
    object.__setattr__(proto, "layers", layers)
    outs = tuple(cm.Crystal.forward(proto, x))
    ref = cm.Reference(x=x, y=outs[-1].argmax(1).astype(np.int64), outputs=outs, calibration_x=cal)
    inp = cm.InputSpec(size=n_in, geometry=(n_in,), offset=0.0, scale=1.0, low=0.0, high=1.0)
    return cm.Crystal(name=name, dataset="unit", n_classes=layers[-1].weights.shape[0], input=inp,
                      layers=layers, reference=ref)


def fp_cfg(**over):
    from crystalbench import config

    d = {"fixed_point": dict(over)}
    return config.validate(d, "<test>").fixed_point


def quantized(seed=0, **over):
    """(Crystal, its fixed-point artifact dict) for the tiny crystal."""
    from crystalbench.rtl import fixed

    c = tiny_crystal(seed)
    return c, fixed.quantize(c, fp_cfg(**over), 8)


def tiny_deep_crystal(seed=4, n_in=8, hidden=(5, 4), n_cls=3, n_test=10, frozen_layers=1):
    """8 inputs -> 5 ReLU -> 4 ReLU -> 3 linear, the first `frozen_layers` hidden layers
    frozen (the core), the rest active: a frontier with a hidden layer (default). Seed 4:
    every neuron of the second hidden layer fires on some calibration inputs and all three
    classes occur."""
    rng = np.random.default_rng(seed)
    sizes = (n_in, *hidden, n_cls)
    layers = []
    for li in range(len(sizes) - 1):
        mask = rng.random((sizes[li + 1], sizes[li])) < 0.7
        mask[:, li % sizes[li]] = True  # every neuron reads something
        n = sizes[li + 1]
        readout = li == len(sizes) - 2
        fr = np.full(n, li < frozen_layers and not readout)
        layers.append(cm.Layer(
            weights=(rng.normal(size=mask.shape) * mask).astype(np.float32),
            bias=(rng.normal(size=n) * 0.2).astype(np.float32), mask=mask,
            activation="linear" if readout else "relu", position=np.zeros((n, 1), np.float32),
            radius=np.full(n, np.inf, np.float32), frozen=fr,
            epoch_frozen=np.where(fr, 2, -1).astype(np.int32)))
    return _assemble("tiny_deep", tuple(layers), rng, n_in, n_test)


def quantized_deep(seed=4, adc_bits=8, **over):
    """(Crystal, its fixed-point artifact dict) for the tiny crystal with a frontier hidden
    layer."""
    from crystalbench.rtl import fixed

    c = tiny_deep_crystal(seed)
    return c, fixed.quantize(c, fp_cfg(**over), adc_bits)
