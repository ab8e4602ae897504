"""`crystalbench report`: build/report.md from the result.json files present.

Only figures a stage wrote are shown, each table with the machine, date and commit it
was measured on (the `measured` block of the one result writer). Reads JSON only: no
stage is imported, so a report can be made anywhere the build folder is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import CrystalbenchError
from .results import Paths, atomic_write_bytes

REPORT_NAME = "report.md"
BENCH_FILE = "bench/train.json"  # written by `crystalbench bench`


def _num(v, nd: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def measured_line(res: dict) -> str:
    m = res.get("measured")
    if not m:
        return "_measured: not recorded (written before results carried their machine)_"
    mach = m.get("machine", {})
    commit = (m.get("commit") or "unknown")[:10]
    return (f"_measured {m.get('date', '?')} on {mach.get('cpu', '?')} ({mach.get('cores', '?')} "
            f"cores, host {mach.get('host', '?')}), crystalbench commit {commit}_")


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_num(v) if not isinstance(v, str) else v for v in row) + " |"
            for row in rows]
    return out


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def bench_section(root: Path) -> list[str]:
    res = _load(root / BENCH_FILE)
    if not res:
        return []
    rows = [[r.get("config"), r.get("neurons_final"), r.get("test_accuracy"),
             r.get("baseline_test_accuracy"), r.get("frozen_fraction"),
             f"{_num(r.get('speedup'), 2)}x", f"{_num(r.get('training_speedup'), 2)}x"]
            for r in res.get("records", [])]
    lines = ["## Training bench (`build/bench/train.json`)", "", measured_line(res), ""]
    configs = res.get("configs") or []
    if configs:  # per config over seeds: the mean, with the spread beside it

        def pm(st, nd):
            if not st or st.get("mean") is None:
                return "n/a"
            return (f"{_num(st['mean'], nd)} +- {_num(st['std'], nd)} "
                    f"({_num(st['min'], nd)} .. {_num(st['max'], nd)})")

        srows = [[c.get("config"), ",".join(map(str, c.get("seeds", [])))]
                 + [pm((c.get("stats") or {}).get(k), nd) for k, nd in (
                     ("test_accuracy", 4), ("baseline_test_accuracy", 4),
                     ("frozen_fraction", 3), ("neurons_final", 1), ("speedup", 2),
                     ("training_speedup", 2), ("validation_accuracy", 4),
                     ("baseline_validation_accuracy", 4))] for c in configs]
        lines += table(["config", "seeds", "test acc.", "baseline", "frozen",
                        "hidden neurons", "epoch speedup", "whole-run speedup",
                        "validation acc.", "its baseline"], srows)
        lines += ["", "Mean +- sample standard deviation (min .. max) over the seeds; "
                  "per seed:", ""]
        rows = [[r.get("config"), r.get("seed")] + row[1:]
                for r, row in zip(res.get("records", []), rows)]
        return lines + table(["config", "seed", "hidden neurons", "test acc.", "baseline",
                              "frozen", "epoch speedup", "whole-run speedup"], rows) + [""]
    return (lines + table(["config", "hidden neurons", "test acc.", "baseline", "frozen",
                           "epoch speedup", "whole-run speedup"], rows) + [""])


def train_section(res: dict) -> list[str]:
    row = [_num(res.get("test_accuracy")), _num(res.get("neurons_final")),
           _num(res.get("frozen_fraction"), 3), _num(res.get("core_neurons")),
           _num(res.get("frontier_neurons")), _num(res.get("boundary_neurons")),
           _num(res.get("connections")), _num(res.get("epochs")),
           _num(res.get("train_step_seconds"), 1)]
    return table(["test acc.", "hidden neurons", "frozen", "core", "frontier (incl. readout)",
                  "boundary", "connections", "epochs", "training steps (s)"], [row])


def analog_section(res: dict) -> list[str]:
    mc = res.get("monte_carlo") or {}
    settling = _num(res.get("settling_time_us"), 2)
    if res.get("settling_time_us") is None and res.get("unsettled_steps"):
        settling = (f"unsettled in {res['unsettled_steps']} of {res.get('transient_steps')} steps "
                    f"of {_num(res.get('step_us'), 1)} us")
    row = [res.get("opamp_part"), _num(res.get("neurons")), _num(res.get("opamps")),
           _num(res.get("resistors")), _num(res.get("class_agreement_with_torch")),
           _num(res.get("rms_error_lsb"), 3), _num(res.get("max_error_lsb"), 2), settling,
           _num(res.get("power_mw"), 1), _num(res.get("energy_per_inference_nj"), 1),
           f"{_num(mc.get('yield'), 2)} ({mc.get('runs', 0)} boards, tol. {mc.get('tolerance')})"]
    return table(["op-amp", "neurons", "op-amps", "resistors", "agreement with torch",
                  "error RMS (LSB)", "max (LSB)", "settling (us)", "power (mW)",
                  "energy (nJ)", "Monte Carlo yield"], [row])


def fixed_section(res: dict) -> list[str]:
    gold = res.get("golden") or {}
    rows = [[k, (res.get("connections") or {}).get(k), v.get("fixed_point_test_accuracy"),
             v.get("class_agreement_with_torch")] for k, v in gold.items() if isinstance(v, dict)]
    return table(["net", "connections", "test acc.", "agreement with torch"], rows) + [
        "", f"Float test accuracy {_num(gold.get('float_test_accuracy'))} on "
            f"{_num(gold.get('vectors'))} vectors."]


def digital_section(synth: dict | None, sim: dict | None) -> list[str]:
    designs = (synth or {}).get("designs", {})
    runs = (sim or {}).get("runs", {})
    rows = []
    for name, d in designs.items():
        al = d.get("all_logic") or {}
        g, r = runs.get(f"{name}_gates", {}), runs.get(f"{name}_rtl", {})
        fmax = d.get("fmax_mhz")
        rows.append([
            name, f"{_num(d.get('gates'))} + {_num(d.get('flip_flops'))} "
                  f"(+ {_num(d.get('memory_bits'))})",
            (al.get("gates") or 0) + (al.get("flip_flops") or 0) if al else None,
            f"{_num(d.get('lut4'))} LUT4 + {_num(d.get('bram'))} BRAM",
            f"{_num(fmax, 1)} MHz ({d.get('fmax_part') or 'n/a'})",
            f"{_num(r.get('bit_exact_fraction'))} / {_num(g.get('bit_exact_fraction'))}",
            _num(g.get("class_agreement_with_torch")), _num(g.get("fixed_point_test_accuracy")),
            _num(g.get("latency_cycles")),
            _num(None if g.get("latency_ns") is None else g["latency_ns"] / 1e3, 2),
            _num(g.get("energy_per_inference_nj"), 1)])
    return table(["design", "gates + FFs (+ memory bits)", "all as logic", "iCE40",
                  "fmax", "bit-exact RTL / gates", "agreement with torch", "test acc.",
                  "latency (cycles)", "latency (us)", "energy (nJ, iCE40 model)"], rows)


def hybrid_section(res: dict) -> list[str]:
    e, lat = res.get("energy_nj") or {}, res.get("latency_parts_us") or {}
    mc, a = res.get("monte_carlo") or {}, res.get("all_digital") or {}
    rows = [[f"hybrid ({(res.get('adc') or {}).get('part')} -> {res.get('frontier_design')})",
             _num(res.get("class_agreement_with_torch")), _num(res.get("test_accuracy")),
             _num(res.get("bit_exact_fraction")), _num(res.get("energy_per_inference_nj"), 1),
             f"{_num(e.get('analog_nj'), 1)} / {_num(e.get('adc_nj'), 1)} / "
             f"{_num(e.get('digital_nj'), 1)}", _num(res.get("latency_us"), 2),
             f"{_num(lat.get('analog_us'), 2)} / {_num(lat.get('adc_us'), 2)} / "
             f"{_num(lat.get('digital_us'), 2)}",
             f"{_num(mc.get('yield'), 2)} ({mc.get('boards', 0)} boards)"]]
    if a:
        rows.append([f"all-digital ({a.get('design')}, from sim)",
                     _num(a.get("class_agreement_with_torch")), _num(a.get("test_accuracy")),
                     _num(a.get("bit_exact_fraction")), _num(a.get("energy_per_inference_nj"), 1),
                     "", _num(a.get("latency_us"), 2), "", ""])
    return table(["system", "agreement with torch", "test acc.", "bit-exact", "energy (nJ)",
                  "core / ADC / frontier (nJ)", "latency (us)", "core / ADC / frontier (us)",
                  "Monte Carlo yield"], rows) + [
        "", f"{_num(res.get('vectors'))} test samples end to end: ngspice core -> ADC model -> "
            "gate netlist under cocotb + Icarus."]


def c_section(res: dict) -> list[str]:
    rows = []
    for name, v in (res.get("variants") or {}).items():
        chk = v.get("check") or {}
        rows.append([name, _num(v.get("connections")),
                     _num((v.get("size") or {}).get("text_plus_data")),
                     _num((v.get("size_Os") or {}).get("text_plus_data")),
                     f"max rel. error {chk['max_rel_error']:.2g}" if "max_rel_error" in chk
                     else f"bit-exact {_num(chk.get('bit_exact'))}",
                     _num(chk.get("class_agreement_with_torch"))])
    out = table(["variant", "connections", "text + data (B)", "-Os (B)", "check",
                 "agreement with torch"], rows)
    bench = (res.get("bench") or {}).get("contenders") or {}
    c = bench.get("c_f32")
    if c:
        out += ["", f"C float32: {_num(c.get('batch1_latency_us'), 2)} us at batch 1, "
                    f"{_num(c.get('batch1024_ms'), 3)} ms at batch 1,024 (medians, one thread)", ""]
        out += table(["against", "batch 1 (us)", "batch 1,024 (ms)", "C speedup, batch 1",
                      "C speedup, batch 1,024"],
                     [[v.get("label", k), _num(v.get("batch1_latency_us"), 2),
                       _num(v.get("batch1024_ms"), 3), f"{_num(v.get('c_f32_speedup_batch1'), 1)}x",
                       f"{_num(v.get('c_f32_speedup_batch1024'), 1)}x"]
                      for k, v in bench.items() if k != "c_f32"])
    return out


def calibrate_section(res: dict) -> list[str]:
    rows = [[p.get("board"), _num(p["before"]["accuracy"]), _num(p["after"]["accuracy"]),
             _num(p["before"]["agreement"]), _num(p["after"]["agreement"]),
             "kept" if "kept" in p else ("refused" if "refused" in p else "loaded"),
             _num((p.get("gate_level") or {}).get("bit_exact_fraction"))]
            for p in res.get("per_board", [])]
    ab, aa = res.get("accuracy_before") or {}, res.get("accuracy_after") or {}
    return [f"{res.get('boards')} boards ({res.get('opamp')}, {res.get('e_series')} "
            f"+-{res.get('tolerance')}, {res.get('adc_part')}): test accuracy mean "
            f"{_num(ab.get('mean'))} -> {_num(aa.get('mean'))} (float crystal "
            f"{_num(res.get('float_test_accuracy'))}); {res.get('boards_improved_or_equal')} "
            "boards improved or equal.", ""] + table(
        ["board", "accuracy before", "after", "agreement before", "after", "refit",
         "gate level bit-exact"], rows)


def manufacture_section(res: dict) -> list[str]:
    comp, cost = res.get("components") or {}, res.get("cost") or {}
    rt, erc, area = res.get("round_trip") or {}, res.get("erc") or {}, res.get("board_area") or {}
    row = [_num(comp.get("total")), _num(comp.get("resistors")), _num(comp.get("opamps")),
           res.get("opamp_part"), _num(res.get("nets")),
           f"{_num(erc.get('errors'))} errors, {_num(erc.get('warnings'))} warnings",
           _num(cost.get("total_usd"), 2), _num(rt.get("max_diff_lsb"), 6),
           _num(rt.get("class_agreement"))]
    out = table(["parts", "resistors", "op-amp packages", "op-amp", "nets", "ERC (skidl)",
                 "cost (USD)", "round trip, max diff (LSB)", "round trip, class agreement"],
                [row])
    if cost.get("basis"):
        out += ["", f"Prices ({cost.get('price_date')}): {cost['basis']}."]
    if area:
        out += [f"Board area: {_num(area.get('courtyard_mm2'), 0)} mm2 of footprint courtyards, "
                f"{_num(area.get('estimated_mm2'), 0)} mm2 with x{area.get('routing_factor')} "
                "for routing (assumed)."]
    return out


SECTIONS = (
    ("train", "Training", train_section),
    ("analog", "Analog core in ngspice (`sim-analog`)", analog_section),
    ("fixed", "Fixed point, golden model (`quantize`)", fixed_section),
    ("hybrid", "The hybrid end to end (`sim-hybrid`)", hybrid_section),
    ("calibrate", "Hardware in the loop (`calibrate`)", calibrate_section),
    ("c", "C backend (`compile-c`)", c_section),
    ("manufacture", "The analog core as a board (`manufacture`)", manufacture_section),
)


def experiment_section(folder: Path) -> list[str]:
    paths = Paths(folder.parent, folder.name)
    out = [f"## Experiment `{folder.name}`", ""]
    found = False
    for stage, title, render in SECTIONS:
        res = _load(paths.result(stage))
        if res:
            found = True
            out += [f"### {title}", "", measured_line(res), ""] + render(res) + [""]
    synth, sim = _load(paths.result("synth")), _load(paths.result("sim"))
    if synth:
        found = True
        out += ["### Digital designs (`synth`, then `sim` on the gate netlists)", "",
                "synth: " + measured_line(synth),
                "sim: " + (measured_line(sim) if sim else "_not run yet (`make sim`)_"), ""]
        out += digital_section(synth, sim) + [""]
    return out if found else []


def render(root: Path) -> str:
    lines = ["# crystalbench report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `crystalbench "
             f"report` from the result.json files under `{root}`. Every figure below is one a "
             "stage wrote; each table names the machine, date and commit it was measured on, "
             "and each result.json holds a `method` block saying how.", ""]
    lines += bench_section(root)
    for folder in sorted(p for p in root.iterdir()
                         if p.is_dir() and p.name not in ("bench", "mutate") and not p.name.startswith(".")):
        lines += experiment_section(folder)
    return "\n".join(lines) + "\n"


def write(root: Path) -> dict:
    """Write <root>/report.md; return a result with summary lines like a stage's."""
    root = Path(root)
    if not root.is_dir():
        raise CrystalbenchError(f"{root}: no build folder; run a stage first (`make demo`)")
    text = render(root)
    path = root / REPORT_NAME
    atomic_write_bytes(path, text.encode())
    n = text.count("\n### ") + text.count("\n## Training bench")
    return {"summary": [f"{n} tables from the results under {root}"], "result_file": str(path)}
