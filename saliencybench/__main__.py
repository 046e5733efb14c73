"""``python -m saliencybench`` (also what ``torchrun -m saliencybench`` runs)."""

import sys

from saliencybench.benchmark.cli import main

sys.exit(main())
