"""crystalbench: crystal nets from PyTorch to analog op-amp circuits and FPGA logic."""

import os

__version__ = "0.1.0"

# Training gives the same bits with any torch thread count: MKL's strict conditional
# numerical reproducibility makes its matrix products independent of the number of threads
# (without it, on this project's 2-core test machine, 24 of 144 small products such as
# (10, 32) @ (32, 64) differed in the last bits between 1 and 2 threads, and a run drifted).
# MKL reads it at its first call, so it is set when the package is first imported; a
# user's own MKL_CBWR is kept.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
