"""The co-design sweep (sim/sweep.py): the grid by hand, the verdict by hand, and a sweep
on the tiny crystal through a LocalCluster whose figures equal the stage results computed
directly (sim-analog and sim-hybrid run here on the same config), resumed and extended."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from crystalbench import config as cfgmod
from crystalbench.errors import ConfigError
from crystalbench.results import Paths
from crystalbench.sim import sweep

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import tiny_crystal  # noqa: E402


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ---- the grid --------------------------------------------------------------------------------
def test_grid_axes_multiply_mappings_move_together_points_add(tmp_path):
    g = write(tmp_path / "g.yaml", """
base: {analog.monte_carlo_runs: 0, analog.supply_v: 3.0}
axes:
  part:
    - {analog.opamp: mcp6002, analog.step_us: 60}
    - {analog.opamp: opa835, analog.step_us: 10}
  analog.power_gating: [false, true]
  analog.r_min: [100.0, 1000.0, 10000.0]
points:
  - {analog.opamp: opa2333, analog.supply_v: 5.0}
""")
    pts = sweep.load_grid(g)
    assert len(pts) == 2 * 2 * 3 + 1
    assert pts[0] == {"analog.monte_carlo_runs": 0, "analog.supply_v": 3.0, "analog.opamp": "mcp6002",
                      "analog.step_us": 60, "analog.power_gating": False, "analog.r_min": 100.0}
    assert pts[-2] == {"analog.monte_carlo_runs": 0, "analog.supply_v": 3.0, "analog.opamp": "opa835",
                       "analog.step_us": 10, "analog.power_gating": True, "analog.r_min": 10000.0}
    # a point overrides the base
    assert pts[-1] == {"analog.monte_carlo_runs": 0, "analog.supply_v": 5.0, "analog.opamp": "opa2333"}
    assert sweep.set_args({"analog.opamp": "opa835", "analog.supply_v": None}) == [
        'analog.opamp="opa835"', "analog.supply_v=null"]
    assert sweep.label(pts[-1], {"analog.monte_carlo_runs": 0, "analog.supply_v": 3.0}) == (
        "supply_v=5.0 opamp=opa2333")


@pytest.mark.parametrize("text,message", [
    ("axes: {analog.opamp: []}\n", r"axes\.analog\.opamp must be a non-empty list"),
    ("base: {analog.opamp: opa835}\n", r"the grid has no points; give axes or points"),
    ("axes: {part: [{opamp: opa835}]}\n", r"axes\.part\[0\] must map dotted config keys"),
    ("points: {analog.opamp: opa835}\n", r"points must be a list"),
    ("sweep: 1\n", r"a grid is a mapping with keys base, axes and/or points \(got \['sweep'\]\)"),
    ("[1, 2]\n", r"a grid is a mapping .*\(got list\)"),
])
def test_grid_errors_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        sweep.load_grid(write(tmp_path / "g.yaml", text))


def test_missing_grid_and_bad_point_config_refused_before_work(tmp_path):
    with pytest.raises(ConfigError, match=r"grid file not found"):
        sweep.load_grid(tmp_path / "none.yaml")
    cfg = write(tmp_path / "c.yaml", "experiment: tiny\n")
    with pytest.raises(ConfigError, match=r"^grid point 2 \(opamp=ua741\): .*analog\.opamp: 'ua741' "
                                          r"is not allowed"):
        sweep.plan(tiny_crystal(), cfg, [{"analog.opamp": "opa835"}, {"analog.opamp": "ua741"}],
                   tmp_path, 10)


def test_keys_follow_what_defines_a_task(tmp_path):
    cfg = write(tmp_path / "c.yaml", "experiment: tiny\n")
    c = tiny_crystal()
    pts = [{"analog.opamp": "opa835"}, {"analog.opamp": "opa837"}, {"analog.opamp": "opa835"},
           {"analog.opamp": "opa835", "adc.bits": 6}]
    dig, todo = sweep.plan(c, cfg, pts, tmp_path, 10)
    assert len(todo) == 3  # the repeated point is one point
    assert len(dig) == 2  # adc.bits makes another digital design; the op-amp does not
    assert todo[0][3] == todo[1][3] != todo[2][3]
    _, todo20 = sweep.plan(c, cfg, pts[:1], tmp_path, 20)
    assert todo20[0][0] != todo[0][0]  # another vector count: another point
    # the ADC part makes another point but not another analog core; adc.bits does both
    _, todo_adc = sweep.plan(c, cfg, [{"adc.part": "mcp3008"}, {"adc.part": "ad7091r"},
                                      {"adc.part": "ad7091r", "adc.bits": 6}], tmp_path, 10)
    assert len({t[0] for t in todo_adc}) == 3
    assert todo_adc[0][5] == todo_adc[1][5] != todo_adc[2][5]
    assert todo_adc[0][5] != todo[0][5]  # another op-amp: another analog core


# ---- the verdict -----------------------------------------------------------------------------
def row(e, a=0.0, adc=0.0, f=0.0, agreement=1.0):
    return {"status": "ok", "energy_nj": e, "analog_nj": a, "adc_nj": adc, "digital_nj": f,
            "agreement": agreement}


def test_verdict_by_hand():
    v = sweep.verdict(row(60.0, 10.0, 40.0, 10.0), row(30.0))
    assert v["winner"] == "all-digital" and v["stopped_by"] == "ADC" and v["ratio"] == 2.0
    assert "ADC 40 nJ + frontier 10 nJ = 50 nJ already exceed the all-digital 30 nJ by 20 nJ" in v["text"]
    # with the converter's facts: (30 - 10) nJ over 8 conversions = 2.5 nJ each at most
    v = sweep.verdict({**row(60.0, 10.0, 40.0, 10.0), "adc_channels": 8, "adc_part": "mcp3008",
                       "adc_nj_per_conversion": 5.0}, row(30.0))
    assert v["text"].endswith("the 8 conversions would have to cost at most 2.5 nJ each, "
                              "against the mcp3008's 5 nJ")
    v = sweep.verdict(row(60.0, 45.0, 5.0, 10.0), row(30.0))
    # 30 - 5 - 10 = 15 nJ left for the core; it takes 45: 30 nJ over, 3x
    assert v["stopped_by"] == "analog core"
    assert "exceeds the 15 nJ left after ADC 5 nJ and frontier 10 nJ by 30 nJ (3x)" in v["text"]
    assert "waits" not in v["text"]
    # an always-on core that spends 40 of its 45 nJ waiting for a slow frontier says so
    v = sweep.verdict({**row(60.0, 45.0, 5.0, 10.0), "analog_wait_nj": 40.0,
                       "interval_us": 12.5}, row(30.0))
    assert v["text"].endswith("(3x); 40 nJ of the core's energy is its on-power while it waits "
                              "for the frontier (one inference per 12.5 us)")
    v = sweep.verdict(row(20.0, 5.0, 5.0, 10.0), row(30.0))
    assert v["winner"] == "hybrid" and v["ratio"] == 1.5
    assert sweep.verdict(None, row(30.0))["winner"] is None


def test_best_takes_only_agreeing_points():
    rows = [row(10.0, agreement=0.985), row(20.0, agreement=0.99), row(30.0),
            {"status": "failed", "energy_nj": None, "agreement": None}]
    assert sweep.best(rows)["energy_nj"] == 20.0
    assert sweep.best(rows[:1]) is None


def test_pareto_front_by_hand():
    # lower x and higher y win: (1, 0.5), (2, 0.9), (4, 0.95); (3, 0.8) and (5, 0.9) lose
    xs, ys = [3, 1, 5, 2, 4], [0.8, 0.5, 0.9, 0.9, 0.95]
    assert sweep._front(xs, ys) == [1, 3, 4]


# ---- a sweep on the tiny crystal ---------------------------------------------------------------
CONFIG = """experiment: tiny
rtl: {shapes: serial, digital_shapes: serial, large_part: none, abc: fast}
analog: {monte_carlo_runs: 0, tolerances: [0.01], transient_samples: 3}
hybrid: {boards: 0}
"""
GRID = """base: {analog.supply_v: 3.0, analog.adc_ref_v: 0.5, analog.input_v: 0.9, analog.vref_v: 0.9}
axes:
  part:
    - {analog.opamp: mcp6002, analog.step_us: 60.0}
    - {analog.opamp: opa835, analog.step_us: 10.0, analog.power_gating: true}
points:
  - {analog.opamp: lm358}
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~3 min on an idle machine (three tiny designs synthesized)
def test_two_point_sweep_on_a_local_cluster_equals_the_stages(tmp_path):
    from crystalbench.analog import flow as analog_flow
    from crystalbench.sim import hybrid

    c = tiny_crystal(n_test=10)
    cfg_path = write(tmp_path / "tiny.yaml", CONFIG)
    grid = write(tmp_path / "grid.yaml", GRID)
    paths = Paths(tmp_path / "build", c.name)
    cfg = cfgmod.load(cfg_path)
    lines = []
    res = sweep.run(c, cfg, paths, lines.append, grid=grid, config_path=cfg_path, workers=2,
                    vectors=10, progress=False)
    out = paths.stage("sweep")
    assert res["points"] == 3 and res["points_ok"] == 2 and res["computed_points"] == 3
    assert "LocalCluster of 2 worker processes" in lines[0]

    # the LM358 cannot swing 1.2 V on +-1.5 V rails: recorded with its error and log
    (bad,) = res["points_failed"]
    assert bad["label"] == "opamp=lm358" and bad["error"].startswith("CrystalbenchError: sim-analog "
                                                                     "failed: AnalogError: ")
    assert "does not fit the TI LM358" in bad["error"]
    assert "FAILED" in Path(bad["log"]).read_text()

    # the opa835 point, computed here directly by the stages on the same config (the
    # digital design's folders are the sweep's: synth is deterministic and slow)
    dig = json.loads(next((out / "digital").glob("*/digital.json")).read_text())
    over = sweep.load_grid(grid)[1]
    pcfg = cfgmod.load(cfg_path, sweep.set_args(over))
    direct = Paths(tmp_path / "direct", c.name)
    direct.base.mkdir(parents=True)
    for name in ("fixed", "synth", "sim"):
        os.symlink(Path(dig["folder"]) / c.name / name, direct.stage(name))
    a = analog_flow.run(c, pcfg, direct)
    h = hybrid.run(c, pcfg, direct, vectors=10, boards=0)
    key = sweep.task_key(sweep.cm.digest(c), pcfg, sweep.POINT_SECTIONS, 10)
    p = json.loads((out / "points" / key / "point.json").read_text())
    assert p["status"] == "ok" and p["opamp"] == "opa835" and p["power_gating"] is True
    # the core: sim-analog's energy to settle, plus its on-power held through the ADC's
    # conversions (4 boundary neurons on one MCP3008: 4 x 5 us = 20 us); gated, the
    # decoupling recharge is the lesser of sim-analog's C x V^2 and the on-power while off
    off_us = h["inference_interval_us"] - a["settling_time_us"] - 20.0
    recharge = min(a["decoupling_energy_nj"], a["power_mw"] * off_us)
    assert p["analog_nj"] == pytest.approx(a["energy_per_inference_nj"] - a["decoupling_energy_nj"]
                                           + recharge + a["power_mw"] * 20.0, rel=1e-9)
    assert p["analog_nj_per_neuron"] == pytest.approx(a["energy_per_neuron_nj"], rel=1e-9)
    assert (p["opamps"], p["resistors"], p["neurons"]) == (a["opamps"], a["resistors"], a["neurons"])
    assert p["energy_nj"] == pytest.approx(h["energy_per_inference_nj"], rel=1e-9)
    assert p["digital_nj"] == pytest.approx(h["energy_nj"]["digital_nj"], rel=1e-9)
    assert p["latency_us"] == pytest.approx(h["latency_us"], rel=1e-9)
    assert p["interval_us"] == pytest.approx(h["inference_interval_us"], rel=1e-9)
    assert p["analog_wait_nj"] == 0.0  # gated: off while it waits
    assert (p["accuracy"], p["agreement"]) == (h["test_accuracy"], h["class_agreement_with_torch"])
    # the ADC by hand: 4 boundary neurons on one MCP3008, VREF = 0.5 V x 256/255, each
    # conversion (5 V x 425 uA + VREF x 100 uA) over 5 us
    vref = 0.5 * 256 / 255
    assert p["adc_nj"] == pytest.approx(4 * (5 * 425e-6 + vref * 100e-6) * 5e-6 * 1e9, rel=1e-12)
    assert p["energy_nj"] == pytest.approx(p["analog_nj"] + p["adc_nj"] + p["digital_nj"], rel=1e-12)

    # the all-digital rows are sim's gate-level figures of the digital design
    sim = json.loads((Path(dig["folder"]) / c.name / "sim" / "result.json").read_text())
    table = sweep.read_points(out)
    ad = [r for r in table if r["kind"] == "all-digital"]
    assert {r["design"] for r in ad} == {"all_digital_serial", "all_digital_small_serial"}
    for r in ad:
        g = sim["runs"][f"{r['design']}_gates"]
        assert float(r["energy_nj"]) == pytest.approx(g["energy_per_inference_nj"], rel=1e-5)
        assert float(r["latency_us"]) == pytest.approx(g["latency_cycles"] / 12.0, rel=1e-5)
        assert float(r["agreement"]) == g["class_agreement_with_torch"]
    # best all-digital = lowest energy among agreeing designs; the verdict from the rows
    bd = min((g["energy_per_inference_nj"], n) for n, g in
             ((r["design"], sim["runs"][f"{r['design']}_gates"]) for r in ad)
             if g["class_agreement_with_torch"] >= 0.99)
    assert res["best_all_digital"]["design"] == bd[1]
    hyb = [json.loads(f.read_text()) for f in (out / "points").glob("*/point.json")]
    bh = min(r["energy_nj"] for r in hyb if r["status"] == "ok" and r["agreement"] >= 0.99)
    assert res["best_hybrid"]["energy_nj"] == bh
    # the lowest core share of an inference per neuron, over the agreeing points
    assert res["lowest_core_nj_per_neuron"] == pytest.approx(min(
        r["analog_nj"] / r["neurons"] for r in hyb if r["status"] == "ok" and r["agreement"] >= 0.99))
    assert res["verdict"]["winner"] == ("hybrid" if bh < bd[0] else "all-digital")
    for f in ("pareto_energy_accuracy.png", "pareto_latency_energy.png"):
        assert (out / f).stat().st_size > 5000
    report = (out / "report.md").read_text()
    assert res["verdict"]["text"] in report and "Best hybrid point" in report
    assert json.loads((out / "result.json").read_text())["points_ok"] == 2
    csv_before = (out / "points.csv").read_text()

    # a re-run computes nothing new but the failed point (retried), and writes the same table
    res2 = sweep.run(c, cfg, paths, grid=grid, config_path=cfg_path, workers=1, vectors=10,
                     progress=False)
    assert res2["computed_points"] == 1 and res2["points_ok"] == 2
    assert (out / "points.csv").read_text() == csv_before

    # one point more: only it (and the failed one, again) is computed
    grid3 = write(tmp_path / "grid3.yaml", GRID + "  - {analog.opamp: opa837, analog.step_us: 10.0}\n")
    res3 = sweep.run(c, cfg, paths, grid=grid3, config_path=cfg_path, workers=1, vectors=10,
                     progress=False)
    assert res3["computed_points"] == 2 and res3["points"] == 4 and res3["points_ok"] == 3
    np.testing.assert_equal(sorted(r["point"] for r in sweep.read_points(out) if r["kind"] == "hybrid"),
                            sorted(json.loads(f.read_text())["point"]
                                   for f in (out / "points").glob("*/point.json")))


# ---- the verdict's exact texts (mutation run at d451a97) -------------------------------------
def test_verdict_no_comparison_texts():
    assert sweep.verdict(None, row(30.0)) == {
        "winner": None, "text": "no comparison: no hybrid point reached agreement >= 0.99"}
    assert sweep.verdict(row(30.0), None) == {
        "winner": None, "text": "no comparison: no all-digital design reached agreement >= 0.99"}


def test_verdict_names_what_kept_agreeing_designs_out():
    """Agreeing all-digital designs priced above their fmax are not 'none reached
    agreement': the text names each and why; a non-agreeing one is left out of the list."""
    over = {"label": "all_digital_serial", "status": "over fmax", "agreement": 0.995,
            "error": "priced at rtl.clock_mhz = 23, above its 20.30 MHz fmax"}
    low = {"label": "all_digital_small_serial", "status": "ok", "agreement": 0.985}
    failed = {"point": "d1", "status": "failed", "agreement": 0.99}
    assert sweep.verdict(row(30.0), None, [], [over, low, failed]) == {
        "winner": None, "text": "no comparison: no all-digital design counts: those with "
        "agreement >= 0.99 are kept out (all_digital_serial: over fmax, priced at "
        "rtl.clock_mhz = 23, above its 20.30 MHz fmax; d1: failed)"}
    assert sweep.verdict(row(30.0), None, [], [low])["text"] == (
        "no comparison: no all-digital design reached agreement >= 0.99")
    assert sweep.verdict(None, row(30.0), [{**row(9.0), "label": "p", "status": "failed",
                                            "agreement": 1.0}])["text"] == (
        "no comparison: no hybrid point counts: those with agreement >= 0.99 are kept out "
        "(p: failed)")
    nan = {**row(float("nan")), "label": "q"}
    assert sweep.verdict(row(30.0), None, [], [nan])["text"] == (
        "no comparison: no all-digital design counts: those with agreement >= 0.99 are kept "
        "out (q: no energy figure)")


def test_verdict_hybrid_wins_text_and_equal_energies():
    assert sweep.verdict(row(20.0, 5.0, 5.0, 10.0), row(30.0)) == {
        "winner": "hybrid", "ratio": 1.5,
        "text": "the hybrid wins: 20 nJ against 30 nJ per inference (1.5x less)"}
    # equal energies: the hybrid does not win; 30 - 10 - 10 = 10 nJ left, the core takes 10
    v = sweep.verdict(row(30.0, 10.0, 10.0, 10.0), row(30.0))
    assert v == {"winner": "all-digital", "ratio": 1.0, "stopped_by": "analog core", "text": (
        "the all-digital net wins: 30 nJ against the best hybrid's 30 nJ (1x); what stops the "
        "hybrid: the analog core's 10 nJ exceeds the 10 nJ left after ADC 10 nJ and frontier "
        "10 nJ by 0 nJ (1x)")}


def test_verdict_adc_case_full_text():
    v = sweep.verdict({**row(60.0, 10.0, 40.0, 10.0), "adc_channels": 8, "adc_part": "mcp3008",
                       "adc_nj_per_conversion": 5.0}, row(30.0))
    assert v == {"winner": "all-digital", "ratio": 2.0, "stopped_by": "ADC", "text": (
        "the all-digital net wins: 30 nJ against the best hybrid's 60 nJ (2x); what stops the "
        "hybrid: ADC 40 nJ + frontier 10 nJ = 50 nJ already exceed the all-digital 30 nJ by "
        "20 nJ, so no analog core can win with this converter and frontier; the ADC is the "
        "largest of the two; even with a core of 0 nJ, the 8 conversions would have to cost at "
        "most 2.5 nJ each, against the mcp3008's 5 nJ")}


def test_verdict_adc_and_frontier_boundaries():
    # 25 + 10 = 35 >= 30 although 25 - 10 < 30: still the converter and frontier
    v = sweep.verdict(row(60.0, 25.0, 25.0, 10.0), row(30.0))
    assert v["stopped_by"] == "ADC"
    assert "ADC 25 nJ + frontier 10 nJ = 35 nJ already exceed the all-digital 30 nJ by 5 nJ" in v["text"]
    # ADC + frontier exactly the all-digital energy: already no room for a core
    v = sweep.verdict(row(60.0, 30.0, 20.0, 10.0), row(30.0))
    assert v["stopped_by"] == "ADC"
    assert v["text"].endswith("ADC 20 nJ + frontier 10 nJ = 30 nJ already exceed the all-digital "
                              "30 nJ by 0 nJ, so no analog core can win with this converter and "
                              "frontier; the ADC is the largest of the two")
    # the frontier larger than the ADC names the frontier
    v = sweep.verdict({**row(60.0, 25.0, 10.0, 25.0), "adc_channels": 8, "adc_part": "mcp3008",
                       "adc_nj_per_conversion": 5.0}, row(30.0))
    assert v["stopped_by"] == "digital frontier"
    assert v["text"].endswith("by 5 nJ, so no analog core can win with this converter and "
                              "frontier; the digital frontier is the largest of the two")
    # ADC equal to the frontier names the ADC
    v = sweep.verdict(row(60.0, 20.0, 20.0, 20.0), row(30.0))
    assert v["stopped_by"] == "ADC"
    # a frontier that alone takes all of the all-digital energy leaves no per-conversion budget
    v = sweep.verdict({**row(90.0, 30.0, 30.0, 30.0), "adc_channels": 8, "adc_part": "mcp3008",
                       "adc_nj_per_conversion": 5.0}, row(30.0))
    assert v["text"].endswith("; the ADC is the largest of the two")


def test_verdict_analog_core_small_budget_and_short_wait():
    # 30 - 14.5 - 15 = 0.5 nJ left; the core takes 30.5: 30 nJ over, 61x; 0.5 nJ of it waiting
    v = sweep.verdict({**row(60.0, 30.5, 14.5, 15.0), "analog_wait_nj": 0.5,
                       "interval_us": 12.5}, row(30.0))
    assert v["text"].endswith(
        "what stops the hybrid: the analog core's 30.5 nJ exceeds the 0.5 nJ left after ADC "
        "14.5 nJ and frontier 15 nJ by 30 nJ (61x); 0.5 nJ of the core's energy is its on-power "
        "while it waits for the frontier (one inference per 12.5 us)")
    # an undefined (NaN) converter energy leaves no budget to name
    v = sweep.verdict(row(60.0, 10.0, float("nan"), 10.0), row(30.0))
    assert v["stopped_by"] == "analog core"
    assert v["text"].endswith("(2x); what stops the hybrid: ")


def test_verdict_analog_core_budget_rounded_to_zero():
    # in floats 16.77... + 46.31... < 63.09... and yet 63.09... - 16.77... - 46.31... == 0:
    # no budget left to divide by, so no sentence (and no ZeroDivisionError)
    ed, adc, f = 63.095428902086205, 16.778794411542226, 46.316634490543976
    assert adc + f < ed and ed - adc - f == 0.0
    v = sweep.verdict(row(100.0, 50.0, adc, f), row(ed))
    assert v["stopped_by"] == "analog core"
    assert v["text"].endswith("what stops the hybrid: ")


# ---- the grid's messages, labels, task keys and the front (mutation run at d451a97) ---------
DOTTED = "must map dotted config keys to values, e.g. {analog.opamp: opa835}"


@pytest.mark.parametrize("text,message", [
    ("axes: [1, 2]\n", "axes must map a key (or a label) to a list of values"),
    ("base: {opamp: opa835}\naxes: {analog.supply_v: [3.0]}\n", f"base {DOTTED}"),
    ("axes: {part: [{analog.opamp: opa835}, {opamp: opa835}]}\n", f"axes.part[1] {DOTTED}"),
    ("axes: {opamp: [opa835]}\n", f"axes.opamp[0] {DOTTED}"),
    ("points: [{analog.opamp: opa835}, {opamp: opa835}]\n", f"points[1] {DOTTED}"),
])
def test_grid_error_messages_exact(tmp_path, text, message):
    g = write(tmp_path / "g.yaml", text)
    with pytest.raises(ConfigError) as e:
        sweep.load_grid(g)
    assert str(e.value) == f"{g}: {message}"


def test_grid_not_yaml_names_the_file(tmp_path):
    g = write(tmp_path / "g.yaml", "axes: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        sweep.load_grid(g)
    assert str(e.value).startswith(f"{g}: the grid is not valid YAML: ")


def test_label_last_part_of_the_key_and_base():
    assert sweep.label({"analog.adc.bits": 6, "analog.opamp": "opa835"},
                       {"analog.opamp": "opa835"}) == "bits=6"
    assert sweep.label({"analog.opamp": "opa835"}, {"analog.opamp": "opa835"}) == "base"
    assert sweep.label({}, {}) == "base"


def test_task_key_exact_and_independent_of_order():
    import hashlib
    cfg = {"analog": {"opamp": "opa835"}, "adc": {"bits": 6}, "training": {"epochs": 3}}
    stamp = {"adc": {"bits": 6}, "analog": {"opamp": "opa835"}, "crystal": "abc", "mode": "x",
             "vectors": 10, "version": sweep.VERSION}
    want = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]
    assert sweep.task_key("abc", cfg, ("analog", "adc"), 10, mode="x") == want
    assert len(want) == 16
    # the same task whatever the order of the sections and of the extras
    assert (sweep.task_key("abc", cfg, ("analog", "adc"), 10, a=1, b=2)
            == sweep.task_key("abc", cfg, ("adc", "analog"), 10, b=2, a=1))


def test_pareto_front_ties():
    # equal x: only the higher y; equal y: only the lower x
    assert sweep._front([1, 1], [0.5, 0.9]) == [1]
    assert sweep._front([1, 2], [0.5, 0.5]) == [0]


# ---- the plan's folders, keys and point facts (mutation run at d451a97) ----------------------
def test_plan_exact_keys_folders_and_info(tmp_path):
    from crystalbench import crystal as cm
    cfg_path = write(tmp_path / "c.yaml", "experiment: tiny\n")
    c = tiny_crystal()
    pts = [{"analog.supply_v": 3.0, "analog.opamp": "opa835"},
           {"analog.supply_v": 3.0, "analog.opamp": "opa837"}]
    dig, todo = sweep.plan(c, cfg_path, pts, tmp_path, 10)
    assert len(todo) == 2 and len(dig) == 1
    for over, (pkey, data, folder, dkey, info, akey) in zip(pts, todo):
        cfg = cfgmod.load(cfg_path, sweep.set_args(over))
        want = json.loads(json.dumps(cfg))
        assert data == want and data is not None
        bits = cfg.adc.bits
        assert dkey == sweep.task_key(cm.digest(c), cfg, sweep.DIGITAL_SECTIONS, 10, adc_bits=bits)
        assert pkey == sweep.task_key(cm.digest(c), cfg, sweep.POINT_SECTIONS, 10)
        assert akey == sweep.task_key(cm.digest(c), cfg, sweep.ANALOG_SECTIONS, 0, adc_bits=bits)
        assert folder == tmp_path / "points" / pkey
        # one digital design: the first point's config data in out/digital/<digital key>
        assert dig == {dkey: (todo[0][1], tmp_path / "digital" / dkey)}
        a = cfg.analog
        assert info == {"kind": "hybrid", "point": pkey, "label": f"opamp={over['analog.opamp']}",
                        "overrides": json.dumps(over, sort_keys=True), "opamp": over["analog.opamp"],
                        "supply_v": 3.0, "power_gating": a.power_gating, "r_min": a.r_min,
                        "r_max": a.r_max, "adc_part": cfg.adc.part, "adc_bits": bits}
    # the overrides are written sorted, whatever their order in the grid
    assert todo[0][4]["overrides"] == '{"analog.opamp": "opa835", "analog.supply_v": 3.0}'
    # a single point is its own base
    _, one = sweep.plan(c, cfg_path, pts[:1], tmp_path, 10)
    assert one[0][4]["label"] == "base"
