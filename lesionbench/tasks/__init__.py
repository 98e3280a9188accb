"""Benchmark tasks, one module per dataset; every module here is registered automatically."""
