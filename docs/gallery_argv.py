"""
Command-line arguments that sphinx-gallery passes to each example (``reset_argv``).

Examples are argparse scripts whose defaults take up to a minute; the gallery runs them with
small settings so that the whole docs build stays fast. Add an entry to :data:`EXAMPLE_ARGV`
to have a new example executed (``conf.py`` builds ``filename_pattern`` from its keys);
examples without an entry are rendered but not run.
"""

import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build", "gallery_out")

#: file name -> arguments (``--out`` is appended)
EXAMPLE_ARGV = {
    "hawkes_nuts.py": ["--num-steps", "100", "--warmup-steps", "100", "--duration", "50",
                       "--num-sequences", "2", "--no-progress"],
    "gradient_families.py": ["--num-steps", "8", "--num-samples", "8", "--num-repeats", "3",
                             "--num-eval", "20", "--num-reference", "200", "--duration", "5",
                             "--num-spikes", "2", "--no-progress"],
    "posterior_predictive.py": ["--num-steps", "150", "--num-samples", "30", "--duration", "50",
                                "--num-sequences", "2", "--no-progress"],
}

#: for an example that is executed but has no entry above
DEFAULT_ARGV = ["--num-steps", "5", "--seed", "0"]


def reset_argv(gallery_conf, script_vars):
    name = os.path.basename(script_vars["src_file"])
    return list(EXAMPLE_ARGV.get(name, DEFAULT_ARGV)) + ["--out", OUT]
