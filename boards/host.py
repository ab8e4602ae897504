"""`crystalbench board info|load|run`: the host driver of a board running the frontier.

One session is a list of steps (`play`), executed by `BoardLink` over a transport: a real
board on a serial port (`--port`, pyserial), or the board top simulated in Icarus under
cocotb with a bit-level UART (`--sim`, boards/simboard.py `run_icarus`; the steps then run
inside the simulation, through the same BoardLink). Times are the transport's: wall
clock on a real board, simulated time in Icarus (where the host answers at once, so the
figures are the board's and the line's, without a PC's USB latency).

`run` sends the test split's frontier input codes (fixed.input_codes: the torch core's
outputs through the ADC model) through the board one vector per frame, compares every
logit and class with the golden model of the set the board holds (bit-exact) and the
class with torch, and writes build/<exp>/board/result.json: vectors per second at the
board's baud, and per vector the bytes on the line, their time at the baud rate (10 bits
a byte, 8N1) and the frontier's time from the board's cycle counter, as shares of the
measured time per vector.
"""

from __future__ import annotations

import numpy as np

from crystalbench import stage
from crystalbench.crystal import Crystal
from crystalbench.errors import BoardError, CrystalbenchError, LinkError
from crystalbench.results import Paths
from crystalbench.rtl import fixed, quantize

from . import platforms
from . import protocol as P
from .link import BoardLink
from .uart import divisor_for

NAME = "board"
WRITES = (NAME, quantize.NAME)
NEEDS_CRYSTAL = True
ACTIONS = ("info", "load", "run", "calibrate")


# ---- one session: steps -> records ----------------------------------------------------------
def _arrays(v):
    return None if v is None else [None if a is None else np.asarray(a, np.int64) for a in v]


def play(link: BoardLink, steps: list[dict], log=stage.quiet, keep_going: bool = False) -> list[dict]:
    """Execute `steps` in order; one record per step (JSON values). A LinkError ends its
    step (`error`: the message) and the session (with `keep_going`, only the step). Steps (`op`):
    identify, counters, read; run (`codes`: vectors); run_adc (`count` runs on the codes
    the board reads from its ADC front end); load (`weights`/`biases`: one entry
    per layer or None, `full`: write every word); raw (`frame`: hex bytes sent as they
    are, one reply frame read back undecoded); noise (`bytes`: hex, sent, no reply)."""
    tr = link.transport
    records = []
    for st in steps:
        op, rec = st["op"], {"op": st["op"]}
        rec["t0"], sent0, got0 = tr.now(), tr.bytes_sent, tr.bytes_received
        try:
            if op == "identify":
                rec["identity"] = link.identify()
            elif op == "counters":
                rec["counters"] = link.counters()
            elif op == "read":
                logits, cls = link.read()
                rec.update(logits=logits.tolist(), cls=cls)
            elif op == "run":
                rec["logits"], rec["cls"] = [], []
                codes = st["codes"]
                for n, v in enumerate(codes):
                    logits, cls = link.run(v)
                    rec["logits"].append(logits.tolist())
                    rec["cls"].append(cls)
                    if (n + 1) % 50 == 0:
                        log(f"board: {n + 1}/{len(codes)} vectors")
            elif op == "run_adc":
                rec["codes"], rec["logits"], rec["cls"] = [], [], []
                for n in range(st["count"]):
                    codes, logits, cls = link.run_adc()
                    rec["codes"].append(codes.tolist())
                    rec["logits"].append(logits.tolist())
                    rec["cls"].append(cls)
                    if (n + 1) % 50 == 0:
                        log(f"board: {n + 1}/{st['count']} ADC runs")
            elif op == "load":
                if st.get("full"):
                    link.live = None  # unknown to the host: every word is written
                rec["digest"] = link.load(_arrays(st.get("weights")), _arrays(st.get("biases")))
            elif op == "raw":
                tr.flush_input()
                tr.write(bytes.fromhex(st["frame"]))
                head = link._read_exact(4, tr.now() + link.timeout, "reply header")
                frame = head + link._read_exact(head[3] + 2, tr.now() + link.timeout, "reply")
                reply = P.decode_reply(frame)
                rec["reply"] = {"cmd": reply.cmd, "status": reply.status,
                                "payload": reply.payload.hex()}
            elif op == "noise":
                tr.write(bytes.fromhex(st["bytes"]))
            else:
                raise BoardError(f"unknown session step {op!r}")
        except LinkError as e:
            rec["error"] = str(e)
        rec.update(t1=tr.now(), bytes_sent=tr.bytes_sent - sent0,
                   bytes_received=tr.bytes_received - got0)
        records.append(rec)
        if "error" in rec and not keep_going:
            break
    return records


def session(steps: list[dict], net: fixed.IntNet, board: platforms.Board, port: str | None,
            sim_dir=None, timeout: float = 1.0, log=stage.quiet, keep_going: bool = False,
            **sim_options) -> tuple[list[dict], str]:
    """Play `steps` on a real board (`port`) or on the simulated board top (`sim_dir`:
    Icarus' build folder; `sim_options` go to simboard.run_icarus). Returns (records,
    what ran them)."""
    if (port is None) == (sim_dir is None):
        raise BoardError("name a board: --port DEVICE for a real one (e.g. /dev/ttyUSB1), or "
                         "--sim for the board top simulated in Icarus")
    if port is not None:
        from .link import SerialTransport

        tr = SerialTransport(port, board.baud)
        try:
            return (play(BoardLink(tr, net, timeout=timeout), steps, log, keep_going),
                    f"{board.title} on {port}")
        finally:
            tr.close()
    from .simboard import run_icarus

    out = run_icarus(net, board.clock_hz, board.baud, steps, sim_dir, timeout=timeout,
                     keep_going=keep_going, **sim_options)
    if out["framing_errors"]:
        raise BoardError(f"the simulated board sent {out['framing_errors']} characters with a "
                         f"low stop bit; see {sim_dir}/sim.log")
    return out["records"], f"{board.title} top simulated in Icarus (cocotb, bit-level UART)"


def _first_error(records: list[dict]) -> None:
    for r in records:
        if "error" in r:
            raise LinkError(r["error"])


# ---- the stage --------------------------------------------------------------------------------
def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet, action: str = "info",
        port: str | None = None, sim: bool = False, board: str = "icebreaker",
        vectors: int | None = None, timeout: float = 1.0) -> dict:
    if action not in ACTIONS:
        raise BoardError(f"board action {action!r}; actions: {', '.join(ACTIONS)}")
    spec = platforms.get(board)
    if vectors is not None and vectors < 1:
        raise BoardError(f"--vectors {vectors}: give at least 1 (default: the whole test split)")
    if port is not None and sim:
        raise BoardError("--port and --sim both given; a session runs on one board: drop one")
    if action == "calibrate":  # boards/calibrate.py: the calibration loop over the link
        from . import calibrate

        return calibrate.run(c, cfg, paths, log, spec=spec, port=port, sim=sim,
                             vectors=vectors, timeout=timeout)
    fp = quantize.ensure(c, cfg, paths, log)
    net = fixed.nets_of(fp)["frontier"]
    out = paths.stage(NAME)
    sim_dir = out / "icarus" if sim else None
    if sim_dir is None and port is None:
        raise BoardError("name a board: --port DEVICE for a real one (e.g. /dev/ttyUSB1, "
                         f"{spec.serial_hint}), or --sim for the board top simulated in Icarus")
    steps: list[dict] = [{"op": "identify"}]
    if action == "load":
        steps += [{"op": "load", "full": True}, {"op": "identify"}]
    elif action == "run":
        codes = fixed.input_codes(c, net)
        if vectors is not None:
            codes = codes[:vectors]
        steps += [{"op": "run", "codes": codes.tolist()}, {"op": "counters"}]
        byte_s = 10 / spec.baud
        log(f"board: {len(codes)} test vectors through {spec.title} "
            f"({'Icarus' if sim else port}) at {spec.baud} baud, at least "
            f"{len(codes) * (P.nbytes(net.in_bits) * net.n_in + 12) * byte_s:.2f} s"
            f"{' simulated (Icarus: about 1 s of wall clock per vector on one core)' if sim else ''}")
    steps.append({"op": "counters"})
    records, where = session(steps, net, spec, port, sim_dir, timeout, log)
    _first_error(records)
    ident = records[0]["identity"]
    head = (f"{where}: protocol {ident['version']}, weights digest {ident['weights_digest']}, "
            f"formats {ident['formats_digest']}, {ident['n_in']} inputs x {ident['in_bits']} bits "
            f"-> {ident['n_classes']} classes, {ident['clock_hz'] / 1e6:g} MHz, "
            f"{ident['baud']} baud")
    if action == "info":
        cnt = records[-1]["counters"]
        return {"board": board, "where": where, "identity": ident, "counters": cnt,
                "summary": [head, f"loaded since configuration: "
                            f"{'yes' if ident['flags'] & P.FLAG_LOADED else 'no'}; counters {cnt}"]}
    if action == "load":
        after = records[2]["identity"]
        rec = records[1]
        return {"board": board, "where": where, "digest": rec["digest"], "identity": after,
                "bytes_sent": rec["bytes_sent"], "seconds": rec["t1"] - rec["t0"],
                "summary": [head, f"loaded {fixed.weights_digest(net)} (every word, "
                            f"{rec['bytes_sent']} bytes in {rec['t1'] - rec['t0']:.3f} s); the "
                            f"board reports loaded={bool(after['flags'] & P.FLAG_LOADED)}"]}
    res = run_figures(c, net, codes, records, spec, where)
    summary = [head, f"{res['vectors']} vectors: bit-exact with the golden model "
               f"{res['bit_exact_fraction']:.4f}, class agreement with torch "
               f"{res['class_agreement_with_torch']:.4f}, accuracy {res['board_test_accuracy']:.4f}",
               f"{res['vectors_per_second']:.1f} vectors/s at {spec.baud} baud "
               f"({res['seconds_per_vector'] * 1e3:.3f} ms per vector: line "
               f"{res['link_share']:.1%}, frontier {res['frontier_share']:.2%}, rest "
               f"{res['other_share']:.1%}); {res['bytes_per_vector']} bytes per vector"]
    res.update(board=board, where=where, identity=ident, method=METHOD,
               passed=res["bit_exact_fraction"] == 1.0)  # a result off the golden model fails
    return stage.finish(NAME, paths, res, summary)


def run_figures(c: Crystal, net: fixed.IntNet, codes: np.ndarray, records: list[dict],
                spec: platforms.Board, where: str) -> dict:
    """Agreement and throughput of a `run` session (identify, run, counters, counters)."""
    rec, cnt = records[1], records[2]["counters"]
    n = len(codes)
    gold = net.forward(codes)
    logits, cls = np.array(rec["logits"], np.int64), np.array(rec["cls"], np.int64)
    exact = (logits == gold["logits"]).all(axis=1) & (cls == gold["cls"])
    torch_cls = c.reference.outputs[-1].argmax(1)[:n]
    per_vec = (rec["t1"] - rec["t0"]) / n
    nbytes = (rec["bytes_sent"] + rec["bytes_received"]) / n
    bit_s = divisor_for(spec.clock_hz, spec.baud) / spec.clock_hz  # the board's own bit time
    link_s = nbytes * 10 * bit_s  # 8N1: 10 bits a byte
    frontier_s = cnt["run_cycles"] / spec.clock_hz
    if cnt["runs"] < n:
        raise CrystalbenchError(f"the board counted {cnt['runs']} runs for {n} vectors sent")
    return {
        "vectors": n, "bit_exact_fraction": float(exact.mean()),
        "not_bit_exact": [int(i) for i in np.flatnonzero(~exact)[:20]],
        "class_agreement_with_torch": float((cls == torch_cls).mean()),
        "golden_class_agreement_with_torch": float((gold["cls"] == torch_cls).mean()),
        "board_test_accuracy": float((cls == c.reference.y[:n]).mean()),
        "seconds": rec["t1"] - rec["t0"], "seconds_per_vector": per_vec,
        "vectors_per_second": 1.0 / per_vec, "baud": spec.baud, "clock_hz": spec.clock_hz,
        "board_baud": 1.0 / bit_s,
        "bytes_per_vector": nbytes, "link_seconds_per_vector": link_s,
        "frontier_cycles_per_vector": cnt["run_cycles"],
        "frontier_seconds_per_vector": frontier_s,
        "link_share": link_s / per_vec, "frontier_share": frontier_s / per_vec,
        "other_share": 1.0 - (link_s + frontier_s) / per_vec,
        "line_bound_vectors_per_second": 1.0 / link_s,
        "counters": cnt, "time_base": "simulated" if "Icarus" in where else "wall clock"}


METHOD = (
    "One RUN frame per vector (BoardLink.run), the next sent when the last reply is in. "
    "Time per vector = transport time from the first byte sent to the last reply read, over "
    "the vectors (simulated time in Icarus, where the host answers at once; wall clock on a "
    "real board, USB latency included). Line time = bytes moved (both ways, counted by the "
    "transport) x 10 bits x the board's bit time (its UART divisor / its clock); frontier "
    "time = the board's run_cycles counter (offer to result) / its clock; rest = the "
    "controller taking and checking the frame (CRC, length) and the turn-arounds. Bit-exact "
    "= every logit and the class equal to the golden model (fixed.IntNet.forward) of the set "
    "the board holds; torch = the Crystal's reference outputs.")
