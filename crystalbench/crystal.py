"""The Crystal: the one artifact every backend reads.

A trained, partitioned crystal net saved as plain JSON + numpy (`crystal.json` +
`crystal.npz`), loadable without torch. Backends (rtl, analog, sim, boards) read
this and never the training code.

Conventions
-----------
* Layers are numbered 1..L; layer 0 is the input. Layer L is the readout.
* `Layer.weights[j, i]` is the weight from neuron i of the previous layer (or input
  feature i) to neuron j. `Layer.mask[j, i]` says the connection exists; weights are
  exactly zero where it does not.
* Model inputs are `x = (raw - input.offset) * input.scale`; every reference vector
  is in model units.
* Partition: the core is the frozen neurons closed under predecessors (inputs count as
  the substrate); the frontier is every other neuron, readout included; the boundary
  is the core neurons that some frontier neuron reads.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
ACTIVATIONS = ("relu", "linear")
JSON_NAME = "crystal.json"
NPZ_NAME = "crystal.npz"


class CrystalError(ValueError):
    """A Crystal that is malformed; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class InputSpec:
    size: int
    geometry: tuple[int, ...]  # e.g. (8, 8) for the digits pixel grid, (40,) for mnist1d
    offset: float  # x_model = (raw - offset) * scale
    scale: float
    low: float  # range of model inputs (after scaling) the hardware must accept
    high: float


@dataclass(frozen=True, eq=False)
class Layer:
    weights: np.ndarray  # float32 (n_out, n_in)
    bias: np.ndarray  # float32 (n_out,)
    mask: np.ndarray  # bool (n_out, n_in)
    activation: str  # one of ACTIVATIONS
    position: np.ndarray  # float32 (n_out, len(geometry)): where the neuron sits
    radius: np.ndarray  # float32 (n_out,): receptive field radius (inf = dense)
    frozen: np.ndarray  # bool (n_out,)
    epoch_frozen: np.ndarray  # int32 (n_out,), -1 while active

    @property
    def n_out(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_in(self) -> int:
        return int(self.weights.shape[1])


@dataclass(frozen=True, eq=False)
class Reference:
    """Test inputs, labels and the torch output of every neuron on them."""

    x: np.ndarray  # float32 (n, input.size), model units
    y: np.ndarray  # int64 (n,)
    outputs: tuple[np.ndarray, ...]  # per layer: float32 (n, n_out), post-activation
    calibration_x: np.ndarray  # float32 (m, input.size): training inputs, for ranges


@dataclass(frozen=True, eq=False)
class Partition:
    core: tuple[np.ndarray, ...]  # per layer, bool (n_out,)
    boundary: tuple[np.ndarray, ...]  # per layer, bool: core neurons the frontier reads
    frontier_inputs: np.ndarray  # bool (input.size,): raw inputs the frontier reads

    @property
    def frontier(self) -> tuple[np.ndarray, ...]:
        return tuple(~c for c in self.core)


@dataclass(frozen=True, eq=False)
class Crystal:
    name: str
    dataset: str
    n_classes: int
    input: InputSpec
    layers: tuple[Layer, ...]
    reference: Reference
    provenance: dict = field(default_factory=dict)
    # Filled by the fixed-point stage: per-tensor formats; None until then.
    fixed_point: dict | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        validate(self)

    # ---- derived views -------------------------------------------------------------
    @property
    def sizes(self) -> list[int]:
        return [self.input.size] + [layer.n_out for layer in self.layers]

    @property
    def partition(self) -> Partition:
        return compute_partition(self.layers, self.input.size)

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Float reference model in numpy: the output of every layer for inputs x."""
        h = np.asarray(x, dtype=np.float32)
        outs = []
        for layer in self.layers:
            h = h @ layer.weights.T + layer.bias
            if layer.activation == "relu":
                h = np.maximum(h, 0.0)
            outs.append(h.astype(np.float32))
        return outs

    def summary(self) -> dict:
        part = self.partition
        hidden = self.layers[:-1]
        n_hidden = sum(layer.n_out for layer in hidden)
        n_core = int(sum(c.sum() for c in part.core))
        acc = float((self.reference.outputs[-1].argmax(1) == self.reference.y).mean())
        return {
            "name": self.name,
            "dataset": self.dataset,
            "sizes": self.sizes,
            "hidden_neurons": n_hidden,
            "core_neurons": n_core,
            "frontier_neurons": int(sum(f.sum() for f in part.frontier)),
            "boundary_neurons": int(sum(b.sum() for b in part.boundary)),
            "frontier_raw_inputs": int(part.frontier_inputs.sum()),
            "frozen_fraction": n_core / n_hidden if n_hidden else 0.0,
            "connections": int(sum(layer.mask.sum() for layer in self.layers)),
            "reference_vectors": int(self.reference.x.shape[0]),
            "reference_test_accuracy": acc,
        }

    def replace(self, **changes) -> "Crystal":
        return dataclasses.replace(self, **changes)


def compute_partition(layers: tuple[Layer, ...], n_inputs: int) -> Partition:
    core: list[np.ndarray] = []
    prev_core = np.ones(n_inputs, dtype=bool)  # the inputs are the substrate
    for layer in layers:
        reads_only_core = ~(layer.mask & ~prev_core[None, :]).any(axis=1)
        c = layer.frozen & reads_only_core
        core.append(c)
        prev_core = c
    boundary = []
    for idx in range(len(layers)):
        nxt = layers[idx + 1] if idx + 1 < len(layers) else None
        if nxt is None:
            boundary.append(np.zeros_like(core[idx]))
        else:
            read_by_frontier = (nxt.mask & ~core[idx + 1][:, None]).any(axis=0)
            boundary.append(core[idx] & read_by_frontier)
    frontier_inputs = (layers[0].mask & ~core[0][:, None]).any(axis=0)
    return Partition(tuple(core), tuple(boundary), frontier_inputs)


# ---- validation ------------------------------------------------------------------------
def _fail(where: str, msg: str):
    raise CrystalError(f"{where}: {msg}")


def validate(c: Crystal, where: str = "crystal") -> None:
    """Check shapes, dtypes and invariants; raise CrystalError naming what is wrong."""
    if c.schema_version != SCHEMA_VERSION:
        _fail(where, f"schema_version {c.schema_version} is not supported (this crystalbench "
                     f"reads version {SCHEMA_VERSION}); re-export the crystal with "
                     "`crystalbench export`")
    if not c.layers:
        _fail(where, "layers is empty; a crystal needs at least the readout layer")
    if int(np.prod(c.input.geometry)) != c.input.size:
        _fail(where, f"input.geometry {list(c.input.geometry)} holds {int(np.prod(c.input.geometry))} "
                     f"values but input.size is {c.input.size}")
    if not (np.isfinite(c.input.scale) and c.input.scale != 0):
        _fail(where, f"input.scale must be a finite non-zero number, got {c.input.scale}")
    n_in = c.input.size
    ndim = len(c.input.geometry)
    for li, layer in enumerate(c.layers, start=1):
        at = f"{where}: layer {li}"
        n = layer.weights.shape[0] if layer.weights.ndim == 2 else -1
        expect = {
            "weights": ((n, n_in), np.float32),
            "bias": ((n,), np.float32),
            "mask": ((n, n_in), np.bool_),
            "position": ((n, ndim), np.float32),
            "radius": ((n,), np.float32),
            "frozen": ((n,), np.bool_),
            "epoch_frozen": ((n,), np.int32),
        }
        for name, (shape, dtype) in expect.items():
            arr = getattr(layer, name)
            if not isinstance(arr, np.ndarray):
                _fail(at, f"{name} must be a numpy array, got {type(arr).__name__}")
            if arr.shape != shape:
                _fail(at, f"{name} has shape {arr.shape}, expected {shape} "
                          f"({n} neurons x {n_in} inputs from layer {li - 1})")
            if arr.dtype != dtype:
                _fail(at, f"{name} has dtype {arr.dtype}, expected {np.dtype(dtype).name}")
        if layer.activation not in ACTIVATIONS:
            _fail(at, f"activation {layer.activation!r} is not supported; use one of {list(ACTIVATIONS)}")
        if not np.all(np.isfinite(layer.weights)) or not np.all(np.isfinite(layer.bias)):
            _fail(at, "weights or bias contain NaN or inf")
        if np.any(layer.weights[~layer.mask] != 0):
            bad = np.argwhere((layer.weights != 0) & ~layer.mask)[0]
            _fail(at, f"weight [{bad[0]}, {bad[1]}] is non-zero but its connection is absent "
                      "(mask False); absent connections must have weight 0")
        bad_epoch = layer.frozen != (layer.epoch_frozen >= 0)
        if bad_epoch.any():
            j = int(np.argmax(bad_epoch))
            _fail(at, f"neuron {j}: frozen={bool(layer.frozen[j])} but epoch_frozen="
                      f"{int(layer.epoch_frozen[j])} (frozen neurons need epoch_frozen >= 0, "
                      "active ones -1)")
        n_in = n
    if c.layers[-1].frozen.any():
        _fail(f"{where}: layer {len(c.layers)}", "the readout must stay active (frozen all False)")
    if c.layers[-1].n_out != c.n_classes:
        _fail(where, f"readout has {c.layers[-1].n_out} outputs but n_classes is {c.n_classes}")
    r = c.reference
    m = r.x.shape[0] if r.x.ndim == 2 else -1
    if r.x.shape != (m, c.input.size) or r.x.dtype != np.float32:
        _fail(where, f"reference.x has shape {r.x.shape} dtype {r.x.dtype}, expected (n, {c.input.size}) float32")
    if r.y.shape != (m,):
        _fail(where, f"reference.y has shape {r.y.shape}, expected ({m},)")
    if r.calibration_x.ndim != 2 or r.calibration_x.shape[1] != c.input.size:
        _fail(where, f"reference.calibration_x has shape {r.calibration_x.shape}, expected (m, {c.input.size})")
    if len(r.outputs) != len(c.layers):
        _fail(where, f"reference.outputs has {len(r.outputs)} layers, expected {len(c.layers)}")
    for li, (out, layer) in enumerate(zip(r.outputs, c.layers), start=1):
        if out.shape != (m, layer.n_out):
            _fail(where, f"reference.outputs layer {li} has shape {out.shape}, expected ({m}, {layer.n_out})")
    if c.fixed_point is not None:
        _validate_fixed_point(c, where)


def acc_range(weights: np.ndarray, bias: np.ndarray, in_bits: int) -> tuple[int, int]:
    """Worst-case accumulator range of an integer layer over every unsigned input code
    (zero included): what its accumulator width must hold."""
    top = (1 << in_bits) - 1
    hi = (np.clip(weights, 0, None).sum(axis=1) * top + bias).max()
    lo = (np.clip(weights, None, 0).sum(axis=1) * top + bias).min()
    return int(min(lo, 0)), int(max(hi, 0))


FP_LAYER_FIELDS = ("activation", "in_bits", "weight_bits", "weight_frac", "acc_bits", "shift",
                   "out_bits", "weights", "mask", "bias")
FP_MAX_WIDTH = 48


def _validate_fixed_point(c: Crystal, where: str) -> None:
    """The fixed-point formats (written by crystalbench.rtl.fixed) are complete and can
    never overflow: refused here, before any synthesis, naming the field."""
    fp = c.fixed_point
    at = f"{where}: fixed_point"
    if not isinstance(fp, dict):
        _fail(at, f"must be a mapping, got {type(fp).__name__}")
    for key in ("version", "adc_bits", "nets"):
        if key not in fp:
            _fail(at, f"missing field {key!r}; re-run `crystalbench synth` to choose the formats")
    for kind in ("frontier", "all_digital"):
        if kind not in fp["nets"]:
            _fail(at, f"missing field 'nets.{kind}'")
    for kind, net in fp["nets"].items():
        for key in ("input", "layers"):
            if key not in net:
                _fail(at, f"missing field 'nets.{kind}.{key}'")
        first = len(c.layers) - len(net["layers"]) + 1
        if not net["layers"] or first < 1:
            _fail(at, f"nets.{kind}.layers has {len(net['layers'])} layers; the crystal has "
                      f"{len(c.layers)}")
        for i, lay in enumerate(net["layers"]):
            li = first + i
            lat = f"{at}: nets.{kind}.layers[{i}]"
            for key in FP_LAYER_FIELDS:
                if key not in lay:
                    _fail(lat, f"missing field {key!r}")
            readout = li == len(c.layers)
            want = "linear" if readout else "relu"
            if lay["activation"] != want or c.layers[li - 1].activation != want:
                _fail(lat, f"activation {lay['activation']!r} (crystal layer {li}: "
                           f"{c.layers[li - 1].activation!r}) is not supported in fixed point for "
                           f"a {'readout' if readout else 'hidden'} layer; only {want!r} is")
            for key in ("in_bits", "weight_bits", "acc_bits", "out_bits"):
                v = lay[key]
                if not isinstance(v, int) or not 1 <= v <= FP_MAX_WIDTH:
                    _fail(lat, f"{key} = {v!r} must be a whole number in 1..{FP_MAX_WIDTH}")
            w = np.asarray(lay["weights"], dtype=np.int64)
            b = np.asarray(lay["bias"], dtype=np.int64)
            n_out = c.layers[li - 1].n_out
            if w.ndim != 2 or w.shape[0] != n_out or b.shape != (n_out,):
                _fail(lat, f"weights {w.shape} / bias {b.shape} do not match the {n_out} neurons "
                           f"of crystal layer {li}")
            lim = 1 << (lay["weight_bits"] - 1)
            if w.size and (w.max() > lim - 1 or w.min() < -lim):
                _fail(lat, f"a weight ({int(np.abs(w).max())}) overflows weight_bits "
                           f"{lay['weight_bits']}")
            lo, hi = acc_range(w, b, lay["in_bits"])
            alim = 1 << (lay["acc_bits"] - 1)
            if hi > alim - 1 or lo < -alim:
                _fail(lat, f"acc_bits {lay['acc_bits']} would overflow: the accumulator can "
                           f"reach {lo}..{hi}; re-run `crystalbench synth` or lower the widths")
            if i + 1 < len(net["layers"]) and net["layers"][i + 1]["in_bits"] != lay["out_bits"]:
                _fail(lat, f"out_bits {lay['out_bits']} differs from the next layer's in_bits "
                           f"{net['layers'][i + 1]['in_bits']}")


# ---- disk format -----------------------------------------------------------------------
_LAYER_ARRAYS = ("weights", "bias", "mask", "position", "radius", "frozen", "epoch_frozen")


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save(c: Crystal, folder: str | Path) -> Path:
    """Write crystal.json + crystal.npz into folder (atomically); return the folder."""
    folder = Path(folder)
    arrays: dict[str, np.ndarray] = {}
    layers_meta = []
    for li, layer in enumerate(c.layers, start=1):
        for name in _LAYER_ARRAYS:
            arrays[f"layer{li}.{name}"] = getattr(layer, name)
        layers_meta.append({"index": li, "neurons": layer.n_out, "inputs": layer.n_in,
                            "activation": layer.activation})
    arrays["reference.x"] = c.reference.x
    arrays["reference.y"] = c.reference.y
    arrays["reference.calibration_x"] = c.reference.calibration_x
    for li, out in enumerate(c.reference.outputs, start=1):
        arrays[f"reference.layer{li}"] = out
    part = c.partition
    meta = {
        "schema_version": c.schema_version,
        "name": c.name,
        "dataset": c.dataset,
        "n_classes": c.n_classes,
        "input": {**dataclasses.asdict(c.input), "geometry": list(c.input.geometry)},
        "layers": layers_meta,
        # Written for readers outside Python; recomputed and checked on load.
        "partition": {
            "core": [np.flatnonzero(x).tolist() for x in part.core],
            "boundary": [np.flatnonzero(x).tolist() for x in part.boundary],
            "frontier_inputs": np.flatnonzero(part.frontier_inputs).tolist(),
        },
        "summary": c.summary(),
        "fixed_point": c.fixed_point,
        "provenance": c.provenance,
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(folder / NPZ_NAME, buf.getvalue())
    atomic_write_json(folder / JSON_NAME, meta)
    return folder


def load(folder: str | Path) -> Crystal:
    """Load and validate a Crystal; errors name the file and the field."""
    folder = Path(folder)
    jpath, npath = folder / JSON_NAME, folder / NPZ_NAME
    for p in (jpath, npath):
        if not p.exists():
            raise CrystalError(f"{p}: not found; train one with `crystalbench train --config ...` "
                               "or write one with `crystalbench export`")
    try:
        meta = json.loads(jpath.read_text())
    except json.JSONDecodeError as e:
        raise CrystalError(f"{jpath}: not valid JSON ({e})") from None
    where = str(jpath)
    for key in ("schema_version", "name", "dataset", "n_classes", "input", "layers"):
        if key not in meta:
            raise CrystalError(f"{where}: missing field {key!r}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise CrystalError(f"{where}: schema_version {meta['schema_version']} is not supported "
                           f"(expected {SCHEMA_VERSION}); re-export with `crystalbench export`")
    with np.load(npath, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    def arr(key):
        if key not in arrays:
            raise CrystalError(f"{npath}: missing array {key!r}")
        return arrays[key]

    try:
        inp = meta["input"]
        input_spec = InputSpec(size=int(inp["size"]), geometry=tuple(int(g) for g in inp["geometry"]),
                               offset=float(inp["offset"]), scale=float(inp["scale"]),
                               low=float(inp["low"]), high=float(inp["high"]))
    except KeyError as e:
        raise CrystalError(f"{where}: input is missing field {e.args[0]!r}") from None
    layers = []
    for lm in meta["layers"]:
        li = lm["index"]
        kw = {name: arr(f"layer{li}.{name}") for name in _LAYER_ARRAYS}
        layers.append(Layer(activation=lm.get("activation", ""), **kw))
    ref = Reference(x=arr("reference.x"), y=arr("reference.y"),
                    outputs=tuple(arr(f"reference.layer{li}") for li in range(1, len(layers) + 1)),
                    calibration_x=arr("reference.calibration_x"))
    try:
        c = Crystal(name=meta["name"], dataset=meta["dataset"], n_classes=int(meta["n_classes"]),
                    input=input_spec, layers=tuple(layers), reference=ref,
                    provenance=meta.get("provenance") or {}, fixed_point=meta.get("fixed_point"),
                    schema_version=meta["schema_version"])
    except CrystalError as e:
        raise CrystalError(f"{folder}: {e}") from None
    stored = meta.get("partition")
    if stored is not None:
        part = c.partition
        for li, core in enumerate(part.core, start=1):
            if stored["core"][li - 1] != np.flatnonzero(core).tolist():
                raise CrystalError(f"{where}: partition.core of layer {li} disagrees with the "
                                   "frozen flags and masks in crystal.npz; the two files are "
                                   "from different crystals")
    return c
