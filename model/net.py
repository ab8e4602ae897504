"""The crystal net: geometric neurons that grow where the error gradient is largest and
freeze, front to back from the inputs, once their weights stop moving.

State lives in `CrystalNet` as dense per-layer tensors (weights, masks, Adam moments);
training runs on a `Frontier`, a compiled view holding only the active rows, whose
inputs from the frozen core come from a cache computed once per training sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def grid_positions(geometry: tuple[int, ...]) -> torch.Tensor:
    """Coordinates of every input feature on its geometry, row-major: (n, len(geometry))."""
    axes = [torch.arange(g, dtype=torch.float32) for g in geometry]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1)


@dataclass
class LayerState:
    W: torch.Tensor  # (n, n_in) float32, zero where mask is False
    b: torch.Tensor  # (n,)
    mask: torch.Tensor  # (n, n_in) bool
    pos: torch.Tensor  # (n, g) float32
    radius: torch.Tensor  # (n,) float32, inf = dense
    frozen: torch.Tensor  # (n,) bool
    epoch_frozen: torch.Tensor  # (n,) int32, -1 = active
    born: torch.Tensor  # (n,) int32, epoch of nucleation (-1 = initial)
    streak: torch.Tensor  # (n,) int32, consecutive stable checks
    snapshot: torch.Tensor  # (n, n_in + 1): [W | b] at the last check
    mW: torch.Tensor  # Adam first/second moments and per-element step counts
    vW: torch.Tensor
    tW: torch.Tensor
    mb: torch.Tensor
    vb: torch.Tensor
    tb: torch.Tensor
    activation: str

    @property
    def n(self) -> int:
        return self.W.shape[0]

    def tensors(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}


def _receptive_mask(pos: torch.Tensor, radius: torch.Tensor, prev_pos: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(pos, prev_pos)
    return d <= radius[:, None] + 1e-6


def _init_weights(mask: torch.Tensor, gen: torch.Generator, relu: bool) -> torch.Tensor:
    fan_in = mask.sum(1, keepdim=True).clamp(min=1).float()
    bound = torch.sqrt((6.0 if relu else 3.0) / fan_in)  # He / LeCun uniform on the real fan-in
    u = torch.rand(mask.shape, generator=gen) * 2 - 1
    return (u * bound) * mask


class CrystalNet:
    def __init__(self, geometry, n_classes: int, hidden_cfg: list, gen: torch.Generator):
        self.geometry = tuple(int(g) for g in geometry)
        self.input_pos = grid_positions(self.geometry)
        self.n_inputs = self.input_pos.shape[0]
        self.n_classes = n_classes
        self.caps = [int(h["cap"]) for h in hidden_cfg]
        self.radii = [math.inf if h["radius"] is None else float(h["radius"]) for h in hidden_cfg]
        self.layers: list[LayerState] = []
        prev_pos = self.input_pos
        for h, r in zip(hidden_cfg, self.radii):
            n = int(h["initial"])
            pos = self._initial_positions(n, gen)
            layer = self._new_layer(pos, torch.full((n,), r), prev_pos, gen, "relu")
            self.layers.append(layer)
            prev_pos = pos
        centre = self.input_pos.mean(0, keepdim=True).repeat(n_classes, 1)
        self.layers.append(self._new_layer(centre, torch.full((n_classes,), math.inf), prev_pos,
                                           gen, "linear"))

    # ---- construction ------------------------------------------------------------------
    def _initial_positions(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Spread n neurons over the grid: distinct cells in a seeded order, then repeats."""
        cells = self.input_pos.shape[0]
        order = torch.cat([torch.randperm(cells, generator=gen) for _ in range(n // cells + 1)])
        return self.input_pos[order[:n]].clone()

    def _new_layer(self, pos, radius, prev_pos, gen, activation) -> LayerState:
        n = pos.shape[0]
        mask = _receptive_mask(pos, radius, prev_pos)
        W = _init_weights(mask, gen, activation == "relu")
        b = torch.zeros(n)
        z = lambda *s: torch.zeros(*s)  # noqa: E731
        return LayerState(W=W, b=b, mask=mask, pos=pos.float(), radius=radius.float(),
                          frozen=torch.zeros(n, dtype=torch.bool),
                          epoch_frozen=torch.full((n,), -1, dtype=torch.int32),
                          born=torch.full((n,), -1, dtype=torch.int32),
                          streak=torch.zeros(n, dtype=torch.int32),
                          snapshot=torch.cat([W, b[:, None]], 1).clone(),
                          mW=z(W.shape), vW=z(W.shape), tW=z(W.shape), mb=z(n), vb=z(n), tb=z(n),
                          activation=activation)

    @property
    def hidden(self) -> list[LayerState]:
        return self.layers[:-1]

    def prev_positions(self, li: int) -> torch.Tensor:
        return self.input_pos if li == 0 else self.layers[li - 1].pos

    def n_hidden(self) -> int:
        return sum(layer.n for layer in self.hidden)

    def n_frozen(self) -> int:
        return int(sum(int(layer.frozen.sum()) for layer in self.hidden))

    # ---- inference -----------------------------------------------------------------------
    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output (post-activation; the readout gives logits)."""
        outs = []
        h = x
        for layer in self.layers:
            h = h @ layer.W.T + layer.b
            if layer.activation == "relu":
                h = torch.relu(h)
            outs.append(h)
        return outs

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> tuple[float, float]:
        loss, correct = 0.0, 0
        for i in range(0, len(y), chunk):
            logits = self.forward_all(x[i:i + chunk])[-1]
            loss += float(F.cross_entropy(logits, y[i:i + chunk], reduction="sum"))
            correct += int((logits.argmax(1) == y[i:i + chunk]).sum())
        return loss / len(y), correct / len(y)

    # ---- freezing --------------------------------------------------------------------------
    @torch.no_grad()
    def check_freeze(self, epoch: int, threshold: float, patience: int, min_age: int,
                     enabled: bool = True, max_layer: int | None = None,
                     force: list[bool] | None = None) -> int:
        """Update each hidden neuron's plasticity; freeze the stable ones whose inputs are
        all frozen. Layers go input side first, so a chain can freeze in one check. Hidden
        layers deeper than `max_layer` (1-based; None = no limit) never freeze. A hidden
        layer with `force[l]` true freezes every neuron whose inputs are all frozen, stable
        or not (the end of its annealing schedule)."""
        newly = 0
        prev_frozen = torch.ones(self.n_inputs, dtype=torch.bool)
        for li, layer in enumerate(self.hidden, start=1):
            cur = torch.cat([layer.W, layer.b[:, None]], 1)
            change = (cur - layer.snapshot).norm(dim=1) / (layer.snapshot.norm(dim=1) + 1e-12)
            layer.snapshot = cur.clone()
            stable = change < threshold
            layer.streak = torch.where(stable, layer.streak + 1, torch.zeros_like(layer.streak))
            if enabled and (max_layer is None or li <= max_layer):
                inputs_frozen = ~(layer.mask & ~prev_frozen[None, :]).any(1)
                old_enough = (epoch - layer.born) >= min_age
                settled = (layer.streak >= patience) & old_enough
                if force is not None and force[li - 1]:
                    settled = torch.ones_like(settled)
                freeze = (~layer.frozen) & settled & inputs_frozen
                layer.frozen |= freeze
                layer.epoch_frozen[freeze] = epoch
                newly += int(freeze.sum())
            prev_frozen = layer.frozen
        return newly

    # ---- growth ----------------------------------------------------------------------------
    def grow(self, x: torch.Tensor, y: torch.Tensor, count: int, candidates: int,
             gen: torch.Generator, epoch: int, layers=None) -> int:
        """Nucleate up to `count` neurons per hidden layer with room, at the grid positions
        where the gradient of the loss w.r.t. a candidate's outgoing weights is largest
        (GradMax-style). Outgoing weights start at zero: the function is unchanged.
        `layers`: the hidden layers (0-based) that may grow (None = all)."""
        grown = 0
        for li in range(len(self.hidden)):
            room = self.caps[li] - self.layers[li].n
            if layers is not None and li not in layers:
                continue
            if room <= 0:
                continue
            # Recomputed per layer: growing layer li widens the input of layer li+1.
            acts, grads = self._activations_and_gradients(x, y)
            with torch.no_grad():
                pos, w_in = self._score_candidates(li, acts[li], grads[li + 1], min(count, room),
                                                   candidates, gen)
            self._add_neurons(li, pos, w_in, epoch)
            grown += len(pos)
        return grown

    def _activations_and_gradients(self, x, y):
        """Each layer's input and the gradient of the loss w.r.t. each pre-activation."""
        acts, zs = [x], []
        h = x
        for li, layer in enumerate(self.layers):
            z = h @ layer.W.T + layer.b
            if li == 0:
                z = z.detach().requires_grad_(True)  # the graph starts here
            zs.append(z)
            h = torch.relu(z) if layer.activation == "relu" else z
            acts.append(h)
        loss = F.cross_entropy(acts[-1], y, reduction="sum")
        grads = torch.autograd.grad(loss, zs)
        return [a.detach() for a in acts], grads

    def _out_mask(self, li: int, pos: torch.Tensor) -> torch.Tensor:
        """Which neurons of layer li+1 would read new neurons at `pos` (n_next, n_new):
        active neurons whose receptive field covers them; frozen ones never take inputs."""
        nxt = self.layers[li + 1]
        m = _receptive_mask(nxt.pos, nxt.radius, pos)
        return m & ~nxt.frozen[:, None]

    def _score_candidates(self, li, h_prev, g_next, k, per_pos, gen):
        cells = self.input_pos  # candidate sites: every grid position
        radius = torch.full((len(cells),), self.radii[li])
        in_mask = _receptive_mask(cells, radius, self.prev_positions(li))
        out_mask = self._out_mask(li, cells)  # (n_next, cells)
        best_score = torch.full((len(cells),), -1.0)
        best_w = torch.zeros(len(cells), in_mask.shape[1])
        for _ in range(per_pos):
            w = _init_weights(in_mask, gen, relu=True)
            hc = torch.relu(h_prev @ w.T)  # (S, cells)
            gw = (hc.T @ g_next) * out_mask.T  # dLoss/d(outgoing weight), (cells, n_next)
            score = gw.norm(dim=1)
            better = score > best_score
            best_score = torch.where(better, score, best_score)
            best_w[better] = w[better]
        top = torch.argsort(best_score, descending=True, stable=True)[:k]
        return cells[top].clone(), best_w[top]

    def _add_neurons(self, li: int, pos: torch.Tensor, w_in: torch.Tensor, epoch: int) -> None:
        layer, nxt = self.layers[li], self.layers[li + 1]
        n_new = len(pos)
        in_mask = w_in != 0
        in_mask |= _receptive_mask(pos, torch.full((n_new,), self.radii[li]), self.prev_positions(li))
        zeros = lambda *s: torch.zeros(*s)  # noqa: E731
        cat0 = lambda a, b: torch.cat([a, b], 0)  # noqa: E731
        layer.W = cat0(layer.W, w_in)
        layer.b = cat0(layer.b, zeros(n_new))
        layer.mask = cat0(layer.mask, in_mask)
        layer.pos = cat0(layer.pos, pos)
        layer.radius = cat0(layer.radius, torch.full((n_new,), self.radii[li]))
        layer.frozen = cat0(layer.frozen, torch.zeros(n_new, dtype=torch.bool))
        layer.epoch_frozen = cat0(layer.epoch_frozen, torch.full((n_new,), -1, dtype=torch.int32))
        layer.born = cat0(layer.born, torch.full((n_new,), epoch, dtype=torch.int32))
        layer.streak = cat0(layer.streak, torch.zeros(n_new, dtype=torch.int32))
        layer.snapshot = cat0(layer.snapshot, torch.cat([w_in, zeros(n_new, 1)], 1))
        for name in ("mW", "vW", "tW"):
            setattr(layer, name, cat0(getattr(layer, name), zeros(w_in.shape)))
        for name in ("mb", "vb", "tb"):
            setattr(layer, name, cat0(getattr(layer, name), zeros(n_new)))
        # Outgoing: new columns in the next layer, zero weights (function preserved).
        out_mask = self._out_mask(li, pos)
        cat1 = lambda a, b: torch.cat([a, b], 1)  # noqa: E731
        nxt.W = cat1(nxt.W, zeros(nxt.n, n_new))
        nxt.mask = cat1(nxt.mask, out_mask)
        nxt.snapshot = torch.cat([nxt.snapshot[:, :-1], zeros(nxt.n, n_new), nxt.snapshot[:, -1:]], 1)
        for name in ("mW", "vW", "tW"):
            setattr(nxt, name, cat1(getattr(nxt, name), zeros(nxt.n, n_new)))

    # ---- persistence -----------------------------------------------------------------------
    def state(self) -> dict:
        return {"geometry": self.geometry, "n_classes": self.n_classes, "caps": self.caps,
                "radii": self.radii,
                "layers": [{**layer.tensors(), "activation": layer.activation} for layer in self.layers]}

    @classmethod
    def from_state(cls, st: dict) -> "CrystalNet":
        net = cls.__new__(cls)
        net.geometry = tuple(st["geometry"])
        net.input_pos = grid_positions(net.geometry)
        net.n_inputs = net.input_pos.shape[0]
        net.n_classes = st["n_classes"]
        net.caps = list(st["caps"])
        net.radii = list(st["radii"])
        net.layers = [LayerState(**{k: (v.clone() if isinstance(v, torch.Tensor) else v)
                                    for k, v in ls.items()}) for ls in st["layers"]]
        return net

    def clone(self) -> "CrystalNet":
        return CrystalNet.from_state(self.state())

    def architecture_copy(self, gen: torch.Generator) -> "CrystalNet":
        """The same neurons, positions and connections, freshly initialized and all active:
        the never-frozen baseline of this net."""
        net = self.clone()
        for layer in net.layers:
            layer.W = _init_weights(layer.mask, gen, layer.activation == "relu")
            layer.b = torch.zeros(layer.n)
            layer.frozen = torch.zeros(layer.n, dtype=torch.bool)
            layer.epoch_frozen = torch.full((layer.n,), -1, dtype=torch.int32)
            layer.born = torch.full((layer.n,), -1, dtype=torch.int32)
            layer.streak = torch.zeros(layer.n, dtype=torch.int32)
            layer.snapshot = torch.cat([layer.W, layer.b[:, None]], 1)
            for name in ("mW", "vW", "tW", "mb", "vb", "tb"):
                setattr(layer, name, torch.zeros_like(getattr(layer, name)))
        return net


class Frontier:
    """A compiled training view of a CrystalNet: parameters of the active neurons only.

    Layer l's active rows read `cat([frozen outputs of l-1, active outputs of l-1])`,
    so their weight columns are permuted into that order at compile time and scattered
    back by `write_back()`. With `cache`, the frozen outputs for every training sample
    are computed once; without it they are recomputed from the batch each step (the
    same numbers, the slow way). `all_active` compiles the whole net as trainable: the
    reference an all-active epoch is timed with.
    """

    def __init__(self, net: CrystalNet, all_active: bool = False):
        self.net = net
        self.rows, self.cols, self.params = [], [], []
        self.frozen_idx = []
        prev_frz = torch.zeros(0, dtype=torch.long)
        prev_act = torch.arange(net.n_inputs)
        for li, layer in enumerate(net.layers):
            frz = torch.zeros(0, dtype=torch.long) if all_active else torch.nonzero(layer.frozen).flatten()
            act = torch.arange(layer.n) if all_active else torch.nonzero(~layer.frozen).flatten()
            cols = prev_act if li == 0 else torch.cat([prev_frz, prev_act])
            r, c = act[:, None], cols[None, :]
            p = {
                "W": layer.W[r, c].clone(), "b": layer.b[act].clone(), "M": layer.mask[r, c].float(),
                "mW": layer.mW[r, c].clone(), "vW": layer.vW[r, c].clone(), "tW": layer.tW[r, c].clone(),
                "mb": layer.mb[act].clone(), "vb": layer.vb[act].clone(), "tb": layer.tb[act].clone(),
            }
            p["W"].requires_grad_(True)
            p["b"].requires_grad_(True)
            self.rows.append(act)
            self.cols.append(cols)
            self.params.append(p)
            self.frozen_idx.append(frz)
            prev_frz, prev_act = frz, act
        # Frozen part: layer 1 reads inputs, layer l>1 reads only frozen neurons of l-1.
        self.frozen_W, self.frozen_b = [], []
        prev = torch.arange(net.n_inputs)
        for li, layer in enumerate(net.hidden):
            frz = self.frozen_idx[li]
            self.frozen_W.append(layer.W[frz][:, prev].clone())
            self.frozen_b.append(layer.b[frz].clone())
            prev = frz
        self.live = [len(r) > 0 for r in self.rows]  # layers with an active neuron
        self.cache: list[torch.Tensor] | None = None

    @property
    def n_frozen(self) -> int:
        return sum(len(f) for f in self.frozen_idx)

    @torch.no_grad()
    def frozen_outputs(self, x: torch.Tensor, chunk: int = 4096) -> list[torch.Tensor]:
        """Outputs of the frozen core, per hidden layer: (n, n_frozen_l)."""
        outs = [[] for _ in self.frozen_W]
        for i in range(0, x.shape[0], chunk):
            h = x[i:i + chunk]
            for li, (W, b) in enumerate(zip(self.frozen_W, self.frozen_b)):
                h = torch.relu(h @ W.T + b)
                outs[li].append(h)
        return [torch.cat(o, 0) if o else torch.zeros(0, len(f)) for o, f in zip(outs, self.frozen_idx)]

    def build_cache(self, x_train: torch.Tensor) -> None:
        self.cache = self.frozen_outputs(x_train)

    def logits(self, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """Forward pass of the frontier for a batch; `idx` indexes the cache (None: recompute).
        Layers with no active neuron are skipped; only the cached outputs that an active
        neuron reads are gathered."""
        if self.cache is not None and idx is not None:
            frozen = [c[idx] if self.live[li + 1] else None for li, c in enumerate(self.cache)]
        else:
            frozen = self.frozen_outputs(x)
        h = x
        last = len(self.params) - 1
        for li, p in enumerate(self.params):
            if not self.live[li]:
                continue
            if li > 0:
                parts = ([frozen[li - 1]] if len(self.frozen_idx[li - 1]) else []) + \
                        ([h] if self.live[li - 1] else [])
                h_in = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            else:
                h_in = x
            z = h_in @ p["W"].T + p["b"]
            h = torch.relu(z) if li < last else z
        return h

    def step(self, x, y, idx, lr, weight_decay: float) -> float:
        """One Adam step on a batch; `lr` is one rate, or one per layer (readout last)."""
        logits = self.logits(x, idx)
        loss = F.cross_entropy(logits, y)
        live_idx = [li for li, ok in enumerate(self.live) if ok]
        live = [self.params[li] for li in live_idx]
        grads = torch.autograd.grad(loss, [p["W"] for p in live] + [p["b"] for p in live])
        n = len(live)
        with torch.no_grad():
            for i, (li, p) in enumerate(zip(live_idx, live)):
                rate = lr[li] if isinstance(lr, (list, tuple)) else lr
                gW = grads[i] * p["M"]
                if weight_decay:
                    gW = gW + weight_decay * p["W"]
                _adam(p["W"], gW, p["mW"], p["vW"], p["tW"], rate, p["M"])
                _adam(p["b"], grads[n + i], p["mb"], p["vb"], p["tb"], rate, None)
        return float(loss.detach())

    @torch.no_grad()
    def write_back(self) -> None:
        for layer, act, cols, p in zip(self.net.layers, self.rows, self.cols, self.params):
            r, c = act[:, None], cols[None, :]
            layer.W[r, c] = p["W"].detach()
            layer.b[act] = p["b"].detach()
            for k in ("mW", "vW", "tW"):
                getattr(layer, k)[r, c] = p[k]
            for k in ("mb", "vb", "tb"):
                getattr(layer, k)[act] = p[k]


def _adam(w, g, m, v, t, lr, mask):
    b1, b2 = ADAM_BETAS
    if mask is None:
        t += 1
    else:
        t += mask
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    tc = t.clamp(min=1)
    mhat = m / (1 - b1 ** tc)
    vhat = v / (1 - b2 ** tc)
    w.sub_(lr * mhat / (vhat.sqrt() + ADAM_EPS))


def to_numpy_layers(net: CrystalNet):
    """Per-layer numpy arrays for the Crystal artifact."""
    out = []
    for layer in net.layers:
        out.append({
            "weights": (layer.W * layer.mask).numpy().astype(np.float32),
            "bias": layer.b.numpy().astype(np.float32),
            "mask": layer.mask.numpy().astype(bool),
            "activation": layer.activation,
            "position": layer.pos.numpy().astype(np.float32),
            "radius": layer.radius.numpy().astype(np.float32),
            "frozen": layer.frozen.numpy().astype(bool),
            "epoch_frozen": layer.epoch_frozen.numpy().astype(np.int32),
        })
    return out
