"""The sweep's outputs (sim/sweep.py) by hand, without Dask, ngspice or Yosys: the rows of the
all-digital designs, which points count and which one is best, the CSV, the summary lines and
report.md, each figure and line pinned to values worked out here on small synthetic rows shaped
like run_point's (sim-hybrid's system_figures) and run_digital's."""
import json
import math
import sys
from pathlib import Path

import pytest

from crystalbench.sim import sweep

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import tiny_crystal  # noqa: E402

# ---- synthetic rows, shaped like run_point's and run_digital's ---------------------------------
OVER_A = '{"adc.part": "mcp3008", "analog.opamp": "opa835", "rtl.clock_mhz": 24}'


def hybrid_a() -> dict:
    """An always-on opa835 point at exactly the agreement threshold (the best hybrid)."""
    return {"kind": "hybrid", "point": "p1", "label": "opamp=opa835", "overrides": OVER_A,
            "opamp": "opa835", "supply_v": 3.0, "power_gating": False, "r_min": 1000.0,
            "r_max": 100000.0, "adc_part": "mcp3008", "adc_bits": 8, "folder": "/b/points/p1",
            "status": "ok", "design": "frontier_serial", "accuracy": 0.955, "agreement": 0.99,
            "agreement_analog_full_split": 0.9875, "vectors": 200, "energy_nj": 425.6789,
            "analog_nj": 300.5, "adc_nj": 100.125, "digital_nj": 25.0539, "analog_wait_nj": 2.75,
            "digital_idle_nj": 1.5, "interval_us": 42.25, "latency_us": 57.5, "analog_us": 12.25,
            "adc_us": 20.0, "digital_us": 25.25, "analog_nj_per_neuron": 0.875, "neurons": 24,
            "opamps": 12, "resistors": 96, "luts": 310, "clipped_weights": 3, "bit_exact": 1.0,
            "adc_chips": 1, "adc_channels": 4, "adc_nj_per_conversion": 25.03, "seconds": 41.2}


def hybrid_rows() -> list[dict]:
    a = hybrid_a()
    # lower energy and per-neuron energy than a, but agreement just below the threshold
    b = {**a, "point": "p2", "label": "opamp=mcp6002", "opamp": "mcp6002", "agreement": 0.9899,
         "energy_nj": 100.0, "analog_nj": 60.0, "adc_nj": 30.0, "digital_nj": 10.0,
         "analog_nj_per_neuron": 0.125, "folder": "/b/points/p2",
         "overrides": '{"analog.opamp": "mcp6002"}'}
    # agreeing, more energy than a, but the lowest core share per neuron: 240 / 24 = 10 nJ
    c = {**a, "point": "p3", "label": "opamp=opa2333", "opamp": "opa2333", "agreement": 1.0,
         "energy_nj": 900.0, "analog_nj": 240.0, "analog_nj_per_neuron": 2.5,
         "folder": "/b/points/p3", "overrides": '{"analog.opamp": "opa2333"}'}
    # failed in sim-analog: only its plan facts, the error and the log
    d = {"kind": "hybrid", "point": "p4", "label": "opamp=lm358",
         "overrides": '{"analog.opamp": "lm358"}', "opamp": "lm358", "supply_v": 3.0,
         "power_gating": False, "r_min": 1000.0, "r_max": 100000.0, "adc_part": "mcp3008",
         "adc_bits": 8, "folder": "/b/points/p4", "status": "failed",
         "error": 'CrystalbenchError: sim-analog failed: AnalogError: 1.2 V, "rail"',
         "traceback": ["Traceback (most recent call last):", "AnalogError"],
         "log": "/b/points/p4/log.txt", "seconds": 0.4}
    # ok and agreeing but without a frontier energy: no design (and tiny per-neuron figures)
    e = {**a, "point": "p5", "label": "opamp=tlv9062", "opamp": "tlv9062", "agreement": 1.0,
         "energy_nj": None, "digital_nj": None, "analog_nj": 1.0, "analog_nj_per_neuron": 0.01,
         "folder": "/b/points/p5", "overrides": '{"analog.opamp": "tlv9062"}'}
    return [a, b, c, d, e]


def digital() -> dict:
    """Two digital designs, the one sorted first failed (in synth)."""
    return {
        "dk2": {"status": "ok", "folder": "/b/digital/dk2", "vectors": 200,
                "frontier": "frontier_serial", "seconds": 95.4, "designs": [
                    {"design": "frontier_serial", "kind": "frontier", "lut4": 310, "accuracy": 0.955,
                     "agreement": 1.0, "bit_exact": 1.0, "energy_nj": 20.0, "latency_us": 25.25,
                     "latency_cycles": 303},
                    {"design": "all_digital_serial", "kind": "all_digital", "lut4": 1900,
                     "accuracy": 0.96, "agreement": 1.0, "bit_exact": 1.0, "energy_nj": 1384.0,
                     "latency_us": 1000 / 12, "latency_cycles": 1000},
                    {"design": "all_digital_small_serial", "kind": "all_digital_small", "lut4": 700,
                     "accuracy": 0.93, "agreement": 0.985, "bit_exact": 0.97, "energy_nj": 131.0,
                     "latency_us": 40.0, "latency_cycles": 480}]},
        "dk1": {"status": "failed", "folder": "/b/digital/dk1", "error": "YosysError: abc failed",
                "traceback": ["Traceback"], "log": "/b/digital/dk1/log.txt", "seconds": 3.0},
    }


AD_SERIAL = {"kind": "all-digital", "point": "dk2", "status": "ok", "label": "all_digital_serial",
             "design": "all_digital_serial", "accuracy": 0.96, "agreement": 1.0, "vectors": 200,
             "energy_nj": 1384.0, "digital_nj": 1384.0, "latency_us": 1000 / 12,
             "digital_us": 1000 / 12, "luts": 1900, "seconds": 95.4, "folder": "/b/digital/dk2"}
AD_SMALL = {"kind": "all-digital", "point": "dk2", "status": "ok",
            "label": "all_digital_small_serial", "design": "all_digital_small_serial",
            "accuracy": 0.93, "agreement": 0.985, "vectors": 200, "energy_nj": 131.0,
            "digital_nj": 131.0, "latency_us": 40.0, "digital_us": 40.0, "luts": 700,
            "seconds": 95.4, "folder": "/b/digital/dk2"}
AD_FAILED = {"kind": "all-digital", "point": "dk1", "status": "failed",
             "error": "YosysError: abc failed", "folder": "/b/digital/dk1"}


def ok_row(e, agreement=1.0, **extra):
    return {"status": "ok", "energy_nj": e, "analog_nj": 0.0, "adc_nj": 0.0, "digital_nj": 0.0,
            "agreement": agreement, **extra}


@pytest.fixture
def no_plots(monkeypatch):
    """summarize's plots (matplotlib, no mutants: `pragma: no mutate`; drawn in the slow
    LocalCluster test) replaced by a recorder that names the files as _plots does."""
    calls = []

    def fake(out, rows, drows):
        calls.append((out, rows, drows))
        return {"pareto_energy_accuracy": str(out / "pareto_energy_accuracy.png"),
                "pareto_latency_energy": str(out / "pareto_latency_energy.png")}

    monkeypatch.setattr(sweep, "_plots", fake)
    return calls


# ---- digital_rows ------------------------------------------------------------------------------
def test_digital_rows_sorted_by_key_failed_kept_frontier_left_out():
    assert sweep.digital_rows(digital()) == [AD_FAILED, AD_SERIAL, AD_SMALL]
    # a failed design sorted before an ok one does not stop the ok one's rows
    assert sweep.digital_rows({"a": {"status": "failed"}, "b": digital()["dk2"]}) == [
        {"kind": "all-digital", "point": "a", "status": "failed", "error": None, "folder": None},
        {**AD_SERIAL, "point": "b"}, {**AD_SMALL, "point": "b"}]
    # no status at all is not ok
    assert sweep.digital_rows({"k": {"error": "E", "folder": "/f"}}) == [
        {"kind": "all-digital", "point": "k", "status": "failed", "error": "E", "folder": "/f"}]
    assert sweep.digital_rows({}) == []
    only_frontier = {**digital()["dk2"], "designs": digital()["dk2"]["designs"][:1]}
    assert sweep.digital_rows({"k": only_frontier}) == []


def test_digital_rows_priced_above_their_fmax_are_not_ok():
    """A design priced at rtl.clock_mhz above the fmax nextpnr measured for it is kept with
    status 'over fmax' and why, and is never the best; at exactly its fmax, or with either
    figure unknown (a digital.json cached before they were recorded), it is ok."""
    def rows(clock, fmax):
        d = digital()["dk2"]
        d["designs"][1] = {**d["designs"][1], "clock_mhz": clock, "fmax_mhz": fmax}
        return sweep.digital_rows({"dk2": d})

    over = rows(23.0, 22.99)
    assert over[0] == {**AD_SERIAL, "status": "over fmax",
                       "error": "priced at rtl.clock_mhz = 23, above its 22.99 MHz fmax"}
    assert over[1] == AD_SMALL
    assert sweep.best(over) is None  # AD_SMALL agrees at 0.985 only
    for clock, fmax in ((23.0, 23.0), (23.0, None), (None, 22.99), (12.0, 31.17)):
        assert rows(clock, fmax)[0] == AD_SERIAL
        assert sweep.best(rows(clock, fmax)) == AD_SERIAL
    assert rows(23.5, 23.456)[0]["error"] == ("priced at rtl.clock_mhz = 23.5, above its 23.46 "
                                              "MHz fmax")


# ---- _ok and best ------------------------------------------------------------------------------
@pytest.mark.parametrize("r,want", [
    (ok_row(10.0, 0.99), True),  # exactly at the threshold
    (ok_row(10.0, math.nextafter(0.99, 0.0)), False),  # the float just below
    (ok_row(10.0, 0.9899), False),
    (ok_row(10.0, 1.0), True),
    (ok_row(0.0, 1.0), True),  # zero energy is an energy
    (ok_row(10.0, 0.0), False),
    (ok_row(None, 1.0), False),
    (ok_row(math.nan, 1.0), False),
    (ok_row(math.inf, 1.0), False),
    (ok_row(10.0, None), False),
    ({**ok_row(10.0), "status": "failed"}, False),
    ({"energy_nj": 10.0, "agreement": 1.0}, False),  # no status
    ({"status": "ok", "agreement": 1.0}, False),  # no energy
    ({"status": "ok", "energy_nj": 10.0}, False),  # no agreement
    ({"status": "failed"}, False),
])
def test_ok_needs_status_energy_and_agreement_at_threshold(r, want):
    assert sweep._ok(r) is want


def test_best_lowest_agreeing_energy_first_of_a_tie():
    first, second = ok_row(425.7, label="first"), ok_row(425.7, label="second")
    assert sweep.best([first, second]) is first
    assert sweep.best([second, first]) is second
    # lower energies that do not count: below the threshold, failed, no agreement
    below = ok_row(1.0, math.nextafter(0.99, 0.0))
    failed = {**ok_row(2.0), "status": "failed"}
    unknown = ok_row(3.0, None)
    at = ok_row(500.0, 0.99)
    higher = ok_row(600.0)
    assert sweep.best([higher, below, failed, unknown, at]) is at
    assert sweep.best([below, failed, unknown]) is None
    assert sweep.best([ok_row(math.nan), at, higher]) is at  # NaN first would be kept by min
    assert sweep.best([]) is None


# ---- verdict: what test_sweep.py's verdict tests leave open ---------------------------------
def test_verdict_hybrid_wins_ratio_to_three_digits():
    v = sweep.verdict(ok_row(4.0), ok_row(13.0))
    assert v == {"winner": "hybrid", "ratio": 3.25,
                 "text": "the hybrid wins: 4 nJ against 13 nJ per inference (3.25x less)"}
    v = sweep.verdict(ok_row(425.6789), ok_row(1384.0))
    assert v == {"winner": "hybrid", "ratio": 1384.0 / 425.6789,
                 "text": "the hybrid wins: 425.7 nJ against 1384 nJ per inference (3.25x less)"}


def test_verdict_no_channels_no_per_conversion_budget():
    h = {**ok_row(60.0), "analog_nj": 10.0, "adc_nj": 40.0, "digital_nj": 10.0, "adc_channels": 0,
         "adc_part": "mcp3008", "adc_nj_per_conversion": 5.0}
    v = sweep.verdict(h, ok_row(30.0))
    assert v["stopped_by"] == "ADC"
    assert v["text"].endswith("with this converter and frontier; the ADC is the largest of the two")


def test_verdict_wait_not_named_without_a_budget():
    # a NaN converter energy leaves no budget sentence; the wait is not appended to nothing
    h = {**ok_row(60.0), "analog_nj": 10.0, "adc_nj": float("nan"), "digital_nj": 10.0,
         "analog_wait_nj": 5.0, "interval_us": 12.5}
    v = sweep.verdict(h, ok_row(30.0))
    assert v == {"winner": "all-digital", "ratio": 2.0, "stopped_by": "analog core",
                 "text": "the all-digital net wins: 30 nJ against the best hybrid's 60 nJ (2x); "
                         "what stops the hybrid: "}


def test_verdict_all_digital_wins_ratio_and_wait_figures():
    # 131 - 30 - 10 = 91 nJ left; the core takes 385.6789: 294.6789 over, 4.238x; 2.75 waiting
    h = {**ok_row(425.6789), "analog_nj": 385.6789, "adc_nj": 30.0, "digital_nj": 10.0,
         "analog_wait_nj": 2.75, "interval_us": 42.25}
    v = sweep.verdict(h, ok_row(131.0))
    assert v == {"winner": "all-digital", "ratio": 425.6789 / 131.0, "stopped_by": "analog core",
                 "text": "the all-digital net wins: 131 nJ against the best hybrid's 425.7 nJ "
                         "(3.25x); what stops the hybrid: the analog core's 385.7 nJ exceeds the "
                         "91 nJ left after ADC 30 nJ and frontier 10 nJ by 294.7 nJ (4.24x); "
                         "2.75 nJ of the core's energy is its on-power while it waits for the "
                         "frontier (one inference per 42.25 us)"}


# ---- _cell and _num ----------------------------------------------------------------------------
@pytest.mark.parametrize("v,want", [
    (None, ""), (float("nan"), ""), (float("inf"), ""), (float("-inf"), ""),
    (0.0, "0"), (425.6789, "425.679"), (1000 / 12, "83.3333"), (1e-7, "1e-07"),
    (123456789.0, "1.23457e+08"), (-2.5, "-2.5"), (3.0, "3"),
    (0, 0), (200, 200), ("opa835", "opa835"), ("", ""),
])
def test_cell(v, want):
    got = sweep._cell(v)
    assert got == want and type(got) is type(want)


def test_cell_keeps_booleans():
    assert sweep._cell(True) is True and sweep._cell(False) is False


@pytest.mark.parametrize("v,want", [
    (None, "n/a"), (425.6789, "425.7"), (0.0, "0"), (0, "0"), (2.75, "2.75"), (1000 / 12, "83.33"),
    (12345.6, "1.235e+04"), (float("nan"), "nan"),
])
def test_num(v, want):
    assert sweep._num(v) == want


# ---- _row_line ---------------------------------------------------------------------------------
LINE_A = ("opamp=opa835 (opa835, 12 op-amps, 96 resistors, 1 x mcp3008, 8 bits, frontier_serial "
          "310 LUT4): 425.7 nJ = analog 300.5 + ADC 100.1 + digital 25.05, one inference per "
          "42.25 us (analog waiting for the frontier 2.75, frontier idle 1.5); latency 57.5 us; "
          "accuracy 0.9550, agreement 0.9900 (analog, whole test split: 0.9875); analog 0.875 nJ "
          "per neuron")
LINE_SERIAL = "all_digital_serial: 1384 nJ, 83.33 us, accuracy 0.9600, agreement 1.0000, 1900 LUT4"


def test_row_line_hybrid_and_all_digital():
    assert sweep._row_line(hybrid_a()) == LINE_A
    assert sweep._row_line(AD_SERIAL) == LINE_SERIAL
    assert sweep._row_line({**AD_SMALL, "luts": None}) == (
        "all_digital_small_serial: 131 nJ, 40 us, accuracy 0.9300, agreement 0.9850, None LUT4")


def test_row_line_hybrid_missing_figures_read_n_a():
    r = {**hybrid_a(), "analog_nj_per_neuron": None, "interval_us": None, "analog_wait_nj": None,
         "digital_idle_nj": None}
    del r["adc_chips"]
    assert sweep._row_line(r) == (
        "opamp=opa835 (opa835, 12 op-amps, 96 resistors, None x mcp3008, 8 bits, frontier_serial "
        "310 LUT4): 425.7 nJ = analog 300.5 + ADC 100.1 + digital 25.05, one inference per n/a us "
        "(analog waiting for the frontier n/a, frontier idle n/a); latency 57.5 us; accuracy "
        "0.9550, agreement 0.9900 (analog, whole test split: 0.9875); analog n/a")
    # a per-neuron energy of 0 is a figure, not n/a
    assert sweep._row_line({**hybrid_a(), "analog_nj_per_neuron": 0.0}).endswith(
        "analog 0 nJ per neuron")


# ---- _manufacture_line and _machine_text -------------------------------------------------------
def test_manufacture_line_analog_and_adc_overrides_only():
    assert sweep._manufacture_line(hybrid_a()) == [
        "Build it as a board (CONFIG, and any --crystal and --set, as given to the sweep):", "",
        "    crystalbench manufacture --config CONFIG --set 'adc.part=\"mcp3008\"' "
        "--set 'analog.opamp=\"opa835\"'", "",
        "Its op-amp `opa835` has no orderable dual in analog/manufacture.py OPAMP_PARTS yet: "
        "manufacture refuses it.", ""]
    # an orderable op-amp; keys that only start like a section are not its overrides
    r = {"opamp": "mcp6002", "overrides": json.dumps(
        {"analog.opamp": "mcp6002", "analog.supply_v": 3.0, "analogue.x": 1, "adcx.bits": 6,
         "adc.bits": 6, "hybrid.boards": 0})}
    assert sweep._manufacture_line(r) == [
        "Build it as a board (CONFIG, and any --crystal and --set, as given to the sweep):", "",
        "    crystalbench manufacture --config CONFIG --set 'analog.opamp=\"mcp6002\"' "
        "--set analog.supply_v=3.0 --set adc.bits=6", ""]
    # no overrides (the base point): the config as it is
    assert sweep._manufacture_line({"opamp": "lm358", "overrides": None}) == [
        "Build it as a board (CONFIG, and any --crystal and --set, as given to the sweep):", "",
        "    crystalbench manufacture --config CONFIG", ""]
    assert sweep._manufacture_line({})[2:] == [
        "    crystalbench manufacture --config CONFIG", "",
        "Its op-amp `None` has no orderable dual in analog/manufacture.py OPAMP_PARTS yet: "
        "manufacture refuses it.", ""]


MACHINE = {"host": "host1", "cpus": 8, "date_utc": "2025-01-02 03:04 UTC",
           "load_average": [0.5, 1.25, 2.0], "load_average_end": [3.5, 2.25, 2.0]}
MACHINE_TEXT = (" Started 2025-01-02 03:04 UTC on host1 (8 CPUs), load average (1/5/15 min) "
                "0.5/1.25/2.0 at the start, 3.5/2.25/2.0 at the end.")


def test_machine_text():
    assert sweep._machine_text(MACHINE) == MACHINE_TEXT
    assert sweep._machine_text(None) == ""
    assert sweep._machine_text({}) == ""


# ---- summarize: the CSV, the figures; summary_lines and report.md on them ----------------------
HEADER = ("kind,point,status,label,design,accuracy,agreement,agreement_ok,"
          "agreement_analog_full_split,vectors,energy_nj,analog_nj,adc_nj,digital_nj,analog_wait_nj,"
          "digital_idle_nj,interval_us,adc_channels,adc_chips,adc_nj_per_conversion,latency_us,"
          "analog_us,adc_us,digital_us,analog_nj_per_neuron,neurons,opamps,resistors,luts,opamp,"
          "supply_v,power_gating,r_min,r_max,adc_part,adc_bits,seconds,error,folder,overrides")


def csv_row(**cells) -> dict:
    cols = HEADER.split(",")
    assert set(cells) <= set(cols)
    return {c: cells.get(c, "") for c in cols}


PLAN_A = dict(opamp="opa835", supply_v="3", power_gating="False", r_min="1000", r_max="100000",
              adc_part="mcp3008", adc_bits="8")
CSV_A = csv_row(
    kind="hybrid", point="p1", status="ok", label="opamp=opa835", design="frontier_serial",
    accuracy="0.955", agreement="0.99", agreement_ok="True", agreement_analog_full_split="0.9875",
    vectors="200", energy_nj="425.679", analog_nj="300.5", adc_nj="100.125", digital_nj="25.0539",
    analog_wait_nj="2.75", digital_idle_nj="1.5", interval_us="42.25", adc_channels="4",
    adc_chips="1", adc_nj_per_conversion="25.03", latency_us="57.5", analog_us="12.25",
    adc_us="20", digital_us="25.25", analog_nj_per_neuron="0.875", neurons="24", opamps="12",
    resistors="96", luts="310", seconds="41.2", folder="/b/points/p1", overrides=OVER_A, **PLAN_A)
CSV_TABLE = [
    CSV_A,
    {**CSV_A, "point": "p2", "label": "opamp=mcp6002", "opamp": "mcp6002", "agreement": "0.9899",
     "agreement_ok": "False", "energy_nj": "100", "analog_nj": "60", "adc_nj": "30",
     "digital_nj": "10", "analog_nj_per_neuron": "0.125", "folder": "/b/points/p2",
     "overrides": '{"analog.opamp": "mcp6002"}'},
    {**CSV_A, "point": "p3", "label": "opamp=opa2333", "opamp": "opa2333", "agreement": "1",
     "energy_nj": "900", "analog_nj": "240", "analog_nj_per_neuron": "2.5",
     "folder": "/b/points/p3", "overrides": '{"analog.opamp": "opa2333"}'},
    csv_row(kind="hybrid", point="p4", status="failed", label="opamp=lm358", seconds="0.4",
            error='CrystalbenchError: sim-analog failed: AnalogError: 1.2 V, "rail"',
            folder="/b/points/p4", overrides='{"analog.opamp": "lm358"}',
            **{**PLAN_A, "opamp": "lm358"}),
    {**CSV_A, "point": "p5", "label": "opamp=tlv9062", "opamp": "tlv9062", "agreement": "1",
     "energy_nj": "", "digital_nj": "", "analog_nj": "1", "analog_nj_per_neuron": "0.01",
     "folder": "/b/points/p5", "overrides": '{"analog.opamp": "tlv9062"}'},
    csv_row(kind="all-digital", point="dk1", status="failed", error="YosysError: abc failed",
            folder="/b/digital/dk1"),
    csv_row(kind="all-digital", point="dk2", status="ok", label="all_digital_serial",
            design="all_digital_serial", accuracy="0.96", agreement="1", agreement_ok="True",
            vectors="200", energy_nj="1384", digital_nj="1384", latency_us="83.3333",
            digital_us="83.3333", luts="1900", seconds="95.4", folder="/b/digital/dk2"),
    csv_row(kind="all-digital", point="dk2", status="ok", label="all_digital_small_serial",
            design="all_digital_small_serial", accuracy="0.93", agreement="0.985",
            agreement_ok="False", vectors="200", energy_nj="131", digital_nj="131",
            latency_us="40", digital_us="40", luts="700", seconds="95.4", folder="/b/digital/dk2"),
]
VERDICT = "the hybrid wins: 425.7 nJ against 1384 nJ per inference (3.25x less)"


def test_summarize_figures_and_csv(tmp_path, no_plots):
    rows, dig = hybrid_rows(), digital()
    res = sweep.summarize(rows, dig, tmp_path, 200, Path("grids/g.yaml"), "LocalCluster(2)")
    out = tmp_path
    assert res == {
        "grid": "grids/g.yaml", "vectors": 200, "engine": "LocalCluster(2)",
        "points": 5, "points_ok": 4,
        "points_failed": [{"point": "p4", "label": "opamp=lm358",
                           "error": 'CrystalbenchError: sim-analog failed: AnalogError: 1.2 V, "rail"',
                           "log": "/b/points/p4/log.txt"}],
        "points_agreeing": 2, "digital_designs": 2, "all_digital_rows": 3,
        "best_hybrid": {**hybrid_a(), "agreement_ok": True},
        "best_all_digital": {**AD_SERIAL, "agreement_ok": True},
        "verdict": {"winner": "hybrid", "ratio": 1384.0 / 425.6789, "text": VERDICT},
        # 0.875 (p1): p2's 0.125 is below the agreement threshold, p5's 0.01 has no energy
        "lowest_analog_nj_per_neuron": 0.875,
        # p3's 240 / 24 = 10 below p1's 300.5 / 24; p2's 60 / 24 and p5's 1 / 24 do not count
        "lowest_core_nj_per_neuron": 10.0,
        "agreement_min": 0.99,
        "files": {"table": str(out / "points.csv"),
                  "pareto_energy_accuracy": str(out / "pareto_energy_accuracy.png"),
                  "pareto_latency_energy": str(out / "pareto_latency_energy.png")},
        "method": sweep.METHOD}
    assert res["best_hybrid"] is rows[0]
    # every row gets its agreement flag: at the threshold yes, just below no, failed none
    assert [r["agreement_ok"] for r in rows] == [True, False, True, None, True]
    # the plots see the hybrid rows and the all-digital rows
    ((pout, prows, pdrows),) = no_plots
    assert pout == out and prows is rows and pdrows == [
        {**AD_FAILED, "agreement_ok": None}, {**AD_SERIAL, "agreement_ok": True},
        {**AD_SMALL, "agreement_ok": False}]

    text = (out / "points.csv").read_bytes().decode()  # bytes: "\r\n" would show
    assert text.startswith(HEADER + "\n") and text.endswith("\n") and "\r" not in text
    assert len(text.splitlines()) == 1 + 8
    # the failed point's error, with its comma and quotes, quoted as CSV does
    assert text.splitlines()[4] == (
        'hybrid,p4,failed,opamp=lm358,,,,,,,,,,,,,,,,,,,,,,,,,,lm358,3,False,1000,100000,mcp3008,8,0.4,'
        '"CrystalbenchError: sim-analog failed: AnalogError: 1.2 V, ""rail""",/b/points/p4,'
        '"{""analog.opamp"": ""lm358""}"')
    assert sweep.read_points(out) == CSV_TABLE
    assert sweep.read_points(str(out)) == CSV_TABLE


def test_summarize_per_neuron_skips_rows_without_figures(tmp_path, no_plots):
    rows = [ok_row(5.0, analog_nj_per_neuron=None, analog_nj=None, neurons=4),
            ok_row(6.0, analog_nj_per_neuron=0.5, analog_nj=8.0, neurons=0),
            ok_row(7.0, analog_nj_per_neuron=0.75, analog_nj=9.0, neurons=None),
            ok_row(8.0, analog_nj_per_neuron=0.0, analog_nj=6.0, neurons=4)]
    res = sweep.summarize(rows, {}, tmp_path, 2, "g", "e")
    # 0.0 is the lowest settle energy (a figure, not missing); the core share 6 / 4 = 1.5 is
    # the only one (no energy, zero and no neurons skipped)
    assert res["lowest_analog_nj_per_neuron"] == 0.0
    assert res["lowest_core_nj_per_neuron"] == 1.5
    assert res["points_agreeing"] == 4 and res["best_hybrid"] is rows[0]
    assert res["best_all_digital"] is None
    assert res["verdict"]["text"] == "no comparison: no all-digital design reached agreement >= 0.99"
    rows = [ok_row(5.0, analog_nj_per_neuron=None, analog_nj=None, neurons=4)]
    res = sweep.summarize(rows, {}, tmp_path, 2, "g", "e")
    assert res["lowest_analog_nj_per_neuron"] is None and res["lowest_core_nj_per_neuron"] is None


def full_res(tmp_path) -> dict:
    res = sweep.summarize(hybrid_rows(), digital(), tmp_path, 200, "grids/g.yaml", "LocalCluster(2)")
    return {**res, "wall_seconds": 73.6, "computed_points": 3, "machine": MACHINE}


def test_summary_lines(tmp_path, no_plots):
    assert sweep.summary_lines(full_res(tmp_path)) == [
        "5 points (4 ok, 1 failed, 2 with agreement >= 0.99), 3 computed now; 2 digital design(s); "
        "200 vectors; 74 s on LocalCluster(2)",
        "best hybrid: " + LINE_A,
        "best all-digital: " + LINE_SERIAL,
        VERDICT,
        "lowest analog energy per neuron among agreeing points: 0.875 nJ to settle (sim-analog), "
        "10 nJ for the whole inference",
        f"table {tmp_path / 'points.csv'}"]


def test_summary_lines_without_best_or_core_share():
    res = {"points": 2, "points_ok": 0, "points_failed": [{}, {}], "points_agreeing": 0,
           "agreement_min": 0.99, "computed_points": 2, "digital_designs": 1, "vectors": 10,
           "wall_seconds": 2.5, "engine": "scheduler tcp://h:8786", "best_hybrid": None,
           "best_all_digital": AD_SERIAL, "verdict": {"text": "V"},
           "lowest_analog_nj_per_neuron": None, "lowest_core_nj_per_neuron": 1.0,
           "files": {"table": "/t/points.csv"}}
    assert sweep.summary_lines(res) == [
        "2 points (0 ok, 2 failed, 0 with agreement >= 0.99), 2 computed now; 1 digital design(s); "
        "10 vectors; 2 s on scheduler tcp://h:8786",
        "best all-digital: " + LINE_SERIAL, "V", "table /t/points.csv"]
    res.update(best_hybrid=hybrid_a(), best_all_digital=None, lowest_analog_nj_per_neuron=0.0,
               lowest_core_nj_per_neuron=None, wall_seconds=0.6)
    assert sweep.summary_lines(res) == [
        "2 points (0 ok, 2 failed, 0 with agreement >= 0.99), 2 computed now; 1 digital design(s); "
        "10 vectors; 1 s on scheduler tcp://h:8786",
        "best hybrid: " + LINE_A, "V",
        "lowest analog energy per neuron among agreeing points: 0 nJ to settle (sim-analog), "
        "n/a nJ for the whole inference",
        "table /t/points.csv"]


COLS = ("| kind | label | status | energy_nj | analog_nj | adc_nj | digital_nj | latency_us | "
        "accuracy | agreement | opamps | resistors | adc_part | adc_chips | luts |")
SEP = "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"


def method_lines() -> list[str]:
    lines = [f"- {k}: {v}" for k, v in sweep.METHOD.items()]
    assert lines[3] == ("- agreement: class agreement with torch on the same samples; a design "
                        "counts as a candidate when it is >= 0.99")
    return lines


def test_report_md_full_text(tmp_path, no_plots):
    sweep.report_md(full_res(tmp_path), tmp_path)
    want = [
        "# Co-design sweep", "",
        "Grid `grids/g.yaml`; 200 test vectors per point; engine LocalCluster(2); 3 of 5 points "
        "computed by this run (the rest from the cache) in 74 s wall time (this machine, as loaded "
        "at the time; not an idle-machine figure)." + MACHINE_TEXT, "",
        "## Verdict", "", VERDICT, "",
        "Best hybrid point (lowest energy with agreement >= 0.99):", "", "- " + LINE_A, "",
        "Build it as a board (CONFIG, and any --crystal and --set, as given to the sweep):", "",
        "    crystalbench manufacture --config CONFIG --set 'adc.part=\"mcp3008\"' "
        "--set 'analog.opamp=\"opa835\"'", "",
        "Its op-amp `opa835` has no orderable dual in analog/manufacture.py OPAMP_PARTS yet: "
        "manufacture refuses it.", "",
        "Best all-digital design:", "", "- " + LINE_SERIAL, "",
        "Lowest analog energy per neuron per inference among agreeing points: 0.875 nJ to settle "
        "(sim-analog; target 0.33 nJ); 10 nJ with the hold for the ADC and the wait for the "
        "frontier (sim-hybrid's core share).", "",
        "## Every point", "", COLS, SEP,
        # by energy; rows without one (as inf) after, in table order
        "| hybrid | opamp=mcp6002 | ok | 100 | 60 | 30 | 10 | 57.5 | 0.955 | 0.9899 | 12 | 96 "
        "| mcp3008 | 1 | 310 |",
        "| all-digital | all_digital_small_serial | ok | 131 |  |  | 131 | 40 | 0.93 | 0.985 |  "
        "|  |  |  | 700 |",
        "| hybrid | opamp=opa835 | ok | 425.679 | 300.5 | 100.125 | 25.0539 | 57.5 | 0.955 | 0.99 "
        "| 12 | 96 | mcp3008 | 1 | 310 |",
        "| hybrid | opamp=opa2333 | ok | 900 | 240 | 100.125 | 25.0539 | 57.5 | 0.955 | 1 | 12 "
        "| 96 | mcp3008 | 1 | 310 |",
        "| all-digital | all_digital_serial | ok | 1384 |  |  | 1384 | 83.3333 | 0.96 | 1 |  |  "
        "|  |  | 1900 |",
        "| hybrid | opamp=lm358 | failed |  |  |  |  |  |  |  |  |  | mcp3008 |  |  |",
        "| hybrid | opamp=tlv9062 | ok |  | 1 | 100.125 |  | 57.5 | 0.955 | 1 | 12 | 96 "
        "| mcp3008 | 1 | 310 |",
        "| all-digital |  | failed |  |  |  |  |  |  |  |  |  |  |  |  |",
        "", "## Failed points", "",
        '- opamp=lm358: CrystalbenchError: sim-analog failed: AnalogError: 1.2 V, "rail" '
        "(log /b/points/p4/log.txt)",
        "", "## Method", "", *method_lines(),
        "", "Plots: pareto_energy_accuracy.png, pareto_latency_energy.png", ""]
    assert (tmp_path / "report.md").read_text() == "\n".join(want)


def test_summarize_and_report_of_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_plots", lambda out, rows, drows: {})
    res = sweep.summarize([], {}, tmp_path, 10, "g.yaml", "scheduler tcp://h:8786")
    assert res == {
        "grid": "g.yaml", "vectors": 10, "engine": "scheduler tcp://h:8786", "points": 0,
        "points_ok": 0, "points_failed": [], "points_agreeing": 0, "digital_designs": 0,
        "all_digital_rows": 0, "best_hybrid": None, "best_all_digital": None,
        "verdict": {"winner": None,
                    "text": "no comparison: no hybrid point reached agreement >= 0.99"},
        "lowest_analog_nj_per_neuron": None, "lowest_core_nj_per_neuron": None,
        "agreement_min": 0.99, "files": {"table": str(tmp_path / "points.csv")},
        "method": sweep.METHOD}
    assert (tmp_path / "points.csv").read_text() == HEADER + "\n"
    assert sweep.read_points(tmp_path) == []
    res.update(wall_seconds=0.4, computed_points=0)
    sweep.report_md(res, tmp_path)
    assert (tmp_path / "report.md").read_text() == "\n".join([
        "# Co-design sweep", "",
        "Grid `g.yaml`; 10 test vectors per point; engine scheduler tcp://h:8786; 0 of 0 points "
        "computed by this run (the rest from the cache) in 0 s wall time (this machine, as loaded "
        "at the time; not an idle-machine figure).", "",
        "## Verdict", "", "no comparison: no hybrid point reached agreement >= 0.99", "",
        "## Every point", "", COLS, SEP,
        "", "## Method", "", *method_lines(), "", "Plots: ", ""])


def test_report_md_all_digital_only_and_ties_in_table_order(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_plots", lambda out, rows, drows: {})
    failed = {"kind": "hybrid", "point": "p9", "label": "opamp=lm358", "status": "failed",
              "error": "E", "log": "/l"}
    d = {"dk": {**digital()["dk2"], "designs": [
        {**digital()["dk2"]["designs"][1], "design": "all_digital_a", "energy_nj": 50.0},
        {**digital()["dk2"]["designs"][1], "design": "all_digital_b", "energy_nj": 50.0}]}}
    res = sweep.summarize([failed], d, tmp_path, 10, "g", "e")
    assert res["best_all_digital"]["design"] == "all_digital_a"  # the first of a tie
    res.update(wall_seconds=1.0, computed_points=1, machine={})
    sweep.report_md(res, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "not an idle-machine figure).\n\n## Verdict\n\n" in text  # no machine text
    assert "Best hybrid" not in text and "Lowest analog energy" not in text
    assert ("\n\nBest all-digital design:\n\n- all_digital_a: 50 nJ, 83.33 us, accuracy 0.9600, "
            "agreement 1.0000, 1900 LUT4\n\n## Every point\n\n") in text
    assert (SEP + "\n| all-digital | all_digital_a | ok | 50 |  |  | 50 | 83.3333 | 0.96 | 1 |  |  |  "
            "|  | 1900 |\n| all-digital | all_digital_b | ok | 50 |  |  | 50 | 83.3333 | 0.96 | 1 |  "
            "|  |  |  | 1900 |\n| hybrid | opamp=lm358 | failed |  |  |  |  |  |  |  |  |  |  |  |  |"
            "\n\n## Failed points\n\n- opamp=lm358: E (log /l)\n\n## Method\n\n") in text


def test_read_points_round_trip_of_a_hand_written_table(tmp_path):
    (tmp_path / "points.csv").write_text(
        'kind,label,error\nhybrid,"a, b","say ""x"""\nall-digital,,\n')
    assert sweep.read_points(str(tmp_path)) == [
        {"kind": "hybrid", "label": "a, b", "error": 'say "x"'},
        {"kind": "all-digital", "label": "", "error": ""}]


# ---- run_point: sim-hybrid's and sim-analog's results into a row (stages stubbed) --------------
A_RESULT = {"class_agreement_with_torch": 0.9875, "energy_per_neuron_nj": 0.875, "neurons": 24,
            "opamps": 12, "resistors": 96, "clipped_weights": {"layer0": 2, "layer1": 1, "worst": 7}}
H_RESULT = {"frontier_design": "frontier_serial", "test_accuracy": 0.955,
            "class_agreement_with_torch": 0.99, "vectors": 200, "bit_exact_fraction": 0.995,
            "energy_per_inference_nj": 425.6789,
            "energy_nj": {"analog_nj": 300.5, "adc_nj": 100.125, "digital_nj": 25.0539},
            "analog_parts_nj": {"to_settle_nj": 290.0, "held_for_adc_nj": 7.75,
                                "waiting_for_frontier_nj": 2.75, "decoupling_recharge_nj": 0.0},
            "digital_parts_nj": {"computing_nj": 23.5539, "idle_nj": 1.5},
            "inference_interval_us": 42.25, "latency_us": 57.5,
            "latency_parts_us": {"analog_us": 12.25, "adc_us": 20.0, "digital_us": 25.25},
            "adc": {"chips": 1, "channels": 4, "energy_per_conversion_nj": 25.03}}
INFO = {"kind": "hybrid", "point": "p1", "label": "opamp=opa835", "overrides": OVER_A,
        "opamp": "opa835", "supply_v": 3.0, "power_gating": False, "r_min": 1000.0,
        "r_max": 100000.0, "adc_part": "mcp3008", "adc_bits": 8}


@pytest.fixture
def stages(monkeypatch, tmp_path):
    """sweep._load and sim-hybrid's run replaced: a fake Crystal named tiny, a config with
    hybrid.boards = 3, sim-hybrid returning H_RESULT; their calls recorded."""
    import sys
    from types import SimpleNamespace

    import crystalbench.sim as simpkg
    from crystalbench.results import Paths

    calls = {"load": [], "hybrid": []}
    c = SimpleNamespace(name="tiny")
    cfg = SimpleNamespace(hybrid=SimpleNamespace(boards=3))

    def load(crystal_dir, data, folder):
        calls["load"].append((crystal_dir, data, folder))
        return c, cfg, Paths(folder, "tiny")

    def run(c_, cfg_, paths, log, vectors, boards):
        calls["hybrid"].append((c_, cfg_, paths.base, vectors, boards))
        log("sim-hybrid stub ran")  # the task's log
        return H_RESULT

    fake = SimpleNamespace(run=run)
    monkeypatch.setattr(sweep, "_load", load)
    monkeypatch.setattr(simpkg, "hybrid", fake, raising=False)
    monkeypatch.setitem(sys.modules, "crystalbench.sim.hybrid", fake)
    (tmp_path / "a.json").write_text(json.dumps(A_RESULT))
    return SimpleNamespace(calls=calls, c=c, cfg=cfg)


def test_run_point_row_links_and_cache(tmp_path, stages):
    folder = tmp_path / "points" / "p1"
    dig = {"status": "ok", "folder": str(tmp_path / "dig"), "designs": [
        {"design": "all_digital_serial", "lut4": 1900}, {"design": "frontier_serial", "lut4": 310}]}
    ana = {"status": "ok", "folder": str(tmp_path / "ana"), "result": str(tmp_path / "a.json")}
    r = sweep.run_point("/cr", {"k": 1}, str(folder), dig, ana, 200, INFO)
    assert 0.0 <= r["seconds"] < 5.0
    assert r == {"folder": str(folder), **INFO, "status": "ok", "design": "frontier_serial",
                 "accuracy": 0.955, "agreement": 0.99, "agreement_analog_full_split": 0.9875,
                 "vectors": 200, "energy_nj": 425.6789, "analog_nj": 300.5, "adc_nj": 100.125,
                 "digital_nj": 25.0539, "analog_wait_nj": 2.75, "digital_idle_nj": 1.5,
                 "interval_us": 42.25, "latency_us": 57.5, "analog_us": 12.25, "adc_us": 20.0,
                 "digital_us": 25.25, "analog_nj_per_neuron": 0.875, "neurons": 24, "opamps": 12,
                 "resistors": 96, "luts": 310, "clipped_weights": 3, "bit_exact": 0.995,
                 "adc_chips": 1, "seconds": r["seconds"]}
    assert stages.calls["load"] == [("/cr", {"k": 1}, folder)]
    assert stages.calls["hybrid"] == [(stages.c, stages.cfg, folder / "tiny", 200, 3)]
    # the digital design's folders and the analog design's, linked into the point's
    for name, target in (("fixed", "dig"), ("synth", "dig"), ("sim", "dig"), ("analog", "ana")):
        link = folder / "tiny" / name
        assert link.is_symlink() and link.resolve() == (tmp_path / target / "tiny" / name).resolve()
    assert json.loads((folder / "point.json").read_text()) == r
    log = (folder / "log.txt").read_text()
    assert " sim-hybrid stub ran\n" in log and " point done in " in log
    # cached: the same row, without running the stages again
    assert sweep.run_point("/cr", {"k": 1}, str(folder), dig, ana, 200, INFO) == r
    assert len(stages.calls["hybrid"]) == 1


def test_run_point_frontier_not_among_designs_and_analog_in_place(tmp_path, stages):
    folder = tmp_path / "p"
    # left from an earlier run: a link elsewhere, the right link, a file in a link's place
    (folder / "tiny").mkdir(parents=True)
    (folder / "tiny" / "fixed").symlink_to(tmp_path / "old" / "tiny" / "fixed")
    (folder / "tiny" / "synth").symlink_to(tmp_path / "dig" / "tiny" / "synth")
    (folder / "tiny" / "sim").write_text("stale")
    dig = {"status": "ok", "folder": str(tmp_path / "dig"),
           "designs": [{"design": "all_digital_serial", "lut4": 1900}]}
    ana = {"status": "ok", "result": str(tmp_path / "a.json")}  # no folder: in the point's own
    r = sweep.run_point("/cr", {}, str(folder), dig, ana, 10, INFO)
    assert r["status"] == "ok" and r["luts"] is None
    assert not (folder / "tiny" / "analog").exists()
    for name in ("fixed", "synth", "sim"):
        link = folder / "tiny" / name
        assert link.is_symlink() and link.resolve() == (tmp_path / "dig" / "tiny" / name).resolve()


@pytest.mark.parametrize("dig,ana,error", [
    ({"status": "failed", "error": "E", "log": "/l"},
     {"status": "failed", "error": "AnalogError: does\n   not   fit"},
     "CrystalbenchError: sim-analog failed: AnalogError: does not fit"),
    ({"status": "failed", "error": "YosysError: abc", "log": "/d/log.txt"}, {"status": "ok"},
     "CrystalbenchError: its digital design failed (YosysError: abc); see /d/log.txt"),
])
def test_run_point_failed_design_recorded(tmp_path, stages, dig, ana, error):
    folder = tmp_path / "p"
    r = sweep.run_point("/cr", {}, str(folder), dig, ana, 10, INFO)
    assert r == {"folder": str(folder), **INFO, "status": "failed", "error": error,
                 "traceback": r["traceback"], "log": str(folder / "log.txt"),
                 "seconds": r["seconds"]}
    assert r["traceback"][0] == "Traceback (most recent call last):"
    assert any(line.startswith("crystalbench.errors.CrystalbenchError: ") for line in r["traceback"])
    assert len(r["traceback"]) <= 12 and 0.0 <= r["seconds"] < 5.0
    assert json.loads((folder / "point.json").read_text()) == r
    assert stages.calls == {"load": [], "hybrid": []}


# ---- one task: its clock, its log, its failure record -------------------------------------------
def scripted_clock(monkeypatch):
    """perf_counter reads 0 at the task's start and 12.345 at every later reading;
    strftime stays the real one."""
    import time as real_time
    from types import SimpleNamespace

    readings = iter([0.0])
    monkeypatch.setattr(sweep, "time", SimpleNamespace(
        perf_counter=lambda: next(readings, 12.345), strftime=real_time.strftime))


STAMP = r"\d\d:\d\d:\d\d "  # every log line starts with the wall-clock time, HH:MM:SS


def test_task_records_its_seconds_to_a_tenth_and_logs_each_line_with_the_time(tmp_path,
                                                                             monkeypatch):
    import re

    scripted_clock(monkeypatch)
    folder = tmp_path / "t"

    def body(log):
        log("working")
        return {"status": "ok", "x": 1}

    res = sweep._task(folder, "t.json", "the thing", body)
    assert res == {"status": "ok", "x": 1, "seconds": 12.3}
    assert json.loads((folder / "t.json").read_text()) == res
    lines = (folder / "log.txt").read_bytes().decode().split("\n")
    assert [re.sub(f"^{STAMP}", "", ln) for ln in lines] == [
        "working", "the thing done in 12.3 s", ""]
    assert all(re.match(STAMP, ln) for ln in lines[:2])


def test_a_failing_task_records_its_error_last_12_traceback_lines_and_log(tmp_path,
                                                                         monkeypatch):
    import re

    scripted_clock(monkeypatch)
    folder = tmp_path / "t"

    def deep(k):  # a traceback of more than 12 lines
        if k == 0:
            raise ValueError("does\n   not   fit")
        deep(k - 1)

    res = sweep._task(folder, "t.json", "the thing", lambda log: deep(8))
    tb = res["traceback"]
    assert res == {"folder": str(folder), "status": "failed",
                   "error": "ValueError: does not fit", "traceback": tb,
                   "log": str(folder / "log.txt"), "seconds": 12.3}
    text = (folder / "log.txt").read_text()
    # the last 12 lines of the whole traceback, which the log holds
    assert len(tb) == 12 and tb == text.rstrip("\n").splitlines()[-12:]
    assert tb[-2:] == ["ValueError: does", "   not   fit"]
    assert re.match(f"^{STAMP}FAILED: ValueError: does\n   not   fit\n{STAMP}Traceback "
                    r"\(most recent call last\):\n", text)
    assert len(text.splitlines()) > 2 + 12  # the whole traceback is in the log
    assert json.loads((folder / "t.json").read_text()) == res
    # with extra facts, those stand in for the folder
    again = sweep._task(tmp_path / "u", "t.json", "x", lambda log: deep(0), {"point": "p9"})
    assert again["point"] == "p9" and "folder" not in again


# ---- the tasks' stage calls: run_digital and run_analog (stages and _load stubbed) --------------
SYNTH = {"designs": {"frontier_serial": {"kind": "frontier", "lut4": 310},
                     "all_digital_serial": {"kind": "all_digital", "lut4": 1900,
                                            "fmax_mhz": 22.99},
                     "all_digital_small_serial": {"kind": "all_digital_small"}},  # no lut4
         "frontier": {"design": "frontier_serial", "lut4": 310}}
SIM = {"vectors": 6, "runs": {
    "frontier_serial": {"latency_cycles": 1},  # the fixed-point model's run: not the gates'
    "frontier_serial_gates": {"fixed_point_test_accuracy": 0.955, "class_agreement_with_torch": 1.0,
                              "bit_exact_fraction": 0.995, "energy_per_inference_nj": 20.5,
                              "latency_cycles": 483},
    "all_digital_serial_gates": {"fixed_point_test_accuracy": 0.96,
                                 "class_agreement_with_torch": 0.985, "bit_exact_fraction": 1.0,
                                 "energy_per_inference_nj": 1384.0, "latency_cycles": 2300},
    "all_digital_small_serial_gates": {"fixed_point_test_accuracy": 0.93,  # no energy
                                       "class_agreement_with_torch": 0.99,
                                       "bit_exact_fraction": 0.97, "latency_cycles": 115}}}
# at rtl.clock_mhz = 23: 483 / 23 = 21 us, 2300 / 23 = 100 us, 115 / 23 = 5 us
DESIGNS = [
    {"design": "frontier_serial", "kind": "frontier", "lut4": 310, "accuracy": 0.955,
     "agreement": 1.0, "bit_exact": 0.995, "energy_nj": 20.5, "latency_us": 21.0,
     "latency_cycles": 483, "clock_mhz": 23.0, "fmax_mhz": None},
    {"design": "all_digital_serial", "kind": "all_digital", "lut4": 1900, "accuracy": 0.96,
     "agreement": 0.985, "bit_exact": 1.0, "energy_nj": 1384.0, "latency_us": 100.0,
     "latency_cycles": 2300, "clock_mhz": 23.0, "fmax_mhz": 22.99},
    {"design": "all_digital_small_serial", "kind": "all_digital_small", "lut4": None,
     "accuracy": 0.93, "agreement": 0.99, "bit_exact": 0.97, "energy_nj": None, "latency_us": 5.0,
     "latency_cycles": 115, "clock_mhz": 23.0, "fmax_mhz": None}]


@pytest.fixture
def flows(monkeypatch):
    """sweep._load and the synth, sim and sim-analog stages replaced by recorders: a fake
    Crystal named tiny, a config at rtl.clock_mhz = 23, the stages returning st.synth, st.sim
    and st.analog (or raising them when they are exceptions)."""
    from types import SimpleNamespace

    from crystalbench.analog import flow as analog_flow
    from crystalbench.results import Paths
    from crystalbench.rtl import flow as synth_flow
    from crystalbench.sim import flow as sim_flow

    calls = {"load": [], "synth": [], "sim": [], "analog": []}
    st = SimpleNamespace(calls=calls, c=SimpleNamespace(name="tiny"),
                         cfg=SimpleNamespace(rtl=SimpleNamespace(clock_mhz=23.0)),
                         synth=SYNTH, sim=SIM, analog={"result_file": "/a/sim-analog/result.json"})

    def load(crystal_dir, data, folder):
        calls["load"].append((crystal_dir, data, folder))
        return st.c, st.cfg, Paths(folder, "tiny")

    def answer(what):
        res = getattr(st, what)
        if isinstance(res, Exception):
            raise res
        return res

    def synth(c, cfg, paths, log):
        calls["synth"].append((c, cfg, paths, log))
        log("synth stub ran")
        return answer("synth")

    def sim(c, cfg, paths, log, *, vectors):
        calls["sim"].append((c, cfg, paths, log, vectors))
        log("sim stub ran")
        return answer("sim")

    def analog(c, cfg, paths, log):
        calls["analog"].append((c, cfg, paths, log))
        log("sim-analog stub ran")
        return answer("analog")

    monkeypatch.setattr(sweep, "_load", load)
    monkeypatch.setattr(synth_flow, "run", synth)
    monkeypatch.setattr(sim_flow, "run", sim)
    monkeypatch.setattr(analog_flow, "run", analog)
    return st


def log_lines(folder: Path) -> list[str]:
    import re

    return [re.sub(f"^{STAMP}", "", ln) for ln in (folder / "log.txt").read_text().splitlines()]


def test_run_digital_designs_from_synth_and_sims_gate_runs(tmp_path, flows, monkeypatch):
    from crystalbench.results import Paths

    scripted_clock(monkeypatch)
    folder = tmp_path / "digital" / "d1"
    # the folder as given (a trailing slash) is written as a path
    res = sweep.run_digital("/cr", {"k": 1}, str(folder) + "/", 7)
    assert res == {"status": "ok", "folder": str(folder), "vectors": 6,
                   "frontier": "frontier_serial", "designs": DESIGNS, "seconds": 12.3}
    assert [type(d["latency_us"]) for d in res["designs"]] == [float] * 3
    paths = Paths(folder, "tiny")
    assert flows.calls["load"] == [("/cr", {"k": 1}, folder)]
    assert isinstance(flows.calls["load"][0][2], Path)
    ((c, cfg, p, log),) = flows.calls["synth"]
    assert (c, cfg, p) == (flows.c, flows.cfg, paths) and callable(log)
    # sim runs on the vectors asked for (it answers with the count it ran) and the same log
    assert flows.calls["sim"] == [(flows.c, flows.cfg, paths, log, 7)]
    assert flows.calls["analog"] == []
    assert json.loads((folder / "digital.json").read_text()) == res
    assert log_lines(folder) == ["synth stub ran", "sim stub ran", "digital design done in 12.3 s"]
    # cached: the same result, the stages not run again
    assert sweep.run_digital("/cr", {"k": 1}, str(folder), 7) == res
    assert len(flows.calls["synth"]) == 1 and len(flows.calls["sim"]) == 1


def test_run_digital_without_a_frontier_and_a_failure_recorded_then_retried(tmp_path, flows,
                                                                           monkeypatch):
    from crystalbench.errors import CrystalbenchError

    scripted_clock(monkeypatch)
    flows.synth = {"designs": {"all_digital_serial": SYNTH["designs"]["all_digital_serial"]}}
    res = sweep.run_digital("/cr", {}, str(tmp_path / "a"), 3)
    assert res == {"status": "ok", "folder": str(tmp_path / "a"), "vectors": 6, "frontier": None,
                   "designs": [DESIGNS[1]], "seconds": 12.3}

    scripted_clock(monkeypatch)
    flows.synth = CrystalbenchError("abc\n   failed")
    folder = tmp_path / "b"
    res = sweep.run_digital("/cr", {}, str(folder), 3)
    assert res == {"folder": str(folder), "status": "failed",
                   "error": "CrystalbenchError: abc failed", "traceback": res["traceback"],
                   "log": str(folder / "log.txt"), "seconds": 12.3}
    assert res["traceback"][-2:] == ["crystalbench.errors.CrystalbenchError: abc", "   failed"]
    assert json.loads((folder / "digital.json").read_text()) == res
    assert len(flows.calls["sim"]) == 1  # not after synth failed
    # a failure is not a cached result: the next run retries it
    flows.synth = SYNTH
    assert sweep.run_digital("/cr", {}, str(folder), 3)["status"] == "ok"
    assert json.loads((folder / "digital.json").read_text())["status"] == "ok"
    # sim's failure too
    flows.sim = ValueError("no gates")
    res = sweep.run_digital("/cr", {}, str(tmp_path / "c"), 3)
    assert res["status"] == "failed" and res["error"] == "ValueError: no gates"


def test_run_analog_result_file_cache_and_failure(tmp_path, flows, monkeypatch):
    from crystalbench.errors import AnalogError
    from crystalbench.results import Paths

    scripted_clock(monkeypatch)
    folder = tmp_path / "analog" / "a1"
    res = sweep.run_analog("/cr", {"k": 2}, str(folder) + "/")
    assert res == {"status": "ok", "folder": str(folder), "result": "/a/sim-analog/result.json",
                   "seconds": 12.3}
    assert flows.calls["load"] == [("/cr", {"k": 2}, folder)]
    assert isinstance(flows.calls["load"][0][2], Path)
    ((c, cfg, p, log),) = flows.calls["analog"]
    assert (c, cfg, p) == (flows.c, flows.cfg, Paths(folder, "tiny")) and callable(log)
    assert flows.calls["synth"] == [] and flows.calls["sim"] == []
    assert json.loads((folder / "analog.json").read_text()) == res
    assert log_lines(folder) == ["sim-analog stub ran", "sim-analog done in 12.3 s"]
    assert sweep.run_analog("/cr", {"k": 2}, str(folder)) == res  # cached
    assert len(flows.calls["analog"]) == 1

    scripted_clock(monkeypatch)
    flows.analog = AnalogError("rail")
    folder = tmp_path / "analog" / "a2"
    res = sweep.run_analog("/cr", {}, str(folder))
    assert res == {"folder": str(folder), "status": "failed", "error": "AnalogError: rail",
                   "traceback": res["traceback"], "log": str(folder / "log.txt"), "seconds": 12.3}
    assert json.loads((folder / "analog.json").read_text()) == res
    assert log_lines(folder)[:2] == ["sim-analog stub ran", "FAILED: AnalogError: rail"]


# ---- _load and _client ---------------------------------------------------------------------------
def test_load_crystal_validated_config_and_paths(tmp_path):
    from crystalbench import config as cfgmod
    from crystalbench import crystal as cm
    from crystalbench.errors import ConfigError
    from crystalbench.results import Paths

    c = tiny_crystal()
    cm.save(c, tmp_path / "crystal")
    folder = tmp_path / "points" / "p1"
    data = {"experiment": "tiny", "rtl": {"clock_mhz": 23.0}}
    c2, cfg, paths = sweep._load(str(tmp_path / "crystal"), data, folder)
    assert c2.name == "tiny" and cm.digest(c2) == cm.digest(c)
    assert cfg.rtl.clock_mhz == 23.0
    assert json.loads(json.dumps(cfg)) == json.loads(json.dumps(cfgmod.validate(data, "x")))
    assert paths == Paths(folder, "tiny")
    with pytest.raises(ConfigError) as e:
        sweep._load(str(tmp_path / "crystal"), {"analog": {"opamp": "ua741"}}, folder)
    assert str(e.value) == (f"{folder}: config: analog.opamp: 'ua741' is not allowed; choose one "
                            "of ideal, mcp6002, opa2333, tlv9062, lm358, opa835, opa837")


def test_client_on_a_scheduler_or_a_local_cluster_of_processes(monkeypatch):
    import dask.distributed as dd

    made = []

    class Cluster:
        def __init__(self, *args, **kwargs):
            made.append(("cluster", args, kwargs))

    class Client:
        def __init__(self, *args, **kwargs):
            made.append(("client", args, kwargs))

    monkeypatch.setattr(dd, "Client", Client)
    monkeypatch.setattr(dd, "LocalCluster", Cluster)
    client, cluster = sweep._client("tcp://h:8786", 5)
    assert cluster is None and isinstance(client, Client)
    assert made == [("client", ("tcp://h:8786",), {})]
    for scheduler in (None, ""):
        made.clear()
        client, cluster = sweep._client(scheduler, 3)
        assert isinstance(client, Client) and isinstance(cluster, Cluster)
        assert made == [("cluster", (), {"n_workers": 3, "threads_per_worker": 1,
                                         "processes": True, "dashboard_address": ":0"}),
                        ("client", (cluster,), {})]


# ---- _compute on an in-process Dask cluster ------------------------------------------------------
# Dask pickles a task's function, a closure by value (its recorder would be a copy): the fake
# tasks live here at module level (pickled by reference) and share DASK. A result that is an
# exception is raised.
DASK = {"calls": [], "results": {}}


def _answer(key):
    res = DASK["results"][key]
    if isinstance(res, Exception):
        raise res
    return res


def fake_run_digital(crystal_dir, data, folder, vectors):
    DASK["calls"].append(("digital", crystal_dir, data, folder, vectors))
    return _answer(Path(folder).name)


def fake_run_analog(crystal_dir, data, folder):
    DASK["calls"].append(("analog", crystal_dir, data, folder))
    return _answer(Path(folder).name)


def fake_run_point(crystal_dir, data, folder, digital, analog, vectors, info):
    DASK["calls"].append(("point", crystal_dir, data, folder, digital, analog, vectors, info))
    return _answer(Path(folder).name)


def dask_calls(kind):
    return sorted((c[1:] for c in DASK["calls"] if c[0] == kind), key=lambda c: c[2])


@pytest.fixture
def in_process(monkeypatch):
    """sweep._client -> a client of a LocalCluster of one in-process worker thread (started in
    ~0.1 s; the slow test runs worker processes); the tasks -> the fakes above. Yields the
    _client calls as [scheduler, workers, client, cluster]; st.own_cluster = False hands out
    (client, None) as for a scheduler."""
    from types import SimpleNamespace

    from dask.distributed import Client, LocalCluster

    DASK["calls"].clear()
    DASK["results"].clear()
    st = SimpleNamespace(made=[], own_cluster=True)

    def client(scheduler, workers):
        cluster = LocalCluster(n_workers=1, processes=False, threads_per_worker=1,
                               dashboard_address=":0")
        cl = Client(cluster)
        st.made.append([scheduler, workers, cl, cluster])
        return cl, (cluster if st.own_cluster else None)

    monkeypatch.setattr(sweep, "_client", client)
    monkeypatch.setattr(sweep, "run_digital", fake_run_digital)
    monkeypatch.setattr(sweep, "run_analog", fake_run_analog)
    monkeypatch.setattr(sweep, "run_point", fake_run_point)
    yield st
    for _s, _w, cl, cluster in st.made:
        cl.close()
        cluster.close()


def ok(name, **extra):
    return {"status": "ok", "name": name, **extra}


def test_compute_one_task_per_design_and_point_rows_and_failures(tmp_path, in_process, capsys):
    out, cr = tmp_path / "sweep", tmp_path / "sweep" / "crystal"
    info = {p: {"kind": "hybrid", "point": p} for p in ("p1", "p2", "p3")}
    todo = [("p1", {"pt": 1}, out / "points" / "p1", "d1", info["p1"], "a1"),
            ("p2", {"pt": 2}, out / "points" / "p2", "d1", info["p2"], "a1"),  # p1's analog
            ("p3", {"pt": 3}, out / "points" / "p3", "d2", info["p3"], "a3")]
    dig = {"d1": ({"dg": 1}, out / "digital" / "d1"), "d2": ({"dg": 2}, out / "digital" / "d2")}
    DASK["results"].update({
        "d1": ok("d1"), "d2": {"status": "failed", "error": "YosysError: abc", "log": "/d2/log"},
        "a1": ok("a1"), "a3": {"status": "failed", "error": "AnalogError: rail", "log": "/a3/log"},
        "p1": ok("p1", point="p1"), "p2": ok("p2", point="p2"),
        "p3": {"point": "p3", "status": "failed", "error": "E3", "log": "/p3/log"}})
    digital = {"d0": ok("d0"), "d1": None}
    rows = sweep._compute(todo, dig, digital, cr, 7, None, 2, True)

    assert dask_calls("digital") == [(str(cr), {"dg": 1}, str(out / "digital" / "d1"), 7),
                                     (str(cr), {"dg": 2}, str(out / "digital" / "d2"), 7)]
    # one sim-analog per analog design, on its first point's config, in out/analog/<key>
    assert dask_calls("analog") == [(str(cr), {"pt": 1}, str(out / "analog" / "a1")),
                                    (str(cr), {"pt": 3}, str(out / "analog" / "a3"))]
    # each point after (and with the results of) its digital and analog designs
    R = DASK["results"]
    assert dask_calls("point") == [
        (str(cr), {"pt": 1}, str(out / "points" / "p1"), R["d1"], R["a1"], 7, info["p1"]),
        (str(cr), {"pt": 2}, str(out / "points" / "p2"), R["d1"], R["a1"], 7, info["p2"]),
        (str(cr), {"pt": 3}, str(out / "points" / "p3"), R["d2"], R["a3"], 7, info["p3"])]
    # the rows: the points' results only, as they finish
    assert sorted(rows, key=lambda r: r["point"]) == [R["p1"], R["p2"], R["p3"]]
    assert digital == {"d0": ok("d0"), "d1": R["d1"], "d2": R["d2"]}
    # a failed digital design and a failed point are named; a failed analog design is not (its
    # points say so)
    cap = capsys.readouterr()
    assert sorted(cap.out.splitlines()) == [
        "sweep: digital-d2 failed: YosysError: abc (log /d2/log)",
        "sweep: point-p3 failed: E3 (log /p3/log)"]
    # the progress bar: 7 tasks, 2 failed (its last state, as left on the terminal)
    last = cap.err.strip().split("\r")[-1]
    assert last.startswith("sweep: 100%") and " 7/7 [" in last and last.endswith("task/s, failed=2]")
    ((scheduler, workers, client, cluster),) = in_process.made
    assert (scheduler, workers) == (None, 2)
    assert client.status == "closed" and cluster.status.name == "closed"


def test_compute_digital_only_quiet_on_a_scheduler(tmp_path, in_process, capsys):
    in_process.own_cluster = False  # a scheduler's client: no cluster of ours to close
    DASK["results"]["d1"] = {"status": "failed", "error": "E", "log": "/l"}
    digital = {}
    rows = sweep._compute([], {"d1": ({}, tmp_path / "d1")}, digital, tmp_path / "cr", 3,
                          "tcp://h:8786", 4, False)
    assert rows == [] and digital == {"d1": DASK["results"]["d1"]}
    assert [c[0] for c in DASK["calls"]] == ["digital"]
    cap = capsys.readouterr()
    assert cap.out == "sweep: digital-d1 failed: E (log /l)\n"
    assert "sweep" not in cap.err  # no bar
    ((scheduler, workers, client, cluster),) = in_process.made
    assert (scheduler, workers) == ("tcp://h:8786", 4)
    assert client.status == "closed" and cluster.status.name == "running"


def test_compute_closes_the_client_and_cluster_when_a_task_raises(tmp_path, in_process):
    DASK["results"].update({"d1": ok("d1"), "a1": ok("a1"), "p1": RuntimeError("boom")})
    todo = [("p1", {}, tmp_path / "points" / "p1", "d1", {"point": "p1"}, "a1")]
    with pytest.raises(RuntimeError, match="boom"):
        sweep._compute(todo, {"d1": ({}, tmp_path / "d1")}, {}, tmp_path / "cr", 3, None, 1,
                       False)
    ((_s, _w, client, cluster),) = in_process.made
    assert client.status == "closed" and cluster.status.name == "closed"


# ---- run: the checks, the plan's cached/now split, the rows, the machine, the stage result -----
RUN_GRID = """points:
  - {analog.opamp: opa835}
  - {analog.opamp: opa835, adc.part: ad7091r}
  - {analog.opamp: opa835, adc.bits: 6}
  - {analog.opamp: opa837}
"""
NEEDS = "sweep needs --grid FILE (a YAML grid of --set overrides) and --config"
FEW = "need at least 2 (energy is measured between results)"


@pytest.mark.parametrize("kw,message", [
    ({"grid": None}, NEEDS), ({"grid": ""}, NEEDS), ({"config_path": None}, NEEDS),
    ({"grid": None, "config_path": None}, NEEDS), ({"grid": None, "vectors": 1}, NEEDS),
    ({"vectors": 1}, f"--vectors 1: {FEW}"), ({"vectors": -3}, f"--vectors -3: {FEW}"),
    ({"vectors": 0}, f"--vectors 0: {FEW}"),  # 0 is no default: it is refused
    ({"workers": 0}, "--workers 0: need at least 1"), ({"workers": -1}, "--workers -1: need at least 1"),
    ({"vectors": 1, "workers": 0}, f"--vectors 1: {FEW}"),
])
def test_run_refuses_before_any_work(tmp_path, monkeypatch, kw, message):
    from crystalbench.errors import ConfigError
    from crystalbench.results import Paths

    monkeypatch.setattr(sweep, "load_grid", lambda g: pytest.fail("reached the grid"))
    paths = Paths(tmp_path / "build", "tiny")
    with pytest.raises(ConfigError) as e:
        sweep.run(None, None, paths, **{"grid": "g.yaml", "config_path": "c.yaml", **kw})
    assert str(e.value) == message
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("kw", [{"vectors": 2, "workers": 1}, {"vectors": None}, {}])
def test_run_accepts_two_vectors_and_one_worker(tmp_path, monkeypatch, kw):
    from crystalbench.results import Paths

    class Reached(Exception):
        pass

    def load_grid(g):
        raise Reached(g)

    monkeypatch.setattr(sweep, "load_grid", load_grid)
    with pytest.raises(Reached, match="^g.yaml$"):
        sweep.run(None, None, Paths(tmp_path, "tiny"), grid="g.yaml", config_path="c.yaml", **kw)


@pytest.fixture
def world(tmp_path, monkeypatch, no_plots):
    """The tiny crystal, a config and a 4-point grid (2 digital designs: adc.bits; analog
    designs: p1 and p2 share one, the ADC part apart), a scripted clock, host and load, and
    recorders of run's log and summarize's arguments. w.plan(vectors, sets) -> plan's
    (dig, todo) as run makes it."""
    from types import SimpleNamespace

    from crystalbench.results import Paths

    w = SimpleNamespace(c=tiny_crystal(), log=[], summarize=[], clock=[])
    w.cfg = str(tmp_path / "c.yaml")
    Path(w.cfg).write_text("experiment: tiny\n")
    w.grid = str(tmp_path / "grid.yaml")
    Path(w.grid).write_text(RUN_GRID)
    w.paths = Paths(tmp_path / "build", "tiny")
    w.out = w.paths.stage("sweep")

    def plan(vectors, sets=None):
        return sweep.plan(w.c, w.cfg, sweep.load_grid(w.grid), w.out, vectors, sets)

    w.plan = plan
    readings = iter([100.0, 112.36])
    loads = iter([(1.234, 0.5, 2.0051), (3.456, 1.0, 0.004)])

    def strftime(fmt, t=None):
        w.clock.append((fmt, t))
        return "2026-11-28 04:35 UTC"

    monkeypatch.setattr(sweep, "time", SimpleNamespace(
        perf_counter=lambda: next(readings), strftime=strftime, gmtime=lambda: "GMT"))
    monkeypatch.setattr(sweep, "os", SimpleNamespace(getloadavg=lambda: next(loads),
                                                     cpu_count=lambda: 64))
    monkeypatch.setattr(sweep, "platform", SimpleNamespace(node=lambda: "host9"))
    real = sweep.summarize

    def summarize(rows, digital, out, vectors, grid, engine):
        w.summarize.append((list(rows), dict(digital), out, vectors, grid, engine))
        return real(rows, digital, out, vectors, grid, engine)

    monkeypatch.setattr(sweep, "summarize", summarize)
    return w


MACHINE_RUN = {"host": "host9", "cpus": 64, "date_utc": "2026-11-28 04:35 UTC",
               "load_average": [1.23, 0.5, 2.01], "load_average_end": [3.46, 1.0, 0.0]}


def put(path: Path, data: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return data


def test_run_computes_what_is_not_cached_and_sorts_rows_in_grid_order(world, in_process, capsys):
    from crystalbench import crystal as cm

    w = world
    sets = ["analog.supply_v=5.0"]
    dig, todo = w.plan(5, sets)
    (k1, _, f1, d1, i1, a1), (k2, _, f2, _, i2, a2), (k3, _, f3, d3, i3, _), (k4, _, f4, _, i4, a4) \
        = todo
    assert len(dig) == 2 and {d1, d3} == set(dig) and a1 == a2 and len({a1, a4}) == 2
    assert i1["supply_v"] == 5.0  # the sweep's own --set under every point
    # p3 is cached (its digital design d3 too, and no other point needs it); p2 failed before
    # (retried); d1 is cached but p1, p2 and p4 need it: submitted again (it answers from
    # its cache)
    row3 = put(f3 / "point.json", {**i3, "folder": str(f3), "status": "ok", "energy_nj": 30.0})
    put(f2 / "point.json", {**i2, "status": "failed", "error": "E"})
    dig3 = put(w.out / "digital" / d3 / "digital.json", ok("d3", designs=[]))
    put(w.out / "digital" / d1 / "digital.json", ok("old d1", designs=[]))
    # the ADC facts of an ok point's sim-hybrid result (cached or not); not of a failed point
    for f, ch, nj in ((f1, 4, 25.03), (f3, 6, 3.5), (f4, 8, 1.5)):
        put(f / "tiny" / "hybrid" / "result.json", {"adc": {"channels": ch,
                                                           "energy_per_conversion_nj": nj}})
    row1 = {**i1, "folder": str(f1), "status": "ok", "energy_nj": 10.0}
    row2 = {**i2, "folder": str(f2), "status": "ok", "energy_nj": 20.0}
    row4 = {**i4, "folder": str(f4), "status": "failed", "error": "E4", "log": "/p4/log"}
    new1 = ok("d1", designs=[])
    DASK["results"].update({k1: row1, k2: row2, k4: row4, d1: new1, a1: ok("a1"), a4: ok("a4")})
    cm.save(tiny_crystal(seed=1), w.out / "crystal")  # another crystal: replaced, not kept

    res = sweep.run(w.c, None, w.paths, w.log.append, grid=w.grid, config_path=w.cfg, workers=2,
                    vectors=5, progress=False, sets=sets)

    assert w.log == ["sweep: 4 points (1 cached), 2 digital design(s) (1 cached), 5 test vectors "
                     "each; LocalCluster of 2 worker processes"]
    cr = str(w.out / "crystal")
    assert cm.digest(cm.load(cr)) == cm.digest(w.c)
    assert not [p for p in w.out.iterdir() if p.name.startswith("crystal.")]
    assert dask_calls("digital") == [(cr, dig[d1][0], str(w.out / "digital" / d1), 5)]
    assert dask_calls("analog") == sorted([(cr, todo[0][1], str(w.out / "analog" / a1)),
                                           (cr, todo[3][1], str(w.out / "analog" / a4))],
                                          key=lambda c: c[2])
    assert sorted(c[2] for c in dask_calls("point")) == sorted(str(f) for f in (f1, f2, f4))
    assert [(s, wk) for s, wk, *_ in in_process.made] == [(None, 2)]
    assert capsys.readouterr().out == f"sweep: point-{k4} failed: E4 (log /p4/log)\n"
    # the rows in grid order, the ADC facts added to the ok ones with a sim-hybrid result
    ((rows, digital, out, vectors, grid, engine),) = w.summarize
    assert rows == [{**row1, "adc_channels": 4, "adc_nj_per_conversion": 25.03, "agreement_ok": None},
                    {**row2, "agreement_ok": None},
                    {**row3, "adc_channels": 6, "adc_nj_per_conversion": 3.5, "agreement_ok": None},
                    {**row4, "agreement_ok": None}]
    assert digital == {d1: new1, d3: dig3}
    assert (out, vectors, grid, engine) == (w.out, 5, w.grid, "LocalCluster(2)")
    assert res["wall_seconds"] == 12.4 and res["computed_points"] == 3
    assert res["machine"] == MACHINE_RUN
    assert w.clock == [("%Y-%m-%d %H:%M UTC", "GMT")]
    assert (res["stage"], res["experiment"], res["points"], res["grid"]) == ("sweep", "tiny", 4,
                                                                              w.grid)
    assert res["summary"][0].startswith("4 points (3 ok, 1 failed, 0 with agreement >= 0.99), "
                                        "3 computed now; 2 digital design(s); 5 vectors; 12 s on ")
    assert res["result_file"] == str(w.out / "result.json")
    written = json.loads((w.out / "result.json").read_text())
    assert {k: v for k, v in written.items() if k != "measured"} == {
        k: v for k, v in res.items() if k != "result_file"}
    assert "3 of 4 points computed by this run" in (w.out / "report.md").read_text()


def test_run_all_points_cached_a_failed_digital_design_retried(world, monkeypatch):
    w = world
    dig, todo = w.plan(5)
    (d1, d3) = list(dig)
    rows = [put(f / "point.json", {**info, "folder": str(f), "status": "ok", "energy_nj": 1.0})
            for _pk, _d, f, _dk, info, _ak in todo]
    put(w.out / "digital" / d1 / "digital.json", {"status": "failed", "error": "E"})
    dig3 = put(w.out / "digital" / d3 / "digital.json", ok("d3", designs=[]))
    calls = []

    def compute(*args):
        calls.append((*args[:2], dict(args[2]), *args[3:]))
        args[2][d1] = ok("d1", designs=[])
        return []

    monkeypatch.setattr(sweep, "_compute", compute)
    res = sweep.run(w.c, None, w.paths, w.log.append, grid=w.grid, config_path=w.cfg,
                    scheduler="tcp://h:8786", workers=3, vectors=5, progress=False)
    assert calls == [([], {d1: dig[d1]}, {d1: None, d3: dig3}, w.out / "crystal", 5,
                      "tcp://h:8786", 3, False)]
    assert w.log == ["sweep: 4 points (4 cached), 2 digital design(s) (1 cached), 5 test vectors "
                     "each; scheduler tcp://h:8786"]
    ((got, digital, _out, _v, _g, engine),) = w.summarize
    assert got == [{**r, "agreement_ok": None} for r in rows]
    assert digital == {d1: ok("d1", designs=[]), d3: dig3} and engine == "tcp://h:8786"
    assert res["computed_points"] == 0 and res["engine"] == "tcp://h:8786"


def test_run_on_a_fresh_build_folder_makes_it(world, monkeypatch):
    """Nothing under the build folder yet (a --crystal from elsewhere): the sweep makes its
    folders, parents too, and saves the Crystal its tasks read."""
    from crystalbench import crystal as cm

    w = world
    assert not w.out.parent.exists()
    monkeypatch.setattr(sweep, "_compute", lambda todo, dig, digital, *a: digital.update(
        {k: ok(k, designs=[]) for k in dig}) or [])
    res = sweep.run(w.c, None, w.paths, w.log.append, grid=w.grid, config_path=w.cfg)
    assert res["computed_points"] == 4 and cm.digest(cm.load(w.out / "crystal")) == cm.digest(w.c)


def test_run_everything_cached_computes_nothing(world, monkeypatch):
    w = world
    dig, todo = w.plan(sweep.VECTORS)
    for _pk, _d, f, _dk, info, _ak in todo:
        put(f / "point.json", {**info, "folder": str(f), "status": "ok"})
    for k in dig:
        put(w.out / "digital" / k / "digital.json", ok(k, designs=[]))
    monkeypatch.setattr(sweep, "_compute", lambda *a: pytest.fail("nothing to compute"))
    res = sweep.run(w.c, None, w.paths, w.log.append, grid=w.grid, config_path=w.cfg)
    assert w.log == ["sweep: 4 points (4 cached), 2 digital design(s) (2 cached), 200 test "
                     "vectors each; LocalCluster of 2 worker processes"]
    assert res["computed_points"] == 0 and res["vectors"] == 200 and res["points"] == 4
    assert res["engine"] == "LocalCluster(2)"
