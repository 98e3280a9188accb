"""Patches: the crops an encoder sees, cut around each lesion's seed from one read of its image, in the
reference FMCIB recipe (:mod:`.cutting`) or a zoo model's seed-crop recipe (:mod:`.seedcrop`).

A new crop recipe goes here."""

from lesionbench.benchmark.patches.cutting import check_spec, cut_patches

__all__ = ["check_spec", "cut_patches"]
