"""genrec: a gin-configured toolkit for generative and LLM-based recommendation.

Nothing is downloaded or read at import time; see ``genrec.assets`` for the pinned artifacts that
are fetched on first use. One setting is made here, because it must precede torch's OpenMP runtime:
``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (an explicit value wins), so torch's CPU threads sleep
instead of spinning while they wait. Spinning threads collapse when other processes share the
cores (``config/sasrec/ml100k_debug.gin`` with 2 threads on 2 cores at load average 3: 0.64 steps/s
spinning, 37.6 steps/s passive); the policy changes no result.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
