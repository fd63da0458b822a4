"""
Run time of every example at its defaults
=========================================

Runs ``python examples/<name>.py`` for every example, with its defaults (only ``--out`` points
to a scratch folder), each in a fresh process one after the other, and writes the wall-clock
seconds, the peak resident memory and the exit status of each to one results file (``--out``,
with the command, commit and machine). README's table of run times and the run time stated in
each example's docstring are rendered from / checked against it
(``docs/render_tables.py``, ``tests/test_results_tables.py``).

Run ``python benchmarks/examples.py`` (about 20 minutes on 2 cores) or ``--only quickstart`` for
one example.
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import pyro_spikes  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from pyro_spikes.provenance import write_results  # noqa: E402

#: run one example in this interpreter and print its peak RSS (the child's own, in MB)
RUNNER = (
    "import resource, runpy, sys\n"
    "script = sys.argv[1]\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_path(script, run_name='__main__')\n"
    "finally:\n"
    "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
    "    print(f'PEAK_RSS_MB {peak:.1f}', file=sys.stderr)\n"
)


def examples():
    return sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(ROOT, "examples", "*.py")))


def run_example(name, scratch, timeout):
    """Seconds, peak RSS (MB) and exit status of ``python examples/<name>.py --out scratch``."""
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", RUNNER, os.path.join(ROOT, "examples", f"{name}.py"),
           "--out", os.path.join(scratch, name)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=scratch, capture_output=True, text=True,
                              timeout=timeout)
        status, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        status, err = "timeout", (e.stderr or b"").decode(errors="replace")
    seconds = time.perf_counter() - start
    peak = None
    for line in err.splitlines():
        if line.startswith("PEAK_RSS_MB "):
            peak = float(line.split()[1])
    tail = "" if status == 0 else err[-2000:]
    return {"name": name, "seconds": round(seconds, 1), "peak_rss_mb": peak,
            "returncode": status, "error_tail": tail}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--only", default=None, help="comma-separated example names")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds one example may run")
    parser.add_argument("--out", default=None,
                        help="results file (default: none, print only)")
    args = parser.parse_args(argv)
    names = examples() if args.only is None else args.only.split(",")
    unknown = sorted(set(names) - set(examples()))
    if unknown:
        parser.error(f"--only names no example: {unknown}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            row = run_example(name, scratch, args.timeout)
            print(f"{name:24s} {row['seconds']:8.1f} s  {row['peak_rss_mb'] or 0:8.0f} MB  "
                  f"exit {row['returncode']}", flush=True)
            rows.append(row)
    if args.out:
        write_results(args.out, {"examples": rows}, argv=[__file__] + list(
            sys.argv[1:] if argv is None else argv))
    failed = [r["name"] for r in rows if r["returncode"] != 0]
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
