"""Unit constants and conversions.

Internal units: time s, activity Bq, concentration Bq/mL, TIA Bq*s (= decays),
energy MeV per decay, dose Gy, density g/cm^3, length mm (geometry) / cm (physics).
Kernels and S-values are *reported* in mGy/(MBq*s), which equals 1e-9 Gy per decay.
"""

SECONDS_PER_HOUR = 3600.0
MEV_TO_J = 1.602176634e-13
#: 1 MeV deposited in 1 g of matter, in Gy (J/kg).
MEV_PER_G_TO_GY = MEV_TO_J / 1e-3
#: 1 mGy/(MBq*s) expressed in Gy per decay.
MGY_PER_MBQ_S_IN_GY_PER_DECAY = 1e-3 / 1e6
MM3_PER_ML = 1000.0


def hours_to_seconds(t_h):
    """Hours -> seconds (works on scalars and arrays)."""
    return t_h * SECONDS_PER_HOUR


def seconds_to_hours(t_s):
    """Seconds -> hours."""
    return t_s / SECONDS_PER_HOUR


def gy_per_decay_to_mgy_per_mbq_s(s_gy):
    """Gy per decay -> mGy/(MBq*s), the literature's S-value unit."""
    return s_gy / MGY_PER_MBQ_S_IN_GY_PER_DECAY


def mgy_per_mbq_s_to_gy_per_decay(s):
    """mGy/(MBq*s) -> Gy per decay."""
    return s * MGY_PER_MBQ_S_IN_GY_PER_DECAY
