"""The embedded synthetic patient study: anatomy, kinetics, and SPECT/CT frames."""
