"""
Render the numbers of README.md and the docs from the results files that examples and
benchmarks write (``pyro_spikes.provenance.write_results``: values plus command, commit and
machine). Nothing in a rendered region is typed by hand.

A rendered region sits between two markers, in Markdown::

    <!-- results: NAME -->
    ...
    <!-- end results -->

and in reStructuredText (comments)::

    .. results: NAME

    ...

    .. end results

``python docs/render_tables.py`` rewrites every region from its results file;
``python docs/render_tables.py --check`` exits 1 when a region differs from what its file
renders (``tests/test_results_tables.py`` runs the check).
"""

import argparse
import json
import os
import re
import sys
from math import floor, log10

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
PAGES = ["README.md"] + sorted(
    os.path.relpath(os.path.join(DOCS, f), ROOT) for f in os.listdir(DOCS) if f.endswith(".rst"))
MD_REGION = re.compile(r"(<!-- results: ([\w-]+) -->\n)(.*?)(<!-- end results -->)", re.S)
RST_REGION = re.compile(r"(^\.\. results: ([\w-]+)\n\n)(.*?)(^\.\. end results$)", re.S | re.M)


def load(relpath):
    with open(os.path.join(ROOT, relpath)) as f:
        return json.load(f)


# ---------------------------------------------------------------- formatting


def num(x, digits=3):
    """``digits`` significant digits, thousands separated, no exponent below 1e7."""
    if x == 0:
        return "0"
    decimals = max(digits - 1 - int(floor(log10(abs(x)))), 0)
    return f"{x:,.{decimals}f}"


def with_interval(triple, digits=3):
    est, lo, hi = triple
    return f"{num(est, digits)} [{num(lo, digits)}, {num(hi, digits)}]"


def provenance(record):
    run = record["run"]
    m = run["machine"]
    return (f"``{run['command']}``, commit {run['commit']}, {run['date']}; {m['cpu']}, "
            f"{m['cores']} cores, Python {m['python']}, torch {m['torch']}, pyro-ppl "
            f"{m['pyro']}, {run['threads']} torch thread(s)")


def rst_list_table(header, rows):
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header] + rows:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- gradient variance

GV_FRESH = "docs/results/gradient_variance_fresh/gradient_variance.json"
GV_KAJINO = "docs/results/gradient_variance_kajino/gradient_variance.json"
GV_NAMES = ("pathwise", "reinforce", "reinforce_baseline")


def _gv_table(record, tail_of):
    header = ["seed", "path-wise std / robust", "REINFORCE std / robust",
              "REINFORCE + baseline std / robust",
              "tail share (" + ", ".join(n.replace("reinforce_baseline", "baseline")
                                         .replace("pathwise", "path-wise") for n in tail_of)
              + ")", "REINFORCE / path-wise std"]
    rows = []
    for seed, r in record["results"]["seeds"].items():
        cells = [f"{with_interval(r[n]['std'])} / {num(r[n]['robust std'][0])}" for n in GV_NAMES]
        tails = ", ".join(num(r[n]["tail share"][0], 2) for n in tail_of)
        rows.append([seed] + cells + [tails, with_interval(r["ratio"])])
    s = record["results"]["settings"]
    note = (f"{s['num_steps']} draws per estimator and seed, {s['num_sequences']} sequences, "
            f":math:`T = {s['duration']:g}`, temperature {s['temperature']:g}, "
            f"{s['num_bootstrap']} bootstrap resamples. Run: {provenance(record)}.")
    return rst_list_table(header, rows) + "\n" + note + "\n"


def gradient_variance_fresh():
    return _gv_table(load(GV_FRESH), ["reinforce_baseline"])


def gradient_variance_kajino():
    return _gv_table(load(GV_KAJINO), ["pathwise", "reinforce_baseline"])


def gradient_variance_readme():
    record = load(GV_FRESH)
    seeds = record["results"]["seeds"]
    s = record["results"]["settings"]

    def each(name):
        return ", ".join(with_interval(r[name]["std"]) for r in seeds.values())

    ratios = [r["ratio"][0] for r in seeds.values()]
    return (f"(`{record['run']['command']}`, commit {record['run']['commit']}: "
            f"{s['num_steps']} draws, {s['num_sequences']} sequences, 95% bootstrap intervals): "
            f"path-wise {each('pathwise')} against REINFORCE {each('reinforce')} on seeds "
            f"{', '.join(seeds)}, a REINFORCE / path-wise ratio of {num(min(ratios), 2)} to "
            f"{num(max(ratios), 2)} (the paper: 66.3 vs 2,490, ratio 38).\n")


def gradient_variance_benchmarks():
    record = load(GV_FRESH)
    seeds = record["results"]["seeds"].values()
    ratios = [r["ratio"][0] for r in seeds]
    pw = [r["pathwise"]["std"] for r in seeds]
    rf = [r["reinforce"]["std"] for r in seeds]
    return (f"Its gradient standard deviation is {num(min(ratios), 2)}-{num(max(ratios), 2)}x "
            f"smaller at a fresh model, depending on the data network "
            f"(``examples/gradient_variance.py``: path-wise {num(min(p[0] for p in pw))} to "
            f"{num(max(p[0] for p in pw))} against REINFORCE {num(min(p[0] for p in rf))} to "
            f"{num(max(p[0] for p in rf))}, intervals on :doc:`kajino`).\n")


# ---------------------------------------------------------------- long recordings

RECORDINGS = "docs/results/recordings/recordings.json"


def recordings_spiking():
    record = load(RECORDINGS)
    r = record["results"]
    header = ["D", "duration", "layout", "quadrature", "spikes", "log_prob + gradient (s)",
              "µs / spike", "ns / (spike · neuron)", "peak RSS (MB)", "RSS before (MB)"]
    rows = []
    for row in (r["spiking_by_neurons"] + r["spiking_by_duration"]
                + [r["spiking_dense"], r["spiking_fixed_quadrature"]]):
        rows.append([str(row["D"]), f"{row['minutes']:g} min", row["layout"], row["quadrature"],
                     f"{row['spikes']:,}", num(row["forward_s"] + row["backward_s"]),
                     num(row["us_per_spike"]), num(row["ns_per_spike_and_neuron"]),
                     f"{row['peak_rss_mb']:,.0f}", f"{row['rss_before_mb']:,.0f}"])
    s = r["settings"]
    note = (f"Spikes at {s['rate_hz']:g} Hz per neuron, :math:`L = {s['num_basis']}`, "
            f":math:`\\tau = {s['tau']:g}`, float64, {r['spiking_by_neurons'][0]['loops']} "
            f"loops; each row in a fresh process (its peak RSS; *RSS before*: Python, torch "
            f"and the data). Run: {provenance(record)}.")
    return rst_list_table(header, rows) + "\n" + note + "\n"


def recordings_hawkes():
    record = load(RECORDINGS)
    r = record["results"]
    header = ["D", "events", "ours: first / repeated (events/s)",
              "tick: first / repeated (events/s)", "ours / tick: first, repeated",
              "tick: RSS growth (MB)", "loss: relative difference",
              "gradient: max difference"]
    rows = []
    for row in r["hawkes"]:
        ours = f"{row['ours_first_events_per_s']:,.0f} / {row['ours_events_per_s']:,.0f}"
        if "tick_events_per_s" not in row:
            rows.append([str(row["D"]), f"{row['events']:,}", ours, "(tick missing)", "", "",
                         "", ""])
            continue
        rows.append([str(row["D"]), f"{row['events']:,}", ours,
                     f"{row['tick_first_events_per_s']:,.0f} / {row['tick_events_per_s']:,.0f}",
                     f"{num(row['ratio_first'], 2)}, {num(row['ratio_repeated'], 2)}",
                     f"{row['tick_rss_growth_mb']:,.0f}",
                     f"{row['loss_rel_diff']:.1e}", f"{row['grad_max_abs_diff']:.1e}"])
    note = (f"``HawkesProcess(..., layout=\"index\").log_prob`` and its gradient in the "
            f"baseline and adjacency against tick {r['tick']}'s ``ModelHawkesExpKernLogLik``"
            f" ``loss`` and ``grad`` (after ``fit``) on the same events: the first evaluation "
            f"and the best of the repeated ones. Run: {provenance(record)}.")
    return rst_list_table(header, rows) + "\n" + note + "\n"


RENDERERS = {
    "recordings-spiking": (recordings_spiking, [RECORDINGS]),
    "recordings-hawkes": (recordings_hawkes, [RECORDINGS]),
    "gradient-variance-fresh": (gradient_variance_fresh, [GV_FRESH]),
    "gradient-variance-kajino": (gradient_variance_kajino, [GV_KAJINO]),
    "gradient-variance-readme": (gradient_variance_readme, [GV_FRESH]),
    "gradient-variance-benchmarks": (gradient_variance_benchmarks, [GV_FRESH]),
}


# ---------------------------------------------------------------- regions


def regions(text, page):
    pattern = MD_REGION if page.endswith(".md") else RST_REGION
    return list(pattern.finditer(text))


def render_page(page):
    """``(old text, new text, names)`` of ``page`` with every region re-rendered."""
    path = os.path.join(ROOT, page)
    text = open(path, encoding="utf-8").read()
    names = []

    def sub(m):
        name = m.group(2)
        if name not in RENDERERS:
            raise SystemExit(f"{page}: no renderer for results region {name!r}")
        names.append(name)
        body = RENDERERS[name][0]()
        if not page.endswith(".md"):
            body += "\n"
        return m.group(1) + body + m.group(4)

    pattern = MD_REGION if page.endswith(".md") else RST_REGION
    return text, pattern.sub(sub, text), names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a rendered region is out of date (change nothing)")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        old, new, names = render_page(page)
        if old != new:
            stale.append(page)
            if not args.check:
                with open(os.path.join(ROOT, page), "w", encoding="utf-8") as f:
                    f.write(new)
    if args.check and stale:
        print("out of date (run python docs/render_tables.py): " + ", ".join(stale))
        return 1
    print(("rewrote: " + ", ".join(stale)) if stale else "every results region is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
