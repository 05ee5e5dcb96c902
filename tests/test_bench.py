"""`bertqa bench` end to end on a cut-down BERT-large (one layer, short sequences): the whole-model
table with its ratios and checks, the GEMM table, and its errors. Timings are printed, never
asserted (the machines are shared)."""
import re

import pytest
import torch

from bertqa import native
from bertqa.bench import model_bench
from bertqa.bench.gemm import print_gemm_table, run_gemm_bench
from bertqa.cli import main
from bertqa.cli.bench import CONFIG_NAMES


def test_the_cli_names_every_configuration():
    assert CONFIG_NAMES == model_bench.CONFIGS


def test_model_table_compares_every_configuration_in_one_run(capsys):
    pytest.importorskip("onnxruntime", reason="the bench extra (onnxruntime) is not installed")
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "--layers", "1", "--seq", "32,16", "--repeats", "2", "--no-gemm",
                   "--settle", "0.01"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0
    assert "2 interleaved repeats, 0.01 s pause before each" in out
    for seq in (32, 16):
        block = out.split(f"\nseq {seq}\n")[1].split("\n\n")[0]
        rows = {line.split()[0]: line.split()[1:] for line in block.splitlines()[1:]}
        assert set(rows) == set(CONFIG_NAMES)
        assert rows["torch-fp32"][3] == "1.00" and rows["onnxruntime-int8"][4:6] == ["1.00", "1.00"]
        ort_fastest = float(rows["onnxruntime-int8"][1])
        for name, cells in rows.items():
            median, fastest, slowest = map(float, cells[:3])
            assert 0 < fastest <= median <= slowest, name
            # (the printed minima are rounded to 0.1 ms: a few percent on these short runs)
            assert float(cells[5]) == pytest.approx(fastest / ort_fastest, rel=0.06, abs=0.01), name
            err = float(cells[6])
            # every configuration computes the same function: int8 within a few hundredths
            assert err < (1e-4 if name in ("torch-fp32", "customcpu-fp") else 0.5), (name, err)
    assert "customcpu-int-sdpa: " in out and "attention fp32 (PyTorch SDPA)" in out
    if "native AVX512-BF16" in out:                  # where the CPU has it, customcpu-int uses it
        assert re.search(r"customcpu-int: .*attention bf16", out)


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


@pytest.mark.parametrize("args, message", [
    (["--configs", "torch-fp64"], "--configs must name some of"),
    (["--seq", "4"], "--seq lie in 8..512"),
    (["--seq", "a,b"], "--seq takes comma-separated integers"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--settle", "-1"], "--settle must lie in 0..10 seconds"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--layers", "0"], "--layers must be >= 1"),
])
def test_bad_options_are_one_line_errors(args, message, capsys):
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
