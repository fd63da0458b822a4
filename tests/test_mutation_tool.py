"""tools/mutation.py (mutation testing, issue 29): its bookkeeping, without running mutmut."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load():
    spec = importlib.util.spec_from_file_location("mutation_tool",
                                                  os.path.join(ROOT, "tools", "mutation.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mt = load()


def test_the_core_and_the_excluded_tests_exist():
    core = mt.core_modules()
    for expected in ["pyro_spikes/distributions/poisson.py", "pyro_spikes/models/snn.py",
                     "pyro_spikes/spikes.py", "pyro_spikes/scoring.py", "pyro_spikes/windows.py",
                     "pyro_spikes/infer/predictive.py", "pyro_spikes/distributions/relaxed.py"]:
        assert expected in core
    assert not any(m.endswith("__init__.py") for m in core)
    # a renamed test file must not silently join the instrumented run
    for name in mt.EXCLUDED_TESTS:
        assert os.path.exists(os.path.join(ROOT, "tests", name)), name


def test_verdicts_are_counted_per_module(tmp_path):
    module = "pyro_spikes/windows.py"
    meta = tmp_path / "mutants" / (module + ".meta")
    meta.parent.mkdir(parents=True)
    codes = {f"pyro_spikes.windows.x_f__mutmut_{i}": c
             for i, c in enumerate([1, 1, 3, 0, 33, 36, None, 35, 1, 1])}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    entries = mt.collect(str(tmp_path), [module, "pyro_spikes/spikes.py"])
    assert list(entries) == [module]  # a module without verdicts is left out
    e = entries[module]
    assert (e["mutants"], e["checked"], e["not_checked"]) == (10, 9, 1)
    assert (e["killed"], e["timeout"], e["survived"], e["no_tests"], e["suspicious"]) == \
        (5, 1, 1, 1, 1)
    assert e["device_only"] == 0
    assert e["score"] == pytest.approx(6 / 9)
    assert sorted(s["status"] for s in e["survivors"]) == ["no tests", "survived"]


def test_modules_that_match_nothing_are_refused():
    with pytest.raises(SystemExit):
        mt.main(["--modules", "pyro_spikes/nowhere.py", "--report-only"])


def test_a_dropped_device_argument_is_told_apart():
    def diff(old, new):
        return ["-    " + old, "+    " + new]

    line = "valid = torch.arange(cap, device=rel.device) < count[:, None]"
    assert mt.device_only(diff(line, line.replace("device=rel.device", "device=None")))
    assert mt.device_only(diff(line, line.replace("device=rel.device", "")))
    assert mt.device_only(diff("x = torch.zeros(w, dtype=torch.long, device=f(a))",
                               "x = torch.zeros(w, dtype=torch.long, )"))
    assert not mt.device_only(diff(line, line.replace("< count", "<= count")))
    assert not mt.device_only(diff("x = torch.zeros(w, dtype=torch.long, device=d)",
                                   "x = torch.zeros(w, dtype=None, device=d)"))
    assert not mt.device_only(diff(line, line) + diff(line, line))  # two lines changed
