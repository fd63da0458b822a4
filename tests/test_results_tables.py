"""
Every number of a documented table comes from a run: the rendered regions of README and the
docs equal what ``docs/render_tables.py`` renders from the results files (values plus the
command, commit and machine that produced them), and no page gains a table of numbers outside
such a region.
"""

import json
import os
import re
import runpy

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RENDER = runpy.run_path(os.path.join(ROOT, "docs", "render_tables.py"))

# Tables of numbers typed before the results files existed, per page, still to be moved to a
# script's results file (issue 25, item 2: all moved). The count may only go down: a new table
# of numbers outside a results region fails the test below.
LEGACY_TABLES = {}


def test_regions_are_up_to_date():
    for page in RENDER["PAGES"]:
        old, new, _ = RENDER["render_page"](page)
        assert old == new, f"{page}: run python docs/render_tables.py"


def test_every_renderer_is_used_and_its_files_say_where_they_came_from():
    used = set()
    for page in RENDER["PAGES"]:
        used.update(RENDER["render_page"](page)[2])
    assert used == set(RENDER["RENDERERS"]), set(RENDER["RENDERERS"]) - used
    for _, files in RENDER["RENDERERS"].values():
        for rel in files:
            with open(os.path.join(ROOT, rel)) as f:
                run = json.load(f)["run"]
            assert run["command"].startswith("python ") and run["commit"] != "unknown", rel
            # from a committed tree: the commit named reproduces the run
            assert not run["commit"].endswith("+dirty"), (
                f"{rel}: run from a tree with uncommitted changes; rerun it from a clean "
                "checkout of a commit")
            assert {"cpu", "cores", "python", "torch", "pyro"} <= set(run["machine"]), rel
            # the command names a script of the repository
            assert os.path.isfile(os.path.join(ROOT, run["command"].split()[1])), rel


def test_a_missing_renderer_is_an_error(tmp_path):
    text = "x\n<!-- results: no-such-table -->\n<!-- end results -->\n"
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(SystemExit, match="no renderer"):
        RENDER["render_page"](str(page))


def _strip_regions(text, page):
    pattern = RENDER["MD_REGION"] if page.endswith(".md") else RENDER["RST_REGION"]
    return pattern.sub("", text)


_NUMBER = re.compile(r"^[-−+~≈<>]?\d")


def numeric_tables(text, page):
    """Tables (Markdown pipe tables, rst list-tables) with a cell that is a number, outside
    code blocks and rendered regions."""
    text = _strip_regions(text, page)
    count = 0
    if page.endswith(".md"):
        text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        for m in re.finditer(r"(?:^\|.*\|[ \t]*\n)+", text, re.M):
            rows = [r for r in m.group(0).splitlines() if not re.match(r"^\|[-:| ]+\|$", r)]
            cells = [c.strip() for r in rows[1:] for c in r.strip("|").split("|")]
            count += any(_NUMBER.match(c) for c in cells)
    else:
        for m in re.finditer(r"^( *)\.\. list-table::.*\n((?:\1[ \t]+.*\n|[ \t]*\n)+)", text,
                             re.M):
            cells = re.findall(r"^\s+(?:\* )?- (.*)$", m.group(2), re.M)
            count += any(_NUMBER.match(c.strip()) for c in cells[1:])
    return count


def test_the_table_finder_finds_tables():
    md = "| a | b |\n|---|---:|\n| x | 1.5 |\n\n| a |\n|---|\n| `name` |\n"
    assert numeric_tables(md, "p.md") == 1
    rst = (".. list-table::\n   :header-rows: 1\n\n   * - seed\n     - std\n   * - 0\n"
           "     - 6.5\n")
    assert numeric_tables(rst, "p.rst") == 1
    assert numeric_tables(".. results: x\n\n" + rst + "\n.. end results\n", "p.rst") == 0


def test_no_new_table_of_numbers_outside_a_results_region():
    for page in RENDER["PAGES"]:
        text = open(os.path.join(ROOT, page), encoding="utf-8").read()
        found = numeric_tables(text, page)
        allowed = LEGACY_TABLES.get(page, 0)
        assert found <= allowed, (
            f"{page}: {found} tables of numbers outside results regions (at most {allowed}): "
            "have the script write a results file and render the table with "
            "docs/render_tables.py")


def test_write_results_records_where_a_result_came_from(tmp_path):
    from pyro_spikes.provenance import write_results

    script = os.path.join(ROOT, "examples", "quickstart.py")
    path = tmp_path / "sub" / "r.json"
    write_results(str(path), {"x": [1.5, 2]}, argv=[script, "--seed", "3", "--out", "a b"])
    record = json.loads(path.read_text())
    assert record["results"] == {"x": [1.5, 2]}
    run = record["run"]
    # the command as typed from the repository root, quoted where needed
    assert run["command"] == "python examples/quickstart.py --seed 3 --out 'a b'"
    assert re.fullmatch(r"[0-9a-f]{10}(\+dirty)?", run["commit"]), run["commit"]
    assert run["machine"]["cores"] >= 1 and run["threads"] >= 1
    # outside a git checkout the commit is "unknown", not an error
    outside = tmp_path / "script.py"
    outside.write_text("")
    assert write_results(str(tmp_path / "o.json"), {}, argv=[str(outside)])["run"][
        "commit"] == "unknown"
