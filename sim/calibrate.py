"""Stage `calibrate` (`crystalbench calibrate`): hardware in the loop.

The frontier is loadable because it keeps learning. Per Monte Carlo board (resistor
tolerance, op-amp offsets, ADC offset and gain error, drawn as in `sim-hybrid`):

    hardware   the board's core in ngspice on the Crystal's training inputs and the test
               split, through the ADC part with the board's errors -> the codes the
               frontier really reads
    before     the trained frontier (golden model) on the board's test codes
    refit      the readout refitted on the board's training codes to reproduce the float
               crystal's logits (ridge least squares in integer units, pulled toward the
               trained weights), rounded to the design's formats and checked for loading
               (rtl/fixed.py loadable_update: no accumulator can wrap)
    after      the refitted frontier on the board's test codes; for the first
               `calibrate.gate_boards` boards, the new weights written into the frontier's
               gate netlist through its write port and run under cocotb (bit-exact with
               the golden model of the new weights)

Each calibrated frontier is its own artifact, build/<exp>/calibrate/board<k>.json,
stamped with the board it was calibrated on; the trained frontier (fixed/) is never
written. Reads the Crystal, fixed/ and synth/; writes calibrate/.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from crystalbench import adc as adc_mod
from crystalbench import stage, toolrun
from crystalbench.analog import flow as analog_flow
from crystalbench.crystal import Crystal, digest
from crystalbench.errors import CrystalbenchError, SimError
from crystalbench.results import Paths, atomic_write_json
from crystalbench.rtl import design as rtl_design
from crystalbench.rtl import fixed

from . import flow as sim_flow
from . import hybrid

NAME = "calibrate"
WRITES = (NAME,)
NEEDS_CRYSTAL = True

METHOD = {
    "hardware": "per board: the core designed as sim-analog designs it (analog: section), its "
                "resistors and op-amp offsets drawn as in sim-hybrid's Monte Carlo, run in "
                "ngspice (DC operating points) on the Crystal's stored training inputs and the "
                "test split; ADC part with that board's offset and gain errors",
    "refit": "the readout only (hidden frontier layers, if any, keep their weights): per "
             "class, least squares of (codes, 1) onto the float crystal's logit x "
             "2^weight_frac on the stored training inputs (no labels: the float crystal is "
             "the teacher), pulled toward the trained integers by calibrate.ridge x mean "
             "input energy; rounded, clipped to weight_bits, checked by "
             "fixed.loadable_update (an accumulator that could wrap: refitted at 1/2, 1/4, "
             "1/8 of the logit scale, which keeps every class). Loaded only if a refit on "
             "4/5 of the training inputs beats the trained readout's logit RMS on the other "
             "1/5; then refitted on all",
    "figures": "accuracy = class vs label, agreement = class vs torch, on the test split; "
               "before = trained frontier, after = refitted, both on the same board's codes",
}


def readout_inputs(net: fixed.IntNet, codes: np.ndarray) -> np.ndarray:
    """What the readout reads for these input codes: the codes themselves, or the last
    hidden frontier layer's output codes."""
    if len(net.layers) == 1:
        return np.asarray(codes, np.int64)
    return net.forward(codes)["out"][-2]


def fit_readout(inputs: np.ndarray, target: np.ndarray, layer: fixed.IntLayer,
                ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer (weights, bias) of a readout whose accumulators best reproduce `target`
    (n, classes), in accumulator units, from `inputs` (n, n_in) over the connections the
    design has: per class, minimise |X theta - t|^2 + lam |theta - theta0|^2 with X =
    (inputs, 1), theta0 the trained integers, lam = ridge x mean(diag(X'X)); round; clip
    the weights to weight_bits."""
    w = np.zeros_like(layer.weights)
    b = np.zeros_like(layer.bias)
    top = (1 << (layer.weight_bits - 1)) - 1
    a = np.asarray(inputs, np.float64)
    for j in range(layer.n_out):
        ks = np.flatnonzero(layer.mask[j])
        x = np.hstack([a[:, ks], np.ones((len(a), 1))])
        theta0 = np.append(layer.weights[j, ks], layer.bias[j]).astype(np.float64)
        gram = x.T @ x
        lam = ridge * float(np.mean(np.diag(gram)))
        theta = np.linalg.solve(gram + lam * np.eye(len(theta0)) + 1e-9 * np.eye(len(theta0)),
                                x.T @ target[:, j] + lam * theta0)
        w[j, ks] = np.clip(np.rint(theta[:-1]), -top - 1, top).astype(np.int64)
        b[j] = int(np.rint(theta[-1]))
    return w, b


def scores(cls: np.ndarray, c: Crystal, n: int) -> dict:
    torch_cls = c.reference.outputs[-1].argmax(1)[:n]
    return {"accuracy": float((cls == c.reference.y[:n]).mean()),
            "agreement": float((cls == torch_cls).mean())}


def logit_rms(net: fixed.IntNet, codes: np.ndarray, target: np.ndarray) -> float:
    """RMS difference between a net's integer logits and the target, accumulator units."""
    return float(np.sqrt(np.mean((net.forward(codes)["logits"] - target) ** 2)))


# A refit whose accumulators would wrap is made again at a power-of-two smaller logit
# scale: every logit shrinks alike, so the class (the first maximum) keeps its meaning.
LOGIT_SCALES = (1.0, 0.5, 0.25, 0.125)


def refit(net: fixed.IntNet, inputs: np.ndarray, target: np.ndarray,
          ridge: float) -> tuple[fixed.IntNet, float]:
    """(the net with the readout refitted to `target` x scale, scale): the largest scale of
    LOGIT_SCALES whose weights load (fixed.loadable_update); refused if none does."""
    keep = [None] * (len(net.layers) - 1)
    for scale in LOGIT_SCALES:
        w, b = fit_readout(inputs, scale * target, net.layers[-1], ridge)
        try:
            return fixed.loadable_update(net, weights=keep + [w], biases=keep + [b]), scale
        except CrystalbenchError as e:
            err = e
    raise err


def calibrate_board(c: Crystal, net: fixed.IntNet, train_codes: np.ndarray,
                    test_codes: np.ndarray, ridge: float,
                    seed: int = 0) -> tuple[fixed.IntNet | None, dict]:
    """Refit the readout on one board's training codes; (new net, or None when the
    trained one is kept, and the figures before and after on the board's test codes).

    The refit is first made on four fifths of the training inputs and compared with the
    trained readout on the other fifth (logit RMS against the float crystal, at the
    trained logit scale): a refit that is not better there is not loaded. Otherwise it
    is made again on all of them."""
    t0 = time.perf_counter()
    n = len(test_codes)
    before = scores(net.forward(test_codes)["cls"], c, n)
    teacher = c.forward(c.reference.calibration_x)[-1].astype(np.float64)
    target = teacher * 2.0 ** net.layers[-1].weight_frac.astype(np.float64)[None, :]
    inputs = readout_inputs(net, train_codes)
    idx = np.random.default_rng(seed).permutation(len(inputs))
    hold, fit = idx[:len(idx) // 5], idx[len(idx) // 5:]
    info = {"before": before, "train_samples": len(inputs), "held_out": len(hold)}
    new = None
    try:
        trial, scale = refit(net, inputs[fit], target[fit], ridge)
        rms_old = logit_rms(net, train_codes[hold], target[hold])
        rms_new = logit_rms(trial, train_codes[hold], scale * target[hold]) / scale
        info["held_out_logit_rms"] = {"trained": rms_old, "refit": rms_new}
        if rms_new < rms_old:
            new, info["logit_scale"] = refit(net, inputs, target, ridge)
        else:
            info["kept"] = "the refit was no better on the held-out training inputs"
    except CrystalbenchError as e:
        info["refused"] = str(e)
    info["after"] = before if new is None else scores(new.forward(test_codes)["cls"], c, n)
    info["fit_seconds"] = time.perf_counter() - t0
    return new, info


def board_draws(b: analog_flow.Bench, part, plan, cfg):
    """This stage's Monte Carlo boards in order (resistor scales, op-amp offsets, ADC
    offset and gain errors), the same draws from cfg.seed every time."""
    rng = np.random.default_rng(cfg.seed)
    while True:
        r_scale, vos = analog_flow.draw_board(b.design, cfg.analog.tolerances[0],
                                              cfg.analog.opamp_offset, rng)
        off, gain = hybrid.draw_adc_errors(part, plan, rng)
        yield {"r_scale": r_scale, "vos": vos, "offset_lsb": off, "gain_lsb": gain}


def first_board(c: Crystal, cfg, net: fixed.IntNet, x: np.ndarray, path: Path,
                log: stage.Log = stage.quiet) -> dict:
    """Monte Carlo board 0 of this stage (the same draws from cfg.seed): its boundary
    neurons' volts on inputs x (samples, frontier inputs) from one ngspice DC sweep of its
    core (netlist written to `path`), and its ADC: part key, VREF, per-input offset and
    gain errors in the part's LSB."""
    part = adc_mod.part_for(cfg.adc.part)
    vref = adc_mod.check_part(part, cfg.adc.bits, cfg.analog.adc_ref_v)
    b = analog_flow.prepare(c, cfg.analog, cfg.adc.bits, log)
    plan = adc_mod.channel_plan(part, len(net.input_index), vref)
    draw = next(board_draws(b, part, plan, cfg))
    volts = hybrid.board_volts(b, net, np.asarray(x, np.float64), draw, path)
    return {"part": part.key, "volts": volts, "vref": vref, "offset_lsb": draw["offset_lsb"],
            "gain_lsb": draw["gain_lsb"], "tolerance": cfg.analog.tolerances[0],
            "opamp": b.design.opamp.part, "e_series": b.design.series}


def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet,
        boards: int | None = None) -> dict:
    toolrun.require("ngspice", "iverilog", "vvp")
    t_all = time.perf_counter()
    part = adc_mod.part_for(cfg.adc.part)
    vref = adc_mod.check_part(part, cfg.adc.bits, cfg.analog.adc_ref_v)
    name, d, net, sres = hybrid.frontier_design(c, cfg, paths)
    if d["weights"] != "loadable":
        raise SimError(f"the frontier design {name} has baked weights; calibration loads new "
                       "ones: set rtl.serial_weights (or rtl.parallel_weights) to loadable and "
                       "re-run `crystalbench synth`")
    ccfg = cfg.calibrate
    boards = ccfg.boards if boards is None else boards
    b = analog_flow.prepare(c, cfg.analog, cfg.adc.bits, log)
    plan = adc_mod.channel_plan(part, len(net.input_index), vref)
    out = paths.stage(NAME)
    out.mkdir(parents=True, exist_ok=True)
    cal_x = c.reference.calibration_x.astype(np.float64)
    x_all = np.vstack([cal_x, b.x])
    m, n = len(cal_x), len(b.x)
    float_acc = float((b.torch_cls == c.reference.y).mean())
    tol = cfg.analog.tolerances[0]
    log(f"calibrate: {boards} boards ({b.design.opamp.part}, {b.design.series} "
        f"+-{tol:g}, {part.part}), each in ngspice on {m} training inputs + {n} test "
        f"samples ...")
    per_board = []
    for k, draw in zip(range(boards), board_draws(b, part, plan, cfg)):
        t0 = time.perf_counter()
        try:
            codes = hybrid.board_codes(b, net, part, vref, cfg.adc.bits, x_all, draw,
                                out / f"board{k}.cir")
        except CrystalbenchError as e:
            raise SimError(f"board {k}: {e}") from None
        sim_s = time.perf_counter() - t0
        new, fig = calibrate_board(c, net, codes[:m], codes[m:], ccfg.ridge, cfg.seed + k)
        row = {"board": k, **fig, "seconds": round(time.perf_counter() - t0, 2),
               "ngspice_seconds": round(sim_s, 2)}
        if new is not None:
            row["weights_digest"] = fixed.weights_digest(new)
            row["artifact"] = str(write_artifact(out / f"board{k}.json", c, cfg, sres, name, net,
                                                 new, k, tol, part))
            if k < ccfg.gate_boards:
                runs = sim_flow.run_design(
                    c, cfg, out / f"board{k}", name, d, new, codes[m:], False,
                    lambda line, k=k: log(f"board {k}: {line}"), levels=("gates",),
                    load=rtl_design.load_words(new, live=net))
                g = runs[f"{name}_gates"]
                row["gate_level"] = {"bit_exact_fraction": g["bit_exact_fraction"],
                                     "accuracy": g["fixed_point_test_accuracy"],
                                     "agreement": g["class_agreement_with_torch"],
                                     "words_loaded": len(rtl_design.load_words(new, live=net))}
        per_board.append(row)
        log(f"board {k}: accuracy {fig['before']['accuracy']:.4f} -> "
            f"{fig['after']['accuracy']:.4f}, agreement {fig['before']['agreement']:.4f} -> "
            f"{fig['after']['agreement']:.4f}" + (f" (refused: {fig['refused']})"
                                                  if "refused" in fig else ""))
    res = summarize(per_board, float_acc)
    res.update({"crystal_digest": digest(c), "fixed_digest": sres["fixed_digest"],
                "frontier_design": name, "boards": boards, "tolerance": tol,
                "opamp": b.design.opamp.part, "e_series": b.design.series,
                "adc_part": part.part, "adc_bits": cfg.adc.bits, "per_board": per_board,
                "method": {**METHOD, "data": f"Crystal {c.name!r}: {m} stored training inputs "
                           f"(refit), {n} test samples (figures)"},
                "seconds": round(time.perf_counter() - t_all, 1)})
    gates = [r["gate_level"]["bit_exact_fraction"] for r in per_board if "gate_level" in r]
    res["gate_level_bit_exact"] = bool(gates) and all(g == 1.0 for g in gates)
    res["passed"] = all(g == 1.0 for g in gates)
    return stage.finish(NAME, paths, res, summary_lines(res))


def summarize(per_board: list[dict], float_acc: float) -> dict:
    before = np.array([r["before"]["accuracy"] for r in per_board])
    after = np.array([r["after"]["accuracy"] for r in per_board])
    agr_b = np.array([r["before"]["agreement"] for r in per_board])
    agr_a = np.array([r["after"]["agreement"] for r in per_board])
    return {"float_test_accuracy": float_acc,
            "accuracy_before": {"mean": float(before.mean()), "min": float(before.min())},
            "accuracy_after": {"mean": float(after.mean()), "min": float(after.min())},
            "agreement_before": {"mean": float(agr_b.mean()), "min": float(agr_b.min())},
            "agreement_after": {"mean": float(agr_a.mean()), "min": float(agr_a.min())},
            "gap_to_float_pp_after": (float_acc - float(after.mean())) * 100,
            "boards_improved_or_equal": int((after >= before).sum()),
            "boards_refused": sum("refused" in r for r in per_board),
            "boards_kept": sum("kept" in r for r in per_board)}


def summary_lines(r: dict) -> list[str]:
    ab, aa = r["accuracy_before"], r["accuracy_after"]
    lines = [f"calibrated {r['boards']} boards ({r['opamp']}, {r['e_series']} "
             f"+-{r['tolerance']:g}, {r['adc_part']}, {r['adc_bits']} bits): test accuracy mean "
             f"{ab['mean']:.4f} (min {ab['min']:.4f}) -> {aa['mean']:.4f} (min {aa['min']:.4f}); "
             f"float crystal {r['float_test_accuracy']:.4f} ({r['gap_to_float_pp_after']:.2f} pp "
             "above the calibrated mean)",
             f"{r['boards_improved_or_equal']} of {r['boards']} boards improved or equal; "
             f"{r['boards_refused']} refused, {r['boards_kept']} kept the trained weights "
             "(refit no better on held-out training inputs)"]
    gl = [p for p in r["per_board"] if "gate_level" in p]
    if gl:
        lines.append("gate level with the loaded weights: " + ", ".join(
            f"board {p['board']} bit-exact {p['gate_level']['bit_exact_fraction']:.4f}"
            for p in gl))
    return lines


def write_artifact(path: Path, c: Crystal, cfg, sres: dict, name: str, trained: fixed.IntNet,
                   new: fixed.IntNet, board: int, tol: float, part) -> Path:
    """The calibrated frontier: its integer weights and the words to load, stamped with
    the board (seed, index, the analog and ADC settings) it was calibrated on."""
    atomic_write_json(path, {
        "kind": "calibrated_frontier", "design": name, "crystal_digest": digest(c),
        "fixed_digest": sres["fixed_digest"],
        "board": {"index": board, "seed": cfg.seed, "tolerance": tol,
                  "opamp": cfg.analog.opamp, "e_series": cfg.analog.e_series,
                  "adc_part": part.key, "adc_bits": cfg.adc.bits},
        "weights_digest_trained": fixed.weights_digest(trained),
        "weights_digest": fixed.weights_digest(new),
        "layers": [{"weights": ly.weights.tolist(), "bias": ly.bias.tolist()}
                   for ly in new.layers],
        "load_words": rtl_design.load_words(new, live=trained)})
    return path
