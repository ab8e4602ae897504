"""The one result writer, stage folders, locks, kept runs, the error family and the report."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from crystalbench import errors, report, results, stage
from crystalbench.results import Paths


def test_writer_turns_nan_and_numpy_into_plain_json(tmp_path):
    res = {"a": float("nan"), "b": np.float32(0.5), "c": np.array([1, 2]), "d": (np.inf, -np.inf),
           "e": {1: np.int64(7)}, "f": Path("/x/y"), "g": [np.nan, 2.0]}
    path = results.write_result(tmp_path, res)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    got = json.loads(text)
    assert got["a"] is None and got["b"] == 0.5 and got["c"] == [1, 2]
    assert got["d"] == [None, None] and got["e"] == {"1": 7} and got["f"] == "/x/y"
    assert got["g"] == [None, 2.0]
    m = got["measured"]
    assert m["machine"]["cores"] == os.cpu_count() and m["date"].endswith("Z")
    assert len(m["commit"] or "0" * 40) == 40
    assert not list(tmp_path.glob(".*.tmp"))


def test_writer_keeps_a_given_measured_block(tmp_path):
    stamp = {"date": "2026-01-01T00:00:00Z", "machine": {"cpu": "x"}}
    got = json.loads(results.write_result(tmp_path, {"measured": stamp}).read_text())
    assert got["measured"] == stamp


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "r.json"
    results.atomic_write_json(p, {"v": 1})
    with pytest.raises(TypeError):
        results.atomic_write_json(p, {"v": object()})
    assert json.loads(p.read_text()) == {"v": 1} and not list(tmp_path.glob(".*.tmp"))


def test_paths_build_every_stage_folder(tmp_path):
    p = Paths(tmp_path, "digits")
    assert p.stage("analog") == tmp_path / "digits" / "analog"
    assert p.crystal == tmp_path / "digits" / "crystal"
    assert p.result("sim") == tmp_path / "digits" / "sim" / "result.json"
    for bad in ("", "../up", ".hidden", "a/b"):
        with pytest.raises(errors.CrystalbenchError, match="cannot be a folder name"):
            Paths(tmp_path, bad)


def test_lock_refuses_a_second_writer_and_frees_on_exit(tmp_path):
    folder = tmp_path / "exp" / "train"
    with results.lock(folder):
        with pytest.raises(errors.BusyError, match=rf"{folder} is being written by another "
                                                   rf"crystalbench run \(pid {os.getpid()}"):
            with results.lock(folder):
                pass
    with results.lock(folder):  # released
        pass


def test_keep_previous_moves_aside_and_never_overwrites(tmp_path):
    folder = tmp_path / "train"
    assert results.keep_previous(folder) is None  # nothing there
    folder.mkdir()
    assert results.keep_previous(folder) is None  # empty: nothing to keep
    kept = []
    for i in range(3):
        folder.mkdir(exist_ok=True)
        (folder / "run.txt").write_text(str(i))
        kept.append(results.keep_previous(folder))
    assert not folder.exists() and len(set(kept)) == 3
    assert sorted(p.joinpath("run.txt").read_text() for p in kept) == ["0", "1", "2"]
    assert all(p.name.startswith("train.prev-") for p in kept)


def test_stage_finish_writes_the_result_with_its_summary(tmp_path):
    res = stage.finish("sim", Paths(tmp_path, "e"), {"x": math.nan}, ["line one"])
    on_disk = json.loads((tmp_path / "e" / "sim" / "result.json").read_text())
    assert on_disk["stage"] == "sim" and on_disk["experiment"] == "e"
    assert on_disk["summary"] == ["line one"] and on_disk["x"] is None
    assert res["result_file"] == str(tmp_path / "e" / "sim" / "result.json")


def test_every_error_is_one_family():
    names = [n for n in dir(errors) if n.endswith(("Error", "NotFound", "Failed"))]
    assert len(names) >= 14
    for n in names:
        assert issubclass(getattr(errors, n), errors.CrystalbenchError), n


def test_cli_prints_one_line_and_exits_2_for_user_errors(tmp_path, capsys):
    from crystalbench import cli

    (tmp_path / "exp.yaml").write_text("rtl:\n  sim_vectors: 3\n")
    assert cli.main(["--build-dir", str(tmp_path), "synth", "--config",
                     str(tmp_path / "exp.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == (f"crystalbench: error: {tmp_path / 'exp.yaml'}: key 'rtl.sim_vectors' is "
                   "now 'sim.vectors'; rename it\n")


def test_report_quotes_stage_figures_with_machine_and_date(tmp_path):
    stamp = {"date": "2026-11-27T10:00:00Z", "commit": "abcdef123456789",
             "machine": {"cpu": "Test CPU", "cores": 2, "host": "box"}}
    results.write_result(tmp_path / "exp" / "train", {
        "test_accuracy": 0.9749, "neurons_final": 48, "frozen_fraction": 1.0, "core_neurons": 48,
        "frontier_neurons": 10, "boundary_neurons": 48, "connections": 1505,
        "epochs": 100, "train_step_seconds": 33.71, "measured": stamp})
    results.write_result(tmp_path / "exp" / "synth", {"designs": {"frontier_serial": {
        "gates": 2500, "flip_flops": 265, "memory_bits": 7200,
        "all_logic": {"gates": 30000, "flip_flops": 431}, "lut4": 700, "bram": 2,
        "fmax_mhz": 32.61, "fmax_part": "iCE40UP5K"}}, "measured": stamp})
    out = report.write(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert out["result_file"] == str(tmp_path / "report.md")
    assert "| 0.9749 | 48 | 1.000 | 48 | 10 | 48 | 1,505 | 100 | 33.7 |" in text
    assert "| frontier_serial | 2,500 + 265 (+ 7,200) | 30,431 | 700 LUT4 + 2 BRAM |" in text
    assert "32.6 MHz (iCE40UP5K)" in text
    assert text.count("_measured 2026-11-27T10:00:00Z on Test CPU (2 cores, host box), "
                      "crystalbench commit abcdef1234_") == 2
    assert "sim: _not run yet" in text


def test_report_renders_bench_unsettled_and_empty_builds(tmp_path):
    with pytest.raises(errors.CrystalbenchError, match=r"no build folder; run a stage first"):
        report.write(tmp_path / "nothing")
    results.atomic_write_json(tmp_path / "bench" / "train.json", {"records": [
        {"config": "digits", "neurons_final": 48, "test_accuracy": 0.97491, "frozen_fraction": 1.0,
         "baseline_test_accuracy": 0.9721, "speedup": 1.8049, "training_speedup": 0.974}]})
    results.write_result(tmp_path / "e" / "analog", {
        "opamp_part": "Microchip MCP6002", "neurons": 48, "opamps": 112, "resistors": 1245,
        "class_agreement_with_torch": 0.9944, "rms_error_lsb": 0.638, "max_error_lsb": 4.95,
        "settling_time_us": None, "unsettled_steps": 15, "transient_steps": 15, "step_us": 0.1,
        "power_mw": 149.2, "energy_per_inference_nj": None,
        "monte_carlo": {"yield": 1.0, "runs": 20, "tolerance": 0.01}})
    (tmp_path / "mutate").mkdir()  # not an experiment
    text = report.render(tmp_path)
    assert "| digits | 48 | 0.9749 | 0.9721 | 1.0000 | 1.80x | 0.97x |" in text
    assert "_measured: not recorded" in text  # the bench file above has no measured block
    assert ("| Microchip MCP6002 | 48 | 112 | 1,245 | 0.9944 | 0.638 | 4.95 | unsettled in "
            "15 of 15 steps of 0.1 us | 149.2 | n/a | 1.00 (20 boards, tol. 0.01) |") in text
    assert "## Experiment `e`" in text and "`mutate`" not in text


def test_git_commit_from_every_kind_of_checkout(tmp_path):
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    main = tmp_path / "repo" / ".git"
    (main / "refs" / "heads").mkdir(parents=True)
    (main / "HEAD").write_text("ref: refs/heads/main\n")
    (main / "refs" / "heads" / "main").write_text(a + "\n")
    assert results.git_commit(main) == a
    (main / "refs" / "heads" / "main").unlink()  # after `git gc`: in packed-refs
    (main / "packed-refs").write_text(f"# pack-refs with: peeled\n{c} refs/heads/other\n"
                                      f"{b} refs/heads/main\n")
    assert results.git_commit(main) == b
    # a worktree: a .git file naming its folder, which names the common one
    wt = main / "worktrees" / "w"
    wt.mkdir(parents=True)
    (wt / "HEAD").write_text("ref: refs/heads/other\n")
    (wt / "commondir").write_text("../..\n")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / ".git").write_text(f"gitdir: {wt}\n")
    assert results.git_commit(tmp_path / "w" / ".git") == c
    (main / "HEAD").write_text(a + "\n")  # detached
    assert results.git_commit(main) == a
    (main / "HEAD").write_text("ref: refs/heads/gone\n")
    assert results.git_commit(main) is None
    assert results.git_commit(tmp_path / "nowhere" / ".git") is None
    (tmp_path / "bad.git").write_text("no colon here")
    assert results.git_commit(tmp_path / "bad.git") is None


def test_measured_names_this_checkout():
    import subprocess

    top = Path(results.__file__).resolve().parents[1]
    m = results.measured()
    if (top / ".git").exists():  # a checkout (not an installed or staged copy)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=top, capture_output=True,
                              text=True, check=True).stdout.strip()
        assert m["commit"] == head
    else:
        assert m["commit"] is None
    assert m["crystalbench"] == "0.1.0"
    assert m["machine"] == results.machine()


def test_report_renders_hybrid_calibration_and_c(tmp_path):
    results.write_result(tmp_path / "e" / "hybrid", {
        "adc": {"part": "Microchip MCP3008"}, "frontier_design": "frontier_serial", "vectors": 359,
        "class_agreement_with_torch": 0.99164, "test_accuracy": 0.96657, "bit_exact_fraction": 1.0,
        "energy_per_inference_nj": 1573.64, "energy_nj": {"analog_nj": 998.12, "adc_nj": 534.0,
                                                          "digital_nj": 41.52},
        "latency_us": 87.11, "latency_parts_us": {"analog_us": 6.69, "adc_us": 40.0,
                                                  "digital_us": 40.42},
        "monte_carlo": {"yield": 1.0, "boards": 20},
        "all_digital": {"design": "all_digital_small_serial", "class_agreement_with_torch": 0.98886,
                        "test_accuracy": 0.97493, "bit_exact_fraction": 1.0,
                        "energy_per_inference_nj": 87.43, "latency_us": 90.67}})
    results.write_result(tmp_path / "e" / "calibrate", {
        "boards": 2, "opamp": "TI LM358", "e_series": "E24", "tolerance": 0.05,
        "adc_part": "Microchip MCP3008", "float_test_accuracy": 0.9749,
        "accuracy_before": {"mean": 0.95}, "accuracy_after": {"mean": 0.97},
        "boards_improved_or_equal": 1, "per_board": [
            {"board": 0, "before": {"accuracy": 0.9, "agreement": 0.91},
             "after": {"accuracy": 0.95, "agreement": 0.96}, "gate_level": {"bit_exact_fraction": 1.0}},
            {"board": 1, "before": {"accuracy": 0.97, "agreement": 0.98},
             "after": {"accuracy": 0.97, "agreement": 0.98}, "kept": "no better"}]})
    results.write_result(tmp_path / "e" / "c", {
        "variants": {"f32": {"connections": 1505, "size": {"text_plus_data": 9191},
                             "check": {"max_rel_error": 4.3e-7, "class_agreement_with_torch": 1.0}},
                     "frontier": {"connections": 480, "size": {"text_plus_data": 6395},
                                  "size_Os": {"text_plus_data": 1483},
                                  "check": {"bit_exact": True, "class_agreement_with_torch": 0.9944}}},
        "bench": {"contenders": {
            "c_f32": {"batch1_latency_us": 1.185, "batch1024_ms": 0.1295},
            "torch_dense": {"label": "torch eager", "batch1_latency_us": 34.735,
                            "batch1024_ms": 0.2811, "c_f32_speedup_batch1": 29.31,
                            "c_f32_speedup_batch1024": 2.17}}}})
    text = report.render(tmp_path)
    assert ("| hybrid (Microchip MCP3008 -> frontier_serial) | 0.9916 | 0.9666 | 1.0000 | "
            "1,573.6 | 998.1 / 534.0 / 41.5 | 87.11 | 6.69 / 40.00 / 40.42 | 1.00 (20 boards) |") in text
    assert "| all-digital (all_digital_small_serial, from sim) | 0.9889 | 0.9749 | 1.0000 | 87.4 |" in text
    assert ("2 boards (TI LM358, E24 +-0.05, Microchip MCP3008): test accuracy mean 0.9500 -> "
            "0.9700 (float crystal 0.9749); 1 boards improved or equal.") in text
    assert "| 0 | 0.9000 | 0.9500 | 0.9100 | 0.9600 | loaded | 1.0000 |" in text
    assert "| 1 | 0.9700 | 0.9700 | 0.9800 | 0.9800 | kept | n/a |" in text
    assert "| f32 | 1,505 | 9,191 | n/a | max rel. error 4.3e-07 | 1.0000 |" in text
    assert "| frontier | 480 | 6,395 | 1,483 | bit-exact yes | 0.9944 |" in text
    assert "C float32: 1.19 us at batch 1, 0.130 ms at batch 1,024" in text
    assert "| torch eager | 34.73 | 0.281 | 29.3x | 2.2x |" in text


def test_read_json_messages(tmp_path):
    with pytest.raises(errors.CrystalbenchError) as e:
        results.read_json(tmp_path / "gone.json", "synth result")
    assert str(e.value) == f"{tmp_path / 'gone.json'}: synth result not found"
    with pytest.raises(errors.CrystalbenchError) as e:
        results.read_json(tmp_path / "gone.json")
    assert str(e.value) == f"{tmp_path / 'gone.json'}: file not found"
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(errors.CrystalbenchError) as e:
        results.read_json(bad, "sim result")
    assert str(e.value).startswith(f"{bad}: sim result is not valid JSON (")
    assert str(e.value).endswith("); delete it and re-run the stage that writes it")


def test_report_renders_manufacture(tmp_path):
    results.write_result(tmp_path / "e" / "manufacture", {
        "components": {"total": 1413, "resistors": 1245, "opamps": 56}, "opamp_part": "MCP6002T-I/SN",
        "nets": 293, "erc": {"errors": 0, "warnings": 1}, "cost": {
            "total_usd": 39.594, "price_date": "2026-11-27", "basis": "assumption"},
        "round_trip": {"max_diff_lsb": 1.557e-13, "class_agreement": 1.0},
        "board_area": {"courtyard_mm2": 9996.7, "estimated_mm2": 19993.4, "routing_factor": 2.0}})
    text = report.render(tmp_path)
    assert ("| 1,413 | 1,245 | 56 | MCP6002T-I/SN | 293 | 0 errors, 1 warnings | 39.59 | 0.000000 "
            "| 1.0000 |") in text
    assert "Prices (2026-11-27): assumption." in text
    assert "Board area: 9,997 mm2 of footprint courtyards, 19,993 mm2 with x2.0 for routing" in text


def test_atomic_write_goes_through_a_hidden_temporary_file_beside_the_target(tmp_path, monkeypatch):
    import re

    real_replace, renames = os.replace, []

    def replace(src, dst):
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    p = tmp_path / "sub" / "r.json"
    results.atomic_write_bytes(p, b"abc")
    assert p.read_bytes() == b"abc" and len(renames) == 1
    src, dst = renames[0]
    # same folder (so the rename is atomic), ".<name>.<8 random>.tmp" (hidden, and swept by the
    # glob the other tests use)
    assert dst == p and src.parent == p.parent
    assert re.fullmatch(r"\.r\.json\.[a-z0-9_]{8}\.tmp", src.name), src.name
    assert sorted(x.name for x in p.parent.iterdir()) == ["r.json"]


def test_atomic_write_gives_an_ordinary_file_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "_UMASK", 0o022)
    results.atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert (tmp_path / "a.bin").stat().st_mode & 0o7777 == 0o644  # 0o666 & ~0o022
    monkeypatch.setattr(results, "_UMASK", 0o000)
    results.atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert (tmp_path / "b.bin").stat().st_mode & 0o7777 == 0o666


def test_atomic_write_failing_mid_write_removes_its_temporary_file(tmp_path):
    p = tmp_path / "r.bin"
    p.write_bytes(b"old")
    with pytest.raises(TypeError) as e:
        results.atomic_write_bytes(p, "text, not bytes")  # fails inside the write, after mkstemp
    assert str(e.value) == "a bytes-like object is required, not 'str'"
    assert p.read_bytes() == b"old" and sorted(x.name for x in tmp_path.iterdir()) == ["r.bin"]


def test_atomic_write_json_layout_and_its_own_nan_guard(tmp_path, monkeypatch):
    p = tmp_path / "r.json"
    results.atomic_write_json(p, {"v": 1, "w": [1, 2], "n": {"m": None}})
    assert p.read_text() == ('{\n  "v": 1,\n  "w": [\n    1,\n    2\n  ],\n  "n": {\n    "m": null\n'
                             '  }\n}\n')
    # a NaN that got past to_json is still refused, not written as NaN
    monkeypatch.setattr(results, "to_json", lambda obj: obj)
    with pytest.raises(ValueError) as e:
        results.atomic_write_json(p, {"x": float("nan")})
    assert str(e.value) == "Out of range float values are not JSON compliant: nan"
    assert json.loads(p.read_text()) == {"v": 1, "w": [1, 2], "n": {"m": None}}


def _fake_cpuinfo(monkeypatch, file):
    real = Path
    monkeypatch.setattr(results, "Path", lambda p: real(file) if p == "/proc/cpuinfo" else real(p))


def test_cpu_model_from_cpuinfo_and_without_it(tmp_path, monkeypatch):
    import platform

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: Acme\nmodel name\t: Acme X1: rev 2 @ 3.0GHz \n"
                    "flags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: Second\n")
    _fake_cpuinfo(monkeypatch, info)
    assert results._cpu_model() == "Acme X1: rev 2 @ 3.0GHz"  # all after the first colon
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # an ARM cpuinfo: no model name
    assert results._cpu_model() == "aarch64"
    _fake_cpuinfo(monkeypatch, tmp_path / "missing")  # no /proc at all
    monkeypatch.setattr(platform, "processor", lambda: "Pentium")
    monkeypatch.setattr(platform, "machine", lambda: "i686")
    assert results._cpu_model() == "Pentium"


def test_git_commit_default_is_the_checkout_holding_the_package(tmp_path, monkeypatch):
    a = "a" * 40
    pkg = tmp_path / "up" / "checkout" / "crystalbench"
    pkg.mkdir(parents=True)
    (pkg / "results.py").write_text("")
    (tmp_path / "up" / "checkout" / ".git").mkdir()
    (tmp_path / "up" / "checkout" / ".git" / "HEAD").write_text(a + "\n")
    monkeypatch.setattr(results, "__file__", str(pkg / "results.py"))
    assert results.git_commit() == a


def test_git_commit_worktree_path_with_colons(tmp_path):
    b = "b" * 40
    wt = tmp_path / "C:" / "x:y" / "wt"  # a drive letter, a colon in a folder name
    wt.mkdir(parents=True)
    (wt / "HEAD").write_text(b + "\n")
    (tmp_path / ".git").write_text(f"gitdir: {wt}\n")
    assert results.git_commit(tmp_path / ".git") == b


def test_machine_block_names():
    import platform

    got = results.machine()
    assert got == {"host": platform.node(), "cpu": results._cpu_model(), "cores": os.cpu_count(),
                   "system": platform.system() + " " + platform.release(),
                   "python": platform.python_version(), "numpy": np.__version__}


def test_measured_date_is_utc_whatever_the_time_zone(monkeypatch):
    import calendar
    import time

    try:
        with monkeypatch.context() as m:
            m.setenv("TZ", "XYZ-5")  # local time 5 h ahead of UTC
            time.tzset()
            t0 = time.time()
            date = results.measured()["date"]
            t1 = time.time()
    finally:
        time.tzset()
    t = calendar.timegm(time.strptime(date, "%Y-%m-%dT%H:%M:%SZ"))
    assert int(t0) <= t <= t1, (date, t0, t1)


def test_paths_root_given_as_a_string_becomes_a_path(tmp_path):
    p = Paths(str(tmp_path), "e")
    assert p.root == tmp_path and isinstance(p.root, Path)
    assert p.stage("sim") == tmp_path / "e" / "sim"


def test_keep_previous_names_the_date_and_time(tmp_path):
    import time

    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "x").write_text("1")
    t0 = int(time.time())
    kept = results.keep_previous(folder)
    t1 = time.time()
    stamp = kept.name.removeprefix("train.prev-")
    assert kept.parent == tmp_path and len(stamp) == 15, kept.name
    t = time.mktime(time.strptime(stamp, "%Y%m%d-%H%M%S"))  # local time
    assert t0 <= t <= t1 and (kept / "x").read_text() == "1"


def test_keep_previous_numbers_clashes_2_3_4(tmp_path, monkeypatch):
    import time
    import types

    fixed = time.strptime("2026-11-27 10:00:00", "%Y-%m-%d %H:%M:%S")
    monkeypatch.setattr(results, "time", types.SimpleNamespace(
        strftime=lambda fmt: time.strftime(fmt, fixed)))
    folder = tmp_path / "train"
    names = []
    for i in range(4):
        folder.mkdir()
        (folder / "run.txt").write_text(str(i))
        names.append(results.keep_previous(folder).name)
    assert names == ["train.prev-20261127-100000", "train.prev-20261127-100000-2",
                     "train.prev-20261127-100000-3", "train.prev-20261127-100000-4"]
