"""`crystalbench quantize`: the fixed-point formats of the digital side, as their own
artifact (build/<exp>/fixed/): fixed_point.json (formats and integer arrays, stamped with
the Crystal's digest and the config), fixed_point.png (range profile) and result.json
(the golden model against torch on the test split). `synth` runs it when the artifact
is missing or stale; `sim` refuses a stale one.
"""

from __future__ import annotations

from crystalbench import stage
from crystalbench.crystal import Crystal
from crystalbench.errors import FixedPointError
from crystalbench.results import Paths

from . import fixed

NAME = "fixed"
WRITES = (NAME,)
NEEDS_CRYSTAL = True


def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet) -> dict:
    out = paths.stage(NAME)
    fp = fixed.quantize(c, cfg.fixed_point, cfg.adc.bits)
    nets = fixed.nets_of(fp)
    fixed.save(fp, out)
    gold = fixed.evaluate(c, nets)
    plot = fixed.profile(c, nets, out / "fixed_point.png")
    conns = {k: "+".join(str(int(layer.mask.sum())) for layer in net.layers)
             for k, net in nets.items()}
    lines = [f"fixed point on the test split ({gold['vectors']} vectors; float accuracy "
             f"{gold['float_test_accuracy']:.4f}):"]
    lines += [f"  {k} ({conns[k]} connections): class agreement with torch "
              f"{gold[k]['class_agreement_with_torch']:.4f}, accuracy "
              f"{gold[k]['fixed_point_test_accuracy']:.4f}" for k in nets]
    return stage.finish(NAME, paths, {
        "crystal_digest": fp["crystal"]["digest"], "fixed_digest": fixed.artifact_digest(fp),
        "connections": conns, "golden": gold, "files": {"formats": out / fixed.FILE_NAME,
                                                         "profile_plot": plot},
        "method": "formats chosen on the Crystal's calibration (training) inputs only; "
                  "golden model = the integer nets in numpy (rtl/fixed.py), compared with the "
                  "torch reference outputs stored in the Crystal on the whole test split"},
        lines)


def ensure(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet) -> dict:
    """The fixed-point artifact for this Crystal and config: read it, or (missing or
    stale) make it now by running this stage."""
    try:
        return fixed.load(paths.stage(NAME), c, cfg)
    except FixedPointError as e:
        log(f"quantize: {str(e).split(';')[0]}; choosing the formats now")
    for line in run(c, cfg, paths, log)["summary"]:
        log(line)
    return fixed.load(paths.stage(NAME), c, cfg)
