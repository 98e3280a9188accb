"""The harness core: no dataset- or model-specific code lives here.

Sub-packages by stage, in the order a lesion passes them: :mod:`.data` (manifests, readers, checks),
:mod:`.patches` (crop recipes), :mod:`.encoders` (plug-in contracts, registries, weights, feature
extraction and cache), :mod:`.scoring` (splits, probes, metrics, the sweep), :mod:`.tracking` (MLflow),
:mod:`.robustness` (perturbation and test-retest stability). :mod:`.errors`, :mod:`.types`, :mod:`.paths`
and :mod:`.host` are the base they share. See docs/architecture.md."""
