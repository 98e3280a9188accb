"""The zoo tests: tests/ itself on sys.path for the shared geometry fixtures (the root conftest's fixtures
apply here too)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
