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
    "quickstart.py": ["--num-steps", "60", "--num-sequences", "5", "--quiet"],
    "hawkes_nuts.py": ["--num-steps", "100", "--warmup-steps", "100", "--duration", "50",
                       "--num-sequences", "2", "--no-progress"],
    "gradient_families.py": ["--num-steps", "8", "--num-samples", "8", "--num-repeats", "3",
                             "--num-eval", "20", "--num-reference", "200", "--duration", "5",
                             "--num-spikes", "2", "--no-progress"],
    "posterior_predictive.py": ["--num-steps", "150", "--num-samples", "30", "--duration", "50",
                                "--num-sequences", "2", "--no-progress"],
    "gradient_variance.py": ["--num-steps", "8", "--num-sequences", "2", "--duration", "20",
                              "--seeds", "0,1", "--num-bootstrap", "200"],
    "snn_hidden_svi.py": ["--num-steps", "5", "--train-sizes", "2,5", "--num-test", "5",
                          "--num-samples", "5", "--duration", "10"],
    "training_time.py": ["--num-steps", "1", "--upper-bounds", "1,5", "--num-sequences", "2",
                         "--duration", "10"],
    "slif_input_current.py": ["--num-steps", "10", "--sample-sizes", "16", "32", "--sigmas",
                              "0.25", "--holdout", "64"],
    "delayed_xor.py": ["--num-steps", "40", "--batch-size", "16", "--quiet"],
    "spike_coding.py": ["--num-steps", "20", "--batch-size", "8", "--quiet"],
}

#: for an example that is executed but has no entry above
DEFAULT_ARGV = ["--num-steps", "5", "--seed", "0"]


def reset_argv(gallery_conf, script_vars):
    name = os.path.basename(script_vars["src_file"])
    return list(EXAMPLE_ARGV.get(name, DEFAULT_ARGV)) + ["--out", OUT]
