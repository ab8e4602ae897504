"""Preferred resistor values (IEC 60063) at the edges of the range and of the table."""
import numpy as np
import pytest

from crystalbench.analog import eseries
from crystalbench.errors import AnalogError


def test_ranges_below_one_ohm_and_of_one_value():
    # decade -1 of E24: 0.47, 0.51, ...; the bounds are inclusive
    got = eseries.values_in("E24", 0.47, 1.0)
    assert got[0] == 0.47 and got[-1] == 1.0 and len(got) == 9  # 0.47 0.51 ... 0.91 1.0
    np.testing.assert_array_equal(eseries.values_in("E96", 1000.0, 1000.0), [1000.0])


def test_values_keep_three_significant_figures_in_every_decade():
    np.testing.assert_array_equal(eseries.values_in("E96", 1.0, 1.1),
                                  [1.0, 1.02, 1.05, 1.07, 1.1])
    np.testing.assert_array_equal(eseries.values_in("E96", 0.1, 0.11),
                                  [0.1, 0.102, 0.105, 0.107, 0.11])


@pytest.mark.parametrize("r_min, r_max", [(0.0, 10.0), (-5.0, 10.0), (100.0, 10.0),
                                          (float("nan"), 10.0), (1.0, float("inf"))])
def test_a_range_that_is_not_one_is_refused(r_min, r_max):
    with pytest.raises(AnalogError, match=r"^analog\.r_min\.\.r_max = .* ohm is not a range of "
                                          r"positive values; set 0 < analog\.r_min <= "
                                          r"analog\.r_max$"):
        eseries.values_in("E24", r_min, r_max)


def test_a_range_without_a_value_names_the_finer_series():
    with pytest.raises(AnalogError, match=r"^no E24 value lies in analog\.r_min\.\.r_max = "
                                          r"1950\.\.1990 ohm; widen the range \(analog\.r_min, "
                                          r"analog\.r_max\) or choose a finer analog\.e_series "
                                          r"\(E24, E48, E96, E192\)$"):
        eseries.values_in("E24", 1950.0, 1990.0)


def test_snap_to_the_nearest_in_log_distance():
    table = np.array([1000.0, 2000.0])
    # the geometric mean of 1 k and 2 k is 1414 ohm
    np.testing.assert_array_equal(eseries.snap([900.0, 1400.0, 1500.0, 1900.0, 5000.0], table),
                                  [1000.0, 1000.0, 2000.0, 2000.0, 2000.0])
    # an exact tie in log distance goes to the lower value: 2 between 1 and 4
    assert eseries.snap(2.0, np.array([1.0, 4.0])) == 1.0
    np.testing.assert_array_equal(eseries.snap([3, 7], np.array([5.0])), [5.0, 5.0])  # one value
