"""The one stage call shape.

Every stage is a module with

    NAME = "<its folder under build/<experiment>/>"
    WRITES = (NAME, ...)          # the folders it writes (the CLI locks them)
    NEEDS_CRYSTAL = True          # False only for stages that make the Crystal
    def run(crystal, cfg, paths, log, **options) -> dict

`crystal` is the loaded Crystal (read-only), `cfg` the validated config, `paths` the
experiment's folders (crystalbench.results.Paths), `log` a callable taking one line of
progress. A stage ends with `finish(...)`: its result dict, with the summary lines the
CLI prints, goes to build/<experiment>/<NAME>/result.json through the one writer.

Stages: train (crystalbench.model.pipeline), quantize (crystalbench.rtl.quantize), synth
(crystalbench.rtl.flow), sim (crystalbench.sim.flow), sim-analog
(crystalbench.analog.flow), sim-hybrid (crystalbench.sim.hybrid), calibrate
(crystalbench.sim.calibrate), compile-c (crystalbench.cbackend.flow), manufacture
(crystalbench.analog.manufacture), bitstream (crystalbench.boards.bitstream), board
(crystalbench.boards.host, the host driver of a board), train-qat
(crystalbench.model.qat); the CLI's
STAGES lists them all.
"""

from __future__ import annotations

from collections.abc import Callable

from .results import Paths, write_result

Log = Callable[[str], None]


def quiet(_msg: str) -> None:
    """A `log` that prints nothing (tests, library use)."""


def finish(name: str, paths: Paths, result: dict, summary: list[str]) -> dict:
    """Write a stage's result.json and return the result with its summary and file."""
    result = {"stage": name, "experiment": paths.experiment, **result, "summary": summary}
    result["result_file"] = str(write_result(paths.stage(name), result))
    return result
