"""Data in: lesion manifests and their validation, image readers (NIfTI, MHA, NRRD, DICOM series, memory-mapped
raw volumes), image geometry and the checks every input passes before anything is computed from it.

A new image format or input check goes here."""
