"""`bertqa bench`: the GEMM table and the options' errors (the whole-model table and its engines:
test_bench_peers.py). Timings are printed, never asserted (the machines are shared)."""
import pytest

from bertqa import native
from bertqa.bench import epilogue
from bertqa.bench.gemm import print_gemm_table, run_gemm_bench
from bertqa.cli import main

from native_support import needs_native


def test_gemm_table_checks_each_shape_against_the_reference(capsys):
    rows = run_gemm_bench(shapes=[(64, 96)], tokens=(8,), repeats=2, peak_seconds=0.05)
    if rows and "skipped" in rows[0]:
        pytest.skip(rows[0]["skipped"])
    print_gemm_table(rows)
    out = capsys.readouterr().out
    assert "peak avx512vnni, measured before each row" in out or "peak avx2, measured before each row" in out
    assert all(r["check"] == "ok" for r in rows), rows
    # each row against the peaks measured next to it
    assert all(len(r["peaks"]) == 3 and r["peaks"][0][r["peak_isa"]][0] > 0 and r["busy_frac"] > 0
               for r in rows)
    features = native.cpu_features()
    assert {r["isa"] for r in rows} == {isa for isa in ("avx512vnni", "avx2") if features[isa]}


@needs_native
def test_gelu_epilogue_bench_times_both_layers_against_the_peak(capsys):
    assert epilogue.main(["--m", "9", "--k", "40", "--n", "72", "--rounds", "2", "--calls", "3"]) == 0
    out = capsys.readouterr().out
    assert "int8 Linear M 9 K 40 N 72" in out and "native pool" in out
    assert "without GELU" in out and "GELU fused" in out and "the GELU's share of the fused call" in out
    r = epilogue.gelu_cost(9, 40, 72, rounds=1, calls=2)
    assert r["plain_ms"] > 0 and r["gelu_ms"] > 0 and r["isa"] in native.ISA_PATHS


@pytest.mark.parametrize("args, message", [
    (["--configs", "torch-fp64"], "unknown engine torch-fp64: --engines takes some of"),
    (["--engines", ","], "unknown engine (none given)"),
    (["--seq", "4"], "--seq and --batch-seq must lie in 8..512"),
    (["--batch-seq", "600"], "--seq and --batch-seq must lie in 8..512"),
    (["--batch", "-1"], "--batch must be >= 0"),
    (["--calib", "0"], "--calib must be >= 1"),
    (["--model", "/no/such/dir"], "model directory /no/such/dir does not exist"),
    (["--seq", "a,b"], "--seq takes comma-separated integers or 'none'"),
    (["--seq", "none", "--batch", "0", "--mixed", "0"], "leave no case to time"),
    (["--mixed", "-1"], "--mixed must be >= 0"),
    (["--mixed-batch", "0"], "--mixed-batch must be >= 1"),
    (["--mixed-data", "/no/such.json"], "data file /no/such.json does not exist"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--settle", "-1"], "--settle must lie in 0..10 seconds"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--layers", "0"], "--layers must be >= 1"),
])
def test_bad_options_are_one_line_errors(args, message, capsys):
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
