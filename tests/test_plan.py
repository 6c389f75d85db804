"""Activity planning arithmetic: hand-computed cases and bad input."""

import json
import math

import pytest

from voxdose.analysis.plan import (DoseLimit, ExponentialKinetics, limits_from_options,
                                   parse_pairs, plan_activity)
from voxdose.cli.app import main
from voxdose.core.errors import InputError


def test_kidney_limited_case():
    """2.97 Gy/GBq to the kidneys with a 23 Gy limit: 23 / 2.97 = 7.744 GBq."""
    r = plan_activity({"kidneys": 2.97}, [DoseLimit("kidneys", 23.0)])
    assert r.max_activity_gbq == pytest.approx(7.7441, abs=1e-4)
    assert r.limiting_organ == "kidneys"
    assert r.doses_at_plan_gy()["kidneys"] == pytest.approx(23.0)


def test_seed_scenario_marrow_limited_after_transplant():
    """Worked example (illustrative numbers, the seed's two limits).

    Kidneys: 2.97 Gy/GBq, whole dose <= 23 Gy          -> 23 / 2.97        = 7.744 GBq.
    Marrow:  1.5 Gy/GBq, T_eff = 100 h, <= 1 Gy from the stem-cell transplant at 14 d
             (t0 = 336 h) on: fraction after t0 f = exp(-ln2 x 336 / 100) = 0.09740,
             dose after t0 per GBq = 1.5 x 0.09740 = 0.1461 Gy/GBq -> 1 / 0.1461 = 6.845 GBq.
    The marrow limits: A_max = 6.845 GBq; the kidneys then get 2.97 x 6.845 = 20.33 Gy and the
    marrow 10.27 Gy in total, 1 Gy of it after the transplant.
    """
    r = plan_activity({"kidneys": 2.97, "marrow": 1.5},
                      [DoseLimit("kidneys", 23.0),
                       DoseLimit("marrow", 1.0, after_h=336.0, half_life_h=100.0)])
    f = math.exp(-math.log(2) * 336 / 100)
    assert f == pytest.approx(0.09740, abs=1e-5)
    assert r.limiting_organ == "marrow"
    assert r.max_activity_gbq == pytest.approx(1.0 / (1.5 * f), rel=1e-12)
    assert r.max_activity_gbq == pytest.approx(6.845, abs=1e-3)
    assert r.doses_at_plan_gy()["kidneys"] == pytest.approx(20.33, abs=0.01)
    marrow = next(c for c in r.constraints if c.organ == "marrow")
    assert marrow.as_dict(r.max_activity_gbq)["limited_dose_at_plan_gy"] == pytest.approx(1.0)
    # with a transplant much later the kidneys limit again
    r2 = plan_activity({"kidneys": 2.97, "marrow": 1.5},
                       [DoseLimit("kidneys", 23.0),
                        DoseLimit("marrow", 1.0, after_h=600.0, half_life_h=100.0)])
    assert r2.limiting_organ == "kidneys"


def test_fitted_kinetics_fraction_after():
    # mono-exponential kinetics object equals the half-life formula
    k = ExponentialKinetics.mono(100.0)
    assert k.fraction_after(336 * 3600.0) == pytest.approx(math.exp(-math.log(2) * 3.36))
    # uptake-washout A = e^{-a t} - e^{-b t}: f(t0) = (e^{-a t0}/a - e^{-b t0}/b)/(1/a - 1/b)
    a, b = 1e-6, 1e-4
    kin = ExponentialKinetics((1.0, -1.0), (a, b))
    t0 = 2e5
    expect = (math.exp(-a * t0) / a - math.exp(-b * t0) / b) / (1 / a - 1 / b)
    assert kin.fraction_after(t0) == pytest.approx(expect, rel=1e-12)
    assert kin.fraction_after(0.0) == pytest.approx(1.0)
    lim = DoseLimit("marrow", 1.0, after_h=t0 / 3600.0, kinetics=kin)
    r = plan_activity({"marrow": 2.0}, [lim])
    assert r.max_activity_gbq == pytest.approx(1.0 / (2.0 * expect))


def test_bad_input_is_clear():
    with pytest.raises(InputError, match="no Gy/GBq for it"):
        plan_activity({"kidneys": 2.97}, [DoseLimit("liver", 23.0)])
    with pytest.raises(InputError, match="positive"):
        plan_activity({"kidneys": -1.0}, [DoseLimit("kidneys", 23.0)])
    with pytest.raises(InputError, match="positive"):
        plan_activity({"kidneys": 2.0}, [DoseLimit("kidneys", 0.0)])
    with pytest.raises(InputError, match="half-life"):
        plan_activity({"m": 2.0}, [DoseLimit("m", 1.0, after_h=10.0)])
    with pytest.raises(InputError, match="positive"):
        plan_activity({"m": 2.0}, [DoseLimit("m", 1.0, after_h=10.0, half_life_h=-5.0)])
    with pytest.raises(InputError, match="ORGAN=NUMBER"):
        parse_pairs(["kidneys:2.97"], "--gy-per-gbq")
    with pytest.raises(InputError, match="not a number"):
        parse_pairs(["kidneys=abc"], "--gy-per-gbq")
    with pytest.raises(InputError, match="twice"):
        parse_pairs(["k=1", "k=2"], "--limit")
    with pytest.raises(InputError, match="without --limit"):
        limits_from_options({}, {"marrow": 336.0}, {"marrow": 100.0})
    with pytest.raises(InputError, match="no dose limit"):
        plan_activity({"k": 1.0}, [])


def test_cli_plan_json_and_errors(capsys, tmp_path):
    out = tmp_path / "plan.json"
    rc = main(["plan", "--gy-per-gbq", "kidneys=2.97", "--gy-per-gbq", "marrow=1.5",
               "--limit", "kidneys=23", "--limit", "marrow=1", "--after-h", "marrow=336",
               "--half-life-h", "marrow=100", "--json", "--out", str(out)])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["limiting_organ"] == "marrow"
    assert doc["max_activity_gbq"] == pytest.approx(6.845, abs=1e-3)
    assert json.loads(out.read_text()) == doc
    for argv, pattern in (
        (["--gy-per-gbq", "kidneys=2.97", "--limit", "liver=23"], "no Gy/GBq"),
        (["--gy-per-gbq", "kidneys=0", "--limit", "kidneys=23"], "positive"),
        (["--gy-per-gbq", "kidneys2.97", "--limit", "kidneys=23"], "ORGAN=NUMBER"),
        (["--limit", "kidneys=23"], "no --gy-per-gbq"),
    ):
        rc = main(["plan", *argv])
        cap = capsys.readouterr()
        assert rc == 2 and cap.out == ""
        assert len(cap.err.strip().splitlines()) == 1 and pattern in cap.err, cap.err
