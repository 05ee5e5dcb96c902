"""`bertqa bench --callers`: the main thread against a worker thread, idle and beside a busy loop."""
import re
import threading

from bertqa.bench import callers


class CountingQA:
    """Records which thread asked, answers at once."""

    def __init__(self):
        self.threads = set()

    def answer(self, question, context):
        self.threads.add(threading.current_thread() is threading.main_thread())


def test_every_round_times_both_callers_under_both_loads():
    qa = CountingQA()
    runs = callers.measure(qa, [("q", "c")], seconds=0.05, rounds=2)
    assert set(runs) == {(load, caller) for load in ("idle", "loaded") for caller in ("main", "worker")}
    assert all(len(v) == 2 and min(v) > 0 for v in runs.values())
    assert qa.threads == {True, False}                       # asked from the main thread and another
    table = callers.format_table(runs)
    assert "| idle |" in table and "| a busy-looping process beside |" in table


def test_callers_bench_runs_the_bundled_model(monkeypatch, capsys):
    from bertqa import cli
    real = callers.run_callers_bench
    monkeypatch.setattr(callers, "run_callers_bench", lambda *a, **k: real(*a, **k, seconds=0.3))
    assert cli.main(["bench", "--callers", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (idle|a busy-looping process beside) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
    assert len(rows) == 2 and all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows), out
    assert "customcpu" in out and "interleaved rounds" in out


def test_callers_bench_takes_a_target_and_names_a_bad_one(monkeypatch, capsys):
    from bertqa import cli
    real = callers.run_callers_bench
    monkeypatch.setattr(callers, "run_callers_bench", lambda *a, **k: real(*a, **k, seconds=0.2))
    assert cli.main(["bench", "--callers", "cpu-fp", "--repeats", "1"]) == 0
    assert "target cpu fp, PyTorch fp32" in capsys.readouterr().out
    assert cli.main(["bench", "--callers", "cpu-int8"]) == 2
    assert "--callers takes TARGET-PRECISION" in capsys.readouterr().err
