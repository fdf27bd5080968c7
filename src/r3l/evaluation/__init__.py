"""Measuring denoisers: the literature's metrics and protocol, the noise-mismatch benchmark, figures and action
maps."""
