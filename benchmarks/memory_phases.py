"""Resident memory of any command, phase by phase; prints one JSON line.

    python benchmarks/memory_phases.py -- python genrec/trainers/lcrec_trainer.py config/lcrec/ml100k/lcrec_debug.gin

The command runs as a child process; its ``/proc/<pid>/status`` is read every ``--every`` seconds
(VmRSS, and of it RssAnon: heap and tensors, RssFile: mapped files such as shared libraries and
memory-mapped weights). Each sample is labelled with the phase the child last announced on stderr:
the label of its latest progress or announcement line (``train <run dir>``, ``evaluating valid``,
``genrec: LC-Rec``, ...; text before the first ``:`` and any count), ``start`` before the first.
A progress line comes only every 10% of a loop, so a phase's first moments count toward the phase
before it. The JSON holds the peak of each phase in the order the phases began, the overall sampled
peak, the kernel's own maximum (``getrusage``: it also sees spikes shorter than the sampling
period), the wall time, the exit status, the thread setting (``--threads`` of the command, else
``OMP_NUM_THREADS``, else the default) and the load average before and after.
The child's stdout and stderr go to ``--log`` (default: discarded; stderr after labelling).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time

FIELDS = {"VmRSS": "rss_mib", "RssAnon": "anon_mib", "RssFile": "file_mib"}
COUNT = re.compile(r"\s+\d+/\d+.*$")
WARNING = re.compile(r"^\S+:\d+: ")


def status(pid: int) -> dict[str, int] | None:
    """The child's resident memory in MiB, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in FIELDS:
            out[FIELDS[key]] = int(value.split()[0]) // 1024
    return out or None


def label(line: str) -> str | None:
    """The phase a stderr line announces: its text before the first ':' (counts removed); None for other lines."""
    if line[:1].isspace() or WARNING.match(line):  # continuation lines, "file.py:12: SomeWarning: ..."
        return None
    head, sep, _ = line.strip().partition(":")
    if not sep or not head or len(head) > 120 or head.startswith("Traceback"):
        return None
    if head == "genrec":  # announce(): "genrec: <step>: ..."
        head = "genrec: " + line.strip().split(":")[1].strip()
    return COUNT.sub("", head)


def loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=float, default=0.05, help="seconds between samples")
    parser.add_argument("--log", default=None, help="the child's stdout and stderr go here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    threads = command[command.index("--threads") + 1] if "--threads" in command[:-1] else None
    result = {"benchmark": "memory_phases", "command": command, "loadavg_start": loadavg(),
              "threads": threads or os.environ.get("OMP_NUM_THREADS") or f"default ({os.cpu_count()} cores)"}
    log = open(args.log, "w") if args.log else None
    start = time.perf_counter()
    try:
        child = subprocess.Popen(command, stdout=log or subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 errors="replace")
    except OSError as err:
        raise SystemExit(f"memory_phases: cannot start {command[0]!r} ({err.strerror}); check the command after --")
    phase = ["start"]
    peaks: dict[str, dict[str, int]] = {}

    def read_stderr() -> None:
        for line in child.stderr:
            if log:
                log.write(line)
                log.flush()
            name = label(line)
            if name:
                phase[0] = name

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    while child.poll() is None:
        sample = status(child.pid)
        if sample:
            best = peaks.setdefault(phase[0], sample)
            if sample["rss_mib"] > best["rss_mib"]:
                peaks[phase[0]] = sample
        time.sleep(args.every)
    reader.join()
    if log:
        log.close()
    result.update(returncode=child.returncode, wall_s=round(time.perf_counter() - start, 1), phases=peaks,
                  sampled_peak_rss_mib=max((p["rss_mib"] for p in peaks.values()), default=None),
                  max_rss_mib=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                  loadavg_end=loadavg())
    print(json.dumps(result))
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
