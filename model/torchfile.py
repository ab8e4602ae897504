"""Reading torch files without running code from them.

Every torch file model/ reads (checkpoints, users' models) goes through `load`:
`torch.load(weights_only=True)`, so a file can hold tensors and plain containers but
never run a function; module classes are allowed only when the caller names them. A
missing file, a folder, a file torch did not write, or a class that is not allowed is one
clear error of the caller's class, naming the file.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from crystalbench.errors import CrystalbenchError

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load(path: str | Path, what: str, error: type[CrystalbenchError], allowed: tuple = (),
         refused: str = ""):
    """`torch.load(path, weights_only=True)`, allowing only the classes in `allowed` besides
    tensors and plain containers. Every problem raises `error` naming `path` (`what` says
    what the file should be); a class or function outside `allowed` is named, followed by
    `refused` (what is supported)."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: {what} not found")
    if not path.is_file():
        raise error(f"{path}: is a folder; name the {what} file itself")
    try:
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on pickle protocols
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    except Exception as e:  # torch raises UnpicklingError, KeyError, RuntimeError, EOFError...
        found = isinstance(e, pickle.UnpicklingError) and _GLOBAL.search(str(e))
        if found:
            raise error(f"{path}: holds {found.group(1)}, which a {what} may not hold; it was "
                        f"not loaded and nothing in it ran. {refused}".strip()) from None
        if zipfile.is_zipfile(path):
            raise error(f"{path}: a torch file that cannot be read safely as a {what} "
                        f"({_reason(e)})") from None
        raise error(f"{path}: not a {what} written by torch.save (torch cannot read it: "
                    f"{type(e).__name__})") from None


def _reason(e: Exception) -> str:
    text = str(e)
    if "WeightsUnpickler error:" in text:  # the line that says what the unpickler refused
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else type(e).__name__
