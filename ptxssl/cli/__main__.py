"""`python -m ptxssl.cli` (the DDP launcher re-runs the command this way)."""
import sys

from ptxssl.cli import main

sys.exit(main())
