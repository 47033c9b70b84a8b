"""Shared by the benchmark scripts: the command line each ran, its RESULTS.md section, the
machine it ran on, a measurement in a fresh child process of itself, and peak memory.

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = "# Benchmark results\n\nEach section is appended by the benchmark script it names.\n"


# Flags whose values are paths of the machine that ran: a path tells a reader nothing, so the
# recorded command names them by these words instead.
PATH_FLAGS = {
    "--run": "RUN",
    "--out": "RUN",
    "--keep": "DIR",
    "--results": "RESULTS",
    "--config": "CONFIG",
    "--puzzles": "PUZZLES",
}


def command(script: str, argv: list[str] | None = None) -> str:
    """The command line that ran ``script`` with ``argv`` (default: this process's arguments),
    every flag included, path values named by PATH_FLAGS, quoted as a shell reads it:
    ``python benchmarks/quality.py --parts q2 --out RUN``."""
    args = sys.argv[1:] if argv is None else list(argv)
    shown = []
    for i, a in enumerate(args):
        flag, eq, _ = a.partition("=")
        if eq and flag in PATH_FLAGS:
            a = f"{flag}={PATH_FLAGS[flag]}"
        elif i and args[i - 1] in PATH_FLAGS:
            a = PATH_FLAGS[args[i - 1]]
        shown.append(a)
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *shown])


def machine() -> str:
    """Cores, CPU model, architecture, Python and torch versions, and whether there is a GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    gpu = "CUDA GPU" if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), {platform.machine()}, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def header(title: str, script: str, argv: list[str] | None = None) -> list[str]:
    """A section's first lines: its title and date, the exact command line, the machine."""
    return [
        f"## {title} — {dt.date.today().isoformat()}",
        "",
        f"Command: `{command(script, argv)}`  ",
        f"Machine: {machine()}.",
        "",
    ]


def append_results(text: str, results: str | Path = RESULTS) -> None:
    """Append one section to RESULTS.md (created with its title), a blank line before it."""
    results = Path(results)
    if not results.exists() or results.stat().st_size == 0:
        lead = TITLE + "\n"
    else:
        with open(results, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            lead = "\n" if fh.read(1) == b"\n" else "\n\n"
    with open(results, "a", encoding="utf-8") as fh:
        fh.write(lead + text.strip("\n") + "\n")


def run_child(script: str, *flags: object) -> dict:
    """``script`` run again with ``flags`` in a fresh Python process (so that its peaks are its
    own): the JSON object it prints on its last line."""
    cmd = [sys.executable, script, *map(str, flags)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[1:])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's own peak resident size (VmHWM), in MB; 0 when it is gone."""
    # not getrusage: its ru_maxrss survives exec, so a child would report its parent's larger peak
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
