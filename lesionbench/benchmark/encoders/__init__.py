"""Encoders, from the harness's side: the plug-in contracts and registries, plug-in discovery, weights
loading with its audit, feature extraction over a manifest, the feature cache, and ``check_encoder`` (the
conformance suite any plug-in reuses). Encoders themselves live in :mod:`lesionbench.baselines` or in
third-party packages; none of them is imported from here."""
