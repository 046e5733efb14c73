"""Plugin file for CLI tests: `saliencybench run --plugin tests/toy_plugin.py ...`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy import register_all  # noqa: E402

register_all()
