"""Preferred resistor values (IEC 60063) and snapping to them."""

from __future__ import annotations

import numpy as np

# E24 deviates from the rounding formula and is tabulated; E48/E96/E192 follow
# round(10**(i/N), 3 significant figures) (../shared/FIGURES.md), except E192's 9.20.
_E24 = (1.0, 1.1, 1.2, 1.3, 1.5, 1.6, 1.8, 2.0, 2.2, 2.4, 2.7, 3.0, 3.3, 3.6, 3.9, 4.3, 4.7,
        5.1, 5.6, 6.2, 6.8, 7.5, 8.2, 9.1)
SERIES = ("E24", "E48", "E96", "E192")


def mantissas(series: str) -> np.ndarray:
    """The decade values of a series in [1, 10)."""
    if series == "E24":
        return np.array(_E24)
    if series not in SERIES:
        raise ValueError(f"unknown E-series {series!r}; choose one of {', '.join(SERIES)}")
    n = int(series[1:])
    m = np.round(10 ** (np.arange(n) / n), 2)
    if n == 192:  # the one value IEC 60063 lists off the formula: 9.20, not 9.19
        m[m == 9.19] = 9.20
    return m


def values_in(series: str, r_min: float, r_max: float) -> np.ndarray:
    """Every value of the series inside [r_min, r_max], ascending."""
    m = mantissas(series)
    decades = range(int(np.floor(np.log10(r_min))) - 1, int(np.ceil(np.log10(r_max))) + 1)
    vals = np.unique(np.concatenate([np.round(m * 10.0 ** d, 6) for d in decades]))
    vals = vals[(vals >= r_min * (1 - 1e-9)) & (vals <= r_max * (1 + 1e-9))]
    if vals.size == 0:
        raise ValueError(f"no {series} value lies in [{r_min:g}, {r_max:g}] ohm")
    return vals


def snap(r: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Nearest table value in log distance (table from values_in: already in range)."""
    r = np.asarray(r, np.float64)
    lt = np.log(table)
    idx = np.clip(np.searchsorted(lt, np.log(r)), 1, len(table) - 1)
    lo, hi = lt[idx - 1], lt[idx]
    pick = np.where(np.log(r) - lo <= hi - np.log(r), idx - 1, idx)
    return table[pick]
