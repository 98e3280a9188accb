"""Scoring statistics beyond the metric kernels: patient-clustered variances and studentized paired tests."""
