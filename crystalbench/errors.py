"""One error family: every problem a user can fix is a `CrystalbenchError`.

The CLI catches this one class, prints its message on one line (what, where, the fix)
and exits 2. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class CrystalbenchError(Exception):
    """A problem the user can fix; the message names what, where (file, key) and the fix."""


class ConfigError(CrystalbenchError):
    """A config file, key or value that cannot be used."""


class CrystalError(CrystalbenchError):
    """A Crystal that is missing or malformed, or a model that cannot become one."""


class DataError(CrystalbenchError):
    """A data set that cannot be loaded or exported."""


class TrainError(CrystalbenchError):
    """A training run that cannot start, resume or finish."""


class FixedPointError(CrystalbenchError):
    """A Crystal or format the fixed-point stage cannot represent, or a stale artifact."""


class DesignError(CrystalbenchError):
    """An integer net that an RTL shape cannot build."""


class SynthError(CrystalbenchError):
    """Synthesis ran but its output could not be read or is wrong; names the log."""


class SimError(CrystalbenchError):
    """A simulation that could not run or disagrees; names the log or build folder."""


class AnalogError(CrystalbenchError):
    """A core that cannot be built or simulated as configured; names the key or file."""


class SpiceRunError(AnalogError):
    """ngspice did not converge or failed; the message names the netlist and its log."""


class BusyError(CrystalbenchError):
    """Another run is writing the same output folder."""


class ToolNotFound(CrystalbenchError):
    """An external tool is missing; the message says what to install or which variable to set."""


class ToolFailed(CrystalbenchError):
    """An external tool exited with an error; `log` holds its command and output."""

    def __init__(self, msg: str, log: Path, returncode: int):
        super().__init__(msg)
        self.log = log
        self.returncode = returncode


class CBackendError(CrystalbenchError):
    """C code that cannot be generated, loaded or called as asked; names the file and the fix."""


class BoardError(CrystalbenchError):
    """A board that is unknown, absent or cannot take the design; names the fix."""


class LinkError(CrystalbenchError):
    """The host link failed: no reply, a damaged reply, an error status, a board that holds
    another design; the message names what and the fix."""
