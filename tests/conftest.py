"""Shared pytest set-up: makes ``tests/testkit`` (fakes at the CPU boundary, tiny models) importable."""

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
