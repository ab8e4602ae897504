"""Compile generated C through the one tool runner, measure the object, load it with ctypes.

`compile_variant` writes <stem>.c/.h, runs `cc FLAGS -c` (log <stem>.cc.log) and links
the object into a shared library (`cc -shared`, log <stem>.ld.log) named after the
source's digest, lib<stem>-<digest>.so, so that a process never calls a library it loaded
before the source changed (dlopen returns the first library loaded under a path); a
failure raises ToolFailed naming the log. `object_size` runs binutils `size` on an object
(Berkeley format: text includes read-only data such as the `static const` weights);
`size_build` compiles the source once more with other flags (-Os: what a microcontroller
build would use) just to measure it. `CNet` calls a library's `logits` and `predict` from
numpy arrays.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crystalbench import toolrun
from crystalbench.errors import ToolNotFound
from crystalbench.results import atomic_write_bytes

from . import CBackendError
from .emit import CSource

CC = "cc"
# -O3, for this machine's CPU (the library runs where it is built; the unrolled style's
# sample lanes vectorize to its widest registers); C99 without extensions; no contraction
# of a * b + c into a fused multiply-add, so that the float32 sums round as written, the
# same bits on every CPU and in every style; position-independent, so that the same
# object links into the shared library ctypes loads; every warning shown (the generated
# code has none: a warning in a log is a bug).
FLAGS = ("-O3", "-march=native", "-std=c99", "-ffp-contract=off", "-fPIC", "-Wall", "-Wextra")
LINK_FLAGS = ("-shared",)
# The size a small target would see: optimized for size, nothing host-specific.
SIZE_FLAGS = ("-Os", "-std=c99", "-Wall", "-Wextra")


def _find(tool: str, variable: str, missing: str) -> str:
    """`tool` through the tool runner; when it is absent and `variable` is not set, the
    message `missing` says how to get it (a bad `variable` keeps toolrun's message)."""
    try:
        return toolrun.find(tool)
    except ToolNotFound:
        if os.environ.get(variable):
            raise
        raise ToolNotFound(missing) from None


def find_cc() -> str:
    """The C compiler (CC overrides it, as for every tool); missing: say how to get one."""
    return _find(CC, "CC", "no C compiler: `cc` not found; run `make setup` (installs gcc), "
                           "or point CC at a C99 compiler")


def compiler_version(folder: Path) -> str:
    """First line of `cc --version` (its log in `folder`)."""
    out = toolrun.run(CC, ["--version"], Path(folder) / "cc_version.log").stdout
    return next((ln.strip() for ln in out.splitlines() if ln.strip()), "")


@dataclass(frozen=True)
class Built:
    source: Path
    header: Path
    obj: Path
    library: Path
    logs: tuple[Path, ...]
    warnings: int  # compiler warnings in the logs


def warnings_in(text: str) -> int:
    """Compiler warnings in a log: lines of the form 'file:line:col: warning: ...'."""
    return len(re.findall(r":\d+(?::\d+)?: warning:", text))


def write_sources(src: CSource, folder: Path) -> tuple[Path, Path]:
    folder = Path(folder)
    c_path, h_path = folder / f"{src.stem}.c", folder / f"{src.stem}.h"
    atomic_write_bytes(h_path, src.h_text.encode())
    atomic_write_bytes(c_path, src.c_text.encode())
    return c_path, h_path


def source_digest(src: CSource) -> str:
    """What a library is built from: the source, header and flags (12 hex digits)."""
    text = "\0".join([src.c_text, src.h_text, *FLAGS, *LINK_FLAGS])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _library(folder: Path, stem: str, digest: str) -> Path:
    """lib<stem>-<digest>.so in `folder`; libraries of the same stem and another digest (our
    own older outputs) are removed."""
    lib = folder / f"lib{stem}-{digest}.so"
    for old in folder.glob(f"lib{stem}-*.so"):
        if old != lib and re.fullmatch(rf"lib{re.escape(stem)}-[0-9a-f]{{12}}\.so", old.name):
            old.unlink()
    return lib


def compile_variant(src: CSource, folder: Path) -> Built:
    """<stem>.c/.h -> <stem>.o -> lib<stem>-<digest>.so in `folder`, both through the tool
    runner (a library of an older source of the same stem is removed)."""
    find_cc()
    folder = Path(folder)
    stem = src.stem
    c_path, h_path = write_sources(src, folder)
    obj, lib = folder / f"{stem}.o", _library(folder, stem, source_digest(src))
    cc_log, ld_log = folder / f"{stem}.cc.log", folder / f"{stem}.ld.log"
    r1 = toolrun.run(CC, [*FLAGS, "-c", c_path.name, "-o", obj.name], cc_log, cwd=folder)
    r2 = toolrun.run(CC, [*LINK_FLAGS, "-o", lib.name, obj.name], ld_log, cwd=folder)
    return Built(c_path, h_path, obj, lib, (cc_log, ld_log), warnings_in(r1.stdout + r2.stdout))


# ---- size ---------------------------------------------------------------------------------------
def parse_size(text: str, where: str = "size output") -> dict:
    """Berkeley `size` output of one file -> {'text', 'data', 'bss', 'text_plus_data'} (bytes)."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    for i, cols in enumerate(lines):
        if cols[:3] == ["text", "data", "bss"] and i + 1 < len(lines):
            row = lines[i + 1]
            try:
                text_b, data_b, bss_b = (int(v) for v in row[:3])
            except ValueError:
                break
            return {"text": text_b, "data": data_b, "bss": bss_b, "text_plus_data": text_b + data_b}
    raise CBackendError(f"{where}: no 'text data bss' header followed by three numbers; is "
                        "`size` GNU binutils (Berkeley format)? Set SIZE to binutils' size")


def compile_each(built: Built, src: CSource) -> tuple[Path, str]:
    """The benchmark's C loop of batch-1 calls (emit.each_source), linked with the variant's
    object into lib<stem>_each-<digest>.so; returns (library, symbol)."""
    from .emit import each_source

    stem, text = each_source(src)
    folder = built.source.parent
    c_path = folder / f"{stem}.c"
    atomic_write_bytes(c_path, text.encode())
    lib = _library(folder, stem, hashlib.sha256((text + source_digest(src)).encode()).hexdigest()[:12])
    toolrun.run(CC, [*FLAGS, "-c", c_path.name, "-o", f"{stem}.o"], folder / f"{stem}.cc.log",
                cwd=folder)
    toolrun.run(CC, [*LINK_FLAGS, "-o", lib.name, f"{stem}.o", built.obj.name],
                folder / f"{stem}.ld.log", cwd=folder)
    return lib, f"{src.prefix}_each"


def size_build(built: Built, flags: tuple[str, ...] = SIZE_FLAGS) -> dict:
    """`size` of the source compiled with `flags` into <stem>.size.o (log <stem>.size.cc.log)."""
    obj = built.source.with_suffix(".size.o")
    toolrun.run(CC, [*flags, "-c", built.source.name, "-o", obj.name],
                built.source.with_suffix(".size.cc.log"), cwd=built.source.parent)
    return object_size(obj)


def find_size() -> str:
    """binutils `size` (SIZE overrides it); missing: say how to get it."""
    return _find("size", "SIZE", "`size` (GNU binutils) not found; run `make setup` (installs "
                                 "gcc, which brings binutils), or point SIZE at it")


def object_size(obj: Path) -> dict:
    """`size` of an object file (its log next to it, <obj>.size.log)."""
    find_size()
    obj = Path(obj)
    log = obj.with_name(obj.name + ".size.log")
    out = toolrun.run("size", [obj.name], log, cwd=obj.parent).stdout
    return parse_size(out, str(log))


# ---- calling it ---------------------------------------------------------------------------------
class CNet:
    """A compiled variant, called from numpy: `logits(x)` and `predict(x)` for x (n, n_in)."""

    def __init__(self, library: Path, src: CSource):
        self.library = Path(library)
        self.src = src
        try:
            self.lib = ctypes.CDLL(str(self.library))
            self.c_logits = getattr(self.lib, f"{src.prefix}_logits")
            self.c_predict = getattr(self.lib, f"{src.prefix}_predict")
        except (OSError, AttributeError) as e:
            raise CBackendError(f"{self.library}: cannot load {src.prefix}_logits/_predict ({e}); "
                                "re-run `crystalbench compile-c`") from None
        for fn in (self.c_logits, self.c_predict):
            fn.argtypes = [ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
            fn.restype = None

    def inputs(self, x) -> np.ndarray:
        """x as the C-contiguous array the library reads; refused (never wrapped or cast
        silently) when its shape or values do not fit."""
        a = np.asarray(x)
        n_in, dtype = self.src.n_in, np.dtype(self.src.in_dtype)
        if a.ndim != 2 or a.shape[1] != n_in:
            raise CBackendError(f"{self.src.prefix}: inputs of shape {a.shape}; it reads "
                                f"(n, {n_in}), one row per sample")
        if dtype.kind == "f":
            return np.ascontiguousarray(a, dtype)
        if not np.issubdtype(a.dtype, np.integer):
            raise CBackendError(f"{self.src.prefix}: inputs are {a.dtype}; it reads integer "
                                f"codes ({self.src.in_type}): convert them first "
                                "(crystalbench.rtl.fixed.input_codes)")
        top = self.src.in_max if self.src.in_max is not None else int(np.iinfo(dtype).max)
        if a.size and (a.min() < 0 or a.max() > top):
            v = int(a.min()) if a.min() < 0 else int(a.max())
            raise CBackendError(f"{self.src.prefix}: input code {v} is outside 0..{top} "
                                f"({top.bit_length()}-bit codes); the net's accumulators are sized "
                                "for that range: clip or convert the inputs first")
        return np.ascontiguousarray(a, dtype)

    def logits(self, x) -> np.ndarray:
        a = self.inputs(x)
        out = np.empty((a.shape[0], self.src.n_classes), self.src.logit_dtype)
        self.c_logits(a.shape[0], a.ctypes.data, out.ctypes.data)
        return out

    def predict(self, x) -> np.ndarray:
        a = self.inputs(x)
        out = np.empty(a.shape[0], np.int32)
        self.c_predict(a.shape[0], a.ctypes.data, out.ctypes.data)
        return out
