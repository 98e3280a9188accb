"""The harness core: no dataset- or model-specific code lives here."""
