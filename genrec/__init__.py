"""genrec: a gin-configured toolkit for generative and LLM-based recommendation.

Nothing is downloaded or read at import time; see ``genrec.assets`` for the pinned artifacts that
are fetched on first use.
"""

__version__ = "0.1.0"
