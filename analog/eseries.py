"""Preferred resistor values (IEC 60063) and snapping to them."""

from __future__ import annotations

import numpy as np

from crystalbench.errors import AnalogError

# IEC 60063 tabulates every series. E24 deviates from the rounding formula and is copied
# from the table; E48/E96/E192 follow round(10**(i/N), 3 significant figures), except the
# one value IEC 60063 lists off the formula: E192's 9.20 (the formula gives 9.19).
_E24 = (1.0, 1.1, 1.2, 1.3, 1.5, 1.6, 1.8, 2.0, 2.2, 2.4, 2.7, 3.0, 3.3, 3.6, 3.9, 4.3, 4.7,
        5.1, 5.6, 6.2, 6.8, 7.5, 8.2, 9.1)
SERIES = ("E24", "E48", "E96", "E192")


def mantissas(series: str) -> np.ndarray:
    """The decade values of a series in [1, 10)."""
    if series == "E24":
        return np.array(_E24)
    if series not in SERIES:
        raise AnalogError(f"analog.e_series {series!r} is not a known E-series; choose one of "
                          f"{', '.join(SERIES)}")
    n = int(series[1:])
    m = np.round(10 ** (np.arange(n) / n), 2)
    if n == 192:
        m[m == 9.19] = 9.20
    return m


def values_in(series: str, r_min: float, r_max: float) -> np.ndarray:
    """Every value of the series inside [r_min, r_max], ascending."""
    m = mantissas(series)
    if not (np.isfinite(r_min) and np.isfinite(r_max) and 0 < r_min <= r_max):
        raise AnalogError(f"analog.r_min..r_max = {r_min:g}..{r_max:g} ohm is not a range of "
                          "positive values; set 0 < analog.r_min <= analog.r_max")
    decades = range(int(np.floor(np.log10(r_min))) - 1, int(np.ceil(np.log10(r_max))) + 1)
    vals = np.unique(np.concatenate([np.round(m * 10.0 ** d, 6) for d in decades]))
    vals = vals[(vals >= r_min * (1 - 1e-9)) & (vals <= r_max * (1 + 1e-9))]
    if vals.size == 0:
        raise AnalogError(f"no {series} value lies in analog.r_min..r_max = {r_min:g}..{r_max:g} "
                          "ohm; widen the range (analog.r_min, analog.r_max) or choose a finer "
                          f"analog.e_series ({', '.join(SERIES)})")
    return vals


def snap(r: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Nearest table value in log distance (ties to the lower value); below the table's
    first value gives the first, above its last the last."""
    r = np.asarray(r, np.float64)
    if len(table) == 1:
        return np.full(r.shape, table[0])
    lt = np.log(table)
    idx = np.clip(np.searchsorted(lt, np.log(r)), 1, len(table) - 1)
    lo, hi = lt[idx - 1], lt[idx]
    pick = np.where(np.log(r) - lo <= hi - np.log(r), idx - 1, idx)
    return table[pick]
