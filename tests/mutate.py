"""`make mutate`: mutation testing of the code that turns data into reported figures.

mutmut (pinned in pyproject's `mutate` extra) changes one thing at a time in the code
(a `<` into `<=`, a constant, an operator, a removed call) and runs the tests that cover
the changed function; a mutant the tests do not notice "survives", and each survivor is
either a missing test or an equivalent change. Not part of CI: it runs for a long time.

The repository keeps each package in its own top-level folder (model/, rtl/, ...) and
installs them as crystalbench.<name>; mutmut needs the package as one tree, so this
script stages one under build/mutate/src/crystalbench (copies; the checkout is never
changed), runs mutmut there, and writes build/mutate/report.md: the kill rate per
package and every surviving mutant with its diff.

    python tests/mutate.py [--max-children N] [--only GLOB ...] [--tests FILE ...]
                           [--mutants NAME_GLOB ...]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "mutate"
PACKAGES = {"crystalbench": "", "model": "model", "rtl": "rtl", "analog": "analog", "sim": "sim",
            "boards": "boards", "cbackend": "cbackend"}
# What turns data into a reported figure (issue: crystalbench/, rtl/fixed.py, the analog
# measurement code, sim/). The CLI, report layout and the cocotb testbench (which runs
# inside the simulator's own Python, out of mutmut's reach) are left out.
TARGETS = [
    "src/crystalbench/adc.py", "src/crystalbench/config.py", "src/crystalbench/crystal.py",
    "src/crystalbench/results.py", "src/crystalbench/toolrun.py",
    "src/crystalbench/rtl/fixed.py",
    "src/crystalbench/analog/flow.py", "src/crystalbench/analog/eseries.py",
    "src/crystalbench/analog/spice.py",
    "src/crystalbench/sim/power.py", "src/crystalbench/sim/flow.py",
    "src/crystalbench/sim/runner.py", "src/crystalbench/sim/hybrid.py",
    "src/crystalbench/sim/calibrate.py", "src/crystalbench/sim/sweep.py",
]
# Tests that check the repository layout itself, not figures.
SKIP_TESTS = ("test_architecture.py",)


# mutmut's stats pass (which tests reach which function) runs with MUTANT_UNDER_TEST=stats,
# and a mutated function called in a child process (a cocotb testbench in Icarus, run in
# the simulator's own build folder) then looks for mutmut's config in that folder and
# fails. The child's hits never reach the parent's stats anyway, so during that pass
# children run the original code; while a mutant is tested, children run the mutant too.
CHILD_STATS_GUARD = '''

# ---- appended by tests/mutate.py (staged copy only) ----
import subprocess as _subprocess

_popen_init = _subprocess.Popen.__init__


def _popen_init_outside_stats(self, *args, env=None, **kwargs):
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        env = {**(os.environ if env is None else env), "MUTANT_UNDER_TEST": "none"}
    _popen_init(self, *args, env=env, **kwargs)


_subprocess.Popen.__init__ = _popen_init_outside_stats
'''


def stage(tests: list[str] | None = None, mutants: list[str] | None = None) -> None:
    if STAGE.exists():
        shutil.rmtree(STAGE)
    src = STAGE / "src" / "crystalbench"
    for folder, sub in PACKAGES.items():
        shutil.copytree(ROOT / folder, src / sub, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", STAGE / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "mutate.py", *SKIP_TESTS))
    shutil.copytree(ROOT / "configs", STAGE / "configs")
    with open(STAGE / "tests" / "conftest.py", "a") as f:
        f.write(CHILD_STATS_GUARD)
    pytest_cfg = (ROOT / "pyproject.toml").read_text().split("[tool.pytest.ini_options]")[1]
    pytest_cfg = pytest_cfg.split("\n[", 1)[0]
    (STAGE / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]" + pytest_cfg + "\n"
        "[tool.mutmut]\n"
        f"only_mutate = {json.dumps(TARGETS)}\n"
        'source_paths = ["src"]\n'
        'also_copy = ["configs"]\n'
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q", "-m", "not slow"]\n'
        + (f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n" if tests else ""))
    (STAGE / "mutants.json").write_text(json.dumps(mutants or []))  # for the report


def run_mutmut(max_children: int, mutants: list[str] | None = None) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [str(Path(sys.executable).parent / "mutmut"), "run", "--max-children", str(max_children),
           *(mutants or [])]
    print("$", " ".join(cmd), f"(in {STAGE})", flush=True)
    subprocess.run(cmd, cwd=STAGE, env=env, check=False)


def results() -> dict[str, str]:
    """mutant name -> status, from `mutmut results --all true`."""
    out = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "results", "--all", "true"],
                         cwd=STAGE, capture_output=True, text=True, check=True).stdout
    status = {}
    for line in out.splitlines():
        if ":" in line:
            name, st = line.strip().rsplit(":", 1)
            status[name.strip()] = st.strip()
    return status


# Survivors looked at: mutant name -> "equivalent: why" or "killed by <test> (<commit>)",
# for a run at a given commit (mutmut numbers the mutants of each function in order, so a
# changed function renumbers them: re-check after changing it).
EXPLAINED = ROOT / "tests" / "mutate_explained.yaml"


def explained() -> dict[str, str]:
    if not EXPLAINED.exists():
        return {}
    import yaml

    return {k: str(v) for k, v in (yaml.safe_load(EXPLAINED.read_text()) or {}).items()}


def staged_cfg() -> dict:
    import tomllib

    return tomllib.loads((STAGE / "pyproject.toml").read_text())["tool"]["mutmut"]


def staged_tests() -> list[str]:
    """The test files the staged run was limited to (--tests), [] for all."""
    return staged_cfg().get("pytest_add_cli_args_test_selection", [])


def selected_mutants() -> list[str]:
    """The mutant names or globs the staged run was limited to (--mutants), [] for all."""
    f = STAGE / "mutants.json"
    return json.loads(f.read_text()) if f.exists() else []


def package_of(mutant: str) -> str:
    bits = mutant.split(".")
    return bits[1] if len(bits) > 2 and bits[1] in PACKAGES else "crystalbench (core)"


def diff(mutant: str) -> str:
    r = subprocess.run([str(Path(sys.executable).parent / "mutmut"), "show", mutant], cwd=STAGE,
                       capture_output=True, text=True, check=False)
    return r.stdout.strip()


def report(status: dict[str, str]) -> Path:
    by_pkg: dict[str, Counter] = defaultdict(Counter)
    for name, st in status.items():
        by_pkg[package_of(name)][st] += 1
    chosen = selected_mutants()
    lines = ["# Mutation testing (mutmut)", "",
             f"Targets: {', '.join(t.removeprefix('src/') for t in staged_cfg()['only_mutate'])}",
             "",
             f"Tests: {', '.join(staged_tests()) or 'all but the slow ones'}", "",
             "Mutants: " + (f"only {', '.join(chosen)} (the others count as not run)"
                            if chosen else "all"), "",
             "| package | mutants | killed | survived | no tests | timeout | not run | kill rate "
             "| kill rate of those run |",
             "|---|---|---|---|---|---|---|---|---|"]
    total = Counter()
    for pkg, c in sorted(by_pkg.items()):
        total += c
        lines.append(_row(pkg, c))
    lines.append(_row("**all**", total))
    lines += ["", "Kill rate = (killed + timeout) / (all mutants); of those run = the same over "
              "the mutants that ran (a run stopped before the end leaves the rest 'not run'). "
              "Timeouts count as killed: the mutant made the tests hang until their time limit.",
              ""]
    survivors = sorted(n for n, st in status.items() if st in ("survived", "no tests"))
    notes = explained()
    open_ = [n for n in survivors if n not in notes]
    lines += [f"## Survivors ({len(survivors)}; {len(survivors) - len(open_)} explained in "
              f"{EXPLAINED.relative_to(ROOT)}, {len(open_)} not)", ""]
    for name in survivors:
        lines += [f"### {name} ({status[name]})", "",
                  f"**{notes[name]}**" if name in notes else "**not explained yet**", "",
                  "```diff", diff(name), "```", ""]
    path = STAGE / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _row(pkg: str, c: Counter) -> str:
    n = sum(c.values())
    killed = c["killed"] + c["timeout"]
    other = n - killed - c["survived"] - c["no tests"]
    ran = n - other
    return (f"| {pkg} | {n} | {c['killed']} | {c['survived']} | {c['no tests']} | {c['timeout']} "
            f"| {other} | {killed / n:.1%} | {killed / ran:.1%} |" if ran
            else f"| {pkg} | {n} | | | | | {other} | | |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", nargs="*", help="glob(s) of TARGETS to mutate (default: all)")
    ap.add_argument("--report-only", action="store_true", help="re-read the last run's results")
    ap.add_argument("--tests", nargs="*", help="run only these test files (default: all). For "
                    "code every stage calls (results.py, toolrun.py), whose mutants would each "
                    "run most of the suite: their own unit tests")
    ap.add_argument("--mutants", nargs="*", help="run only these mutants (mutmut names or globs, "
                    "e.g. 'crystalbench.sim.calibrate.x_run__mutmut_*'): to finish a stopped run's "
                    "functions; the others are reported as not run")
    args = ap.parse_args()
    if args.only:
        TARGETS[:] = [t for t in TARGETS if any(fnmatch.fnmatch(t, f"*{g}") for g in args.only)]
    if not args.report_only:
        stage(args.tests, args.mutants)
        run_mutmut(args.max_children, args.mutants)
    path = report(results())
    print(f"report: {path}")
    print("\n".join(ln for ln in path.read_text().splitlines() if ln.startswith("| ")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
