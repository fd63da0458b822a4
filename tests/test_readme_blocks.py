"""
Every code block of README.md and of the docs' .rst pages runs as written.

Python blocks are executed, each on its own in a fresh namespace (a reader may copy any one of
them). Shell blocks are checked without running their (long or installing) commands: the block
parses (``bash -n``), the extras that ``pip install`` names exist, and every
``python <script>.py ARGS`` command names a script of the repository whose argument parser
accepts ``ARGS``.
"""

import glob
import os
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
from extras import missing_extra, reason

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.rst"),
                                                recursive=True)
    if "_build" not in p and "auto_examples" not in p
)
SHELL = {"bash", "sh", "shell", "console"}


def code_blocks(path):
    """``(language, code, line)`` of each fenced (Markdown) or code-block (rst) block."""
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    blocks = []
    if path.endswith(".md"):
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
            blocks.append((m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1))
    else:
        pattern = r"^( *)\.\. code-block:: *(\w+)[^\n]*\n((?:[ \t]*\n|\1[ \t]+[^\n]*\n)+)"
        for m in re.finditer(pattern, text, re.M):
            body = m.group(3)
            lines = [line for line in body.split("\n")]
            indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
            code = "\n".join(line[indent:] for line in lines).strip("\n") + "\n"
            # option lines (":caption: ...") directly below the directive are not code
            code = re.sub(r"\A(:\w[\w-]*:.*\n)+\n?", "", code)
            blocks.append((m.group(2), code, text.count("\n", 0, m.start()) + 1))
    return blocks


ALL = [(page, lang, code, line) for page in PAGES for lang, code, line in code_blocks(page)]
PYTHON = [b for b in ALL if b[1] in ("python", "py", "pycon")]
SHELL_BLOCKS = [b for b in ALL if b[1] in SHELL]


def test_blocks_found():
    # the pages do have code: a change to the block syntax must not silently skip them all
    assert len(PYTHON) >= 3 and len(SHELL_BLOCKS) >= 5
    assert {lang for _, lang, _, _ in ALL} <= {"python", "py", "pycon"} | SHELL, (
        "a code block in a language this test does not check")


@pytest.mark.parametrize("page,lang,code,line", PYTHON, ids=[f"{b[0]}:{b[3]}" for b in PYTHON])
def test_python_block_runs(page, lang, code, line, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import pyro
    import torch

    monkeypatch.chdir(tmp_path)  # anything a block writes stays out of the repository
    pyro.clear_param_store()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only cost on a shared machine
    try:
        exec(compile(code, f"{page}:{line}", "exec"), {"__name__": "__main__"})
    except ImportError as e:
        if not missing_extra(e):
            raise
        pytest.skip(reason(missing_extra(e)))  # a block of an optional extra's page (Lightning, Neo, ...)
    finally:
        torch.set_num_threads(threads)


def _commands(code):
    """The simple commands of a shell block, split at ``&&``, ``;`` and newlines."""
    code = code.replace("\\\n", " ")
    for line in code.splitlines():
        line = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
        for part in re.split(r"&&|;|\|\|", line):
            words = shlex.split(part)
            while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):  # VAR=value prefix
                words = words[1:]
            if words:
                yield words


# Parses the script's arguments with its own parser and stops there (runs nothing else).
_CHECK_ARGS = r"""
import argparse, os, runpy, sys
class _Parsed(Exception):
    pass
_orig = argparse.ArgumentParser.parse_args
def _parse(self, args=None, namespace=None):
    _orig(self, args, namespace)
    raise _Parsed
argparse.ArgumentParser.parse_args = _parse
failed = []
for line in sys.stdin.read().splitlines():
    script, *argv = line.split("\0")
    sys.argv = [script] + argv
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python script` does
    try:
        runpy.run_path(script, run_name="__main__")
        failed.append(f"{script}: ran without parsing its arguments")
    except _Parsed:
        pass
    except SystemExit as e:
        failed.append(f"{script} {' '.join(argv)}: exit {e.code}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_shell_blocks():
    extras = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"][
        "optional-dependencies"]
    scripts = []
    for page, _, code, line in SHELL_BLOCKS:
        where = f"{page}:{line}"
        proc = subprocess.run(["bash", "-n"], input=code, text=True, capture_output=True)
        assert proc.returncode == 0, (where, proc.stderr)
        for words in _commands(code):
            if words[:2] == ["pip", "install"]:
                for word in words[2:]:
                    m = re.fullmatch(r"\.\[([\w,-]+)\]", word)
                    if m:
                        for extra in m.group(1).split(","):
                            assert extra in extras, (where, f"no extra {extra!r}")
            elif words[0] == "python" and len(words) > 1 and words[1].endswith(".py"):
                assert os.path.isfile(os.path.join(ROOT, words[1])), (where, words[1])
                scripts.append("\0".join(words[1:]))
    assert scripts
    env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", _CHECK_ARGS], input="\n".join(scripts),
                          text=True, capture_output=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_ci_runs_readme_setup_commands_verbatim():
    # .ci/run reads README's two set-up commands with this script and runs them as they are
    import runpy

    commands = runpy.run_path(os.path.join(ROOT, ".ci", "readme_commands.py"))["setup_commands"]()
    assert len(commands) == 2
    assert all(c.startswith('pip install torch==2.13.0 -e ".[test]" && ') for c in commands)
    assert commands[1].endswith("python -m pytest -q")
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "readme_commands.py" in ci and 'bash -c "$cmd"' in ci


def test_every_example_is_in_readme_and_writes_to_out_its_name():
    # one output convention (--out, default out/<name>) and README's table lists every example
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        assert f"| `examples/{name}.py` |" in readme, f"{name}.py is not in README's table"
        source = open(path, encoding="utf-8").read()
        assert re.search(rf'add_argument\("--out", default="out/{name}"', source), (
            f"{name}.py: --out must default to out/{name}")
