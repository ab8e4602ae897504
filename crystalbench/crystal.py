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
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CrystalError
from .results import atomic_write_bytes, atomic_write_json, keep_previous

SCHEMA_VERSION = 1
ACTIVATIONS = ("relu", "linear")
JSON_NAME = "crystal.json"
NPZ_NAME = "crystal.npz"


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
        _fail(where, f"reference.x has shape {r.x.shape} dtype {r.x.dtype}, expected "
                     f"(n, {c.input.size}) float32")
    if r.y.shape != (m,):
        _fail(where, f"reference.y has shape {r.y.shape}, expected ({m},)")
    if r.calibration_x.ndim != 2 or r.calibration_x.shape[1] != c.input.size:
        _fail(where, f"reference.calibration_x has shape {r.calibration_x.shape}, expected "
                     f"(m, {c.input.size})")
    if len(r.outputs) != len(c.layers):
        _fail(where, f"reference.outputs has {len(r.outputs)} layers, expected {len(c.layers)}")
    for li, (out, layer) in enumerate(zip(r.outputs, c.layers), start=1):
        if out.shape != (m, layer.n_out):
            _fail(where, f"reference.outputs layer {li} has shape {out.shape}, expected ({m}, {layer.n_out})")
    for name, arr in (("reference.x", r.x), ("reference.calibration_x", r.calibration_x),
                      *((f"reference.outputs layer {li}", o) for li, o in enumerate(r.outputs, 1))):
        if not np.all(np.isfinite(arr)):
            _fail(where, f"{name} contains NaN or inf; re-export the crystal from a finite model")
    if not (np.isfinite(c.input.low) and np.isfinite(c.input.high) and c.input.low < c.input.high):
        _fail(where, f"input range low {c.input.low} .. high {c.input.high} must be finite and "
                     "increasing")


# ---- disk format -----------------------------------------------------------------------
_LAYER_ARRAYS = ("weights", "bias", "mask", "position", "radius", "frozen", "epoch_frozen")


def _arrays(c: Crystal) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for li, layer in enumerate(c.layers, start=1):
        for name in _LAYER_ARRAYS:
            arrays[f"layer{li}.{name}"] = getattr(layer, name)
    arrays["reference.x"] = c.reference.x
    arrays["reference.y"] = c.reference.y
    arrays["reference.calibration_x"] = c.reference.calibration_x
    for li, out in enumerate(c.reference.outputs, start=1):
        arrays[f"reference.layer{li}"] = out
    return arrays


def digest(c: Crystal) -> str:
    """Content hash of a Crystal (arrays, input description, activations; not provenance).
    Every artifact a backend derives is stamped with it, so a stale one is recognised."""
    h = hashlib.sha256()
    head = {"schema_version": c.schema_version, "name": c.name, "dataset": c.dataset,
            "n_classes": c.n_classes, "input": {**dataclasses.asdict(c.input),
                                                "geometry": list(c.input.geometry)},
            "activations": [layer.activation for layer in c.layers]}
    h.update(json.dumps(head, sort_keys=True).encode())
    for key, arr in sorted(_arrays(c).items()):
        a = np.ascontiguousarray(arr)
        h.update(f"{key}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def stored_digest(folder: str | Path) -> str | None:
    """The digest recorded in a Crystal folder's crystal.json, or None if there is none."""
    try:
        return json.loads((Path(folder) / JSON_NAME).read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        return None


def save(c: Crystal, folder: str | Path, keep: bool = True) -> Path | None:
    """Write crystal.json + crystal.npz into folder (each file atomically).

    With `keep`, a different Crystal already in the folder is first moved aside (as
    <folder>.prev-<date>-<time>) rather than replaced; returns where it went, or None.
    """
    folder = Path(folder)
    d = digest(c)
    kept = None
    if keep and (folder / JSON_NAME).exists() and stored_digest(folder) != d:
        kept = keep_previous(folder)
    layers_meta = [{"index": li, "neurons": layer.n_out, "inputs": layer.n_in,
                    "activation": layer.activation} for li, layer in enumerate(c.layers, start=1)]
    part = c.partition
    meta = {
        "schema_version": c.schema_version,
        "digest": d,
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
        "provenance": c.provenance,
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **_arrays(c))
    atomic_write_bytes(folder / NPZ_NAME, buf.getvalue())
    atomic_write_json(folder / JSON_NAME, meta)
    return kept


def _read_meta(jpath: Path) -> dict:
    try:
        meta = json.loads(jpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CrystalError(f"{jpath}: not valid JSON ({e}); re-export the crystal with "
                           "`crystalbench export` or `crystalbench train --resume`") from None
    if not isinstance(meta, dict):
        raise CrystalError(f"{jpath}: expected a JSON object, got {type(meta).__name__}")
    for key in ("schema_version", "name", "dataset", "n_classes", "input", "layers"):
        if key not in meta:
            raise CrystalError(f"{jpath}: missing field {key!r}")
    # an int, not 1.0 or true: those equal 1 but hash differently in the digest
    version = meta["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise CrystalError(f"{jpath}: schema_version {version!r} is not supported "
                           f"(expected {SCHEMA_VERSION}); re-export with `crystalbench export`")
    return meta


def _read_arrays(npath: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(npath, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise CrystalError(f"{npath}: cannot be read ({type(e).__name__}: {e}); the file is "
                           "damaged or truncated: re-export the crystal with `crystalbench "
                           "export` or `crystalbench train --resume`") from None


def _build(meta: dict, arrays: dict, jpath: Path, npath: Path) -> Crystal:
    def arr(key):
        if key not in arrays:
            raise CrystalError(f"{npath}: missing array {key!r}")
        return arrays[key]

    field_name = "input"
    try:
        inp = meta["input"]
        input_spec = InputSpec(size=int(inp["size"]), geometry=tuple(int(g) for g in inp["geometry"]),
                               offset=float(inp["offset"]), scale=float(inp["scale"]),
                               low=float(inp["low"]), high=float(inp["high"]))
        field_name = "layers"
        layers = []
        for lm in meta["layers"]:
            li = int(lm["index"])
            kw = {name: arr(f"layer{li}.{name}") for name in _LAYER_ARRAYS}
            layers.append(Layer(activation=str(lm.get("activation", "")), **kw))
        ref = Reference(x=arr("reference.x"), y=arr("reference.y"),
                        outputs=tuple(arr(f"reference.layer{li}") for li in range(1, len(layers) + 1)),
                        calibration_x=arr("reference.calibration_x"))
        field_name = "n_classes"
        n_classes = int(meta["n_classes"])
        field_name = "provenance"
        prov = meta.get("provenance") or {}
        if not isinstance(prov, dict):
            raise TypeError("not an object")
    except (KeyError, TypeError, ValueError) as e:
        raise CrystalError(f"{jpath}: field {field_name!r} is malformed ({type(e).__name__}: "
                           f"{e}); re-export the crystal") from None
    return Crystal(name=str(meta["name"]), dataset=str(meta["dataset"]), n_classes=n_classes,
                   input=input_spec, layers=tuple(layers), reference=ref, provenance=prov,
                   schema_version=meta["schema_version"])


def load(folder: str | Path) -> Crystal:
    """Load and validate a Crystal; errors name the file, the field and the fix."""
    folder = Path(folder)
    if folder.is_file() and folder.name in (JSON_NAME, NPZ_NAME):
        folder = folder.parent  # the user named one of the two files
    jpath, npath = folder / JSON_NAME, folder / NPZ_NAME
    for p in (jpath, npath):
        if not p.exists():
            raise CrystalError(f"{p}: not found; train one with `crystalbench train --config ...` "
                               "or write one with `crystalbench export` / `import-torch`")
    meta = _read_meta(jpath)
    arrays = _read_arrays(npath)
    try:
        c = _build(meta, arrays, jpath, npath)
    except CrystalError as e:
        raise CrystalError(f"{folder}: {e}") from None
    stored = meta.get("partition")
    if stored is not None:
        part = c.partition
        for li, core in enumerate(part.core, start=1):
            if stored["core"][li - 1] != np.flatnonzero(core).tolist():
                raise CrystalError(f"{jpath}: partition.core of layer {li} disagrees with the "
                                   "frozen flags and masks in crystal.npz; the two files are "
                                   "from different crystals")
    if meta.get("digest") not in (None, digest(c)):
        raise CrystalError(f"{jpath}: digest {meta['digest']} does not match the arrays in "
                           f"{NPZ_NAME} ({digest(c)}); the two files are from different "
                           "crystals: re-export the crystal")
    return c
