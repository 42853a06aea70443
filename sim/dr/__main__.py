"""`python -m sim.dr`: the disaster-recovery simulator on its own (`python -m sim dr` is the same)."""

import sys

from .cli import standalone

sys.exit(standalone())
