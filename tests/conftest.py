"""Suite-wide policy: a DeprecationWarning or FutureWarning caused by genrec's own code fails the test.

A deprecation reaches the suite in one of two ways, and both are checked:

- a warning attributed to a genrec module (``warnings.warn(..., stacklevel=2)`` in a library points
  at its caller): ``pytest.ini``'s ``filterwarnings`` turns those into errors;
- a library that warns from its own frame (transformers' ``gradient_checkpointing_enable`` warns
  without a ``stacklevel``), which no module filter can tell apart: :func:`deprecated_call_site`
  looks at the stack when ``warnings.warn`` runs, and when the first frame outside the warning
  library is genrec's, the warning is raised as an error naming that line.

A deprecation that a third-party library triggers in another (peft probing transformers'
``is_gradient_checkpointing``) is not genrec's and stays a warning.
"""

import inspect
import warnings

DEPRECATIONS = (DeprecationWarning, FutureWarning)
ORIGINAL_WARN = warnings.warn


def package_of(frame) -> str:
    return str(frame.f_globals.get("__name__", "")).partition(".")[0]


def deprecated_call_site(frame) -> str | None:
    """``file:line`` of the genrec call that made the library at ``frame`` warn, or None."""
    owner = package_of(frame)
    while frame is not None and package_of(frame) == owner:
        frame = frame.f_back
    if frame is None or owner == "genrec" or package_of(frame) != "genrec":
        return None
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def strict_warn(message, category=None, stacklevel=1, source=None, **kwargs):
    kind = category or (type(message) if isinstance(message, Warning) else UserWarning)
    if issubclass(kind, DEPRECATIONS):
        site = deprecated_call_site(inspect.currentframe().f_back)
        if site is not None:
            raise kind(f"{message} [a deprecated call from genrec's own code, at {site}: replace it]")
    return ORIGINAL_WARN(message, category, stacklevel + 1, source, **kwargs)


def pytest_configure(config):
    warnings.warn = strict_warn


def pytest_unconfigure(config):
    warnings.warn = ORIGINAL_WARN
