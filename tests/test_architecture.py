"""Import arrows run one way (ARCHITECTURE: model, rtl, analog -> core; sim -> rtl, analog,
core; boards -> rtl, sim, core; cbackend -> rtl (its fixed-point formats), core; only the
CLI imports every stage). Every import in every
module is checked, function-level ones included; relative imports are resolved."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder on disk -> its part of crystalbench
PARTS = {"crystalbench": "core", "model": "model", "rtl": "rtl", "analog": "analog",
         "sim": "sim", "boards": "boards", "cbackend": "cbackend"}
ALLOWED = {
    "core": {"core"},
    "model": {"core", "model"},
    "rtl": {"core", "rtl"},
    "analog": {"core", "analog"},
    "sim": {"core", "rtl", "analog", "sim"},
    "boards": {"core", "rtl", "sim", "boards"},
    "cbackend": {"core", "rtl", "cbackend"},
    "cli": {"core", "model", "rtl", "analog", "sim", "boards", "cbackend", "cli"},
}
# Third-party imports only a part may make (torch stays in training; hardware packages
# stay out of the core, so a Crystal loads with numpy alone).
FORBIDDEN_THIRD_PARTY = {
    "core": {"torch", "amaranth", "PySpice", "cocotb", "cocotb_tools"},
    "rtl": {"torch", "PySpice"},
    "analog": {"torch", "amaranth", "cocotb"},
    "sim": {"torch"},
    # the C backend reads numpy arrays; the torch side of its benchmark is model/infer.py
    "cbackend": {"torch", "amaranth", "PySpice", "cocotb", "cocotb_tools"},
}


def part_of_module(name: str) -> str | None:
    """crystalbench.<x>... -> the part it belongs to (None: not ours)."""
    bits = name.split(".")
    if bits[0] != "crystalbench":
        return None
    if len(bits) == 1:
        return "core"
    if bits[1] == "cli":
        return "cli"
    return bits[1] if bits[1] in PARTS.values() else "core"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    top = "crystalbench" if rel.parts[0] == "crystalbench" else f"crystalbench.{rel.parts[0]}"
    rest = [p for p in rel.parts[1:] if p != "__init__"]
    return ".".join([top] + rest)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            # `from crystalbench import rtl` imports a subpackage: count the names too (a
            # name that is not a module falls in its module's part anyway)
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def sources():
    for folder in PARTS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_the_scanner_resolves_relative_imports(tmp_path):
    assert module_name(ROOT / "rtl" / "flow.py") == "crystalbench.rtl.flow"
    assert module_name(ROOT / "crystalbench" / "cli.py") == "crystalbench.cli"
    assert part_of_module("crystalbench.sim.runner") == "sim"
    assert part_of_module("crystalbench.results") == "core"
    found = dict((m, n) for n, m in imports(ROOT / "sim" / "flow.py"))
    assert "crystalbench.sim.power" in found and "crystalbench.rtl.fixed" in found
    assert module_name(ROOT / "cbackend" / "flow.py") == "crystalbench.cbackend.flow"
    assert part_of_module("crystalbench.cbackend.emit") == "cbackend"


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_import_arrows_run_one_way(path):
    me = part_of_module(module_name(path))
    bad = []
    for line, mod in imports(path):
        target = part_of_module(mod)
        if target is not None and target not in ALLOWED[me]:
            bad.append(f"line {line}: {me} imports {mod} ({target})")
        if mod.split(".")[0] in FORBIDDEN_THIRD_PARTY.get(me, ()):
            bad.append(f"line {line}: {me} imports {mod}")
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)


def test_the_allowed_arrows_form_no_cycle():
    # model/rtl/analog never reach sim; sim never reaches boards: arrows one way.
    for a, targets in ALLOWED.items():
        for b in targets - {a}:
            assert a not in ALLOWED.get(b, set()) or a == b, (a, b)
