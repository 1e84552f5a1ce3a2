"""Prometheus access: the error-rate guard and the ALERTS poll."""
