"""`python -m tests.reliability.slow_cli ARGS`: the ptxssl CLI with a test-only slowdown, so a
SIGKILL can land in the middle of `prepare` on a couple of dozen tiny images.

PTXSSL_TEST_DECODE_DELAY  seconds added before each image `prepare` decodes (default 0)
PTXSSL_TEST_FLUSH_EVERY   rows per commit to the partial cache (default: the library's 256)

Nothing else changes: the same command, code paths and files as `python -m ptxssl.cli ARGS`.
"""
from __future__ import annotations

import os
import sys
import time

from ptxssl.datasets import cache

_delay = float(os.environ.get("PTXSSL_TEST_DECODE_DELAY", "0"))
if _delay:
    _read_image = cache.read_image

    def _slow_read_image(path):
        time.sleep(_delay)
        return _read_image(path)

    cache.read_image = _slow_read_image
if os.environ.get("PTXSSL_TEST_FLUSH_EVERY"):
    cache._FLUSH_EVERY = int(os.environ["PTXSSL_TEST_FLUSH_EVERY"])

from ptxssl.cli import main  # noqa: E402

sys.exit(main())
