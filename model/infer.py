"""The torch side of the C backend's benchmark (`crystalbench compile-c --bench`).

The Crystal as torch eager modules, as contenders for crystalbench.cbackend.bench (the
contract is there: `single(i)`, `batch()`, `context`). Here because only model/ imports
torch; the CLI hands `contenders` to the C backend's stage.

* `torch_dense`: an `nn.Sequential` of `nn.Linear` + `nn.ReLU` holding the Crystal's
  weights (absent connections are zeros): torch eager as most code runs it;
* `torch_dense_functional`: the same dense weights through `torch.addmm` + `torch.relu`
  without modules (no `nn.Module.__call__` per layer): the fastest dense eager torch;
* `torch_sparse`: the masks applied as sparse weights, each layer a CSR matrix,
  `torch.addmm(b, W_csr, h)` on column-major activations.

All on one thread (`torch.set_num_threads(1)`, for the rest of the process) and timed
inside `torch.inference_mode()`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from crystalbench.crystal import Crystal


def dense_sequential(c: Crystal) -> nn.Sequential:
    """The Crystal as nn.Sequential(Linear, ReLU, ..., Linear), float32, eval mode."""
    mods: list[nn.Module] = []
    for layer in c.layers:
        lin = nn.Linear(layer.n_in, layer.n_out)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.weights))
            lin.bias.copy_(torch.from_numpy(layer.bias))
        mods.append(lin)
        if layer.activation == "relu":
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


def _chain(weights, biases, relu, transposed: bool):
    """forward(x) for row-major x (n, n_in): addmm per layer (column-major activations
    when `transposed`, so that a sparse weight multiplies from the left)."""
    def forward(x):
        h = x.T if transposed else x
        for w, b, r in zip(weights, biases, relu):
            h = torch.addmm(b, w, h) if transposed else torch.addmm(b, h, w)
            if r:
                h = torch.relu(h)
        return h.T if transposed else h
    return forward


def contenders(c: Crystal, x1: np.ndarray, xb: np.ndarray) -> list[dict]:
    """The torch contenders for test inputs x1 (batch 1, one row at a time) and a batch xb."""
    torch.set_num_threads(1)
    relu = [layer.activation == "relu" for layer in c.layers]
    rows = [torch.from_numpy(np.ascontiguousarray(x1[i:i + 1], np.float32)) for i in range(len(x1))]
    xbt = torch.from_numpy(np.ascontiguousarray(xb, np.float32))
    seq = dense_sequential(c)
    dense_t = [torch.from_numpy(np.ascontiguousarray(layer.weights.T)) for layer in c.layers]
    dense_b = [torch.from_numpy(layer.bias) for layer in c.layers]
    functional = _chain(dense_t, dense_b, relu, transposed=False)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": known, and measured here
        warnings.simplefilter("ignore", UserWarning)
        sparse_w = [torch.from_numpy(layer.weights * layer.mask).to_sparse_csr() for layer in c.layers]
    sparse_b = [torch.from_numpy(layer.bias)[:, None] for layer in c.layers]
    sparse = _chain(sparse_w, sparse_b, relu, transposed=True)
    version = f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    out = []
    for name, label, fn, method in (
            ("torch_dense", "torch eager, dense nn.Sequential", seq,
             "nn.Sequential(nn.Linear, nn.ReLU, ...) called on a (1, n_in) / (batch, n_in) tensor"),
            ("torch_dense_functional", "torch eager, dense addmm chain", functional,
             "torch.addmm(b, h, W.T) + torch.relu per layer, no modules"),
            ("torch_sparse", "torch eager, sparse CSR weights", sparse,
             "torch.addmm(b, W_csr, h) + torch.relu per layer on column-major h (CSR of the "
             "masked weights)")):
        out.append({"name": name, "label": label, "context": torch.inference_mode,
                    "single": lambda i, fn=fn: fn(rows[i]), "batch": lambda fn=fn: fn(xbt),
                    "method": f"{method}; {version}, inside torch.inference_mode()"})
    return out
