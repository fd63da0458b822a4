"""
Where a result came from: the command, the commit, the machine and the versions, written with
the values into one JSON results file. Examples and benchmark scripts write their results this
way, and the tables of README and the docs are rendered from these files
(``docs/render_tables.py``), never typed by hand.
"""

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

__all__ = ["cpu_model", "run_record", "write_results"]


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _commit(path):
    """The git commit of the checkout holding ``path`` (``+dirty`` with uncommitted changes)."""
    try:
        cwd = os.path.dirname(os.path.abspath(path))
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=cwd, text=True,
                             capture_output=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, text=True, capture_output=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_record(argv=None, script=None):
    """
    The provenance of a run: ``command`` (as typed, relative to the repository),
    ``commit``, ``date`` (UTC), ``machine`` (CPU model, core count, Python, torch, pyro) and
    ``threads`` (torch's intra-op threads).
    """
    import pyro
    import torch

    argv = list(sys.argv if argv is None else argv)
    script = script or (argv[0] if argv else "")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shown = os.path.relpath(os.path.abspath(script), root) if script else ""
    if shown.startswith(".."):
        shown = os.path.basename(script)
    return {
        "command": "python " + " ".join(shlex.quote(a) for a in [shown] + argv[1:]),
        "commit": _commit(script or __file__),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pyro": pyro.__version__,
        },
        "threads": torch.get_num_threads(),
    }


def write_results(path, results, argv=None, script=None):
    """Write ``{"run": run_record(...), "results": results}`` to ``path`` as JSON."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    record = {"run": run_record(argv, script), "results": results}
    with open(path, "w") as f:
        json.dump(record, f, indent=1, sort_keys=False)
        f.write("\n")
    return record
