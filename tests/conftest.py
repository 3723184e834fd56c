"""Shared test set-up: make ``tools/local_kafka.py`` importable as ``local_kafka``."""

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))
