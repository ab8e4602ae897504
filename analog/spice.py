"""Run a netlist file in ngspice's shared library (through PySpice) and read its vectors.

The text that runs is the text of the file on disk, so what a user runs by hand with
`ngspice -b <file>` is what was measured.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .netlist import AnalogError


class SpiceRunError(AnalogError):
    """ngspice did not converge or failed; the message names the netlist file."""


_NG = None


def _ngspice():
    global _NG
    if _NG is None:
        logging.getLogger("PySpice").setLevel(logging.CRITICAL)  # ngspice chatter (gmin steps)
        from PySpice.Spice.NgSpice.Shared import NgSpiceShared

        _NG = NgSpiceShared.new_instance()
    return _NG


def run_file(path: Path, points: int | None = None, t_stop: float | None = None
             ) -> tuple[dict[str, np.ndarray], float]:
    """Load `path` into shared ngspice, run its analysis, return ({vector: data}, seconds).
    Node voltages are keyed by node name (lower case), branch currents by 'i(<source>)'.
    `points` (DC sweep length) or `t_stop` (transient end) check the run finished."""
    path = Path(path)
    ng = _ngspice()
    text = path.read_text()
    t0 = time.perf_counter()
    try:
        ng.destroy()
        ng.remove_circuit()
    except Exception:  # nothing loaded yet
        pass
    try:
        ng.load_circuit(text)
        ng.run()
    except Exception as e:
        # PySpice calls any ngspice stderr output a failure, gmin-stepping notes included;
        # only lines that say "error" are, and the data is checked below.
        errors = [ln for ln in (ng.stderr + "\n" + ng.stdout).splitlines()
                  if "error" in ln.lower()]
        if errors or not ng.plot_names or ng.last_plot == "const":
            tail = "\n".join((errors or ng.stderr.strip().splitlines())[-12:])
            raise SpiceRunError(f"ngspice failed on {path} ({type(e).__name__}: {e}); run "
                                f"`ngspice -b {path}` to see the whole log\n{tail}") from None
    seconds = time.perf_counter() - t0
    plot_name = ng.last_plot
    if plot_name == "const":
        raise SpiceRunError(f"ngspice produced no analysis for {path} (no convergence?); run "
                            f"`ngspice -b {path}` to see why")
    out = {}
    for name, vec in ng.plot(None, plot_name).items():
        data = np.asarray(vec._data).real.astype(np.float64)  # PySpice keeps raw data here
        key = name.lower()
        if key.endswith("#branch"):
            key = f"i({key[:-7]})"
        elif key.startswith("v(") and key.endswith(")"):
            key = key[2:-1]
        out[key] = data
    if not out or all(v.size == 0 for v in out.values()):
        raise SpiceRunError(f"ngspice returned no data for {path}; run `ngspice -b {path}`")
    length = max(v.size for v in out.values())
    if points is not None and length != points:
        raise SpiceRunError(f"ngspice stopped after {length} of {points} sweep points of {path} "
                            f"(no convergence?); run `ngspice -b {path}` to see why")
    if t_stop is not None and ("time" not in out or out["time"][-1] < t_stop * (1 - 1e-6)):
        raise SpiceRunError(f"ngspice's transient of {path} stopped before {t_stop:g} s "
                            f"(timestep too small?); run `ngspice -b {path}` to see why")
    return out, seconds
