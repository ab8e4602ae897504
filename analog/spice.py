"""Run a netlist file in ngspice (batch mode, through crystalbench.toolrun) and read its
raw file.

The file that runs is the file on disk, so what a user runs by hand with
`ngspice -b <file>` is what was measured. Each run is

    ngspice -b -r <name>.raw <name>.cir      (log: <name>.log beside the netlist)

found and run by crystalbench.toolrun, so the NGSPICE environment variable picks the
executable and every run leaves its log. The netlist's `.save` lines choose the vectors
in the raw file; `read_raw` parses it (binary or ASCII, as ngspice writes it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crystalbench import toolrun
from crystalbench.errors import SpiceRunError, ToolFailed

__all__ = ["Plot", "SpiceRunError", "parse_raw", "read_raw", "run_file", "vector_key"]


@dataclass
class Plot:
    """One analysis of a raw file: its header and {vector key: data}."""

    title: str
    plotname: str
    flags: str
    points: int  # "No. Points" of the header
    names: list[str]  # as ngspice wrote them, e.g. "v(h1_0)", "i(vcc)", "time"
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


def vector_key(name: str) -> str:
    """The key a vector is read by: node voltages by node name in lower case ("v(h1_0)"
    -> "h1_0"), branch currents as "i(<source>)" ("vcc#branch" -> "i(vcc)")."""
    key = name.strip().lower()
    if key.endswith("#branch"):
        return f"i({key[:-7]})"
    if key.startswith("v(") and key.endswith(")"):
        return key[2:-1]
    return key


_HEADER = re.compile(rb"^([A-Za-z][A-Za-z. ]*):[ \t]*(.*)$")


def _header(data: bytes, pos: int, source: str) -> tuple[dict[str, str], list[str], str, int]:
    """Header lines from `pos` up to "Binary:"/"Values:": (fields, variable names, data
    kind, position of the first data byte)."""
    fields: dict[str, str] = {}
    names: list[str] = []
    in_vars = False
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise SpiceRunError(f"{source}: raw file ends inside a header (no 'Binary:' or "
                                "'Values:' line); the run was cut short")
        line, pos = data[pos:end].rstrip(b"\r"), end + 1
        if in_vars and line[:1] in (b"\t", b" ") and line.strip():
            parts = line.decode(errors="replace").split()
            if len(parts) < 3:
                raise SpiceRunError(f"{source}: bad variable line {line!r} in the raw file")
            names.append(parts[1])
            continue
        m = _HEADER.match(line)
        if not m:
            if not line.strip():
                continue
            raise SpiceRunError(f"{source}: not an ngspice raw file (unexpected header line "
                                f"{line[:60]!r})")
        key, value = m.group(1).decode().strip(), m.group(2).decode(errors="replace").strip()
        if key in ("Binary", "Values"):
            return fields, names, key, pos
        in_vars = key == "Variables"
        fields[key] = value


def _number(fields: dict, key: str, source: str) -> int:
    try:
        return int(fields[key].split()[0])
    except (KeyError, IndexError, ValueError):
        raise SpiceRunError(f"{source}: raw file header has no valid '{key}:' line") from None


def _values(data: bytes, pos: int, kind: str, n_vars: int, n_points: int, complex_: bool
            ) -> tuple[np.ndarray, int]:
    """(points x variables array, position after the data). Binary: float64 point-major
    (complex: real, imaginary pairs). ASCII: per point a line "<index> <value>", then one
    value a line. A file cut short gives the complete points it holds."""
    width = 2 if complex_ else 1
    if kind == "Binary":
        per_point = n_vars * width * 8
        have = min(n_points, (len(data) - pos) // per_point)
        # ngspice writes native-endian doubles: little-endian on x86-64 and ARM
        arr = np.frombuffer(data, "<f8", count=have * n_vars * width, offset=pos)
        arr = arr.reshape(have, n_vars * width)
        if complex_:
            arr = arr[:, 0::2] + 1j * arr[:, 1::2]
        return arr.copy(), pos + have * per_point
    rows, row = [], []
    while len(rows) < n_points and pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        parts = data[pos:end].split()
        if not parts:
            pos = end + 1
            continue
        if not row:  # a point starts with its index
            if len(parts) != 2 or not parts[0].isdigit():
                break
            parts = parts[1:]
        pos = end + 1
        try:
            re_im = [float(v) for v in parts[0].split(b",")]
        except ValueError:
            break  # not a number: the data ends here (checked by the caller)
        row.append(complex(*re_im) if complex_ else re_im[0])
        if len(row) == n_vars:
            rows.append(row)
            row = []
    arr = np.array(rows, complex if complex_ else np.float64).reshape(len(rows), n_vars)
    return arr, pos


def parse_raw(data: bytes, source: str = "<raw>") -> list[Plot]:
    """Every plot (analysis) of an ngspice raw file, in file order."""
    plots, pos = [], 0
    while True:
        while pos < len(data) and data[pos] in b" \t\r\n":
            pos += 1
        if pos >= len(data):
            break
        fields, names, kind, pos = _header(data, pos, source)
        n_vars = _number(fields, "No. Variables", source)
        n_points = _number(fields, "No. Points", source)
        if len(names) != n_vars:
            raise SpiceRunError(f"{source}: raw file lists {len(names)} variables, its header "
                                f"says {n_vars}")
        complex_ = "complex" in fields.get("Flags", "").lower()
        arr, pos = _values(data, pos, kind, n_vars, n_points, complex_)
        plot = Plot(title=fields.get("Title", ""), plotname=fields.get("Plotname", ""),
                    flags=fields.get("Flags", ""), points=n_points, names=names)
        for i, name in enumerate(names):
            plot.vectors[vector_key(name)] = arr[:, i]
        plots.append(plot)
        if len(arr) < n_points:  # cut short: nothing complete follows
            break
    return plots


def read_raw(path: str | Path) -> dict[str, np.ndarray]:
    """The vectors of the last analysis in an ngspice raw file, keyed by `vector_key`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpiceRunError(f"{path}: no raw file (ngspice ran no analysis?)") from None
    plots = parse_raw(data, str(path))
    if not plots:
        raise SpiceRunError(f"{path}: raw file holds no analysis")
    return plots[-1].vectors


def _errors(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower()]
    return "; ".join(dict.fromkeys(lines))[:400]  # de-duplicated, in order


def run_file(path: str | Path, points: int | None = None, t_stop: float | None = None,
             timeout: float | None = None) -> tuple[dict[str, np.ndarray], float]:
    """Run `path` in ngspice, return ({vector: data}, seconds of the run).

    The raw file and the log go beside the netlist (<name>.raw, <name>.log). Node
    voltages are keyed by node name (lower case), branch currents by 'i(<source>)', the
    transient's time by 'time'. `points` (DC sweep length) or `t_stop` (transient end)
    check that the run finished. A missing ngspice raises ToolNotFound (names NGSPICE);
    a failed or short run raises SpiceRunError naming the netlist and the log."""
    path = Path(path)
    raw, log = path.with_suffix(".raw"), path.with_suffix(".log")
    raw.unlink(missing_ok=True)  # never read an earlier run's output
    t0 = time.perf_counter()
    try:
        toolrun.run("ngspice", ["-b", "-r", raw.name, path.name], log=log, cwd=path.parent,
                    timeout=timeout)
    except ToolFailed as e:
        text = log.read_text(errors="replace") if log.exists() else str(e)
        raise SpiceRunError(f"ngspice failed on {path}: {_errors(text) or e}; see {log}"
                            ) from None
    if not raw.exists():
        raise SpiceRunError(f"ngspice ran {path} but wrote no raw file (no analysis in the "
                            f"netlist?); see {log}")
    out = read_raw(raw)
    seconds = time.perf_counter() - t0
    if not out or all(v.size == 0 for v in out.values()):
        raise SpiceRunError(f"ngspice returned no data for {path} (no convergence?); see {log}")
    length = max(v.size for v in out.values())
    if points is not None and length != points:
        raise SpiceRunError(f"ngspice stopped after {length} of {points} sweep points of {path} "
                            f"(no convergence?); see {log}")
    if t_stop is not None and ("time" not in out or out["time"][-1] < t_stop * (1 - 1e-6)):
        raise SpiceRunError(f"ngspice's transient of {path} stopped before {t_stop:g} s "
                            f"(timestep too small?); see {log}")
    return out, seconds
