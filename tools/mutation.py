"""
Mutation testing of the core modules (issue 29): how many small deliberate bugs the test suite
catches.

`mutmut <https://mutmut.readthedocs.io>`_ (3.x; ``pip install mutmut==3.8.1``, a developer
tool, not a dependency) rewrites each function of the modules below in many one-token ways
(``+`` for ``-``, ``<`` for ``<=``, a constant plus one, an argument dropped, ``and`` for
``or``, ...), and runs, for each such *mutant*, the tests that call the function (found by one
instrumented run of the suite). A mutant is *killed* when a test fails, *survives* when all
pass. Run it before a release::

    python tools/mutation.py                    # the core: ~14,000 mutants, 6+ h, 2 cores
    python tools/mutation.py --modules pyro_spikes/spikes.py pyro_spikes/windows.py
    python tools/mutation.py --rerun-survivors  # after writing tests that should kill them
    python tools/mutation.py --report-only      # rewrite the results from the last run

The work happens in a copy of the committed tree (``--workdir``, default ``.mutation/``,
ignored by git) with the compiled loops built in it, so the checkout is never touched; an
interrupted run resumes where it stopped (mutmut keeps each verdict). The results file
(``docs/results/mutation/mutation.json``: per module mutants, killed, survived, timed out, and
each survivor's diff) is rendered on the Guarantees page by ``docs/render_tables.py``. A
module's results are merged into the file, so modules can be run at different times; each
entry records its commit.

What is mutated, and what is not:

* the core: ``pyro_spikes/distributions``, ``models``, ``infer``, ``spikes.py``,
  ``scoring.py`` and ``windows.py``;
* not the text of error messages and warnings (the expression after ``raise ValueError(``,
  ``raise TypeError(`` or ``warnings.warn(``): the guarantee is that a message names its
  argument, which the fuzz suite checks (``tests/test_fuzz.py``); rewording a message is not a
  bug. The condition that raises or warns *is* mutated;
* not lines marked ``# pragma: no mutate`` (each with the reason the change cannot be
  observed, e.g. a safety margin of a capacity heuristic).

The mutants run on the compiled loops (the default path); tests that compare the PyTorch loops
with the compiled ones (``compiled_loops(False)``) cover the PyTorch path. Tests that only run
scripts in subprocesses (examples, docs, benchmarks, fuzz) cannot be traced to a function and
are left out of the instrumented run (``EXCLUDED_TESTS``).
"""

import argparse
import fnmatch
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pyro_spikes.provenance import run_record  # noqa: E402

CORE = [
    "pyro_spikes/distributions/*.py",
    "pyro_spikes/models/*.py",
    "pyro_spikes/infer/*.py",
    "pyro_spikes/spikes.py",
    "pyro_spikes/scoring.py",
    "pyro_spikes/windows.py",
]

# test files that run scripts, docs builds or other processes: no in-process call to trace
EXCLUDED_TESTS = [
    "test_benchmarks.py", "test_distributed_lightning.py", "test_docs.py", "test_docs_render.py",
    "test_examples_docs.py", "test_examples_snn.py", "test_fuzz.py", "test_grasshopper_example.py",
    "test_quickstart.py", "test_readme_blocks.py", "test_results_tables.py", "test_slif_example.py",
    "test_smooth_gate_examples.py", "test_api_pages.py", "test_docstrings.py", "test_plot.py",
    "test_io.py", "test_mutation_tool.py",
]

# expressions starting on these lines are not mutated (see the module docstring)
DO_NOT_MUTATE = [r"raise (ValueError|TypeError|NotImplementedError)\(", r"warnings\.warn\("]

DEFAULT_OUT = os.path.join(ROOT, "docs", "results", "mutation", "mutation.json")


def core_modules():
    found = []
    for pattern in CORE:
        found += sorted(p for p in glob.glob(os.path.join(ROOT, pattern))
                        if not p.endswith("__init__.py"))
    return [os.path.relpath(p, ROOT) for p in found]


def _head():
    return subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()


def _toml_list(items):
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def sync(workdir, archive):
    """Bring an earlier run's copy up to date with the commit in ``archive`` (a tar stream).

    mutmut keeps the verdicts of the functions whose source is unchanged and regenerates the
    mutants of the others, judging by modification times: only files whose content changed
    are rewritten (``git archive`` stamps every file with the commit's time), and a changed
    file that mutmut merely copied is removed from its copy so that it is copied again."""
    import tarfile
    import io

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            path = os.path.join(workdir, member.name)
            if os.path.exists(path) and open(path, "rb").read() == data:
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            copied = os.path.join(workdir, "mutants", member.name)
            if member.name.startswith("pyro_spikes/") and os.path.exists(copied) \
                    and not os.path.exists(copied + ".meta"):
                os.remove(copied)


def prepare(workdir, modules, fresh):
    """A copy of the committed tree in ``workdir``, built, with mutmut's configuration."""
    marker = os.path.join(workdir, ".commit")
    head = _head()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           text=True, capture_output=True).stdout.strip()
    if dirty:
        print("note: uncommitted changes are not tested (the copy is of HEAD)", file=sys.stderr)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True)
    if fresh or not os.path.exists(marker):
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        subprocess.run(["tar", "-x", "-C", workdir], input=archive.stdout, check=True)
    else:
        sync(workdir, archive.stdout)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=workdir,
                   check=True, capture_output=True)
    for lib in glob.glob(os.path.join(workdir, "pyro_spikes", "*.so")):  # mutmut's copy of them
        copy = os.path.join(workdir, "mutants", "pyro_spikes", os.path.basename(lib))
        if os.path.exists(copy):
            shutil.copy2(lib, copy)
    # the tests folder less the excluded files: a new test file changes no configuration (a
    # changed configuration makes mutmut forget every verdict)
    tests = ["tests"] + [f"--ignore=tests/{f}" for f in EXCLUDED_TESTS]
    with open(os.path.join(workdir, "pyproject.toml"), "a") as f:
        f.write("\n[tool.mutmut]\n")
        f.write('source_paths = ["pyro_spikes"]\n')
        # the tests read examples, benchmarks, docs and README: mutmut's copy needs them too
        others = sorted(set(os.listdir(workdir)) - {"pyro_spikes", "tests", "pyproject.toml",
                                                    "mutants", "build", ".commit"})
        f.write(f"also_copy = {_toml_list(o for o in others if not o.endswith('.log'))}\n")
        f.write(f"only_mutate = {_toml_list(modules)}\n")
        f.write(f"do_not_mutate_patterns = {_toml_list(DO_NOT_MUTATE)}\n")
        f.write(f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n")
        f.write('pytest_add_cli_args = ["-p", "no:cacheprovider", "-W", "ignore"]\n')
        # torch is not fork-safe after it has run: fork each mutant from a clean server
        f.write('process_isolation = "forkserver"\n')
        f.write("timeout_multiplier = 5.0\n")
        f.write("timeout_constant = 10.0\n")
        f.write("use_git_change_detection = false\n")
    with open(marker, "w") as f:  # the commit the copy holds
        f.write(head + "\n")
    return head


def verdicts(workdir, module):
    """``{mutant name: verdict}`` of ``module`` from mutmut's files, or None before any run."""
    meta = os.path.join(workdir, "mutants", module + ".meta")
    if not os.path.exists(meta):
        return None
    with open(meta) as f:
        return {name: status_by_exit_code(code)
                for name, code in json.load(f)["exit_code_by_key"].items()}


def survivors(workdir, modules):
    """The names of the mutants of ``modules`` that survived the last run (or had no test)."""
    return [name for module in modules for name, status in (verdicts(workdir, module) or {}).items()
            if status in ("survived", "no tests")]


def run_mutmut(workdir, max_children, time_limit, names=()):
    """``mutmut run`` in ``workdir`` (only ``names`` when given, even if they have a verdict)."""
    # one thread per worker: mutmut runs --max-children workers side by side
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH="", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    env.pop("PYRO_SPIKES_COMPILED", None)
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
    log = open(os.path.join(workdir, "mutmut.log"), "a")
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=time_limit)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = None
    print(f"mutmut ran {time.time() - start:.0f} s"
          + (" (time limit reached; run again to resume)" if code is None else f", exit {code}"))
    return code


_DIFF = """
import json, sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
out = {}
for name in json.load(sys.stdin):
    try:
        m = find_mutant(name)
        diff = get_diff_for_mutant(name, path=m.path)
    except Exception as e:  # a mutant of a file that changed since
        diff = f"(no diff: {e})"
    out[name] = [l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---")]
json.dump(out, sys.stdout)
"""


# mutmut's verdict from a mutant's exit code (mutmut.stats.status_by_exit_code, 3.8)
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          None: "not checked", 2: "not checked", 34: "skipped", 37: "killed",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          -11: "segfault", -9: "segfault"}


def status_by_exit_code(code):
    return STATUS.get(code, "suspicious")


_DEVICE_ARG = re.compile(r",?\s*device=[^,()]*(\([^()]*\))?")


def device_only(diff):
    """Whether a mutant only drops a ``device=`` argument (or sets it to None): on a machine
    with one device (the CPU) no test can see it, and the tests on a GPU would."""
    old = [line[1:] for line in diff if line.startswith("-")]
    new = [line[1:] for line in diff if line.startswith("+")]
    if len(old) != 1 or len(new) != 1 or "device" not in old[0]:
        return False

    def bare(line):
        return re.sub(r"\s+", "", _DEVICE_ARG.sub("", line)).replace(",)", ")")

    return bare(old[0]) == bare(new[0])


def collect(workdir, modules):
    """Per module: counts of each verdict and the surviving mutants with their diffs."""
    per_module = {m: v for m in modules if (v := verdicts(workdir, m)) is not None}
    names = [n for v in per_module.values() for n, status in v.items()
             if status in ("survived", "no tests")]
    diffs = {}
    if names:
        proc = subprocess.run([sys.executable, "-c", _DIFF], cwd=workdir, text=True,
                              input=json.dumps(names), capture_output=True,
                              env=dict(os.environ, PYTHONPATH=""))
        diffs = json.loads(proc.stdout) if proc.returncode == 0 else {}
    entries = {}
    for module, verdict in per_module.items():
        counts = {}
        for status in verdict.values():
            counts[status] = counts.get(status, 0) + 1
        checked = sum(v for k, v in counts.items() if k != "not checked")
        killed = counts.get("killed", 0) + counts.get("timeout", 0) + counts.get("segfault", 0)
        mine = []
        for name, status in verdict.items():
            if status in ("survived", "no tests"):
                diff = diffs.get(name, [])
                if status == "survived" and device_only(diff):
                    status = "device only"
                mine.append({"name": name.split(".")[-1], "status": status, "diff": diff})
        on_device = sum(1 for s in mine if s["status"] == "device only")
        judged = checked - on_device
        entries[module] = {
            "mutants": sum(counts.values()),
            "checked": checked,
            "killed": counts.get("killed", 0),
            "timeout": counts.get("timeout", 0) + counts.get("segfault", 0),
            "survived": counts.get("survived", 0) - on_device,
            "device_only": on_device,
            "no_tests": counts.get("no tests", 0),
            "not_checked": counts.get("not checked", 0),
            "suspicious": counts.get("suspicious", 0) + counts.get("skipped", 0),
            "score": killed / judged if judged else None,
            "survivors": mine,
        }
    return entries


def pragma_count(modules):
    n = 0
    for module in modules:
        with open(os.path.join(ROOT, module)) as f:
            n += sum(1 for line in f if re.search(r"#\s*pragma:\s*no mutate", line))
    return n


def _runs(workdir):
    path = os.path.join(workdir, "runs.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write(out, entries, head, runs):
    record = {"run": None, "results": {"modules": {}}}
    if os.path.exists(out):
        with open(out) as f:
            record = json.load(f)
    run = run_record(script=__file__)
    for module, entry in entries.items():
        entry["commit"] = head
        entry["date"] = run["date"]
        record["results"]["modules"][module] = entry
    record["run"] = run
    record["results"]["core"] = core_modules()
    record["results"]["runs"] = runs
    record["results"]["excluded_tests"] = EXCLUDED_TESTS
    record["results"]["do_not_mutate_patterns"] = DO_NOT_MUTATE
    record["results"]["pragma_no_mutate_lines"] = pragma_count(core_modules())
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=None,
                        help="files or glob patterns relative to the repository "
                             "(default: the core)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, ".mutation"))
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds before mutmut is stopped (run again to resume)")
    parser.add_argument("--fresh", action="store_true", help="start over in a new copy")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="run only the last run's surviving mutants, again (after new "
                             "tests; a plain run judges the mutants not judged yet)")
    parser.add_argument("--report-only", action="store_true",
                        help="only collect the verdicts of the last run into --out")
    args = parser.parse_args(argv)

    core = core_modules()
    if args.modules:
        modules = sorted({m for m in core for p in args.modules if fnmatch.fnmatch(m, p)})
        if not modules:
            parser.error(f"--modules {args.modules} match none of the core modules {core}")
    else:
        modules = core
    if args.report_only:
        head = open(os.path.join(args.workdir, ".commit")).read().strip()
    else:
        head = prepare(args.workdir, modules, args.fresh)
        with open(os.path.join(args.workdir, "runs.jsonl"), "a") as f:  # the verdicts' runs
            run = run_record(script=__file__)
            f.write(json.dumps({"command": run["command"], "commit": head,
                                "date": run["date"]}) + "\n")
        # the survivors, against the tests added since; else every mutant not judged yet (new,
        # or of a function changed since the last run)
        names = survivors(args.workdir, modules) if args.rerun_survivors else ()
        if args.rerun_survivors and not names:
            print("no surviving mutants to run again")
        else:
            run_mutmut(args.workdir, args.max_children, args.time_limit, names)
    entries = collect(args.workdir, modules)
    record = write(args.out, entries, head, _runs(args.workdir))
    for module, e in entries.items():
        score = "-" if e["score"] is None else f"{100 * e['score']:.1f}%"
        print(f"{module:45s} {e['checked']:5d} checked  {e['survived'] + e['no_tests']:4d} "
              f"survived  {score}")
    print(f"wrote {args.out} ({len(record['results']['modules'])} modules)")


if __name__ == "__main__":
    main()
