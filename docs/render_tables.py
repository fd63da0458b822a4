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
import math
import os
import re
import sys
from math import floor, log10

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
PAGES = ["README.md"] + sorted(
    os.path.relpath(os.path.join(DOCS, f), ROOT) for f in os.listdir(DOCS) if f.endswith(".rst")
) + sorted(  # the examples' docstrings (reStructuredText, rendered by sphinx-gallery)
    os.path.join("examples", f) for f in os.listdir(os.path.join(ROOT, "examples"))
    if f.endswith(".py"))
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
        lines.extend(f"     - {cell}".rstrip() for cell in row[1:])
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


# ---------------------------------------------------------------- gradient families

GRADIENT_FAMILIES = "docs/results/gradient_families/gradient_families.json"
#: the temperature sweep of the relaxed family: one run per temperature
GF_TEMPERATURES = ["0.05", "0.1", "0.3", "1"]
GF_SWEEP = [f"docs/results/gradient_families/tau_{t}/gradient_families.json"
            for t in GF_TEMPERATURES]
_GF_NAMES = {"reinforce": "REINFORCE", "relaxed": "relaxed, :math:`\\tau = {tau:g}`",
             "escape": "event gradients, SLIF escape noise",
             "threshold": "event gradients, SLIF threshold + Brownian",
             "gate": "smooth gate (QIF)"}
_GF_REFERENCE = {"reinforce": "closed form", "relaxed": "closed form",
                 "escape": "finite difference", "threshold": "finite difference",
                 "gate": "rate formula"}


def _signed(x, digits=3):
    """``num`` with a typographic minus sign."""
    return num(x, digits).replace("-", "\u2212")


def gradient_families():
    record = load(GRADIENT_FAMILIES)
    r = record["results"]
    header = ["family", ":math:`\\theta`: init \u2192 final", "rate at init",
              "final rate (mean ± sd)",
              ":math:`d\\mathcal L/d\\theta` at init (mean ± std of one estimate)",
              "reference :math:`d\\mathcal L/d\\theta`", "std / \\|reference\\|",
              "s / estimate"]
    rows = []
    for f in r["families"]:
        key = f["key"]
        stochastic = f["stochastic"]
        ref = _signed(f["reference"]) + (f" ± {num(f['reference_se'], 2)}"
                                         if f["reference_se"] > 0 else "")
        rows.append([
            _GF_NAMES[key].format(tau=r["settings"]["temperature"]),
            f"{_signed(f['init_param'])} \u2192 {_signed(f['final_param'])}",
            num(f["init_rate"]),
            f"{num(f['rate_mean'])} ± {num(f['rate_sd'], 2)}" if stochastic
            else f"{num(f['rate_mean'])} (deterministic)",
            f"{_signed(f['grad_mean'])} ± {num(f['grad_std'], 2)}" if stochastic
            else f"{_signed(f['grad_mean'])} (deterministic)",
            f"{ref} ({_GF_REFERENCE[key]})",
            num(f["relative_std"], 2),
            num(f["seconds_per_estimate"], 2)])
    return rst_list_table(header, rows) + f"\nRun: {provenance(record)}.\n"


def gradient_families_temperature():
    header = [":math:`\\tau`", ":math:`d\\mathcal L/db` at init (mean ± std)",
              "std / \\|exact\\|", "trained :math:`\\lambda = a\\sigma(b)`",
              "final rate (mean ± sd, held-out exact samples)"]
    rows, runs = [], []
    for path in GF_SWEEP:
        record = load(path)
        r = record["results"]
        f = r["families"][0]
        rows.append([f"{r['settings']['temperature']:g}",
                     f"{_signed(f['grad_mean'])} ± {num(f['grad_std'], 2)}",
                     num(f["relative_std"], 2),
                     num(r["settings"]["upper_bound"] / (1 + math.exp(-f["final_param"]))),
                     f"{num(f['rate_mean'])} ± {num(f['rate_sd'], 2)}"])
        runs.append(provenance(record))
    return (rst_list_table(header, rows) + "\nRuns: " + "; ".join(runs) + ".\n")


# ---------------------------------------------------------------- the path-wise tail

PATHWISE_TAIL = "docs/results/pathwise_tail/pathwise_tail.json"


def _tail_settings(r):
    s = r["settings"]
    return (f"data network {s['data_seed']}, start {s['model_seed']}, {s['num_sequences']} "
            f"sequences of :math:`T = {s['duration']:g}`, {s['num_draws']} draws on the same "
            f"noise (seed {s['noise_seed']})")


def pathwise_tail():
    record = load(PATHWISE_TAIL)
    r = record["results"]
    header = ["case", "share > 10x median", "max / median", "median norm"]
    rows = [[row["case"], num(row["share_over_10x_median"], 2), num(row["max_over_median"]),
             num(row["median_norm"])] for row in r["tail"]]
    return (rst_list_table(header, rows) + "\n" + _tail_settings(r)
            + f". Run: {provenance(record)}.\n")


def pathwise_tail_float32():
    record = load(PATHWISE_TAIL)
    r = record["results"]
    header = ["case", "gradient relative error",
              ":math:`|\\log q_{32} - \\log q_{64}|` (nats, all sequences)"]
    rows = [[row["case"],
             f"{num(row['grad_rel_error_median'], 2)} [{num(row['grad_rel_error_max'], 2)}]",
             f"{num(row['log_q_diff_median'])} [{num(row['log_q_diff_max'])}]"]
            for row in r["float32_vs_float64"]]
    return (rst_list_table(header, rows) + "\n" + _tail_settings(r)
            + f"; median [max] over the draws. Run: {provenance(record)}.\n")


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
            f" ``loss`` and ``grad`` (after ``fit``) on the same events, both on "
            f"{r['settings']['threads']} threads (tick's ``n_threads``): the first evaluation "
            f"and the best of the repeated ones. Run: {provenance(record)}.")
    return rst_list_table(header, rows) + "\n" + note + "\n"


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def md_provenance(record):
    run, m = record["run"], record["run"]["machine"]
    return (f"`{run['command']}`, commit {run['commit']}, {run['date']}; {m['cpu']}, "
            f"{m['cores']} cores, torch {m['torch']}, {run['threads']} torch thread(s)")


def md_section(title, record, details, header, cells):
    """README's form of a rendered table: the title, the run and ``details``, then the table."""
    return f"{title} ({md_provenance(record)}; {details}):\n\n" + md_table(header, cells)


# ---------------------------------------------------------------- sampling

SAMPLING = "docs/results/sampling/sampling.json"


def _sampling_hawkes(markdown):
    record = load(SAMPLING)
    r = record["results"]
    rows = [row for row in r["rows"] if row["process"] == "Hawkes"]
    check = r["checks"][0]
    header = ["batch", "T", "events/seq", "ours events/s", "tick loop events/s",
              "tick Multi events/s", "ours / best tick"]
    cells = [[str(row["batch"]), f"{row['T']:g}", f"{row['events_per_seq']:,.0f}",
              f"{row['ours_events_per_s']:,.0f}", f"{row['tick_loop_events_per_s']:,.0f}",
              f"{row['tick_multi_events_per_s']:,.0f}", num(row["ratio_ours_over_tick"], 3)]
             for row in rows]
    agree = (f"mean counts per neuron agree with tick's within {check['max_abs_z']:.1f} standard "
             f"errors over {check['sequences']:,} sequences each (ours against the exact mean: "
             f"{check['max_abs_z_ours_vs_exact']:.1f}, tick's: "
             f"{check['max_abs_z_tick_vs_exact']:.1f})")
    d = rows[0]["D"]
    if markdown:
        return md_section("**Hawkes sampling vs tick**", record,
                          f"{d} neurons, spectral radius 0.6, tick {r['machine']['tick']} in the "
                          "same process as B independent `SimuHawkesExpKernels` simulations; "
                          f"{agree}", header, cells)
    return (rst_list_table(header, cells) + f"\nThe {agree}. Run: {provenance(record)}.\n")


def sampling_hawkes_readme():
    return _sampling_hawkes(True)


def sampling_hawkes_benchmarks():
    return _sampling_hawkes(False)


def _sampling_spiking(markdown):
    record = load(SAMPLING)
    rows = [row for row in record["results"]["rows"] if row["process"] == "Spiking"]
    header = ["D", "T", "batch", "events/seq", "sample events/s", "sample s",
              "log_prob events/s", "log_prob s"]
    cells = [[str(row["D"]), f"{row['T']:g}", str(row["batch"]),
              f"{row['events_per_seq']:,.0f}", f"{row['sample_events_per_s']:,.0f}",
              num(row["sample_s"]), f"{row['log_prob_events_per_s']:,.0f}",
              num(row["log_prob_s"])] for row in rows]
    a = rows[0]["a"]
    if markdown:
        return md_section("**SpikingPointProcess** sampling and `log_prob` throughput", record,
                          f"L = 2, a = {a:g}; `log_prob` under `torch.no_grad()`, the compiled "
                          "forward-only pass", header, cells)
    return rst_list_table(header, cells) + f"\nRun: {provenance(record)}.\n"


def sampling_spiking_readme():
    return _sampling_spiking(True)


def sampling_spiking_benchmarks():
    return _sampling_spiking(False)


# ---------------------------------------------------------------- SVI gradient

SVI = "docs/results/svi/svi.json"


def _svi_cells(record):
    r = record["results"]
    med = {(row["estimator"], row["loops"]): row["median_wall_s"] for row in r["rows"]}
    labels = {row["estimator"]: row["label"] for row in r["rows"]}
    reported = r["kajino_reported_s"]
    cells = []
    for name, label in labels.items():
        cells.append([label.replace("Trace_ELBO", "``Trace_ELBO``").replace(
            "TraceGraph_ELBO", "``TraceGraph_ELBO``").replace("cancel_hidden=True",
                                                              "``cancel_hidden=True``"),
            num(med[name, "compiled"], 2) if (name, "compiled") in med else "",
            num(med[name, "torch"], 2) if (name, "torch") in med else "",
            f"~{reported[name]:g} s" if name in reported else ""])
    return cells, med, reported


def _svi_sentence(record, med, reported):
    ratio = med["pathwise", "compiled"] / med["reinforce", "compiled"]
    speedup = reported["pathwise"] / med["pathwise", "compiled"]
    cancel = reported["pathwise"] / med["pathwise_cancel", "compiled"]
    return (f"The path-wise estimator costs {num(ratio, 2)}× REINFORCE here (Kajino reports "
            f"{reported['ratio']:g}×), and a gradient takes {num(speedup, 2)}× less time than "
            f"the {reported['pathwise']:g} s Kajino reports for his implementation on his "
            f"machine ({num(cancel, 2)}× with ``cancel_hidden=True``, which skips the two "
            "hidden densities that cancel for Kajino's guide).")


def svi_readme():
    record = load(SVI)
    cells, med, reported = _svi_cells(record)
    s = record["results"]["settings"]
    cells = [[c.replace("``", "`") for c in row] for row in cells]
    header = ["estimator", "s per gradient (compiled loops)", "s (PyTorch loops)",
              "Kajino (2021) reports"]
    details = (f"{s['num_observed']} observed + {s['num_hidden']} hidden neurons, "
               f"{s['num_sequences']} sequences, T = {s['duration']:g}, "
               f"a = {s['upper_bound']:g}; median seconds per gradient estimate over "
               f"{s['repeats']}")
    return (md_section("**SVI gradient on Kajino's set-up**", record, details, header, cells)
            + "\n" + _svi_sentence(record, med, reported).replace("``", "`") + "\n")


def svi_benchmarks():
    record = load(SVI)
    cells, med, reported = _svi_cells(record)
    header = ["estimator", "s per gradient", "s (PyTorch loops)", "Kajino (2021) reports"]
    return (rst_list_table(header, cells) + "\n" + _svi_sentence(record, med, reported)
            + f" Run: {provenance(record)}.\n")


# ---------------------------------------------------------------- held-out log p(J_O)

LOG_MARGINAL = "docs/results/log_marginal/log_marginal.json"


def _log_marginal_cells(record, with_torch):
    return [[row["estimator"], str(row["particles"]), num(row["median_s"], 3),
             f"{row['mean_log_p']:.2f}", f"{row['mc_spread']:.2f}",
             f"{row['ess_fraction']:.3f}"]
            for row in record["results"]["rows"]
            if with_torch or row["estimator"] != "SMC, PyTorch"]


LOG_MARGINAL_HEADER = ["estimator", "particles", "seconds", "mean log p(J_O)", "MC spread",
                       "ESS fraction"]


def log_marginal_readme():
    record = load(LOG_MARGINAL)
    s = record["results"]["settings"]
    details = (f"Kajino's data-generating network, {s['num_sequences']} sequences of "
               f"T = {s['duration']:g}, {s['repeats']} repeats; every row estimates the same "
               "number, higher with a smaller spread is tighter")
    return md_section("**Held-out log p(J_O)** of a partially observed network", record,
                      details, LOG_MARGINAL_HEADER, _log_marginal_cells(record, False))


def log_marginal_benchmarks():
    record = load(LOG_MARGINAL)
    rows = record["results"]["rows"]

    def pick(estimator, particles):
        return next(r for r in rows if r["estimator"] == estimator
                    and r["particles"] == particles)

    sizes = sorted({r["particles"] for r in rows if r["estimator"] == "SMC, compiled"})
    small, large = sizes[0], sizes[-1]
    gap = (pick("SMC, compiled", small)["mean_log_p"]
           - pick("importance sampling", large)["mean_log_p"])
    moves = abs(pick("SMC, compiled", large)["mean_log_p"]
                - pick("SMC, compiled", sizes[-2])["mean_log_p"])
    torch_sizes = [p for p in sizes if any(r["estimator"] == "SMC, PyTorch"
                                           and r["particles"] == p for r in rows)]
    speed = [pick("SMC, PyTorch", p)["median_s"] / pick("SMC, compiled", p)["median_s"]
             for p in torch_sizes]
    spreads = " -> ".join(f"{pick('SMC, compiled', p)['mc_spread']:.2f}" for p in sizes)
    text = (f"Sequential Monte Carlo with {small} particles is {gap:.0f} nats per sequence above "
            f"importance sampling with {large:,} samples, whose weights degenerate (ESS fraction "
            f"{pick('importance sampling', large)['ess_fraction']:.3f}); SMC's estimate moves "
            f"by {moves:.2f} nats from {sizes[-2]} to {large:,} particles, while its spread "
            f"goes {spreads} over {', '.join(f'{p:,}' for p in sizes)} particles.")
    if speed:
        text += (f" The compiled filter is {num(min(speed), 2)}-{num(max(speed), 2)}x faster "
                 "than the PyTorch one at equal particles.")
    return (rst_list_table(LOG_MARGINAL_HEADER, _log_marginal_cells(record, True)) + "\n"
            + text + f" Run: {provenance(record)}.\n")


# ---------------------------------------------------------------- signature kernel

SIGNATURE = "docs/results/signature_kernel/signature_kernel.json"
SIG_NAMES = {"ours": "ours (compiled, adjoint)", "reference": "ours (PyTorch reference)"}


def _bytes(b, limit_gb):
    if b is None:
        return f"> {limit_gb:g} GB"
    if b < 2**20:  # below the resolution of the peak above the start-up peak
        return "< 1 MB"
    return f"{b / 2**30:.2f} GB" if b >= 2**30 else f"{b / 2**20:.0f} MB"


def _signature_cells(record):
    r = record["results"]
    limit = r["settings"]["memory_limit_gb"]
    cells = []
    for length in sorted({row["length"] for row in r["rows"]}):
        for impl in ("ours", "reference", "pysiglib"):
            got = {row["backward"]: row for row in r["rows"]
                   if row["length"] == length and row["impl"] == impl}
            if not got:
                continue
            f, b = got.get(False, {}), got.get(True, {})

            def sec(row):
                return (num(row["seconds"], 3) if "seconds" in row
                        else "does not fit" if row else "-")

            def ratio(row):
                return num(row["ratio_over_pysiglib"], 3) if "ratio_over_pysiglib" in row else "-"

            name = SIG_NAMES.get(impl, f"pysiglib {r['pysiglib']}")
            cells.append([str(length), name, sec(f), sec(b), ratio(f), ratio(b),
                          _bytes(b.get("peak_bytes"), limit) if b else "-"])
    return cells


SIG_HEADER = ["length", "implementation", "forward s", "f+b s", "fwd / pysiglib",
              "f+b / pysiglib", "f+b peak memory"]


def _signature_agreement(record):
    diffs = [row["max_rel_diff_pysiglib"] for row in record["results"]["rows"]
             if "max_rel_diff_pysiglib" in row]
    return f"values agree with pysiglib to {max(diffs):.0e} (relative)" if diffs else ""


def signature_kernel_readme():
    record = load(SIGNATURE)
    s = record["results"]["settings"]
    details = (f"{s['n']} x {s['n']} Gram of 2-neuron spike-train paths, dyadic order "
               f"{s['dyadic_order']}, float64, one thread, the calls alternating within each of "
               f"{s['rounds']} rounds, medians; peak memory of forward + backward in a fresh "
               f"subprocess under a memory limit of {s['memory_limit_gb']:g} GB; "
               f"{_signature_agreement(record)}")
    return md_section("**Signature kernel vs pysiglib**", record, details, SIG_HEADER,
                      _signature_cells(record))


def signature_kernel_benchmarks():
    record = load(SIGNATURE)
    return (rst_list_table(SIG_HEADER, _signature_cells(record))
            + f"\nThe {_signature_agreement(record)}. Run: {provenance(record)}.\n")


# ---------------------------------------------------------------- smooth gate vs snnTorch

SMOOTH_GATE = "docs/results/smooth_gate/smooth_gate.json"
SG_HEADER = ["batch", "neurons", "steps", "ours s/step", "snnTorch s/step", "ours / snnTorch",
             "PyTorch step s/step", "PyTorch step / snnTorch"]


def _smooth_gate_cells(record):
    def opt(x, digits):
        return num(x, digits) if x is not None else "-"

    return [[str(r["batch"]), str(r["neurons"]), str(r["steps"]), num(r["ours_s"], 3),
             opt(r["snntorch_s"], 3), opt(r["ratio"], 2), opt(r.get("pytorch_step_s"), 3),
             opt(r.get("pytorch_step_ratio"), 2)] for r in record["results"]["rows"]]


def smooth_gate_readme():
    record = load(SMOOTH_GATE)
    r = record["results"]
    details = (f"LIF with the smooth gate against snnTorch {r['snntorch']}'s `RLeaky` with a "
               "surrogate gradient, same layer sizes, forward + backward over all steps, "
               f"float32, the two alternating within each of {r['settings']['repeats']} "
               "rounds, medians; the last columns time our PyTorch step, the GPU path")
    return md_section("**Smooth-gate SNN training step vs snnTorch**", record, details,
                      SG_HEADER, _smooth_gate_cells(record))


def smooth_gate_benchmarks():
    record = load(SMOOTH_GATE)
    return (rst_list_table(SG_HEADER, _smooth_gate_cells(record))
            + f"\nRun: {provenance(record)}.\n")


# ---------------------------------------------------------------- example run times

EXAMPLE_TIMES = "docs/results/examples/examples.json"
EXAMPLES = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(ROOT, "examples"))
                  if f.endswith(".py"))


def duration(seconds):
    """``42 s`` below two minutes, else ``3.5 min``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _machine(record):
    run, m = record["run"], record["run"]["machine"]
    return f"{m['cores']} cores ({m['cpu']}), commit {run['commit']}"


def examples_times():
    record = load(EXAMPLE_TIMES)
    lines = ["| example | run time at the defaults | peak memory |", "| --- | --- | --- |"]
    for row in record["results"]["examples"]:
        status = "" if row["returncode"] == 0 else f" (failed: exit {row['returncode']})"
        lines.append(f"| `examples/{row['name']}.py` | {duration(row['seconds'])}{status} | "
                     f"{row['peak_rss_mb']:,.0f} MB |")
    run = record["run"]
    return ("\n".join(lines) + "\n\n"
            f"Measured by `{run['command']}` on {_machine(record)}, {run['date']}: each "
            "example in a fresh process, one at a time, `--out` to a scratch folder.\n")


def example_time(name):
    """The sentence an example's docstring states its run time with."""
    record = load(EXAMPLE_TIMES)
    rows = [r for r in record["results"]["examples"] if r["name"] == name]
    if not rows:
        raise SystemExit(f"{EXAMPLE_TIMES} has no run of examples/{name}.py")
    row = rows[0]
    if row["returncode"] != 0:
        raise SystemExit(f"{EXAMPLE_TIMES}: examples/{name}.py failed (exit {row['returncode']})")
    return (f"At its defaults this example runs in {duration(row['seconds'])} "
            f"(peak memory {row['peak_rss_mb']:,.0f} MB) on {_machine(record)}; measured by "
            f"``python benchmarks/examples.py``.\n")


# ---------------------------------------------------------------- Kajino's experiments 2 and 3

SNN_HIDDEN_SVI = "docs/results/snn_hidden_svi/snn_hidden_svi.json"
TRAINING_TIME = "docs/results/training_time/training_time.json"


def _mean_se(values):
    """Mean and standard error (s.e. 0 for one value), as ``examples/snn_hidden_svi.py``."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def snn_hidden_svi():
    record = load(SNN_HIDDEN_SVI)
    r = record["results"]
    s = r["settings"]
    cols = r["columns"]
    rows = []
    for size, per_col in r["scores"].items():
        rows.append([size] + ["{} ± {:.2f}".format(f"{m:.2f}".replace("-", "\u2212"), se)
                              for m, se in map(_mean_se, per_col)])
    table = rst_list_table(["training sequences"] + [c["label"] for c in cols], rows)
    # estimator against estimator on the same seeds (same training pool and start): paired
    first = cols[0]["label"]
    diffs = []
    for size, per_col in r["scores"].items():
        for c, x in zip(cols[1:], per_col[1:]):
            m, se = _mean_se([a - b for a, b in zip(per_col[0], x)])
            diffs.append(f"{m:+.2f}".replace("-", "\u2212") + f" ± {se:.2f} against "
                         f"{c['label']} ({size} "
                         "training sequences)")
    paired = (f"{first[0].upper() + first[1:]} minus each other estimator, paired by seed (mean ± s.e. of the "
              "per-seed differences): " + "; ".join(diffs) + ". ") if len(cols) > 1 else ""
    ess = [f for per_col in r["ess_fraction"].values() for x in per_col for f in x]
    t, fl = r["truth"], r["floor"]
    seeds = len(fl["per_seed"])
    text = (
        f"Mean ± standard error over the {seeds} run seeds of the mean held-out "
        f":math:`\\log p(J_O)` per sequence ({s['num_test']} test sequences, "
        f":math:`T = {s['duration']:g}`, {s['num_steps']} SVI steps, SMC with "
        f"{s['num_particles']} particles). Data-generating network (the ceiling): "
        f"{_signed(t['mean'], 4)} ± {num(t['se'], 3)} (standard error over the test sequences); "
        f"initial models (the floor): {_signed(fl['mean'], 4)} ± {num(fl['se'], 3)} (per seed: "
        + ", ".join(_signed(v, 4) for v in fl["per_seed"]) + "). Two independent SMC runs of "
        f"the data-generating network differ by {num(t['smc_spread'], 2)} nats per sequence on "
        f"average; the particles' mean effective sample size is {100 * t['ess_fraction']:.0f}% "
        f"for the data-generating network and {100 * min(ess):.0f}-{100 * max(ess):.0f}% for the "
        f"trained models. {paired}The run took {duration(r['seconds'])}. "
        f"Run: {provenance(record)}.")
    return table + "\n" + text + "\n"


def training_time():
    record = load(TRAINING_TIME)
    r = record["results"]
    s = r["settings"]
    rows, ratios = [], []
    for row in r["rows"]:
        ratio = row["pathwise"]["cpu"] / row["reinforce"]["cpu"]
        ratios.append(ratio)
        rows.append([f"{row['upper_bound']:g}",
                     f"{num(row['pathwise']['wall'], 2)} / {num(row['pathwise']['cpu'], 2)}",
                     f"{num(row['reinforce']['wall'], 2)} / {num(row['reinforce']['cpu'], 2)}",
                     num(ratio, 2)])
    table = rst_list_table([":math:`a`", "path-wise: wall / CPU (s)",
                            "REINFORCE: wall / CPU (s)", "path-wise / REINFORCE (CPU)"], rows)
    return (table + f"\nSeconds per SVI step with {s['num_sequences']} sequences of "
            f":math:`T = {s['duration']:g}`, median of {s['num_steps']} steps after one warm-up; "
            f"a path-wise step costs {num(min(ratios), 2)}-{num(max(ratios), 2)}x a REINFORCE "
            f"step (CPU time). Run: {provenance(record)}.\n")


# ---------------------------------------------------------------- the grasshopper receptor

GRASSHOPPER = "docs/results/grasshopper_stimulus/grasshopper_stimulus.json"


def grasshopper_stimulus():
    """The paragraph of ``examples/grasshopper_stimulus.py``'s docstring on its default run."""
    record = load(GRASSHOPPER)
    r = record["results"]
    s = r["settings"]
    if r["fitter"] == "lbfgs":
        how = (f"L-BFGS {'converged' if r['converged'] else 'did not converge'} in "
               f"{r['iterations']} iterations ({r['evaluations']} evaluations, "
               f"{r['fit_seconds']:.0f} s)")
    else:
        how = f"{s['num_steps']} SVI steps ({r['fit_seconds']:.0f} s)"
    band = "outside" if r["heldout_ks_distance"] > r["ks_95_band"] else "inside"
    return (
        f"At the defaults ({s['train_duration']:g} s of training, the remaining "
        f"{10 - s['train_duration']:g} s held out; {how}) the held-out log-likelihood is "
        f"{r['gain_bits_per_spike']:.2f} bits per spike above the Poisson baseline "
        f"({r['heldout_loglik_model']:.1f} against {r['heldout_loglik_poisson']:.1f} nats for "
        f"{r['test_spikes']} spikes). The held-out KS distance ({r['heldout_ks_distance']:.3f}) "
        f"is {band} the 95% band ({r['ks_95_band']:.3f}). Run: {provenance(record)}.\n")

# ---------------------------------------------------------------- data-parallel SVI

DISTRIBUTED = "docs/results/distributed/distributed.json"


def _us(seconds):
    return f"{seconds * 1e6:,.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.3g} ms"


def _crossing(label, workers):
    """``R = 32 (loopback, 78 parameters)`` from the benchmark's scaling label and crossover."""
    network, n = label.split(", n=")
    n = int(n.split()[0])
    where = f"{network.split(' (')[0]}, {n:,} parameters"
    return (f":math:`R = {workers:,}` ({where})" if workers is not None
            else f"no :math:`R` up to :math:`2^{{20}}` ({where})")


def distributed():
    record = load(DISTRIBUTED)
    r = record["results"]
    s = r["settings"]
    rows = [[x["setup"].replace(" x2", " ×2"), str(x["processes"]), str(x["batch_per_worker"]),
             str(x["global_batch"]), num(x["step_s"]), num(x["steps_per_s"]),
             num(x["sequences_per_s"])] for x in r["lightning"]]
    table = rst_list_table(["set-up", "processes", "batch / worker", "global batch", "step (s)",
                            "steps/s", "sequences/s"], rows)
    lw = r["lightning"]
    weak = lw[1]["sequences_per_s"] / lw[0]["sequences_per_s"]
    strong = lw[2]["step_s"] / lw[3]["step_s"]
    load_start, load_end = s["load_average_start"], s["load_average_end"]
    comp = r["compute"]
    fit = r["fit"]
    ar = r["allreduce"]
    n = r["num_params"]
    b0 = min(comp, key=int)
    sizes = sorted(ar, key=int)
    first = next(iter(r["scaling"].values()))
    best = max(first["rows"], key=lambda x: x["speedup"])
    crossings = {k: v["crossover"] for k, v in r["scaling"].items()}
    intro = (
        f"Path-wise SVI (annealed temperature) of an SNN with 2 observed + 4 hidden neurons "
        f"(Kajino's network, {n} parameters), {s['num_sequences']} sequences of "
        f":math:`T = {s['duration']:g}`, {s['dtype'].replace('torch.', '')}, one torch thread "
        f"per process, median step over {lw[0]['steps_timed']} steps after {s['warmup']} "
        f"warm-up, Lightning {s['lightning']} ``ddp_fork`` with gloo. Load average "
        f"{load_start[0]:.1f} at the start and {load_end[0]:.1f} at the end on "
        f"{record['run']['machine']['cores']} cores (the two processes of a 2-process row "
        f"share them). Run: {provenance(record)}.")
    bullets = [
        f"Weak scaling: {num(weak, 3)}× the sequences/s of one process (ideal 2×); strong "
        f"scaling: {num(strong, 3)}× (ideal 2×).",
        "",
        "- compute of one step (loss + backward, one process, minibatches cycling through the "
        "data): " + ", ".join(f"{comp[b]:.3f}" for b in sorted(comp, key=int)) + " s for "
        ":math:`b = " + ", ".join(sorted(comp, key=int)) + "`, i.e. "
        f":math:`t_c(b) = {fit['c0']:.3f} + {fit['c1']:.4f}\\,b` s; the fixed part caps the "
        f"strong-scaling speed-up at :math:`t_c(G)/c_0 \\approx {r['speedup_cap']:.0f}` for a "
        f"global batch :math:`G = {s['global_batch']}`, whatever the network;",
        f"- gloo all-reduce between 2 processes on this machine: {_us(ar[str(n)])} for the "
        f"model's {n} parameters ({100 * ar[str(n)] / comp[b0]:.1f}% of a {b0}-sequence step), "
        + ", ".join(f"{_us(ar[k])} for {int(k):,}" for k in sizes if int(k) != n)
        + f" float32; fit :math:`\\alpha = {fit['alpha'] * 1e6:.0f}` µs, "
        + (f"{1 / fit['beta'] / 1e9:.2g} GB/s" if fit["beta"] > 0 else "no bandwidth resolved")
        + " (loopback);",
        f"- simulated strong scaling for :math:`G = {s['global_batch']}` (ring all-reduce, no "
        f"overlap): with the loopback fit the speed-up peaks at {num(best['speedup'], 2)} with "
        f"{best['workers']} workers; communication takes longer than computation from "
        + "; ".join(_crossing(k, v) for k, v in crossings.items()) + ".",
    ]
    return table + "\n" + intro + "\n\n" + "\n".join(bullets) + "\n"

# ---------------------------------------------------------------- mutation testing

MUTATION = "docs/results/mutation/mutation.json"


def _percent(killed, checked):
    return "-" if not checked else f"{100 * killed / checked:.1f}%"


def _mutated_function(mutant):
    """``PoissonProcess.sample`` from mutmut's ``xǁPoissonProcessǁsample__mutmut_17``."""
    name = mutant.rsplit("__mutmut_", 1)[0]
    if name.startswith("xǁ"):
        return ".".join(name[2:].split("ǁ"))
    return name[2:] if name.startswith("x_") else name


def mutation_score():
    """The Guarantees page's table of ``tools/mutation.py``'s last verdicts, and the survivors."""
    record = load(MUTATION)
    res = record["results"]
    modules = res["modules"]
    rows, total = [], dict(checked=0, killed=0, timeout=0, survived=0, no_tests=0,
                           device_only=0)
    for name in res["core"]:
        e = modules.get(name)
        if e is None:
            rows.append([f"``{name}``", "not run yet", "", "", "", "", "", ""])
            continue
        for k in total:
            total[k] += e[k]
        unchecked = f" ({e['not_checked']:,} not yet)" if e["not_checked"] else ""
        rows.append([f"``{name}``", f"{e['checked']:,}{unchecked}", f"{e['killed']:,}",
                     f"{e['timeout']:,}", f"{e['survived'] + e['no_tests']:,}",
                     f"{e['device_only']:,}",
                     "-" if e["score"] is None else f"{100 * e['score']:.1f}%", e["commit"]])
    rows.append(["all run", f"{total['checked']:,}", f"{total['killed']:,}",
                 f"{total['timeout']:,}", f"{total['survived'] + total['no_tests']:,}",
                 f"{total['device_only']:,}",
                 _percent(total["killed"] + total["timeout"],
                          total["checked"] - total["device_only"]), ""])
    table = rst_list_table(["module", "mutants checked", "killed", "timed out", "survived",
                            "device only", "score", "commit"], rows)
    run = record["run"]
    runs = "; ".join(f"``{r['command']}`` (commit {r['commit']}, {r['date']})"
                     for r in res.get("runs", []))
    m = run["machine"]
    out = [table, f"The verdicts come from the runs {runs}, on {m['cores']} cores ({m['cpu']}, "
           f"Python {m['python']}, torch {m['torch']}), and were "
           f"collected by ``{run['command']}``, {run['date']}. A module's row is from the commit "
           "it names (a mutant of a function unchanged since an earlier run keeps that run's "
           "verdict; every survivor was judged at the commit named). Lines marked "
           f"``# pragma: no mutate`` in the core: {res['pragma_no_mutate_lines']}.", ""]
    return "\n".join(out)


def mutation_survivors():
    """The surviving mutants of each module, for the Surviving mutants page."""
    res = load(MUTATION)["results"]
    out = []
    for name in res["core"]:
        e = res["modules"].get(name)
        if not e or not e["survivors"]:
            continue
        title = f"``{name}`` ({len(e['survivors'])}, commit {e['commit']})"
        out += [title, "-" * len(title), "", "::", ""]
        for s in e["survivors"]:
            status = "" if s["status"] == "survived" else f" ({s['status']})"
            out.append(f"   {_mutated_function(s['name'])}{status}")
            out += [f"     {line[0]} {line[1:].strip()}" for line in s["diff"]]
        out.append("")
    return "\n".join(out) if out else "None.\n"


RENDERERS = {
    "gradient-families": (gradient_families, [GRADIENT_FAMILIES]),
    "gradient-families-temperature": (gradient_families_temperature, GF_SWEEP),
    "pathwise-tail": (pathwise_tail, [PATHWISE_TAIL]),
    "pathwise-tail-float32": (pathwise_tail_float32, [PATHWISE_TAIL]),
    "mutation-score": (mutation_score, [MUTATION]),
    "mutation-survivors": (mutation_survivors, [MUTATION]),
    "examples-times": (examples_times, [EXAMPLE_TIMES]),
    "svi-readme": (svi_readme, [SVI]),
    "signature-kernel-readme": (signature_kernel_readme, [SIGNATURE]),
    "signature-kernel-benchmarks": (signature_kernel_benchmarks, [SIGNATURE]),
    "smooth-gate-readme": (smooth_gate_readme, [SMOOTH_GATE]),
    "smooth-gate-benchmarks": (smooth_gate_benchmarks, [SMOOTH_GATE]),
    "log-marginal-readme": (log_marginal_readme, [LOG_MARGINAL]),
    "log-marginal-benchmarks": (log_marginal_benchmarks, [LOG_MARGINAL]),
    "svi-benchmarks": (svi_benchmarks, [SVI]),
    "sampling-hawkes-readme": (sampling_hawkes_readme, [SAMPLING]),
    "sampling-hawkes-benchmarks": (sampling_hawkes_benchmarks, [SAMPLING]),
    "sampling-spiking-readme": (sampling_spiking_readme, [SAMPLING]),
    "sampling-spiking-benchmarks": (sampling_spiking_benchmarks, [SAMPLING]),
    "recordings-spiking": (recordings_spiking, [RECORDINGS]),
    "recordings-hawkes": (recordings_hawkes, [RECORDINGS]),
    "snn-hidden-svi": (snn_hidden_svi, [SNN_HIDDEN_SVI]),
    "training-time": (training_time, [TRAINING_TIME]),
    "distributed": (distributed, [DISTRIBUTED]),
    "grasshopper-stimulus": (grasshopper_stimulus, [GRASSHOPPER]),
    "gradient-variance-fresh": (gradient_variance_fresh, [GV_FRESH]),
    "gradient-variance-kajino": (gradient_variance_kajino, [GV_KAJINO]),
    "gradient-variance-readme": (gradient_variance_readme, [GV_FRESH]),
    "gradient-variance-benchmarks": (gradient_variance_benchmarks, [GV_FRESH]),
}


RENDERERS.update({
    f"example-time-{name}": ((lambda name=name: example_time(name)), [EXAMPLE_TIMES])
    for name in EXAMPLES
})


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
