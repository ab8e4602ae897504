"""boards/: CRC and frames by hand, the UART + protocol + loadable frontier in Amaranth's
simulator driven by the host's BoardLink (bit-level UART), and the iCEBreaker bitstream
of the tiny design through the real tools."""

import binascii
import dataclasses
import os
import re
import stat

import numpy as np
import pytest

from crystalbench import config
from crystalbench.boards import bitstream, platforms
from crystalbench.boards import protocol as P
from crystalbench.boards.controller import Controller
from crystalbench.boards.link import BoardLink
from crystalbench.boards.simboard import SimTransport
from crystalbench.boards.uart import divisor_for
from crystalbench.errors import DesignError, FixedPointError
from crystalbench.results import Paths
from crystalbench.rtl import fixed

from .hw_tiny import quantized

# Simulated board: 12 MHz, 8 clocks per bit (fast to simulate), frames cut short after
# 3,000 clocks of silence (about 37 characters).
SIM_BAUD, SIM_TIMEOUT = 1_500_000, 3000


# ---- CRC and frames, by hand ------------------------------------------------------------
def test_crc16_ccitt_false_check_values():
    assert P.crc16(b"123456789") == 0x29B1  # the catalogue's check value
    assert P.crc16(b"A") == 0xB915
    assert P.crc16(b"") == 0xFFFF
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 64):  # Python's own CRC-CCITT (polynomial 0x1021) with init 0xFFFF
        data = rng.integers(0, 256, n).astype(np.uint8).tobytes()
        assert P.crc16(data) == binascii.crc_hqx(data, 0xFFFF)
    body = b"\x03\x05hello"  # the CRC over a body and its own CRC (high byte first) leaves 0
    assert P.crc16(body + P.crc16(body).to_bytes(2, "big")) == 0


def test_frames_by_hand():
    assert P.encode_command(P.IDENTIFY) == bytes.fromhex("a5 01 00 2e3e")
    assert P.encode_command(P.LOAD, b"\x00\x03\xff\xfe") == bytes.fromhex("a5 02 04 0003fffe 5828")
    reply = bytes.fromhex("5a 03 00 05 0005fffb01 1676")
    assert P.encode_reply(P.RUN, P.OK, b"\x00\x05\xff\xfb\x01") == reply
    assert P.decode_reply(reply) == P.Reply(P.RUN, P.OK, b"\x00\x05\xff\xfb\x01")
    with pytest.raises(P.LinkError, match="bad CRC"):
        P.decode_reply(reply[:-1] + b"\x77")
    with pytest.raises(P.LinkError, match="length byte 5 but 4 payload bytes"):
        P.decode_reply(reply[:5] + reply[6:])
    with pytest.raises(P.LinkError, match="at most 255"):
        P.encode_command(P.LOAD, bytes(256))


def test_word_sizes_and_signs():
    assert [P.word_bytes(b) for b in (1, 8, 9, 16, 17, 32, 33)] == [1, 1, 2, 2, 4, 4, 8]
    assert [P.nbytes(b) for b in (1, 8, 9, 16, 17)] == [1, 1, 2, 2, 3]
    assert P.to_signed(0xFFFB, 16) == -5 and P.to_signed(0x7FFF, 16) == 32767
    assert P.IDENTITY_BYTES == 36


def test_uart_divisor():
    assert divisor_for(12e6, 115200) == 104  # 0.16% fast
    assert divisor_for(12e6, 1_500_000) == 8
    with pytest.raises(DesignError, match=r"4\.62 cycles per bit \(7\.7% off"):
        divisor_for(12e6, 2_600_000)
    with pytest.raises(DesignError, match="at most clock/4"):
        divisor_for(12e6, 4_000_000)


def test_unknown_board_says_what_exists():
    with pytest.raises(platforms.BoardError, match=r"unknown board 'icebraker'; boards: "
                                                   r"icebreaker, ulx3s; did you mean 'icebreaker'\?"):
        platforms.get("icebraker")
    with pytest.raises(platforms.BoardError, match=r"unknown board 'ulx3'; .* did you mean 'ulx3s'"):
        platforms.get("ulx3")


def test_ulx3s_is_data_on_its_amaranth_boards_platform():
    b = platforms.get("ulx3s")
    plat = b.make_platform()
    assert (plat.device, plat.package, plat.speed) == ("LFE5U-85F", "BG381", "6")
    assert plat.default_clk_frequency == b.clock_hz == 25e6
    assert b.family == "ecp5" and b.nextpnr == ("--85k", "--package", "CABGA381", "--speed", "6")
    uart = plat.lookup(*b.uart)  # the FTDI's lines: rx M1 into the FPGA, tx L4 out of it
    pins = {s.name: s.ios[0].names for s in uart.ios}
    assert (pins["rx"], pins["tx"]) == (["M1"], ["L4"])
    assert divisor_for(b.clock_hz, b.baud) == 217  # 25e6 / 115200 = 217.01


def test_ecp5_stat_parsed():
    text = ("=== top ===\n\n   Number of cells:               1904\n     CCU2C                        144\n"
            "     DP16KD                         1\n     L6MUX21                        3\n"
            "     LUT4                        1071\n     MULT18X18D                     1\n"
            "     TRELLIS_DPR16X4                6\n     TRELLIS_FF                   530\n")
    assert bitstream.parse_ecp5_stat(text) == {"lut4": 1071, "ff": 530, "carry": 144, "dsp": 1,
                                               "bram": 1, "lutram": 6}
    with pytest.raises(bitstream.SynthError, match="no LUT4/TRELLIS_FF cells"):
        bitstream.parse_ecp5_stat("   SB_LUT4   12\n")


def test_nextpnr_utilization_parsed():
    text = ("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:  1535/ 5280    29%\n"
            "Info: \t        ICESTORM_RAM:     2/   30     6%\nInfo: \t               SB_IO:     5/   96"
            "     5%\n")
    assert bitstream.parse_utilization(text) == {
        "ICESTORM_LC": {"used": 1535, "available": 5280},
        "ICESTORM_RAM": {"used": 2, "available": 30}, "SB_IO": {"used": 5, "available": 96}}


# ---- the simulated board --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    return c, net, fixed.input_codes(c, net)


def board(net):
    ctl = Controller(net, 12e6, SIM_BAUD, timeout_clocks=SIM_TIMEOUT)
    sim = SimTransport(ctl)
    return ctl, sim, BoardLink(sim, net, timeout=2e-3)  # 2 ms simulated: 24,000 clocks


def raw(sim, frame: bytes) -> P.Reply:
    """Send any bytes; read one reply frame."""
    sim.write(frame)
    head = sim.read(4, 1e-3)
    assert len(head) == 4 and head[0] == P.SYNC_REPLY, head.hex()
    return P.decode_reply(head + sim.read(head[3] + 2, 1e-3))


def test_identify_run_load_run(tiny):
    c, net, codes = tiny
    assert [(ly.n_out, ly.n_in, ly.weight_bits, ly.acc_bits) for ly in net.layers] == [(3, 4, 8, 16)]
    ctl, sim, link = board(net)
    ident = link.identify()
    assert ident == {"version": 1, "weights_digest": fixed.weights_digest(net),
                     "formats_digest": P.formats_digest(net), "flags": 0, "n_in": 4, "in_bits": 8,
                     "n_classes": 3, "logit_bits": 16, "n_words": 3 * 4 + 3, "n_conn": 12,
                     "word_bytes": 2, "clock_hz": 12_000_000, "baud": SIM_BAUD}
    gold = net.forward(codes[:2])
    for n in range(2):
        logits, cls = link.run(codes[n])
        assert logits.tolist() == gold["logits"][n].tolist() and cls == gold["cls"][n]
    # A new set: the readout's rows (and biases) in reverse order; only changed words go.
    ly = net.layers[0]
    new = fixed.loadable_update(net, [ly.weights[::-1]], [ly.bias[::-1]])
    assert link.load([ly.weights[::-1]], [ly.bias[::-1]]) == fixed.weights_digest(new)
    assert link.live_digest == fixed.weights_digest(new) != fixed.weights_digest(net)
    want = new.forward(codes[:3])
    assert want["logits"][:, ::-1].tolist() == net.forward(codes[:3])["logits"].tolist()
    for n in range(3):
        logits, cls = link.run(codes[n])
        assert logits.tolist() == want["logits"][n].tolist() and cls == want["cls"][n]
    assert link.read()[0].tolist() == want["logits"][2].tolist()
    assert link.identify()["flags"] == P.FLAG_LOADED
    assert link.identify()["weights_digest"] == fixed.weights_digest(net)  # as built
    # 12 multiply-accumulate steps + the pipeline: 16 edges from offer to result
    assert link.counters() == {"run_cycles": 16, "runs": 5, "errors": 0}
    assert sim.framing_errors == 0


def test_bad_frames_get_error_replies_and_the_link_survives(tiny):
    c, net, codes = tiny
    ctl, sim, link = board(net)
    frame = bytearray(P.encode_command(P.RUN, bytes(codes[0].astype(np.uint8))))
    frame[-1] ^= 0x01
    assert raw(sim, bytes(frame)) == P.Reply(P.RUN, P.BAD_CRC, b"")
    assert raw(sim, P.encode_command(0x7E)) == P.Reply(0x7E, P.UNKNOWN_COMMAND, b"")
    assert raw(sim, P.encode_command(P.IDENTIFY, b"\x00")) == P.Reply(P.IDENTIFY, P.BAD_LENGTH, b"")
    assert raw(sim, P.encode_command(P.RUN, bytes(3))) == P.Reply(P.RUN, P.BAD_LENGTH, b"")
    # LOAD: a word of 2 bytes needs 2 + 2k payload bytes; 15 words exist (0..14)
    assert raw(sim, P.encode_command(P.LOAD, b"\x00\x00\x01")) == P.Reply(P.LOAD, P.BAD_LENGTH, b"")
    assert raw(sim, P.encode_command(P.LOAD, b"\x00\x0e" + b"\x00\x01" * 2)) == \
        P.Reply(P.LOAD, P.BAD_ADDRESS, b"")
    # Cut short: the header promises 4 payload bytes, 2 come; the board times out.
    assert raw(sim, P.encode_command(P.RUN, bytes(4))[:5]) == P.Reply(P.RUN, P.TIMEOUT, b"")
    # Noise outside a frame is ignored; the link works on, nothing was written.
    sim.write(b"\x00\x13\x37")
    assert link.identify()["flags"] == 0
    logits, _ = link.run(codes[1])
    assert logits.tolist() == net.forward(codes[1:2])["logits"][0].tolist()
    assert link.counters()["errors"] == 7
    with pytest.raises(P.LinkError, match="the board refused run: bad length"):
        link.exchange(P.RUN, bytes(5))


def test_the_host_refuses_a_set_that_does_not_fit_before_writing(tiny):
    c, net, codes = tiny
    ctl, sim, link = board(net)
    sent = []
    sim.write = sent.append  # nothing may reach the board
    # 4 inputs x 255 x 127 + bias: an 18-bit accumulator, the design has 16
    with pytest.raises(FixedPointError, match=r"frontier layer 2, neuron 0: .* needs a 18-bit "
                                              r"accumulator .* the design has 16"):
        link.load([np.full((3, 4), 127)])
    assert sent == [] and link.live_digest == fixed.weights_digest(net)
    with pytest.raises(P.LinkError, match=r"run takes 4 codes in 0\.\.255, got 4 in 0\.\.256"):
        link.run([0, 1, 2, 256])


def test_a_board_of_other_formats_is_refused(tiny):
    c, net, codes = tiny
    # the same net with one connection less: another design, though its weights would fit
    mask = net.layers[0].mask.copy()
    mask[0, 0] = False
    other = dataclasses.replace(net, layers=(dataclasses.replace(
        net.layers[0], mask=mask, weights=net.layers[0].weights * mask),))
    assert P.formats_digest(other) != P.formats_digest(net)
    ctl, sim, link = board(net)
    link.net = other
    with pytest.raises(P.LinkError, match="the board holds a design of other formats"):
        link.identify()


# ---- the iCEBreaker bitstream ---------------------------------------------------------------
def test_icebreaker_bitstream_of_the_tiny_design(tmp_path, tiny):
    c, net, codes = tiny
    cfg = config.validate({"fixed_point": {}}, "<test>")
    paths = Paths(tmp_path, "tiny")
    res = bitstream.run(c, cfg, paths, board="icebreaker")
    out = tmp_path / "tiny" / "boards" / "icebreaker"
    assert res["result_file"] == str(out / "result.json")
    assert (out / "top.bin").stat().st_size == res["bitstream_bytes"] == 104090  # every UP5K image
    assert res["passed"] and res["fmax_mhz"] >= 12.0 and res["clock_mhz"] == 12.0
    assert 0 < res["lut4"] < 5280 and res["bram"] >= 1  # the frame buffer at least
    assert res["placed"]["ICESTORM_LC"]["available"] == 5280
    assert res["ff"] == res["ice40_ff"] > 0 and res["tools"] == ["yosys", "nextpnr-ice40", "icepack"]
    assert res["design"]["weights_digest"] == fixed.weights_digest(
        fixed.nets_of(fixed.load(paths.stage("fixed"), c))["frontier"])
    assert "timing not met" not in res["summary"][0]


def test_flash_without_a_board_is_one_clear_error(tmp_path, monkeypatch):
    paths = Paths(tmp_path, "tiny")
    with pytest.raises(platforms.BoardError, match=r"no bitstream; build it first with "
                                                   r"`crystalbench bitstream --board icebreaker`"):
        bitstream.flash(paths, "icebreaker")
    with pytest.raises(platforms.BoardError, match=r"ulx3s/top\.bit: no bitstream; build it first "
                                                   r"with `crystalbench bitstream --board ulx3s`"):
        bitstream.flash(paths, "ulx3s")
    out = paths.stage("boards") / "icebreaker"
    out.mkdir(parents=True)
    (out / "top.bin").write_bytes(b"\x00")
    # A stand-in openFPGALoader that answers like the real one with no cable attached (the
    # real one would program a board that happens to be attached).
    fake = tmp_path / "openFPGALoader"
    fake.write_text("#!/bin/sh\necho 'unable to open ftdi device: -3 (device not found)'\n"
                    "echo 'Error: Failed to claim cable'\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("OPENFPGALOADER", str(fake))
    with pytest.raises(platforms.BoardError, match=r"^no iCEBreaker found on USB \(openFPGALoader "
                                                   r"-b ice40_generic found no cable\); connect it"):
        bitstream.flash(paths, "icebreaker")
    log = (out / "flash.log").read_text()
    assert "-b ice40_generic" in log and log.rstrip().endswith("Failed to claim cable")
    assert os.path.exists(out / "top.bin")


def test_adc_front_end_pins_on_each_board():
    """The SPI pins land where the README says: by hand from amaranth-boards' connector
    tables (iCEBreaker PMOD1A " 4  2 47 45 - -  3 48 46 44 - -"; ULX3S J1 0+ B11, 0- C11,
    1+ A10, 1- A11, 2+ A9)."""
    from .hw_tiny import fp_cfg, tiny_crystal

    net = fixed.nets_of(fixed.quantize(tiny_crystal(n_hidden=12), fp_cfg(), 8))["frontier"]
    want = {"icebreaker": {"sclk": "45", "copi": "2", "cipo": "47", "cs0": "4", "cs1": "3"},
            "ulx3s": {"sclk": "B11", "copi": "C11", "cipo": "A10", "cs0": "A11", "cs1": "A9"}}
    for name, pins in want.items():
        spec = platforms.get(name)
        ctl = Controller(net, spec.clock_hz, spec.baud, adc="mcp3008")
        assert ctl.adc.chips == 2 and ctl.identity["flags"] == P.FLAG_ADC
        plan = spec.make_platform().build(bitstream.BoardTop(spec, ctl), name="top", do_build=False)
        text = (plan.files.get("top.pcf") or plan.files["top.lpf"])
        text = text.decode() if isinstance(text, bytes) else text
        got = dict(re.findall(r'(?:set_io |LOCATE COMP ")adc_spi_0__(\w+?)__io"? (?:SITE ")?(\w+)',
                              text))
        assert got == pins
    with pytest.raises(platforms.BoardError, match=r"needs 14 chip selects, the board's pin "
                                                   r"plan has 13"):
        bitstream.adc_resource(platforms.get("icebreaker"), 14)
