"""The one tool runner: finding tools (environment override, PATH, the venv), running them
with a log, and turning a missing tool, a failure or a timeout into one clear error.
Real programs (sh, true, false, sleep) stand in for the hardware tools here; the live
tools are exercised by the backends' own tests."""
import os
import shutil
import sys
from pathlib import Path

import pytest

from crystalbench import toolrun
from crystalbench.errors import ToolFailed, ToolNotFound


def test_every_tool_names_its_variable_and_package():
    assert toolrun.TOOLS["ngspice"] == ("NGSPICE", "ngspice")
    assert toolrun.TOOLS["nextpnr-ice40"] == ("NEXTPNR_ICE40", "nextpnr-ice40")
    assert all(var == var.upper() and pkg for var, pkg in toolrun.TOOLS.values())


def test_the_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("YOSYS", "true")  # a name on PATH
    assert toolrun.find("yosys") == shutil.which("true")
    monkeypatch.setenv("YOSYS", shutil.which("false"))  # a full path
    assert toolrun.find("yosys") == shutil.which("false")
    monkeypatch.setenv("YOSYS", "/nonexistent/yosys")
    with pytest.raises(ToolNotFound, match=r"^YOSYS='/nonexistent/yosys' does not name an "
                                           r"executable; fix or unset YOSYS$"):
        toolrun.find("yosys")
    monkeypatch.setenv("YOSYS", "")  # empty: as if unset
    assert toolrun.find("yosys") == shutil.which("yosys")


def test_a_missing_tool_says_what_to_install(monkeypatch):
    monkeypatch.delenv("ICETIME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "executable", "/nonexistent/bin/python")
    with pytest.raises(ToolNotFound, match=r"^icetime not found: run `make setup` \(installs "
                                           r"fpga-icestorm\), or point ICETIME at the executable$"):
        toolrun.find("icetime")
    # a tool the table does not know: its variable is its name in capitals
    with pytest.raises(ToolNotFound, match=r"^my-tool not found: run `make setup` \(installs "
                                           r"my-tool\), or point MY_TOOL at the executable$"):
        toolrun.find("my-tool")
    with pytest.raises(ToolNotFound, match=r"icetime not found"):
        toolrun.require("icetime")


def test_tools_in_the_venv_are_found_without_path(monkeypatch, tmp_path):
    venv_bin = tmp_path / "bin"
    venv_bin.mkdir()
    tool = venv_bin / "yowasp-thing"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert toolrun.find("yowasp-thing") == str(tool)


def test_run_saves_command_and_output_in_the_log(tmp_path):
    log = tmp_path / "logs" / "sh.log"
    r = toolrun.run("sh", ["-c", "echo out; echo err >&2"], log=log, cwd=tmp_path)
    assert r.stdout == "out\nerr\n" and r.cmd == [shutil.which("sh"), "-c", "echo out; echo err >&2"]
    text = log.read_text()
    assert text.startswith(f"$ {shutil.which('sh')} -c 'echo out; echo err >&2'\n# cwd: {tmp_path}\n")
    assert "exit 0\n\nout\nerr\n" in text and r.log == log and 0 <= r.seconds < 60


def test_a_failure_names_the_exit_status_last_line_and_log(tmp_path):
    log = tmp_path / "f.log"
    with pytest.raises(ToolFailed) as e:
        toolrun.run("sh", ["-c", "echo first; echo 'ERROR: the real reason'; echo; exit 3"], log=log)
    assert str(e.value) == (f"sh failed (exit 3): 'ERROR: the real reason'; see {log}")
    assert e.value.returncode == 3 and e.value.log == log
    assert "ERROR: the real reason" in log.read_text()


def test_a_failure_without_output_and_with_a_long_last_line(tmp_path):
    with pytest.raises(ToolFailed, match=r"^sh failed \(exit 4\): ''; see "):
        toolrun.run("sh", ["-c", "exit 4"], log=tmp_path / "q.log")
    long = "E" * 250
    with pytest.raises(ToolFailed) as e:
        toolrun.run("sh", ["-c", f"echo {long}; exit 1"], log=tmp_path / "l.log")
    assert f"(exit 1): '{'E' * 200}'; see" in str(e.value)  # the last line, cut at 200


def test_garbage_output_is_read_not_a_crash(tmp_path):
    r = toolrun.run("sh", ["-c", r"printf 'ok\377\376\n'"], log=tmp_path / "g.log")
    assert r.stdout.startswith("ok")


def test_a_timeout_is_a_clear_failure(tmp_path):
    log = tmp_path / "t.log"
    with pytest.raises(ToolFailed, match=rf"^sleep timed out after 0\.3 s; see {log}$") as e:
        toolrun.run("sleep", ["5"], log=log, timeout=0.3)
    assert e.value.returncode == -1 and e.value.log == log
    assert "exit None\n\n" in log.read_text() and log.read_text().endswith("exit None\n\n")
    # what the tool printed before it was stopped is kept in the log, bad bytes replaced
    with pytest.raises(ToolFailed, match="timed out"):
        toolrun.run("sh", ["-c", r"printf 'started\377\n'; sleep 5"], log=log, timeout=0.5)
    assert log.read_text().endswith("exit None\n\nstarted\ufffd\n")


def test_extra_environment_reaches_the_tool(tmp_path):
    r = toolrun.run("sh", ["-c", "echo $CB_PROBE"], log=tmp_path / "e.log", env={"CB_PROBE": "x7"})
    assert r.stdout == "x7\n" and "CB_PROBE" not in os.environ


def test_log_folder_is_made(tmp_path):
    toolrun.run("true", [], log=tmp_path / "a" / "b" / "c.log")
    assert Path(tmp_path / "a" / "b" / "c.log").exists()


def test_the_tool_runs_in_the_folder_given(tmp_path):
    (tmp_path / "here").mkdir()
    r = toolrun.run("sh", ["-c", "pwd; ls"], log=tmp_path / "p.log", cwd=tmp_path / "here")
    assert os.getcwd() != str(tmp_path / "here")
    assert r.stdout == f"{tmp_path / 'here'}\n"  # pwd there, and nothing in it to list
