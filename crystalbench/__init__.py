"""crystalbench: crystal nets from PyTorch to analog op-amp circuits and FPGA logic."""

__version__ = "0.1.0"
