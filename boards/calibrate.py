"""`crystalbench board calibrate`: the calibration loop of `calibrate` (sim/calibrate.py)
against a board with the SPI ADC front end, over the host link.

    read      one RUN_ADC per input: the Crystal's stored training inputs, then the test
              split; the board returns the codes its ADC front end read and its logits
              and class (the trained weights)
    refit     sim/calibrate.py `calibrate_board` on the codes read back (the same ridge
              refit of the readout toward the float crystal's logits, the same held-out
              guard, fixed.loadable_update)
    load      the new words written with BoardLink.load (refuses before any write a set
              whose accumulators could wrap; writes only the words that differ)
    re-run    one RUN_ADC per test input again: codes, logits, class with the new weights

Before and after: accuracy (class vs label) and agreement (class vs torch) of the
board's own classes on the test inputs; every logit and class checked bit-exact against
the golden model of the set the board holds, on the codes the board read.

With --sim the board is the board top in Icarus (boards/simboard.py run_icarus) with the
ADC front end of adc.part, and the testbench's ADC answers with the core outputs of
`calibrate`'s Monte Carlo board 0 (the same draws from the config's seed: resistors,
op-amp offsets, ADC offset and gain errors) computed by ngspice in one DC sweep, one
input per RUN_ADC, converted as the part does. The simulated board is started twice
(read, then load + re-run); the load writes the words that differ from the built set,
which is what the board holds after its start. A real board (--port) is refused: the
protocol has no command that sets the analog core's inputs, so the host cannot step a
real core through the training inputs.
"""

from __future__ import annotations

import io
import time

import numpy as np

from crystalbench import stage
from crystalbench.crystal import Crystal
from crystalbench.errors import BoardError, LinkError
from crystalbench.results import Paths, atomic_write_bytes, write_result
from crystalbench.rtl import design as design_mod
from crystalbench.rtl import fixed, quantize
from crystalbench.sim import calibrate as sim_calibrate

from . import host, platforms

METHOD = (
    "Inputs = the Crystal's stored training inputs (refit; no labels) then the first "
    "`vectors` test samples (figures). The board reads every input's boundary-neuron codes "
    "through its SPI ADC front end (RUN_ADC) and returns them with its logits and class. "
    "Refit = sim/calibrate.py calibrate_board on those codes (ridge least squares of the "
    "readout toward the float crystal's logits, held-out guard, loadable check). Load = "
    "BoardLink.load of the refitted set. After = RUN_ADC on the test inputs again with the "
    "new weights. Accuracy = board class vs label, agreement = board class vs torch; "
    "bit-exact = every logit and the class equal to the golden model of the set the board "
    "holds (fixed.IntNet.forward) on the codes the board read.")


def _runs(records: list[dict]) -> dict:
    rec = next(r for r in records if r["op"] == "run_adc")
    return {k: np.array(rec[k], np.int64) for k in ("codes", "logits", "cls")}


def _bit_exact(net: fixed.IntNet, got: dict) -> float:
    gold = net.forward(got["codes"])
    return float(((got["logits"] == gold["logits"]).all(1) & (got["cls"] == gold["cls"])).mean())


def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet,
        spec: platforms.Board | None = None, port: str | None = None, sim: bool = False,
        vectors: int | None = None, timeout: float = 1.0) -> dict:
    spec = spec or platforms.get("icebreaker")
    if port is not None:
        raise BoardError("board calibrate --port: the host link cannot set a real analog core's "
                         "inputs (the protocol has no command for it), so the board cannot be "
                         "stepped through the training inputs; run it with --sim (the board "
                         "top in Icarus reading the ngspice core through its ADC front end)")
    if not sim:
        raise BoardError("name a board: --sim for the board top simulated in Icarus")
    n_all = len(c.reference.y)
    if vectors is not None and vectors < 1:
        raise BoardError(f"--vectors {vectors}: give at least 1 (default: the whole test split)")
    n = min(vectors or n_all, n_all)
    fp = quantize.ensure(c, cfg, paths, log)
    net = fixed.nets_of(fp)["frontier"]
    if net.input_kind != "adc_codes":
        raise BoardError(f"crystal {c.name!r}: the frontier reads the raw inputs, not an analog "
                         "core; there is nothing for an ADC front end to read or calibrate")
    t_all = time.perf_counter()
    out = paths.stage(host.NAME) / "calibrate"
    out.mkdir(parents=True, exist_ok=True)
    cal_x = c.reference.calibration_x
    m = len(cal_x)
    x_all = np.vstack([cal_x, c.reference.x[:n]]).astype(np.float64)
    log(f"board calibrate: ngspice core of calibrate's Monte Carlo board 0 on {m} training "
        f"inputs + {n} test samples ...")
    board = sim_calibrate.first_board(c, cfg, net, x_all, out / "board0.cir", log)
    adc_all = {k: board[k] for k in ("volts", "vref", "offset_lsb", "gain_lsb")}
    adc_test = {**adc_all, "volts": board["volts"][m:]}
    log(f"board calibrate: {m + n} RUN_ADC on {spec.title} (Icarus, {spec.baud} baud) ...")
    steps = [{"op": "identify"}, {"op": "run_adc", "count": m + n}, {"op": "counters"}]
    rec1, where = host.session(steps, net, spec, None, out / "read", timeout, log,
                               adc=board["part"], adc_volts=adc_all)
    host._first_error(rec1)
    got = _runs(rec1)
    codes = got["codes"]
    before_exact = _bit_exact(net, got)
    new, fig = sim_calibrate.calibrate_board(c, net, codes[:m], codes[m:], cfg.calibrate.ridge,
                                             cfg.seed)
    before = sim_calibrate.scores(got["cls"][m:], c, n)
    res = {"board": spec.name, "where": where, "vectors": n, "train_inputs": m,
           "adc_part": board["part"], "tolerance": board["tolerance"], "opamp": board["opamp"],
           "e_series": board["e_series"], "seed": cfg.seed,
           "trained_digest": fixed.weights_digest(net), "refit": fig,
           "before": {**before, "bit_exact_fraction": before_exact},
           "method": METHOD}
    if new is None:
        res.update(loaded=False, after=res["before"])
        why = fig.get("refused") or fig.get("kept")
        tail = [f"nothing loaded: {why}"]
    else:
        layers = len(net.layers)
        steps = [{"op": "identify"},
                 {"op": "load", "weights": [None] * (layers - 1) + [new.layers[-1].weights.tolist()],
                  "biases": [None] * (layers - 1) + [new.layers[-1].bias.tolist()]},
                 {"op": "run_adc", "count": n}, {"op": "identify"}, {"op": "counters"}]
        rec2, _ = host.session(steps, net, spec, None, out / "rerun", timeout, log,
                               adc=board["part"], adc_volts=adc_test)
        host._first_error(rec2)
        if rec2[1]["digest"] != fixed.weights_digest(new):
            raise LinkError(f"the host loaded {rec2[1]['digest']}, the refit is "
                            f"{fixed.weights_digest(new)}")
        again = _runs(rec2)
        after = sim_calibrate.scores(again["cls"], c, n)
        res.update(loaded=True, weights_digest=fixed.weights_digest(new),
                   words_loaded=len(design_mod.load_words(new, live=net)),
                   load_bytes_sent=rec2[1]["bytes_sent"],
                   load_seconds=rec2[1]["t1"] - rec2[1]["t0"],
                   test_codes_equal_on_rerun=bool((again["codes"] == codes[m:]).all()),
                   after={**after, "bit_exact_fraction": _bit_exact(new, again)})
        tail = [f"loaded {res['weights_digest']} ({res['words_loaded']} words, "
                f"{res['load_bytes_sent']} bytes, {res['load_seconds']:.4f} s simulated)"]
    b, a = res["before"], res["after"]
    res["passed"] = (b["bit_exact_fraction"] == 1.0 and a["bit_exact_fraction"] == 1.0
                     and res.get("test_codes_equal_on_rerun", True))
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    buf = io.BytesIO()  # what the board returned, per input
    np.savez(buf, codes_before=codes, logits_before=got["logits"], cls_before=got["cls"],
             **({} if new is None else {"codes_after": again["codes"],
                                        "logits_after": again["logits"],
                                        "cls_after": again["cls"]}))
    atomic_write_bytes(out / "readings.npz", buf.getvalue())
    res["files"] = {"readings": str(out / "readings.npz"), "core_netlist": str(out / "board0.cir")}
    summary = [f"{where}, ADC {board['part']}, core = calibrate's Monte Carlo board 0 "
               f"(seed {cfg.seed}, +-{board['tolerance']:g}) in ngspice; refit on {m} training "
               f"inputs read through the board",
               f"{n} test inputs: accuracy {b['accuracy']:.4f} -> {a['accuracy']:.4f}, agreement "
               f"with torch {b['agreement']:.4f} -> {a['agreement']:.4f}; bit-exact with the "
               f"golden model {b['bit_exact_fraction']:.4f} -> {a['bit_exact_fraction']:.4f}",
               *tail]
    res = {"stage": host.NAME, "experiment": paths.experiment, "action": "calibrate", **res,
           "summary": summary}
    res["result_file"] = str(write_result(out, res))
    return res
