"""The host driver (`crystalbench board`) end to end: BoardLink <-> a bit-level UART <->
the board top (controller + UART + loadable frontier) written to Verilog by Amaranth and
run in Icarus under cocotb; and the driver with no board on its port."""

import os

import numpy as np
import pytest

from crystalbench import cli, config
from crystalbench import crystal as cm
from crystalbench.boards import host, platforms
from crystalbench.boards import protocol as P
from crystalbench.boards.simboard import run_icarus
from crystalbench.results import Paths, read_json
from crystalbench.rtl import fixed

from .hw_tiny import fp_cfg, quantized, tiny_crystal

CLOCK, BAUD, DIV = 12e6, 1_500_000, 8  # 8 clocks per bit: fast to simulate
PERIOD = 2 * round(5e11 / CLOCK) * 1e-12  # the testbench's clock period (an even number of ps)


@pytest.fixture(scope="module")
def tiny():
    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    return c, net, fixed.input_codes(c, net)


def hexframe(cmd, payload=b""):
    return P.encode_command(cmd, payload).hex()


def test_the_whole_protocol_through_icarus(tmp_path, tiny):
    c, net, codes = tiny
    ly = net.layers[0]
    rev_w, rev_b = ly.weights[::-1], ly.bias[::-1]
    bad_crc = bytearray(P.encode_command(P.RUN, bytes(codes[0].astype(np.uint8))))
    bad_crc[-1] ^= 0x01
    steps = [
        {"op": "identify"},
        {"op": "run", "codes": codes[:2].tolist()},
        {"op": "read"},
        {"op": "counters"},
        {"op": "raw", "frame": bad_crc.hex()},
        {"op": "raw", "frame": P.encode_command(P.RUN, bytes(4))[:5].hex()},  # cut short
        {"op": "raw", "frame": hexframe(0x7E)},
        {"op": "raw", "frame": hexframe(P.RUN, bytes(3))},
        {"op": "raw", "frame": hexframe(P.LOAD, b"\x00\x0e" + b"\x00\x01" * 2)},  # words 14, 15
        {"op": "raw", "frame": hexframe(P.RUN_ADC)},  # this board has no ADC front end
        {"op": "noise", "bytes": "001337"},
        {"op": "load", "weights": [rev_w.tolist()], "biases": [rev_b.tolist()]},
        {"op": "run", "codes": codes[:3].tolist()},
        {"op": "identify"},
        {"op": "counters"},
    ]
    out = run_icarus(net, CLOCK, BAUD, steps, tmp_path / "icarus", timeout=2e-3,
                     timeout_clocks=3000, keep_going=True)
    r = out["records"]
    assert out["framing_errors"] == 0 and [x["op"] for x in r] == [s["op"] for s in steps]
    assert not [x for x in r if "error" in x]
    assert r[0]["identity"] == {
        "version": 1, "weights_digest": fixed.weights_digest(net),
        "formats_digest": P.formats_digest(net), "flags": 0, "n_in": 4, "in_bits": 8,
        "n_classes": 3, "logit_bits": 16, "n_words": 15, "n_conn": 12, "word_bytes": 2,
        "clock_hz": 12_000_000, "baud": BAUD}
    gold = net.forward(codes[:2])
    assert r[1]["logits"] == gold["logits"].tolist() and r[1]["cls"] == gold["cls"].tolist()
    assert r[2]["logits"] == gold["logits"][1].tolist() and r[2]["cls"] == gold["cls"][1]
    assert r[3]["counters"] == {"run_cycles": 16, "runs": 2, "errors": 0}
    # Per vector: a command of 5 + 4 bytes, a reply of 6 + 3 x 2 + 1 bytes.
    assert (r[1]["bytes_sent"], r[1]["bytes_received"]) == (2 * 9, 2 * 13)
    # Identify: 5 bytes out, 6 + 36 back, 80 clocks each; the host sees the last byte in
    # the middle of its stop bit; the board takes a few clocks to check the frame.
    line = (5 + 42) * 10 * DIV * PERIOD
    assert line - DIV * PERIOD <= r[0]["t1"] - r[0]["t0"] <= line + 40 * PERIOD
    empty = ""
    r = r[:9] + r[10:]  # the RUN_ADC refusal checked below
    assert [x["reply"] for x in out["records"][4:10]] == [
        {"cmd": P.RUN, "status": P.BAD_CRC, "payload": empty},
        {"cmd": P.RUN, "status": P.TIMEOUT, "payload": empty},
        {"cmd": 0x7E, "status": P.UNKNOWN_COMMAND, "payload": empty},
        {"cmd": P.RUN, "status": P.BAD_LENGTH, "payload": empty},
        {"cmd": P.LOAD, "status": P.BAD_ADDRESS, "payload": empty},
        {"cmd": P.RUN_ADC, "status": P.UNKNOWN_COMMAND, "payload": empty}]
    # The cut-short frame's reply comes 3,000 silent clocks after its last byte.
    assert r[5]["t1"] - r[5]["t0"] >= (5 * 10 * DIV + 3000) * PERIOD
    new = fixed.loadable_update(net, [rev_w], [rev_b])
    assert r[10]["digest"] == fixed.weights_digest(new)
    want = new.forward(codes[:3])
    assert want["logits"][:, ::-1].tolist() == net.forward(codes[:3])["logits"].tolist()
    assert r[11]["logits"] == want["logits"].tolist() and r[11]["cls"] == want["cls"].tolist()
    assert r[12]["identity"]["flags"] == P.FLAG_LOADED
    assert r[13]["counters"] == {"run_cycles": 16, "runs": 5, "errors": 6}


def test_board_run_stage_on_the_simulated_board(tmp_path):
    c = tiny_crystal()
    cfg = config.validate({"fixed_point": {}}, "<test>")
    paths = Paths(tmp_path, "tiny")
    lines = []
    res = host.run(c, cfg, paths, lines.append, action="run", sim=True, vectors=4, timeout=0.01)
    assert res["result_file"] == str(paths.stage("board") / "result.json")
    saved = read_json(res["result_file"])
    assert saved["vectors"] == 4 and saved["bit_exact_fraction"] == 1.0 and saved["passed"]
    net = fixed.nets_of(fixed.load(paths.stage("fixed"), c))["frontier"]
    codes = fixed.input_codes(c, net)[:4]
    torch_cls = c.reference.outputs[-1].argmax(1)[:4]
    assert saved["class_agreement_with_torch"] == float((net.forward(codes)["cls"] == torch_cls).mean())
    spec = platforms.get("icebreaker")
    assert (spec.clock_hz, spec.baud) == (12e6, 115200)
    bit = 104 / 12e6  # the board's divisor, round(12e6 / 115200), clocks per bit
    assert saved["bytes_per_vector"] == 9 + 13
    assert saved["link_seconds_per_vector"] == pytest.approx(22 * 10 * bit, rel=1e-12)
    assert saved["frontier_cycles_per_vector"] == 16
    assert saved["frontier_seconds_per_vector"] == pytest.approx(16 / 12e6, rel=1e-12)
    per = saved["seconds_per_vector"]
    assert saved["vectors_per_second"] == pytest.approx(1 / per, rel=1e-12)
    # line + frontier + a few clocks of frame checks per vector, less half a bit
    assert 22 * 10 * bit + 16 / 12e6 - bit <= per <= 22 * 10 * bit + 16 / 12e6 + 60 / 12e6
    assert saved["link_share"] + saved["frontier_share"] + saved["other_share"] == pytest.approx(1)
    assert saved["time_base"] == "simulated" and saved["counters"]["runs"] == 4
    assert res["summary"][1].startswith("4 vectors: bit-exact with the golden model 1.0000")


# The parts' own codes, chip by chip (12 inputs: chip 0 whole, chip 1 channels 0-3), with
# the roundings to 8 bits at their edges: half to even, and saturation at the top.
ADC_CODES = {
    # 10 bits -> 8: 6/4 = 1.5 -> 2, 10/4 = 2.5 -> 2, 1023/4 -> 255 (256 saturated),
    # 1022/4 = 255.5 -> 256 -> 255, 14/4 = 3.5 -> 4
    "mcp3008": [[6, 10, 1023, 513, 0, 1, 2, 3], [1022, 1021, 14, 700, 5, 5, 5, 5]],
    # 12 bits -> 8: 8/16 = 0.5 -> 0, 24/16 = 1.5 -> 2, 4088/16 = 255.5 -> 255, 40/16 = 2.5 -> 2
    "adc128s022": [[8, 24, 4095, 2056, 0, 7, 9, 40], [4088, 4072, 100, 3000, 1, 1, 1, 1]],
}
ADC_WANT = {"mcp3008": [2, 2, 255, 128, 0, 0, 0, 1, 255, 255, 4, 175],
            "adc128s022": [0, 2, 255, 128, 0, 0, 1, 2, 255, 254, 6, 188]}


@pytest.mark.parametrize("part", ["mcp3008", "adc128s022"])
def test_spi_adc_front_end_through_icarus(tmp_path, part):
    """The board reads its 12 inputs from two chips of the part (a behavioural model of the
    datasheet's SPI frames in the testbench), keeps the top 8 bits, runs the frontier; a
    weight reload, then again."""
    c = tiny_crystal(n_hidden=12)
    net = fixed.nets_of(fixed.quantize(c, fp_cfg(), 8))["frontier"]
    assert (net.n_in, net.in_bits) == (12, 8)
    bits = {"mcp3008": 10, "adc128s022": 12}[part]
    flat = [ADC_CODES[part][k // 8][k % 8] for k in range(12)]
    assert [min(round(v / 2 ** (bits - 8)), 255) for v in flat] == ADC_WANT[part]  # half to even
    ly = net.layers[0]
    steps = [{"op": "identify"}, {"op": "run_adc", "count": 2},
             {"op": "load", "weights": [ly.weights[::-1].tolist()], "biases": [ly.bias[::-1].tolist()]},
             {"op": "run_adc", "count": 1}, {"op": "counters"}]
    out = run_icarus(net, CLOCK, BAUD, steps, tmp_path / "icarus", timeout=5e-3,
                     timeout_clocks=3000, adc=part, adc_codes=ADC_CODES[part])
    r = out["records"]
    assert not [x for x in r if "error" in x] and out["framing_errors"] == 0
    assert r[0]["identity"]["flags"] == P.FLAG_ADC
    want = np.array([ADC_WANT[part]])
    gold, new = net.forward(want), fixed.loadable_update(net, [ly.weights[::-1]], [ly.bias[::-1]])
    assert r[1]["codes"] == [ADC_WANT[part]] * 2
    assert r[1]["logits"] == [gold["logits"][0].tolist()] * 2 and r[1]["cls"] == [gold["cls"][0]] * 2
    assert r[3]["codes"] == [ADC_WANT[part]]
    assert r[3]["logits"] == [new.forward(want)["logits"][0].tolist()]
    assert r[3]["logits"][0][::-1] == gold["logits"][0].tolist()
    assert r[4]["counters"] == {"run_cycles": 12 * 3 + 4, "runs": 3, "errors": 0}


def _tiny_on_disk(tmp_path):
    cdir = tmp_path / "crystal"
    cm.save(tiny_crystal(), cdir)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("experiment: tiny\nfixed_point: {}\n")
    return cdir, cfg


def test_no_board_on_the_port_is_one_clear_error(tmp_path, capfd):
    cdir, cfg = _tiny_on_disk(tmp_path)
    master, slave = os.openpty()  # a serial port where nothing answers
    try:
        rc = cli.main(["--build-dir", str(tmp_path / "b"), "board", "info", "--config", str(cfg),
                       "--crystal", str(cdir), "--port", os.ttyname(slave), "--timeout", "0.2"])
    finally:
        os.close(master), os.close(slave)
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("crystalbench: error: no reply from the board within 0.2 s; is it "
                             "powered, flashed with this design")
    rc = cli.main(["--build-dir", str(tmp_path / "b"), "board", "run", "--config", str(cfg),
                   "--crystal", str(cdir), "--port", str(tmp_path / "ttyUSB9")])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"crystalbench: error: cannot open serial port {tmp_path / 'ttyUSB9'}")
    assert not (tmp_path / "b" / "tiny" / "board" / "result.json").exists()


def test_a_board_must_be_named(tmp_path, capfd):
    cdir, cfg = _tiny_on_disk(tmp_path)
    with pytest.raises(SystemExit):  # argparse: --port or --sim is required
        cli.main(["board", "info", "--config", str(cfg), "--crystal", str(cdir)])
    assert "one of the arguments --port --sim is required" in capfd.readouterr().err


def test_a_board_off_the_golden_model_fails_the_run(tmp_path, monkeypatch):
    """The stage's verdict on the records a board returns (here: the golden model's, with
    one logit of one vector off by one)."""
    c = tiny_crystal()
    cfg = config.validate({"fixed_point": {}}, "<test>")
    paths = Paths(tmp_path, "tiny")

    def session(steps, net, board, port, sim_dir, timeout, log, **kw):
        codes = np.array(steps[1]["codes"])
        g = net.forward(codes)
        logits = g["logits"].copy()
        logits[2, 1] += 1
        run = {"op": "run", "t0": 0.0, "t1": 0.04, "bytes_sent": 36, "bytes_received": 52,
               "logits": logits.tolist(), "cls": g["cls"].tolist()}
        cnt = {"op": "counters", "counters": {"run_cycles": 16, "runs": 4, "errors": 0}}
        ident = {"op": "identify", "identity": {"version": 1, "weights_digest": "0" * 16,
                 "formats_digest": "0" * 16, "flags": 0, "n_in": 4, "in_bits": 8,
                 "n_classes": 3, "logit_bits": 16, "clock_hz": 12_000_000, "baud": 115200}}
        return [ident, run, cnt, cnt], "a board"

    monkeypatch.setattr(host, "session", session)
    res = host.run(c, cfg, paths, action="run", port="/dev/null", vectors=4)
    saved = read_json(res["result_file"])
    assert saved["bit_exact_fraction"] == 0.75 and saved["not_bit_exact"] == [2]
    assert saved["passed"] is False and res["passed"] is False
    assert saved["seconds_per_vector"] == 0.01 and saved["bytes_per_vector"] == 22
    assert saved["time_base"] == "wall clock"
