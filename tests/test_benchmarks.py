import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_benchmark(script, *args, env=None, drop=(), cwd=None):
    """Run ``benchmarks/<script>`` with ``args`` in a fresh interpreter (the checkout on
    PYTHONPATH, ``env`` added, ``drop`` removed); it must exit 0. Returns the process."""
    full_env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    for name in drop:
        full_env.pop(name, None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                          capture_output=True, text=True, env=full_env, timeout=300, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_sampling_benchmark_smoke(tmp_path):
    # runs with or without tick installed; without it only our figures are reported
    out = tmp_path / "bench.json"
    proc = run_benchmark("sampling.py", "--quick", "--repeats", "1", "--threads", "1", "--out",
                         str(out))
    record = json.loads(out.read_text())
    assert record["run"]["command"].startswith("python benchmarks/sampling.py --quick")
    result = record["results"]
    assert result["machine"]["cores"] >= 1
    hawkes = [r for r in result["rows"] if r["process"] == "Hawkes"]
    spiking = [r for r in result["rows"] if r["process"] == "Spiking"]
    assert [r["batch"] for r in hawkes] == [1, 64]
    assert [r["D"] for r in spiking] == [6, 64, 256]
    assert all(r["ours_events_per_s"] > 0 and r["events_per_seq"] > 100 for r in hawkes)
    assert all(r["log_prob_evals_per_s"] > 0 for r in spiking)
    assert "| batch |" in proc.stdout
    if result["machine"]["tick"] == "missing":
        assert "tick is missing" in proc.stdout
    else:
        assert result["checks"] and "ratio_ours_over_tick" in hawkes[0]


def test_smooth_gate_benchmark_smoke(tmp_path):
    # runs with or without snntorch installed; without it only our figures are reported
    out = tmp_path / "sg.json"
    proc = run_benchmark("smooth_gate.py", "--quick", "--repeats", "1", "--pytorch-step",
                         "--out", str(out))
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 8 | 32 | 50 |")]
    assert len(row) == 1
    ours = float(row[0].split("|")[4])
    assert ours > 0
    rows = json.loads(out.read_text())["results"]["rows"]
    assert len(rows) == 1 and f"{rows[0]['ours_s']:.3f}" == f"{ours:.3f}"
    assert rows[0]["pytorch_step_s"] > 0
    try:
        import snntorch  # noqa: F401
    except ImportError:
        assert "snntorch is missing" in proc.stdout


def test_log_marginal_benchmark_smoke(tmp_path):
    out = tmp_path / "lm.json"
    proc = run_benchmark("log_marginal.py", "--duration", "5", "--num-sequences", "2",
                         "--particles", "16", "--repeats", "2", "--out", str(out),
                         env={"OMP_NUM_THREADS": "1"}, cwd=os.path.join(ROOT, "benchmarks"))
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| SMC, PyTorch | 16 |")]
    assert len(rows) == 1 and float(rows[0].split("|")[3]) > 0
    assert "| importance sampling | 16 |" in proc.stdout and "| pathwise |" in proc.stdout
    # the results file holds the same rows, with where they came from
    record = json.loads(out.read_text())
    assert record["run"]["command"].startswith("python benchmarks/log_marginal.py")
    smc = [r for r in record["results"]["rows"] if r["estimator"] == "SMC, PyTorch"]
    assert len(smc) == 1 and f"{smc[0]['median_s']:.3f}" == rows[0].split("|")[3].strip()
    assert {r["estimator"] for r in record["results"]["svi_steps"]} == {"pathwise", "reinforce"}


def test_signature_kernel_benchmark_smoke(tmp_path):
    # runs with or without pysiglib installed; without it only our figures are reported
    out = tmp_path / "sk.json"
    # the benchmark is of the compiled solver: not under PYRO_SPIKES_COMPILED=0
    proc = run_benchmark("signature_kernel.py", "--quick", "--rounds", "1", "--n", "8", "--out",
                         str(out), drop=("PYRO_SPIKES_COMPILED",))
    record = json.loads(out.read_text())
    assert record["run"]["command"].startswith("python benchmarks/signature_kernel.py --quick")
    rows = record["results"]["rows"]
    ours = [r for r in rows if r["impl"] == "ours"]
    assert len(ours) == 2 and all(r["seconds"] > 0 and r["peak_bytes"] is not None for r in ours)
    assert "| 50 | ours (compiled, adjoint) |" in proc.stdout
    try:
        import pysiglib  # noqa: F401
    except ImportError:
        assert "pysiglib is missing" in proc.stdout
    else:
        assert all(r["max_rel_diff_pysiglib"] < 1e-10 for r in ours)


def test_recordings_benchmark_smoke(tmp_path):
    # runs with or without tick; each spiking configuration in its own process
    out = tmp_path / "recordings.json"
    run_benchmark("recordings.py", "--quick", "--threads", "1", "--repeats", "1", "--out",
                  str(out))
    record = json.loads(out.read_text())
    assert record["run"]["command"].startswith("python benchmarks/recordings.py --quick")
    r = record["results"]
    assert [row["D"] for row in r["spiking_by_neurons"]] == [4, 8]
    assert r["spiking_dense"]["layout"] == "dense"
    assert r["spiking_fixed_quadrature"]["quadrature"] == "fixed"
    # the same spikes in both layouts: the same log-likelihood
    same = [row for row in r["spiking_by_duration"] if row["minutes"] == 0.05][0]
    assert abs(same["log_prob"] - r["spiking_dense"]["log_prob"]) < 1e-9 * abs(same["log_prob"])
    for row in r["spiking_by_neurons"] + r["spiking_by_duration"]:
        assert row["spikes"] > 0 and row["peak_rss_mb"] >= row["rss_before_mb"] > 0
    hawkes = r["hawkes"][0]
    assert hawkes["events"] > 1000 and hawkes["ours_events_per_s"] > 0
    assert hawkes["ours_first_events_per_s"] > 0
    if r["tick"] != "missing":  # both compute the same function
        assert hawkes["loss_rel_diff"] < 1e-10 and hawkes["grad_max_abs_diff"] < 1e-10
        assert hawkes["tick_first_events_per_s"] > 0 and hawkes["ratio_repeated"] > 0


def test_svi_benchmark_smoke(tmp_path):
    out = tmp_path / "svi.json"
    proc = run_benchmark("svi.py", "--quick", "--repeats", "1", "--estimators",
                         "pathwise,pathwise_cancel,reinforce", "--out", str(out),
                         env={"OMP_NUM_THREADS": "1"})
    record = json.loads(out.read_text())
    rows = record["results"]["rows"]
    assert [r["estimator"] for r in rows] == ["pathwise", "pathwise_cancel", "reinforce"]
    assert all(r["median_wall_s"] > 0 and r["repeats"] == 1 for r in rows)
    assert "| path-wise (relaxed, Trace_ELBO) |" in proc.stdout
    assert record["run"]["command"].startswith("python benchmarks/svi.py --quick")


def test_examples_benchmark_runs_one_example(tmp_path):
    out = tmp_path / "examples.json"
    proc = run_benchmark("examples.py", "--only", "training_time", "--out", str(out))
    rows = json.loads(out.read_text())["results"]["examples"]
    assert [r["name"] for r in rows] == ["training_time"]
    assert rows[0]["returncode"] == 0 and rows[0]["seconds"] > 0 and rows[0]["peak_rss_mb"] > 0
    assert "training_time" in proc.stdout
