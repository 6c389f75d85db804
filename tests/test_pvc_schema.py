"""The study-file keys of the partial-volume correction: [spect] resolution_fwhm_mm and
[pvc] method / rc_table (values checked by the schema; the pipeline wiring is elsewhere)."""

from pathlib import Path

import pytest

from voxdose.core.errors import StudyError
from voxdose.study.schema import check_value, key

P = Path("study.toml")


def test_resolution_is_one_number_or_x_y_z():
    k = key("spect", "resolution_fwhm_mm")
    assert check_value(k, 10, "spect.resolution_fwhm_mm", P) == 10.0
    assert check_value(k, [9, 9.5, 12], "spect.resolution_fwhm_mm", P) == [9.0, 9.5, 12.0]
    for bad, msg in (([9, 9], "one number or three"), (0, "must be > 0"),
                     ([9, -1, 9], r"resolution_fwhm_mm\[1\]' must be > 0"),
                     ("10", "must be a number"), (True, "must be a number")):
        with pytest.raises(StudyError, match=msg):
            check_value(k, bad, "spect.resolution_fwhm_mm", P)


def test_pvc_method_and_table():
    m = key("pvc", "method")
    assert m.default == "none" and m.choices == ("none", "rc", "gtm", "rbv", "iy")
    assert check_value(m, "rbv", "pvc.method", P) == "rbv"
    with pytest.raises(StudyError, match="did you mean 'rbv'"):
        check_value(m, "rvb", "pvc.method", P)
    assert check_value(key("pvc", "rc_table"), "rc.csv", "pvc.rc_table", P) == "rc.csv"
