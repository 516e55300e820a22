"""Config and CLI: malformed gin, unknown bindings, unused bindings, unknown --split, every shipped file
parses and binds only what its trainer uses."""

import ast
import functools
import importlib
import inspect
from pathlib import Path

import gin
import pytest

from genrec.config import ConfigError, check_all_bindings_used, default_run_dir, parse_args, parse_gin

REPO = Path(__file__).resolve().parents[1]


@gin.configurable
def _entry(a=1, b=2):
    return a + b


@pytest.fixture(autouse=True)
def _clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_malformed_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text("_entry.a = 1\n_entry.b = (3\n")
    with pytest.raises(ConfigError, match=r"bad\.gin.*line"):
        parse_gin([bad])


def test_unknown_parameter_names_file_line_and_binding(tmp_path):
    bad = tmp_path / "typo.gin"
    bad.write_text("_entry.a = 1\n_entry.c = 2\n")
    with pytest.raises(ConfigError) as err:
        parse_gin([bad])
    assert "typo.gin" in str(err.value) and "line 2" in str(err.value) and "_entry.c" in str(err.value)


def test_unknown_configurable_in_binding():
    with pytest.raises(ConfigError, match="no_such_thing"):
        parse_gin([], ["no_such_thing.x = 1"])


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        parse_gin(["config/does_not_exist.gin"])


def test_unused_binding_is_an_error():
    parse_gin([], ["_entry.a = 5", "_entry.b = 7"])
    assert _entry(b=1) == 6  # the caller passes b, so the binding of b is silently ignored by gin...
    with pytest.raises(ConfigError, match=r"_entry\.b"):  # ...and we refuse it
        check_all_bindings_used()


def test_all_bindings_used_passes():
    parse_gin([], ["_entry.a = 5"])
    assert _entry() == 7
    check_all_bindings_used()


def test_unknown_split_lists_valid_ones():
    with pytest.raises(ConfigError, match="loo.*ratio"):
        parse_args(["x.gin", "--split", "nope"], prog="t", splits=["loo", "ratio"])


def test_default_run_dir():
    assert default_run_dir("config/sasrec/ml100k_debug.gin") == Path("runs/sasrec/ml100k_debug")


SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "config").rglob("*.gin"))


def _trainer_of(config: str) -> str | None:
    """``genrec.trainers.<name>_trainer`` for ``config/<name>/...``; None for shared files (config/llm/)."""
    name = Path(config).parts[1]
    return f"genrec.trainers.{name}_trainer" if (REPO / "genrec" / "trainers" / f"{name}_trainer.py").exists() else None


def _module_file(module: str) -> Path | None:
    path = REPO / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else (path.with_suffix(".py") if path.with_suffix(".py").exists()
                                                        else None)


def _imported_modules(tree: ast.Module) -> list[str]:
    """The genrec modules a module's import statements name; ``from <package> import name`` follows the
    package's re-export of that name to the module that defines it (not every module the package imports)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genrec"):
            for alias in node.names:
                found += _provider(node.module, alias.name)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("genrec")]
    return found


def _provider(module: str, name: str) -> list[str]:
    """The module that ``from module import name`` runs for ``name``."""
    if _module_file(f"{module}.{name}") is not None:
        return [f"{module}.{name}"]  # a submodule
    path = _module_file(module)
    if path is None or path.name != "__init__.py":
        return [module]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and any(a.asname or a.name == name for a in node.names):
            return _provider(node.module, name) if node.module.startswith("genrec") else []
    return [module]


@functools.lru_cache(maxsize=None)
def _import_closure(module: str) -> tuple[ast.Module, ...]:
    """The genrec modules that ``module`` imports, directly or not (lazy imports inside functions too)."""
    trees, todo = {}, [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in trees or path is None:
            continue
        trees[name] = tree = ast.parse(path.read_text(encoding="utf-8"))
        todo += _imported_modules(tree)
    return tuple(trees.values())


@functools.lru_cache(maxsize=None)
def _names_and_calls(trainer: str) -> tuple[set[str], dict[str, list[ast.Call]]]:
    """Every name the trainer's import closure refers to, and its calls by the called name."""
    names, calls = set(), {}
    for tree in _import_closure(trainer):
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Call):
                func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                calls.setdefault(func, []).append(node)
    return names, calls


def _references(value) -> set[str]:
    """Names of the configurables that a bound value references with ``@`` (nested containers too)."""
    if isinstance(value, gin.config.ConfigurableReference):
        return {value.configurable.name}
    if isinstance(value, dict):
        return set().union(*map(_references, value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*map(_references, value)) if value else set()
    return set()


def unused_bindings(trainer: str) -> list[str]:
    """Bindings of the parsed configuration that a run of ``trainer`` can never use, with the reason.

    Static, so no training runs: every binding names a registered configurable and one of its
    parameters (gin checks that while parsing; checked again here against the signature); the
    configurable must be referenced somewhere in the trainer's import closure or through an ``@``
    reference of the configuration; and the parameter must not be passed explicitly at every call
    of the configurable there (gin would ignore the binding silently).
    """
    bindings = gin.config._CONFIG  # {(scope, selector): {param: value}}; gin has no public accessor
    referenced = set().union(*(_references(v) for params in bindings.values() for v in params.values()))
    names, calls = _names_and_calls(trainer)
    problems = []
    for (scope, selector), params in bindings.items():
        if selector.endswith("gin.macro"):
            continue
        configurable = gin.config._REGISTRY.get_match(selector)
        if configurable is None:
            problems.append(f"{selector}: no such configurable")
            continue
        target = configurable.wrapped
        signature = inspect.signature(target.__init__ if inspect.isclass(target) else target)
        accepted = [p for p in signature.parameters.values() if p.name != "self"]
        name = configurable.name
        if name not in names and name not in referenced:
            problems += [f"{name}.{param}: {trainer} never refers to {name}" for param in params]
            continue
        sites = calls.get(name, [])
        for param in params:
            if param not in {p.name for p in accepted} and not any(p.kind == p.VAR_KEYWORD for p in accepted):
                problems.append(f"{name}.{param}: {name} has no parameter {param!r}")
                continue
            position = next(i for i, p in enumerate(accepted) if p.name == param) if param in signature.parameters \
                else None

            def passes(call):
                if any(k.arg is None for k in call.keywords) or any(isinstance(a, ast.Starred) for a in call.args):
                    return False  # **kwargs / *args: cannot tell
                return param in {k.arg for k in call.keywords} or (position is not None and len(call.args) > position)

            if sites and name not in referenced and all(passes(call) for call in sites):
                problems.append(f"{name}.{param}: every call of {name} in {trainer} passes {param} explicitly, "
                                "so gin ignores the binding")
    return problems


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_gin_file_binds_only_what_its_trainer_uses(path, monkeypatch):
    """Every shipped config parses, and each of its bindings names a configurable and parameter that its
    trainer reaches (see :func:`unused_bindings`); fast: nothing is trained, no model is built."""
    monkeypatch.chdir(REPO)
    trainer = _trainer_of(path)
    if trainer is not None:
        importlib.import_module(trainer)
    parse_gin([path])
    assert gin.config._CONFIG or "llm" in Path(path).parts, f"{path} binds nothing"
    if trainer is not None:
        assert unused_bindings(trainer) == []


@gin.configurable
def _explicit(a=1):
    return a


def _calls_explicit():
    return _explicit(a=2)  # the only call passes a: a binding of _explicit.a can never be used


def test_a_binding_every_caller_overrides_fails():
    parse_gin([], ["_explicit.a = 3", "_entry.a = 4"])
    assert unused_bindings("tests.test_config") == [
        "_explicit.a: every call of _explicit in tests.test_config passes a explicitly, so gin ignores the binding"]


@pytest.mark.parametrize("binding,problem", [
    ("TaskData.max_history = 3", "never refers to TaskData"),  # another trainer's configurable
    ("lora_settings.alpha = 16", "never refers to lora_settings"),  # SASRec has no LLM
    ("SASRec.max_len = 3", "max_len"),  # the old name: gin refuses it while parsing
    ("fit.seed = 3", "denylisted"),  # the trainer passes it: gin refuses it while parsing
])
def test_a_binding_the_trainer_cannot_use_fails(binding, problem, tmp_path, monkeypatch):
    importlib.import_module("genrec.llm.tasks")  # registers TaskData
    importlib.import_module("genrec.llm.lora")  # registers lora_settings
    importlib.import_module("genrec.trainers.sasrec_trainer")

    monkeypatch.chdir(REPO)
    config = tmp_path / "bad.gin"
    config.write_text(f'include "config/sasrec/ml100k_debug.gin"\n{binding}\n')
    try:
        parse_gin([config])
    except ConfigError as err:
        assert problem in str(err)
        return
    assert any(problem in line for line in unused_bindings("genrec.trainers.sasrec_trainer"))


def test_trainer_cli_errors_are_one_clear_message(tmp_path):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "genrec/trainers/sasrec_trainer.py", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    bad = tmp_path / "bad.gin"
    bad.write_text('include "config/sasrec/ml100k_debug.gin"\nfit.learning_rat = 0.1\n')
    for args, expected in [
        ([str(bad)], "learning_rat"),
        (["config/sasrec/ml100k_debug.gin", "--split", "random"], "valid splits are: loo"),
        (["config/sasrec/ml100k_debug.gin", "--gin", "experiment.dataset = 'ml-10m'"], "known datasets"),
        (["config/sasrec/ml100k_debug.gin", "--gin", "SASRec.num_heads = 3"], "divisible"),
    ]:
        proc = cli(*args, "--run-dir", str(tmp_path / "run"))
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
