"""The ADC between the analog core and the digital frontier, shared by every backend.

Each core neuron read by the frontier (the boundary) has one ADC channel: unsigned
codes of `bits` bits over [0, full_scale], where full_scale is that neuron's largest
output over the Crystal's calibration inputs (core outputs are ReLU, never negative;
larger values clip). Per-neuron ranges are what the hardware does: the analog
backend sets each neuron's gain so its full scale meets the ADC reference voltage,
and the digital frontier folds the step size (LSB) into the weights that read it.
Raw inputs that frontier neurons read go through one converter over the input range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crystal import Crystal
from .errors import ConfigError


@dataclass(frozen=True, eq=False)
class AdcModel:
    bits: int
    full_scale: tuple[np.ndarray, ...]  # per hidden layer: (n_neurons,) in model units
    input_low: float  # range of raw inputs
    input_high: float

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1

    def lsb(self, layer_index: int) -> np.ndarray:
        """Code step per neuron of hidden layer `layer_index` (0-based), in model units."""
        return self.full_scale[layer_index] / self.levels

    def codes(self, values: np.ndarray, layer_index: int) -> np.ndarray:
        """Model-unit outputs (n, n_neurons) -> ADC codes: round to nearest, clip."""
        q = np.rint(np.asarray(values, np.float64) / self.lsb(layer_index))
        return np.clip(q, 0, self.levels).astype(np.int64)

    def values(self, codes: np.ndarray, layer_index: int) -> np.ndarray:
        """ADC codes -> model units (what the frontier sees)."""
        return np.asarray(codes, np.float64) * self.lsb(layer_index)

    def input_lsb(self) -> float:
        return (self.input_high - self.input_low) / self.levels

    def input_codes(self, x: np.ndarray) -> np.ndarray:
        q = np.rint((np.asarray(x, np.float64) - self.input_low) / self.input_lsb())
        return np.clip(q, 0, self.levels).astype(np.int64)


def adc_for(c: Crystal, bits: int = 8) -> AdcModel:
    """The ADC model of a Crystal, calibrated on its stored training inputs."""
    if not 2 <= bits <= 16:
        raise ConfigError(f"adc.bits {bits} is outside 2..16")
    outs = c.forward(c.reference.calibration_x)
    fs = []
    for li in range(len(c.layers) - 1):
        top = outs[li].max(axis=0).astype(np.float64)
        fs.append(np.where(top > 0, top, 1.0))  # a neuron never on: any range will do
    return AdcModel(bits=bits, full_scale=tuple(fs), input_low=c.input.low, input_high=c.input.high)
