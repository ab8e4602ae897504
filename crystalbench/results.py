"""Where stages write and how: stage folders, the one result writer, locks, kept runs.

* `Paths` is the one place that builds `build/<experiment>/<stage>` paths.
* `write_result` is the one writer of a stage's `result.json`: atomic (temporary file +
  rename, never a half-written file), NaN-safe (`null`, never `NaN`), numpy-safe, and
  stamped with where and when it was measured (`measured`: date, machine, commit).
* `lock` keeps two runs from writing one output folder at once.
* `keep_previous` moves an output a user had aside instead of replacing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import BusyError, CrystalbenchError

RESULT_NAME = "result.json"

_UMASK = os.umask(0)
os.umask(_UMASK)


# ---- atomic, NaN-safe writing ---------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
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


def to_json(obj):
    """Plain JSON values: numpy scalars and arrays to Python, paths to strings, tuples to
    lists, and every NaN or infinity to None (JSON has no NaN; `null` says 'not measured')."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: str | Path, obj) -> None:
    text = json.dumps(to_json(obj), indent=2, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def read_json(path: str | Path, what: str = "file"):
    """Read a JSON file we wrote; a missing or damaged one is a clear error."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CrystalbenchError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CrystalbenchError(f"{path}: {what} is not valid JSON ({e}); delete it and re-run "
                                "the stage that writes it") from None


# ---- where and when -------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(dot_git: Path | None = None) -> str | None:
    """The commit checked out, read from a `.git` folder (or a worktree's `.git` file)
    without running git; default: crystalbench's own checkout. None outside a repository."""
    top = Path(dot_git) if dot_git is not None else Path(__file__).resolve().parents[1] / ".git"
    try:
        if top.is_file():  # a worktree: "gitdir: <path>"
            top = Path(top.read_text().split(":", 1)[1].strip())
        head = (top / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head  # detached
        ref = head.split(" ", 1)[1]
        bases = [top]
        if (top / "commondir").exists():  # a worktree shares the main repository's refs
            bases.append(top / (top / "commondir").read_text().strip())
        for base in bases:
            if (base / ref).exists():
                return (base / ref).read_text().strip()
            packed = base / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except (OSError, IndexError):
        pass
    return None


def machine() -> dict:
    """What a figure was measured on."""
    return {"host": platform.node(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "numpy": np.__version__}


def measured() -> dict:
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
            "crystalbench": __version__, "commit": git_commit()}


def write_result(folder: str | Path, result: dict) -> Path:
    """The one writer of a stage's result.json (atomic, NaN-safe, stamped `measured`)."""
    path = Path(folder) / RESULT_NAME
    atomic_write_json(path, {**result, "measured": result.get("measured") or measured()})
    return path


# ---- stage folders ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Paths:
    """Output folders of one experiment: build/<experiment>/<stage>/."""

    root: Path
    experiment: str

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if not self.experiment or "/" in self.experiment or self.experiment.startswith("."):
            raise CrystalbenchError(f"experiment name {self.experiment!r} cannot be a folder "
                                    "name; use letters, digits, '-' and '_'")

    @property
    def base(self) -> Path:
        return self.root / self.experiment

    def stage(self, name: str) -> Path:
        return self.base / name

    def result(self, name: str) -> Path:
        return self.stage(name) / RESULT_NAME

    @property
    def crystal(self) -> Path:
        return self.stage("crystal")


# ---- nothing lost -------------------------------------------------------------------------------
@contextlib.contextmanager
def lock(folder: str | Path):
    """Hold an exclusive lock on an output folder for the length of a run; a second run
    on the same folder is refused at once, naming the process that holds it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.lock"
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise BusyError(f"{folder} is being written by another crystalbench run ({holder}); "
                            "wait for it to finish, or give this run its own --build-dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


def keep_previous(folder: str | Path) -> Path | None:
    """Move an existing, non-empty folder aside as <name>.prev-<date>-<time>; return where."""
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = folder.with_name(f"{folder.name}.prev-{stamp}")
    n = 2
    while dest.exists():
        dest = folder.with_name(f"{folder.name}.prev-{stamp}-{n}")
        n += 1
    os.replace(folder, dest)
    return dest
