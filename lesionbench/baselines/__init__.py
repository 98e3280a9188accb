"""Encoders, one module per encoder family; every module here is registered automatically."""
