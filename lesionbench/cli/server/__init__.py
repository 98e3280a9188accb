"""The challenge server's commands: ``serve`` (and ``submissions``), ``worker`` and ``db``."""
