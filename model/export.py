"""Write the Crystal artifact: from a trained crystal net, or from an ordinary PyTorch MLP."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crystalbench import __version__
from crystalbench.crystal import Crystal, InputSpec, Layer, Reference
from crystalbench.errors import CrystalError

from . import torchfile
from .data import Dataset, stratified_split
from .net import CrystalNet, to_numpy_layers

# The module classes a crystal can be imported from (the only classes unpickled from a
# user's model file): Linear layers, ReLU between them, and modules that do nothing at
# inference on flat inputs.
SUPPORTED_MODULES = (nn.Sequential, nn.Linear, nn.ReLU, nn.Flatten, nn.Identity, nn.Dropout)
SUPPORTED_TEXT = ("crystals import an nn.Sequential of Linear and ReLU (Flatten, Identity "
                  "and Dropout allowed), or its state_dict")


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


def load_model(path):
    """A user's torch file: an nn.Sequential of supported modules or a state_dict. Loaded
    with weights_only=True: any other class, or a pickled function, is refused by name."""
    obj = torchfile.load(path, "PyTorch model", CrystalError, allowed=SUPPORTED_MODULES,
                         refused=SUPPORTED_TEXT + ".")
    if isinstance(obj, nn.Module) or _is_state_dict(obj):
        return obj
    what = type(obj).__name__
    if isinstance(obj, dict):
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        what = (f"dict whose entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, not a tensor"
                if bad else "empty dict")
        if "net" in obj and "config_digest" in obj:
            what += " (a crystalbench checkpoint: write its Crystal with `crystalbench export`)"
    raise CrystalError(f"{path}: holds a {what}; {SUPPORTED_TEXT}")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor)
                                                       for v in obj.values())


def crystal_from_torch(model, ds: Dataset, name: str = "imported", sizes: list[int] | None = None,
                       activation: str | None = None, input_scale: float | None = None,
                       input_offset: float | None = None, calibration_samples: int = 1000,
                       seed: int = 0, provenance: dict | None = None) -> Crystal:
    """Import an ordinary trained MLP as a Crystal with every hidden neuron frozen.

    `model` is an `nn.Sequential` of `Linear` and `ReLU`, or its state_dict; then `sizes`
    (e.g. [64, 32, 10]) says the layer widths and `activation="relu"` states what a
    state_dict cannot record. Hidden layers must end in ReLU; the last Linear is the
    readout. The model reads `(raw - input_offset) * input_scale` (default: the data set's
    own scaling); the Crystal's input description and reference vectors are in those
    units. Connections are dense; positions are the neuron index.
    """
    if isinstance(model, nn.Module):
        linears, acts = _parse_sequential(model)
    elif isinstance(model, dict):
        linears, acts = _parse_state_dict(model, sizes, activation)
    else:
        raise CrystalError(f"cannot import a {type(model).__name__}; {SUPPORTED_TEXT} "
                           "with sizes")
    if input_scale is not None and not (math.isfinite(input_scale) and input_scale != 0):
        raise CrystalError(f"input scale {input_scale}: must be a finite non-zero number; the "
                           "model reads (raw - input_offset) * input_scale (--input-scale)")
    if input_offset is not None and not math.isfinite(input_offset):
        raise CrystalError(f"input offset {input_offset}: must be a finite number "
                           "(--input-offset)")
    if input_scale is not None or input_offset is not None:
        ds = ds.rescaled(ds.offset if input_offset is None else input_offset,
                         ds.scale if input_scale is None else input_scale)
    _check_fits(linears, ds)
    layers = tuple(_layer(W, b, act, readout=li == len(linears) - 1, ndim=len(ds.geometry))
                   for li, ((W, b), act) in enumerate(zip(linears, acts)))

    def forward(x):  # F.linear and relu: the very operations of nn.Linear and nn.ReLU
        outs, h = [], x
        for (W, b), act in zip(linears, acts):
            h = F.linear(h, W.detach().float(), None if b is None else b.detach().float())
            h = torch.relu(h) if act == "relu" else h
            outs.append(h)
        return outs

    ref = _reference(forward, ds, _calibration(ds, calibration_samples, seed))
    prov = {"crystalbench": __version__, "imported_from": "torch MLP", "data": ds.split,
            "input": f"x = (raw - {ds.offset:g}) * {ds.scale:g}", **(provenance or {})}
    return Crystal(name=name, dataset=ds.name, n_classes=ds.n_classes, input=_input_spec(ds),
                   layers=layers, reference=ref, provenance=prov)


def _check_fits(linears, ds: Dataset) -> None:
    n_in = linears[0][0].shape[1]
    if n_in != ds.n_inputs:
        raise CrystalError(f"the model's first Linear takes {n_in} inputs but data set "
                           f"{ds.name!r} has {ds.n_inputs}; import it with the data it was "
                           "trained on")
    if linears[-1][0].shape[0] != ds.n_classes:
        raise CrystalError(f"the model has {linears[-1][0].shape[0]} outputs but {ds.name!r} has "
                           f"{ds.n_classes} classes")


def _layer(W, b, act: str, readout: bool, ndim: int) -> Layer:
    W = W.detach().float().numpy().astype(np.float32)
    n = W.shape[0]
    b = np.zeros(n, np.float32) if b is None else b.detach().float().numpy().astype(np.float32)
    pos = np.zeros((n, ndim), np.float32)
    pos[:, -1] = np.arange(n)
    return Layer(weights=W, bias=b, mask=np.ones(W.shape, bool), activation=act, position=pos,
                 radius=np.full(n, np.inf, np.float32), frozen=np.full(n, not readout),
                 epoch_frozen=np.full(n, -1 if readout else 0, np.int32))


def _flat_modules(model):
    if isinstance(model, nn.Sequential):
        return [m for child in model.children() for m in _flat_modules(child)]
    return [model]


def _parse_sequential(model):
    linears, acts = [], []
    for i, m in enumerate(_flat_modules(model)):
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
            raise CrystalError(f"module {i} is a {type(m).__name__}; {SUPPORTED_TEXT}")
    return _check_chain(linears, acts)


def _parse_state_dict(sd: dict, sizes, activation):
    if activation != "relu":
        raise CrystalError(
            "a state_dict holds only weights: it does not record the activation between its "
            "Linear layers, and crystals need ReLU there. If the model used ReLU, state it "
            "with --activation relu (activation='relu'); otherwise save the whole model "
            "(torch.save(model, path)) so its layers can be checked")
    if not sizes:
        raise CrystalError("importing a state_dict needs sizes, the layer widths, e.g. "
                           "--sizes 64,32,10")
    weights = []
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CrystalError(f"state_dict entry {k!r} is a {type(v).__name__}, not a tensor")
        stem, _, leaf = k.rpartition(".")
        if leaf not in ("weight", "bias") or v.dim() != (2 if leaf == "weight" else 1):
            raise CrystalError(f"state_dict entry {k!r} (shape {tuple(v.shape)}) is not a "
                               f"Linear weight or bias; {SUPPORTED_TEXT} of Linear layers")
        if leaf == "weight":
            weights.append(k)
        elif (stem + ".weight" if stem else "weight") not in sd:
            raise CrystalError(f"state_dict entry {k!r} is a bias without a weight")
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
