"""Reruns the README's cheap figures and checks what the commands print against what the README states.

    python benchmarks/readme_figures.py                      # every check not marked slow, 1 torch thread
    python benchmarks/readme_figures.py --slow               # also the slow ones (the LC-Rec Quickstart, HSTU)
    python benchmarks/readme_figures.py --only sasrec_debug  # a subset (repeat --only, or give several ids)
    python benchmarks/readme_figures.py --list               # the checks, their commands and README figures

The checks are in ``benchmarks/readme_figures.json``: each is one command exactly as the README writes
it, and the figures of its run folder's ``metrics.json`` (``test.ndcg@10``, ...) with the places in
README.md that state them. The expected values are read from README.md itself at run time, by anchors
(a regular expression around the number, or a table row and column), so an edited README is what
gets checked; an anchor that finds nothing, or more than one place, stops the script before any run
(exit 2). So does a command that no longer appears verbatim in the README.

Each command runs as written, with ``--run-dir`` pointing into a fresh temporary folder (so a
finished run folder is never silently reported again) and ``--threads N`` (unless the README command
sets its own thread count), ``OMP_NUM_THREADS=N``, from the repository root. A figure passes when
the measured value, rounded half-up to the README's number of decimals, equals the README's number;
every place that states it must agree. The runs are deterministic at a given thread count, so no
other tolerance is allowed.

Prints one JSON line to stdout (per check: id, command, each figure with its README values and where
they are stated, the measured value and its rounding, pass/fail, wall seconds, load average before
and after, torch threads) and exits 1 when a figure disagrees or a run fails. The trainers' progress
goes to stderr as it comes; their stdout goes to ``<work dir>/<id>.stdout`` beside the run folder
(both deleted at the end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKS = REPO / "benchmarks" / "readme_figures.json"
README = REPO / "README.md"
NUMBER = re.compile(r"^\**\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")


class ReadmeError(Exception):
    """An anchor or a command that the README does not (or no longer uniquely) contain."""


def load_checks(path: Path = CHECKS) -> list[dict]:
    """The checks of ``readme_figures.json``, their fields checked.

    Raises:
        ReadmeError: a check without an id, command or figures, a duplicate id, or a malformed anchor.
    """
    checks = json.loads(Path(path).read_text(encoding="utf-8"))["checks"]
    seen = set()
    for check in checks:
        where = f"{path}: check {check.get('id')!r}"
        if not check.get("id") or not check.get("command") or not check.get("figures"):
            raise ReadmeError(f"{where} needs an id, a command and figures")
        if check["id"] in seen:
            raise ReadmeError(f"{where} is defined twice")
        seen.add(check["id"])
        for figure in check["figures"]:
            if not figure.get("metric") or not figure.get("anchors"):
                raise ReadmeError(f"{where}: each figure needs a metric and anchors")
            for anchor in figure["anchors"]:
                if "regex" in anchor and re.compile(anchor["regex"]).groups != 1:
                    raise ReadmeError(f"{where}: anchor {anchor['regex']!r} needs exactly one capture group")
                if "regex" not in anchor and not ("table_row" in anchor and "column" in anchor):
                    raise ReadmeError(f"{where}: an anchor is {{'regex': ...}} or {{'table_row': ..., 'column': ...}}")
    return checks


def headings(text: str) -> list[tuple[int, str]]:
    """(line index, heading line) of every Markdown heading outside fenced code blocks."""
    found, fenced = [], False
    for index, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"^#{1,6} ", line):
            found.append((index, line.strip()))
    return found


def section_of(text: str, line_index: int) -> str:
    """The heading line of the section that holds line ``line_index`` (0-based), or '(top)'."""
    title = "(top)"
    for index, line in headings(text):
        if index > line_index:
            break
        title = line
    return title


def section_lines(text: str, heading: str) -> tuple[int, list[str]]:
    """(index of its first line, its lines) of the section under ``heading``, up to the next heading of any level.

    Raises:
        ReadmeError: no such heading, or more than one.
    """
    lines = text.splitlines()
    marks = headings(text)
    starts = [number for number, (index, line) in enumerate(marks) if line == heading]
    if len(starts) != 1:
        raise ReadmeError(f"README.md: heading {heading!r} found {len(starts)} times, expected once")
    first = marks[starts[0]][0]
    end = marks[starts[0] + 1][0] if starts[0] + 1 < len(marks) else len(lines)
    return first, lines[first:end]


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row, stripped (``| a | b |`` -> ``['a', 'b']``)."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def leading_number(cell: str, where: str) -> str:
    """The number a table cell starts with (``**0.0449**`` -> ``0.0449``, ``3,237 s`` -> ``3,237``).

    Raises:
        ReadmeError: the cell does not start with a number.
    """
    match = NUMBER.match(cell)
    if not match:
        raise ReadmeError(f"{where}: the cell {cell!r} does not start with a number")
    return match.group(1)


def find_table_cell(text: str, anchor: dict) -> tuple[str, int]:
    """(number, 1-based line) of the table cell named by ``anchor`` (``table_row``, ``column``, ``section``)."""
    offset, lines = section_lines(text, anchor["section"]) if anchor.get("section") else (0, text.splitlines())
    in_section = f" {anchor['section']!r}" if anchor.get("section") else ""
    label = f"README.md{in_section}: table row {anchor['table_row']!r}"
    rows = [index for index, line in enumerate(lines)
            if line.lstrip().startswith("|") and cells(line)[0] == anchor["table_row"]]
    if len(rows) != 1:
        raise ReadmeError(f"{label} found {len(rows)} times, expected once")
    row = rows[0]
    top = row
    while top > 0 and lines[top - 1].lstrip().startswith("|"):
        top -= 1
    header = cells(lines[top])
    if anchor["column"] not in header or header.count(anchor["column"]) != 1:
        raise ReadmeError(f"{label}: column {anchor['column']!r} not in the table's header {header}")
    row_cells = cells(lines[row])
    column = header.index(anchor["column"])
    if column >= len(row_cells):
        raise ReadmeError(f"{label}: the row has no {anchor['column']!r} cell")
    return leading_number(row_cells[column], label), offset + row + 1


def find_figure(text: str, anchor: dict) -> dict:
    """The number the README states at ``anchor``, and where.

    Returns:
        ``{"value": "0.0562", "line": 53, "where": "README.md line 53 (## Quickstart): ..."}``; value is
        the README's text of the number, so its decimals say how it was rounded.

    Raises:
        ReadmeError: the anchor matches nothing, more than once, or no number.
    """
    if "regex" in anchor:
        matches = list(re.finditer(anchor["regex"], text))
        if len(matches) != 1:
            raise ReadmeError(f"README.md: anchor {anchor['regex']!r} matched {len(matches)} times, expected once")
        value = leading_number(matches[0].group(1), f"README.md: anchor {anchor['regex']!r}")
        line = text.count("\n", 0, matches[0].start(1)) + 1
        what = "text"
    else:
        value, line = find_table_cell(text, anchor)
        what = f"table row {anchor['table_row']!r}, column {anchor['column']!r}"
    return {"value": value, "line": line, "where": f"README.md line {line} ({section_of(text, line - 1)}): {what}"}


def rounded_as(measured: float, stated: str) -> str:
    """``measured`` rounded half-up to as many decimals as the README's ``stated`` number has."""
    plain = stated.replace(",", "")
    decimals = len(plain.split(".")[1]) if "." in plain else 0
    quantum = Decimal(1).scaleb(-decimals)
    return str(Decimal(repr(float(measured))).quantize(quantum, rounding=ROUND_HALF_UP))


def agrees(measured: float | None, stated: str) -> bool:
    """Whether ``measured`` printed to the README's digits is the README's number (None never agrees)."""
    if measured is None:
        return False
    return Decimal(rounded_as(measured, stated)) == Decimal(stated.replace(",", ""))


def metric_value(metrics: dict, path: str) -> float | None:
    """The value at dotted ``path`` (``test.ndcg@10``) of a metrics dictionary, or None when absent."""
    value = metrics
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def judge(check: dict, stated: list[list[dict]], metrics: dict) -> list[dict]:
    """Each figure of ``check``: its README values, the measured value and whether they all agree."""
    figures = []
    for figure, places in zip(check["figures"], stated):
        measured = metric_value(metrics, figure["metric"])
        figures.append({
            "metric": figure["metric"],
            "readme": places,
            "measured": measured,
            "measured_rounded": None if measured is None else sorted({rounded_as(measured, p["value"])
                                                                      for p in places}),
            "pass": all(agrees(measured, place["value"]) for place in places),
        })
    return figures


def resolve(checks: list[dict], text: str) -> list[list[list[dict]]]:
    """Every anchor of every check found in the README text (per check, per figure, per anchor).

    Raises:
        ReadmeError: an anchor is not found, or a check's command is not in the README verbatim.
    """
    found = []
    for check in checks:
        if check["command"] not in text:
            raise ReadmeError(f"README.md no longer contains the command of check {check['id']!r}: "
                              f"{check['command']!r}; update benchmarks/readme_figures.json")
        try:
            found.append([[find_figure(text, anchor) for anchor in figure["anchors"]] for figure in check["figures"]])
        except ReadmeError as err:
            raise ReadmeError(f"check {check['id']!r}: {err}; "
                              "update the anchor in benchmarks/readme_figures.json") from None
    return found


def command_line(command: str, run_dir: Path, threads: int) -> list[str]:
    """The README command as an argument list: our Python, ``--run-dir``, and ``--threads`` unless it has one."""
    args = shlex.split(command)
    if args[0] == "python":
        args[0] = sys.executable
    args += ["--run-dir", str(run_dir)]
    if "--threads" not in args:
        args += ["--threads", str(threads)]
    return args


def run_check(check: dict, stated: list[list[dict]], work: Path, threads: int) -> dict:
    """Runs one check's command into ``work/<id>`` and compares its metrics.json with the README."""
    run_dir = work / check["id"]
    args = command_line(check["command"], run_dir, threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    print(f"readme_figures: {check['id']}: {shlex.join(args)}", file=sys.stderr, flush=True)
    before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    tail = collections.deque(maxlen=40)
    with open(work / f"{check['id']}.stdout", "w") as stdout:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
        for line in proc.stderr:  # the trainer's progress, passed on as it comes; the tail kept for errors
            sys.stderr.write(line)
            tail.append(line)
        proc.wait()
    wall = round(time.perf_counter() - start, 1)
    after = [round(x, 2) for x in os.getloadavg()]
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if proc.returncode == 0 and metrics_file.exists() else {}
    figures = judge(check, stated, metrics)
    result = {
        "id": check["id"],
        "command": check["command"],
        "ran": shlex.join([Path(args[0]).name, *args[1:]]),
        "slow": bool(check.get("slow")),
        "figures": figures,
        "pass": proc.returncode == 0 and all(f["pass"] for f in figures),
        "wall_seconds": wall,
        "train_seconds": metrics.get("train_seconds"),
        "load_average_before": before,
        "load_average_after": after,
        "threads_requested": threads,
        "torch_threads": metrics.get("torch_threads"),
        "torch": metrics.get("torch"),
    }
    if proc.returncode != 0:
        result["error"] = f"exit {proc.returncode}: {''.join(tail).strip()[-1500:]}"
    elif not metrics:
        result["error"] = f"no {metrics_file} after the run"
    verdict = "pass" if result["pass"] else "FAIL"
    print(f"readme_figures: {check['id']}: {verdict} in {wall} s", file=sys.stderr, flush=True)
    return result


def listing(checks: list[dict], found: list[list[list[dict]]]) -> str:
    """Human-readable list of the checks and the README figures they compare against."""
    out = []
    for check, figures in zip(checks, found):
        out.append(f"{check['id']}{' (slow)' if check.get('slow') else ''}: {check['command']}")
        for figure, places in zip(check["figures"], figures):
            for place in places:
                out.append(f"    {figure['metric']} = {place['value']}  [{place['where']}]")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", action="extend", default=[], metavar="ID",
                        help="run only these checks (slow ones included when named)")
    parser.add_argument("--slow", action="store_true", help="include the checks marked slow")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every trainer (default 1)")
    parser.add_argument("--list", action="store_true", help="print the checks and their README figures, run nothing")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the run folders go (must not exist or be empty; default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (default: delete them at the end)")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    parser.add_argument("--checks", type=Path, default=CHECKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    try:
        checks = load_checks(args.checks)
        known = [check["id"] for check in checks]
        unknown = [name for name in args.only if name not in known]
        if unknown:
            raise ReadmeError(f"unknown check(s) {unknown}; known: {', '.join(known)}")
        if args.only:
            checks = [check for check in checks if check["id"] in args.only]
        elif not args.list and not args.slow:
            checks = [check for check in checks if not check.get("slow")]
        found = resolve(checks, args.readme.read_text(encoding="utf-8"))
    except ReadmeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.list:
        print(listing(checks, found))
        return 0
    if args.work_dir is not None and args.work_dir.exists() and any(args.work_dir.iterdir()):
        print(f"error: --work-dir {args.work_dir} is not empty; name a new folder so no finished run is reused",
              file=sys.stderr)
        return 2
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="readme_figures_"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        results = [run_check(check, stated, work, args.threads) for check, stated in zip(checks, found)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    failed = [result["id"] for result in results if not result["pass"]]
    print(json.dumps({
        "script": "benchmarks/readme_figures.py",
        "readme": str(args.readme),
        "threads": args.threads,
        "slow": args.slow,
        "checks": results,
        "failed": failed,
        "pass": not failed,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "work_dir": str(work) if args.keep else None,
    }))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
