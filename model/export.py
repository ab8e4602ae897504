"""Write the Crystal artifact: from a trained crystal net, or from an ordinary PyTorch MLP."""

from __future__ import annotations

import time

import numpy as np
import torch

from crystalbench import __version__
from crystalbench.crystal import Crystal, CrystalError, InputSpec, Layer, Reference

from .data import Dataset, stratified_split
from .net import CrystalNet, to_numpy_layers


def _input_spec(ds: Dataset) -> InputSpec:
    both = np.concatenate([ds.x_train, ds.x_test])
    return InputSpec(size=ds.n_inputs, geometry=tuple(ds.geometry), offset=float(ds.offset),
                     scale=float(ds.scale), low=float(both.min()), high=float(both.max()))


def _calibration(ds: Dataset, n: int, seed: int) -> np.ndarray:
    if n >= len(ds.y_train):
        return ds.x_train.copy()
    keep, _ = stratified_split(ds.y_train, 1.0 - n / len(ds.y_train), seed)
    return ds.x_train[keep]


def _reference(forward, ds: Dataset, calib: np.ndarray) -> Reference:
    with torch.no_grad():
        outs = forward(torch.from_numpy(ds.x_test))
    return Reference(x=ds.x_test.astype(np.float32), y=ds.y_test.astype(np.int64),
                     outputs=tuple(o.numpy().astype(np.float32) for o in outs),
                     calibration_x=calib.astype(np.float32))


def crystal_from_net(net: CrystalNet, ds: Dataset, name: str, calibration_samples: int,
                     seed: int, provenance: dict | None = None) -> Crystal:
    layers = tuple(Layer(**d) for d in to_numpy_layers(net))
    ref = _reference(net.forward_all, ds, _calibration(ds, calibration_samples, seed))
    prov = {"crystalbench": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": ds.split, **(provenance or {})}
    return Crystal(name=name, dataset=ds.name, n_classes=ds.n_classes, input=_input_spec(ds),
                   layers=layers, reference=ref, provenance=prov)


def crystal_from_torch(model, ds: Dataset, name: str = "imported", sizes: list[int] | None = None,
                       calibration_samples: int = 1000, seed: int = 0) -> Crystal:
    """Import an ordinary trained MLP as a Crystal with every hidden neuron frozen.

    `model` is an `nn.Sequential` of `Linear` and `ReLU`, or its state_dict (then `sizes`,
    e.g. [64, 32, 10], says the layer widths). Hidden layers must end in ReLU; the last
    Linear is the readout. Connections are dense; positions are the neuron index.
    """
    from torch import nn

    if isinstance(model, nn.Module):
        linears, acts = _parse_sequential(model)
    elif isinstance(model, dict):
        linears, acts = _parse_state_dict(model, sizes)
    else:
        raise CrystalError(f"cannot import a {type(model).__name__}; pass an nn.Sequential of "
                           "Linear/ReLU or its state_dict with sizes")
    n_in = linears[0][0].shape[1]
    if n_in != ds.n_inputs:
        raise CrystalError(f"the model's first Linear takes {n_in} inputs but data set "
                           f"{ds.name!r} has {ds.n_inputs}; import it with the data it was trained on")
    if linears[-1][0].shape[0] != ds.n_classes:
        raise CrystalError(f"the model has {linears[-1][0].shape[0]} outputs but {ds.name!r} has "
                           f"{ds.n_classes} classes")
    layers = []
    for li, ((W, b), act) in enumerate(zip(linears, acts)):
        W = W.detach().float().numpy().astype(np.float32)
        b = (b.detach().float().numpy() if b is not None else np.zeros(W.shape[0])).astype(np.float32)
        n = W.shape[0]
        readout = li == len(linears) - 1
        ndim = len(ds.geometry)
        pos = np.zeros((n, ndim), np.float32)
        pos[:, -1] = np.arange(n)
        layers.append(Layer(weights=W, bias=b, mask=np.ones(W.shape, bool), activation=act,
                            position=pos, radius=np.full(n, np.inf, np.float32),
                            frozen=np.full(n, not readout), epoch_frozen=np.full(n, -1 if readout else 0,
                                                                                 np.int32)))

    def forward(x):
        outs, h = [], x
        for (W, b), act in zip(linears, acts):
            h = h @ W.detach().float().T + (b.detach().float() if b is not None else 0)
            h = torch.relu(h) if act == "relu" else h
            outs.append(h)
        return outs

    ref = _reference(forward, ds, _calibration(ds, calibration_samples, seed))
    return Crystal(name=name, dataset=ds.name, n_classes=ds.n_classes, input=_input_spec(ds),
                   layers=tuple(layers), reference=ref,
                   provenance={"crystalbench": __version__, "imported_from": "torch MLP",
                               "data": ds.split})


def _parse_sequential(model):
    from torch import nn

    mods = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    linears, acts = [], []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            linears.append((m.weight, m.bias))
            acts.append("linear")
        elif isinstance(m, nn.ReLU):
            if not linears or acts[-1] != "linear":
                raise CrystalError(f"module {i} (ReLU) must follow a Linear")
            acts[-1] = "relu"
        elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
            continue  # no effect at inference on flat inputs
        else:
            raise CrystalError(f"module {i} is a {type(m).__name__}; only Linear, ReLU (and "
                               "Flatten/Identity/Dropout) can be imported")
    return _check_chain(linears, acts)


def _parse_state_dict(sd, sizes):
    if not sizes:
        raise CrystalError("importing a state_dict needs sizes, e.g. [64, 32, 10]")
    weights = [k for k in sd if k.endswith("weight")]
    if len(weights) != len(sizes) - 1:
        raise CrystalError(f"state_dict has {len(weights)} weight tensors but sizes {sizes} "
                           f"describe {len(sizes) - 1} layers")
    linears, acts = [], []
    for li, k in enumerate(weights):
        W = sd[k]
        if tuple(W.shape) != (sizes[li + 1], sizes[li]):
            raise CrystalError(f"state_dict {k!r} has shape {tuple(W.shape)}, sizes say "
                               f"({sizes[li + 1]}, {sizes[li]})")
        linears.append((W, sd.get(k[:-len("weight")] + "bias")))
        acts.append("relu" if li < len(weights) - 1 else "linear")
    return _check_chain(linears, acts)


def _check_chain(linears, acts):
    if not linears:
        raise CrystalError("the model has no Linear layer")
    for i in range(len(linears) - 1):
        if acts[i] != "relu":
            raise CrystalError(f"hidden Linear {i} is not followed by ReLU; crystals need ReLU "
                               "hidden layers")
    if acts[-1] != "linear":
        raise CrystalError("the last Linear (the readout) must not be followed by ReLU")
    for i in range(1, len(linears)):
        if linears[i][0].shape[1] != linears[i - 1][0].shape[0]:
            raise CrystalError(f"Linear {i} takes {linears[i][0].shape[1]} inputs but Linear "
                               f"{i - 1} gives {linears[i - 1][0].shape[0]}")
    return linears, acts
