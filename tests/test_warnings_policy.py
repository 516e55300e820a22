"""The suite's deprecation policy (pytest.ini + tests/conftest.py) catches genrec's deprecated calls only."""

import types
import warnings

import pytest

LIBRARY = """
import warnings

def old_api():
    warnings.warn("old_api is deprecated", FutureWarning)   # from its own frame, no stacklevel

def old_api_pointing_at_caller():
    warnings.warn("old_api_pointing_at_caller is deprecated", DeprecationWarning, stacklevel=2)
"""


def module(name: str, source: str, **names) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(names)
    exec(compile(source, f"<{name}>", "exec"), mod.__dict__)
    return mod


@pytest.fixture
def library():
    return module("fakelib.api", LIBRARY)


def test_a_deprecated_library_call_from_genrec_is_an_error(library):
    caller = module("genrec.fake_caller", "def run():\n    lib.old_api()\n", lib=library)
    with pytest.raises(FutureWarning, match="deprecated call from genrec's own code, at <genrec.fake_caller>:2"):
        caller.run()


def test_a_warning_attributed_to_a_genrec_module_is_an_error(library):
    caller = module("genrec.fake_caller", "def run():\n    lib.old_api_pointing_at_caller()\n", lib=library)
    with pytest.raises(DeprecationWarning):
        caller.run()
    with pytest.raises(DeprecationWarning):  # pytest.ini's filter alone, as for warnings raised in C code
        warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module="genrec.models.x")


def test_third_party_deprecations_stay_warnings(library):
    other = module("otherlib.wrapper", "def run():\n    lib.old_api()\n", lib=library)
    with pytest.warns(FutureWarning, match="old_api is deprecated"):
        other.run()
    with pytest.warns(UserWarning):  # other categories are untouched, from genrec too
        module("genrec.fake_caller", "import warnings\nwarnings.warn('note')\n")
