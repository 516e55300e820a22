"""Command line and gin parsing shared by every trainer.

Every trainer is run the same way::

    python genrec/trainers/<name>_trainer.py FILE.gin [FILE.gin ...] [--split NAME] [--eval-split NAME]
        [--gin "binding"]... [--run-dir DIR]

Files are parsed in order, then the ``--gin`` bindings (later wins). ``--split``, ``--eval-split`` and
``--run-dir`` are turned into bindings, so the operative config written into the run folder records
them too.

``--split NAME`` (the convention of phonism/genrec: ``--split beauty``):

* an evaluation split (``loo``, ``ratio``: ``genrec.data.SPLITS``) binds ``experiment.split``, as
  ``--eval-split NAME`` does;
* otherwise an Amazon 2014 category, by short name (``beauty``, ``sports``, ``toys``,
  ``instruments``, ... :data:`genrec.data.amazon.AMAZON_CATEGORIES`) or file name (``Beauty``),
  binds the macro ``SPLIT`` of a config that has one (``config/lcrec/amazon/*.gin``,
  ``config/tiger/amazon.gin``, ``config/sasrec/amazon.gin``, ``config/rqvae/amazon.gin``). Such a
  config binds ``SPLIT = "beauty"`` (its default) and writes ``{split}`` inside strings
  (``experiment.dataset = "amazon:{split}"``, semantic-ID paths); after the files and bindings are
  parsed, every bound string's ``{split}`` becomes the value of ``SPLIT``, in included files and
  ``--gin`` bindings too, and the default run folder gains it as a last part
  (``runs/lcrec/amazon/lcrec/beauty``). An RQ-VAE config built from inside a model trainer
  (:func:`isolated_config`) gets the trainer's ``SPLIT``;
* any other value is an error that lists both kinds.

Strictness (STYLE.md, lesson 2):

* a malformed file or binding raises :class:`ConfigError` naming the file (or binding) and line;
* an unknown ``--split`` lists the valid ones; a category for a config without ``SPLIT`` says so;
* a binding that nothing uses is an error: :func:`check_all_bindings_used` compares what was bound
  with gin's operative config (what configurables actually received). The training loop calls it
  once everything has been built, so a typo'd or dead binding never silently changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tokenize
from pathlib import Path
from typing import Callable, Iterator, Sequence

import gin

from genrec.progress import quiet_library_bars

__all__ = ["REPO", "ConfigError", "bound_split", "check_all_bindings_used", "config_path", "default_run_dir",
           "isolated_config", "parse_args", "parse_gin", "run"]


class ConfigError(ValueError):
    """A gin file, binding or command-line value that cannot be used as written."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from genrec.assets import AssetError
    from genrec.data import DatasetFileError
    from genrec.training.run_folder import RunFolderBusy

    # OSError: a read-only or full disk, a missing file; the message names the path.
    return ConfigError, AssetError, DatasetFileError, FloatingPointError, ValueError, KeyError, OSError, RunFolderBusy


def parse_args(argv: Sequence[str] | None, prog: str, splits: Sequence[str]) -> argparse.Namespace:
    """Parses the trainer command line.

    Args:
        argv: arguments without the program name (``None``: ``sys.argv[1:]``).
        prog: program name shown in ``--help``.
        splits: valid evaluation split names (``--eval-split``, or ``--split`` when not a category).

    Returns:
        The arguments, with ``eval_split`` (an evaluation split or None) and ``category`` (the short
        name of an Amazon category, or None) resolved from ``--split`` and ``--eval-split``.
    """
    from genrec.data.amazon import AMAZON_CATEGORIES, short_name

    parser = argparse.ArgumentParser(prog=prog, description="Train and evaluate with gin config files.")
    parser.add_argument("configs", nargs="+", metavar="FILE.gin", help="gin files, parsed in order")
    parser.add_argument("--split", default=None,
                        help="an Amazon 2014 category for configs with a SPLIT macro "
                             f"({', '.join(AMAZON_CATEGORIES)}), or an evaluation split ({', '.join(splits)})")
    parser.add_argument("--eval-split", default=None, help=f"evaluation split, one of: {', '.join(splits)}")
    parser.add_argument("--gin", action="append", default=[], metavar="BINDING",
                        help='extra binding, e.g. --gin "fit.max_epochs = 3" (repeatable)')
    parser.add_argument("--run-dir", default=None, help="run folder (default: runs/<model>/<config name>)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's, one per core; on a machine shared with other "
                             "jobs 1 is often several times faster; results are identical for a given count)")
    args = parser.parse_args(argv)
    args.category = None
    if args.eval_split is not None and args.eval_split not in splits:
        raise ConfigError(f"unknown --eval-split {args.eval_split!r}; valid splits are: {', '.join(splits)}")
    if args.split is not None and args.split in splits:
        if args.eval_split not in (None, args.split):
            raise ConfigError(f"--split {args.split} and --eval-split {args.eval_split} disagree; give one of them")
        args.eval_split = args.split
    elif args.split is not None:
        args.category = short_name(args.split)
        if args.category is None:
            raise ConfigError(f"unknown --split {args.split!r}; valid splits are: {', '.join(splits)} (the "
                              "evaluation split, also --eval-split), or an Amazon 2014 category for the configs "
                              f"with a SPLIT macro: {', '.join(AMAZON_CATEGORIES)}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    return args


def _format_gin_error(where: str, err: Exception) -> str:
    if isinstance(err, tokenize.TokenError):  # e.g. an unclosed bracket: gin gives no location
        msg, (line, _col) = err.args
        return f"malformed gin in {where}, near line {line}: {msg}. Check brackets and quotes."
    text = str(err)
    if "In file" in text or "In bindings string" in text:
        return f"{text}\n(while parsing {where})"
    return f"{type(err).__name__} in {where}: {text}"


REPO = Path(__file__).resolve().parents[1]
"""The repository root: shipped configs (``config/...``) resolve against it from any directory."""


def config_path(path: str | Path) -> Path:
    """``path`` as given when it exists, else relative to the repository root (so ``config/...`` works
    from any working directory); the given path when neither exists (for the error message)."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not (REPO / path).exists():
        return path
    return REPO / path


def _search_repository_for_includes() -> None:
    """Lets ``include "config/..."`` resolve against the repository root after the current directory.

    gin's second file reader (Python packages on ``sys.path``) raises TypeError instead of saying
    "no such file" for a folder it sees as a namespace package (``config/`` under the repository
    root), which stops the search before the repository prefix; its check is made to say False.
    """
    state = gin.config  # no public accessor for the search path or the readers
    if str(REPO) not in state._LOCATION_PREFIXES:
        gin.add_config_file_search_path(str(REPO))
    for i, (reader, exists) in enumerate(state._FILE_READERS):
        if not getattr(exists, "genrec_safe", False):
            def safe(path, exists=exists):
                try:
                    return exists(path)
                except TypeError:
                    return False
            safe.genrec_safe = True
            state._FILE_READERS[i] = (reader, safe)


def parse_gin(files: Sequence[str | Path], bindings: Sequence[str] = (), split: str | None = None) -> None:
    """Parses gin files, then ``SPLIT = split``, then bindings, then fills ``{split}`` placeholders;
    raises :class:`ConfigError` that names what failed.

    Each file is parsed on its own so that a failure names it even when gin does not (tokenizer
    errors). Files are parsed relative to the current directory, as are their ``include`` lines.

    Args:
        files: gin files, parsed in order.
        bindings: gin bindings parsed after them.
        split: a dataset category for the files' ``SPLIT`` macro (the module docstring); an error when
            the files bind no ``SPLIT``.
    """
    gin.clear_config()
    _search_repository_for_includes()
    for path in map(config_path, files):
        if not path.is_file():
            raise ConfigError(f"gin file not found: {path} (a path relative to the current directory or to the "
                              f"repository root {REPO})")
        try:
            gin.parse_config_file(str(path))
        except Exception as err:  # gin raises ValueError, TokenError, SyntaxError, ...
            raise ConfigError(_format_gin_error(f"file {path}", err)) from err
    if split is not None:
        if bound_split() is None:
            raise ConfigError(
                f"--split {split} names a dataset category, but {', '.join(map(str, files)) or 'no config'} "
                f"{'binds' if len(files) == 1 else 'bind'} no SPLIT macro to "
                "choose it with (the Amazon configs do: config/lcrec/amazon/{rqvae,lcrec,lcrec_debug}.gin, "
                "config/tiger/amazon.gin, config/sasrec/amazon.gin, config/rqvae/amazon.gin); to choose the "
                "evaluation split, use --eval-split loo|ratio")
        gin.parse_config(f"SPLIT = {split!r}")
    for binding in bindings:
        try:
            gin.parse_config(binding)
        except Exception as err:
            raise ConfigError(_format_gin_error(f"binding {binding!r}", err)) from err
    _fill_split_placeholders()


def bound_split() -> str | None:
    """The value of the ``SPLIT`` macro in the current configuration, or None when it is unbound."""
    try:
        value = gin.query_parameter("%SPLIT")
    except ValueError:
        return None
    return str(value)


def _fill_split_placeholders() -> None:
    """Replaces ``{split}`` in every bound string (nested in lists, tuples and dicts too) by ``SPLIT``."""
    split = bound_split()

    def fill(value, where):
        if isinstance(value, str) and "{split}" in value:
            if split is None:
                raise ConfigError(f"{where} = {value!r} holds the placeholder {{split}}, but nothing binds the "
                                  'SPLIT macro; add SPLIT = "beauty" to the config or pass --split CATEGORY')
            return value.replace("{split}", split)
        if isinstance(value, (list, tuple)):
            return type(value)(fill(item, where) for item in value)
        if isinstance(value, dict):
            return {key: fill(item, where) for key, item in value.items()}
        return value

    for (scope, selector), params in gin.config._CONFIG.items():  # gin has no public accessor
        for param, value in params.items():
            params[param] = fill(value, f"{scope}/{selector}.{param}" if scope else f"{selector}.{param}")


@contextlib.contextmanager
def isolated_config(files: Sequence[str | Path], bindings: Sequence[str] = ()) -> Iterator[None]:
    """Runs the block under a gin configuration of its own (``files`` then ``bindings``, as
    :func:`parse_gin`), then restores the caller's configuration, operative record included.

    One process can so run a second entry point with its own config file, e.g. a model trainer that
    builds missing semantic IDs with an RQ-VAE config (:func:`genrec.semantic_ids.build_semantic_ids`)
    whose ``fit.*`` bindings must not mix with the model's.
    When the caller binds ``SPLIT`` (``--split beauty``), so does the block's configuration (before
    ``bindings``), so an RQ-VAE config with a ``{split}`` placeholder builds the trainer's category.
    """
    split = bound_split()  # the caller's dataset category reaches a config that chooses one
    state = gin.config  # gin has no public way to save and restore a configuration
    saved = ({key: dict(params) for key, params in state._CONFIG.items()},
             {key: dict(params) for key, params in state._OPERATIVE_CONFIG.items()},
             set(state._IMPORTS), dict(state._SINGLETONS))
    try:
        parse_gin(files, ([f"SPLIT = {split!r}"] if split is not None else []) + list(bindings))
        yield
    finally:
        gin.clear_config()
        config, operative, imports, singletons = saved
        state._CONFIG.update(config)
        state._OPERATIVE_CONFIG.update(operative)
        state._IMPORTS.update(imports)
        state._SINGLETONS.update(singletons)


def check_all_bindings_used() -> None:
    """Raises :class:`ConfigError` listing bindings that no configurable received.

    A binding is unused when its configurable was never called, or when the caller passed that
    argument explicitly (gin then ignores the binding silently). Macros are exempt: they are
    values, used through the bindings that reference them.
    """
    bound = gin.config._CONFIG  # {(scope, selector): {param: value}}; gin has no public accessor
    used = gin.config._OPERATIVE_CONFIG
    unused = []
    for key, params in bound.items():
        scope, selector = key
        if selector.endswith("gin.macro"):
            continue
        received = used.get(key, {})
        name = f"{scope + '/' if scope else ''}{selector.rsplit('.', 1)[-1]}"
        unused += [f"{name}.{param}" for param in params if param not in received]
    if unused:
        raise ConfigError(
            "these gin bindings were not used by anything: " + ", ".join(sorted(unused))
            + ". Check the spelling, remove them, or bind the configurable that is actually called."
        )


def default_run_dir(config: str | Path, split: str | None = None) -> Path:
    """``config/sasrec/ml100k_debug.gin`` -> ``runs/sasrec/ml100k_debug``; with a dataset category
    (``SPLIT``), ``config/sasrec/amazon.gin`` -> ``runs/sasrec/amazon/beauty``."""
    path = Path(config)
    parts = path.with_suffix("").parts
    if "config" in parts:
        parts = parts[parts.index("config") + 1:]
    return Path("runs", *parts[-3:], *([split] if split else []))


_GIN_CALL_NOTE = re.compile(r"^\s+In call to configurable '")


def run(entry: Callable, splits: Sequence[str], argv: Sequence[str] | None = None):
    """Parses the command line and gin, then calls the trainer's entry function.

    Args:
        entry: the trainer's ``@gin.configurable`` function; it must accept a ``run_dir`` keyword
            argument and get its data from :func:`genrec.training.experiment`.
        splits: valid split names for ``--split``.
        argv: command line without the program name.

    Returns:
        Whatever ``entry`` returns (the metrics dictionary).
    """
    name = entry.__name__
    try:
        args = parse_args(argv, prog=name, splits=splits)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.configs[-1])
    bindings = [f"{name}.run_dir = {str(run_dir)!r}"]
    if args.eval_split is not None:
        bindings.append(f"experiment.split = {args.eval_split!r}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        parse_gin(args.configs, bindings + list(args.gin), split=args.category)
        split = bound_split()
        if not args.run_dir and split is not None and gin.query_parameter(f"{name}.run_dir") == str(run_dir):
            gin.bind_parameter(f"{name}.run_dir", str(default_run_dir(args.configs[-1], split)))
        quiet_library_bars()  # weight-loading bars of transformers would leave carriage returns in a log
        return entry()
    except _user_errors() as err:
        if os.environ.get("GENREC_DEBUG"):
            raise
        # gin appends "  In call to configurable ..." lines to the message: the traceback says that
        message = "\n".join(line for line in str(err).splitlines() if not _GIN_CALL_NOTE.match(line))
        print(f"error: {message}\n(set GENREC_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
