"""
Command-line arguments that sphinx-gallery passes to each example (``reset_argv``).

Examples are argparse scripts whose defaults take from seconds to minutes (each states its
measured run time, rendered from ``python benchmarks/examples.py``); the gallery runs them with
small settings so that the whole docs build stays fast. Add an entry to :data:`EXAMPLE_ARGV`
to have a new example executed (``conf.py`` builds ``filename_pattern`` from its keys);
examples without an entry are rendered but not run.
"""

import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build", "gallery_out")

#: the gallery's order, as a user learns: quick start first, then the Pyro workflow (posterior
#: checks, MCMC), hidden neurons and their gradients, then the other neuron models
ORDER = [
    "quickstart.py",
    "posterior_predictive.py",
    "hawkes_nuts.py",
    "snn_hidden_svi.py",
    "gradient_variance.py",
    "training_time.py",
    "gradient_families.py",
    "slif_input_current.py",
    "spike_coding.py",
    "delayed_xor.py",
]


class ExampleOrder:
    """sphinx-gallery ``within_subsection_order``: :data:`ORDER`, then any other by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = os.path.basename(str(filename))
        return (ORDER.index(name) if name in ORDER else len(ORDER), name)

    def __repr__(self):
        return "<ExampleOrder>"


#: file name -> arguments (``--out`` is appended)
EXAMPLE_ARGV = {
    # quick settings that converge (600 steps give the same fit): with 5 sequences the MAP's
    # own statistical error leaves the bias within 0.4 and the weights within 0.6 of the truth,
    # and the time-rescaling KS test passes (p = 0.77); tests/test_quickstart.py checks this
    "quickstart.py": ["--num-steps", "150", "--learning-rate", "0.1", "--num-sequences", "5",
                      "--quiet"],
    # the defaults: no slower than the small settings were (NUTS takes longer trees on the
    # flatter posterior of less data), and they converge (r_hat <= 1.03, truth in the HDIs)
    "hawkes_nuts.py": ["--no-progress"],
    "gradient_families.py": ["--num-steps", "8", "--num-samples", "8", "--num-repeats", "3",
                             "--num-eval", "20", "--num-reference", "200", "--duration", "5",
                             "--num-spikes", "2", "--no-progress"],
    "posterior_predictive.py": ["--num-steps", "150", "--num-samples", "30", "--duration", "50",
                                "--num-sequences", "2", "--no-progress"],
    "gradient_variance.py": ["--num-steps", "8", "--num-sequences", "2", "--duration", "20",
                              "--seeds", "0,1", "--num-bootstrap", "200"],
    "snn_hidden_svi.py": ["--num-steps", "5", "--train-sizes", "2,5", "--num-test", "5",
                          "--num-particles", "64", "--duration", "10", "--seeds", "0,1",
                          "--no-progress"],
    "training_time.py": ["--num-steps", "1", "--upper-bounds", "1,5", "--num-sequences", "2",
                         "--duration", "10"],
    # one fit that converges (c_hat 1.46 for c = 1.5); the full sweep is in the example's text
    "slif_input_current.py": ["--num-steps", "60", "--sample-sizes", "32", "--sigmas", "0.25",
                              "--holdout", "64"],
    # smoke runs; the pages show the full runs' figures and numbers (docs/_static/*_full.png)
    "delayed_xor.py": ["--num-steps", "40", "--batch-size", "16", "--quiet"],
    "spike_coding.py": ["--num-steps", "20", "--batch-size", "8", "--quiet"],
    # the defaults (L-BFGS to convergence, the run of the docstring's numbers)
    "grasshopper_stimulus.py": ["--quiet"],
}

#: for an example that is executed but has no entry above
DEFAULT_ARGV = ["--num-steps", "5", "--seed", "0"]


def reset_argv(gallery_conf, script_vars):
    name = os.path.basename(script_vars["src_file"])
    # out/<example name> like the examples' own default, under docs/_build; relative to the
    # folder the example runs in, so that no local path shows in the printed output
    out = os.path.join(OUT, os.path.splitext(name)[0])
    here = os.path.dirname(os.path.abspath(script_vars["src_file"]))  # sphinx-gallery's cwd
    return list(EXAMPLE_ARGV.get(name, DEFAULT_ARGV)) + ["--out", os.path.relpath(out, here)]
