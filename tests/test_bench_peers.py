"""`bertqa bench`'s peers on a tiny BERT (hidden 64, 2 layers): every engine whose library is
installed builds in its own worker process, matches torch fp32's logits and is timed, on the
fixed cases and the mixed-length one (packed against padded); the exports are cached (a rerun
leaves the files untouched); the machine is named; missing libraries and unknown engines are
said in one line. Timings are printed, never asserted (shared machines)."""
import re

import pytest
import torch

from bertqa.bench import machine, model_bench, peers
from bertqa.bench.mixed import mixed_case
from bertqa.cli import main
from bertqa.cli.bench import ENGINE_NAMES, SIZES
from bertqa.model.bert import BertConfig

TINY = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
CASES = ((32, 1), (16, 2))
MIXED_BATCH = 3
MIXED = (model_bench.MIXED, MIXED_BATCH)


def small_mixed():
    """The windows of 6 built-in questions in batches of 3 (bertqa.bench.mixed)."""
    from bertqa.model.loading import BUNDLED_DIR
    return mixed_case(BUNDLED_DIR, 6, MIXED_BATCH)


def installed(name):
    return not peers.missing(peers.ENGINES[name])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench-cache")


SLOW = ("torchao-int8",)    # compiles (inductor, C++) for each new shape: one case of its own


@pytest.fixture(scope="module")
def every_engine(cache):
    """One run of every engine but the compiled ones, one round, 20 calibration windows; the
    mixed-length case after the fixed ones."""
    lines = []
    run = model_bench.run_model_bench(TINY, CASES, rounds=1, engines=[e for e in ENGINE_NAMES
                                                                       if e not in SLOW],
                                      threads=2, cache_dir=cache, calib=20, calib_seq=32,
                                      settle_s=0.0, log=lines.append, mixed=small_mixed())
    return run, lines


@pytest.fixture(scope="module")
def compiled_engines(cache):
    return model_bench.run_model_bench(TINY, CASES[:1], rounds=1, engines=list(SLOW), threads=2,
                                       cache_dir=cache, calib=2, calib_seq=32, settle_s=0.0,
                                       log=lambda _: None)


def test_the_cli_names_every_engine():
    assert ENGINE_NAMES == tuple(peers.ENGINES)
    assert set(model_bench.CONFIGS) <= set(ENGINE_NAMES)
    assert SIZES["tiny"] == (TINY.num_hidden_layers, TINY.hidden_size, TINY.num_attention_heads,
                             TINY.intermediate_size)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_each_installed_engine_matches_fp32_and_is_timed(request, name):
    run = (request.getfixturevalue("compiled_engines") if name in SLOW
           else request.getfixturevalue("every_engine")[0])
    if not installed(name):
        assert "not installed" in run.skipped[name] and "bertqa[bench]" in run.skipped[name]
        pytest.skip(f"{name}: {run.skipped[name]}")
    assert name not in run.skipped, run.skipped.get(name)
    rows = [t for t in run.timings if t.name == name]
    want = (CASES[:1] if name in SLOW else [MIXED] if peers.ENGINES[name].mixed_only
            else CASES + (MIXED,))
    assert [(t.seq, t.batch) for t in rows] == list(want)
    tol = model_bench.FP_TOL if peers.ENGINES[name].fp else model_bench.INT8_TOL
    for t in rows:
        assert t.status == "ok", t.status
        assert len(t.times_ms) == 1 and t.times_ms[0] > 0
        assert t.rel_err <= tol and 0 <= t.argmax_agree <= 1
        if name == "torch-fp32":
            assert t.logit_err == 0 and t.argmax_agree == 1


def test_the_table_has_the_ratio_columns_and_the_summary(every_engine):
    run, _ = every_engine
    out = model_bench.format_model_table(run, "tiny")
    block = out.split("\nseq 32, batch 1\n")[1].split("\n\n")[0].splitlines()
    assert block[0].split()[:9] == ["engine", "median", "ms", "min", "max", "seq/s", "x", "fp32",
                                    "int/this"]
    rows = {line.split()[0]: line.split()[1:] for line in block[1:]}
    assert set(rows) == {t.name for t in run.timings if t.seq == 32} == {
        e for e in ENGINE_NAMES if e not in SLOW and e not in run.skipped
        and not peers.ENGINES[e].mixed_only}
    assert rows["torch-fp32"][4] == "1.00" and rows["customcpu-int"][5:7] == ["1.00", "1.00"]
    by = {t.name: t for t in run.timings if (t.seq, t.batch) == (32, 1)}
    for name, cells in rows.items():         # int/this = customcpu-int's median over this one's
        want = by["customcpu-int"].median / by[name].median    # from the timings: the printed
        assert float(cells[5]) == pytest.approx(want, abs=0.006), name   # medians are rounded
    assert ("| engine | seq 32 ms | batch 2 x seq 16, seq/s | mixed, batches of 3, seq/s | "
            "int/this |") in out
    for name, why in run.skipped.items():
        assert f"  {name}: {why}" in out


def test_the_mixed_case_times_packed_against_padded_batches(every_engine):
    run, _ = every_engine
    mixed = run.mixed
    lengths = mixed.lengths()
    assert mixed.windows == len(lengths) >= 6 and len(set(lengths)) > 2
    assert [ids.shape[0] for ids, _, _ in mixed.batches][:-1] == [MIXED_BATCH] * (len(mixed.batches) - 1)
    assert any(bool((mask == 0).any()) for _, _, mask in mixed.batches)      # some padded
    by = {t.name: t for t in run.timings if (t.seq, t.batch) == MIXED}
    assert by[model_bench.PADDED].status == by[model_bench.OURS].status == "ok"
    # the same nodes (calibrated alike), so the same logits at every real token, packed or not
    assert run.packed_same is True
    assert by[model_bench.PADDED].logit_err == by[model_bench.OURS].logit_err
    assert "packed batches off" in run.labels[model_bench.PADDED]
    out = model_bench.format_model_table(run, "tiny")
    block = out.split("\nmixed-length windows, batches of 3: ")[1].split("\n\n")[0].splitlines()
    assert block[0].startswith(f"{mixed.windows} windows of 6 questions (built-in stories")
    assert {line.split()[0] for line in block[2:-1]} == set(by)
    packing = block[-1]
    assert packing.startswith("  packed against padded: customcpu-int ") and packing.endswith(
        "their int8 logits at every real token identical")
    ratio = by[model_bench.PADDED].median / by[model_bench.OURS].median
    assert f"x{ratio:.2f} the throughput" in packing


def test_the_logit_check_compares_the_real_positions_only():
    ref = (torch.tensor([[0.0, 4.0, -1e4]]), torch.tensor([[2.0, 0.0, -1e4]]))
    real = torch.tensor([[True, True, False]])
    t = model_bench.Timing("x", 3)
    model_bench.check_logits("x", t, (torch.tensor([[0.0, 4.0, 7.0]]), ref[1]), ref, fp=True, real=real)
    assert t.status == "ok" and t.logit_err == 0 and t.rel_err == 0


def test_logits_beyond_the_tolerance_are_reported_not_timed():
    ref = (torch.tensor([[0.0, 4.0, 1.0]]), torch.tensor([[2.0, 0.0, -1.0]]))
    near = model_bench.Timing("x", 3)
    model_bench.check_logits("x", near, (ref[0] + 0.04, ref[1]), ref, fp=True)
    assert near.status == "ok" and near.rel_err == pytest.approx(0.01) and near.argmax_agree == 1
    off = model_bench.Timing("y", 3)
    model_bench.check_logits("y", off, (ref[0], torch.tensor([[0.0, 2.0, -1.0]])), ref, fp=False)
    assert off.status == "logits off: max|dlogit| 2 = 0.5 of max|logit| > 0.3"
    assert off.argmax_agree == 0.5
    for got in ((ref[0] * float("nan"), ref[1]), (ref[0], ref[1] * float("nan"))):
        nan = model_bench.Timing("z", 3)
        model_bench.check_logits("z", nan, got, ref, fp=False)
        assert nan.status.startswith("logits off: max|dlogit| inf"), nan.status


def test_a_missing_library_is_named_with_the_extra(cache, monkeypatch):
    monkeypatch.setitem(peers.ENGINES, "openvino-int8",
                        peers.Engine(peers.build_ov_int8, ("no_such_module_xyz",)))
    run = model_bench.run_model_bench(TINY, ((16, 1),), rounds=1, engines=["openvino-int8"],
                                      threads=1, cache_dir=cache, calib=2, settle_s=0.0,
                                      log=lambda _: None)
    assert run.skipped["openvino-int8"] == ("not installed: no_such_module_xyz "
                                            "(pip install 'bertqa[bench]')")
    assert run.timings == [] and set(run.labels) == {"torch-fp32"}    # the reference only


def test_an_unknown_engine_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match="unknown engine openvino-fp64; choose from torch-fp32"):
        model_bench.run_model_bench(TINY, engines=["openvino-fp64"])
    assert main(["bench", "--engines", "torch-fp32,openvino-fp64", "--config", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "unknown engine openvino-fp64: --engines takes some of torch-fp32" in err
    assert "Traceback" not in err


def test_the_cli_names_the_machine_and_reuses_the_cached_exports(every_engine, cache, capsys):
    pytest.importorskip("onnxruntime", reason="the bench extra (onnxruntime) is not installed")
    exports = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()
               and "inductor" not in p.parts}
    assert any(p.parent.name.startswith("ort-int8-") for p in exports)
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "--config", "tiny", "--engines", "torch-fp32,customcpu-int,onnxruntime-int8",
                   "--seq", "32", "--batch", "2", "--batch-seq", "16", "--repeats", "1",
                   "--calib", "20", "--cache-dir", str(cache), "--settle", "0", "--no-gemm",
                   "--mixed", "6", "--mixed-batch", "3"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0
    d = machine.describe()
    assert f"machine: {d['name']} ({d['vendor']}, family {d['family']}" in out
    assert re.search(r"customcpu kernel path: (avx512vnni|avx2|scalar) ", out)
    if machine.measure_int8_peak(1, 0.01):
        assert re.search(r"measured int8 peak \((avx512vnni|avx2) loop\): \d+ GOPS on \d+ threads", out)
    assert "'tiny' shapes (2 layers, hidden 64)" in out and "\nseq 32, batch 1\n" in out
    assert "\nseq 16, batch 2\n" in out and "onnxruntime-int8: ONNX Runtime" in out
    assert "\nmixed-length windows, batches of 3: " in out
    # the rerun read the cached export back: same files, untouched
    assert {p: p.stat().st_mtime_ns for p in exports} == exports


def test_a_real_model_is_calibrated_on_the_stories(cache, capsys):
    """--model: the bundled MiniLM's own weights; OpenVINO's NNCF gets the stories' windows."""
    from pathlib import Path
    import bertqa
    model_dir = Path(bertqa.__file__).parent / "models" / "minilm-l6-squad"
    windows = model_bench.story_windows(model_dir, 64, 1000)
    assert len(windows) > 27 and all(w[0].shape[0] == 1 and w[0].shape[1] <= 64 for w in windows)
    engines = ["torch-fp32", "customcpu-int"] + (["openvino-int8"] if installed("openvino-int8") else [])
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "--model", str(model_dir), "--engines",
                   ",".join(engines + [model_bench.PADDED]), "--seq", "64", "--batch", "0",
                   "--repeats", "1", "--calib", "8", "--cache-dir", str(cache), "--settle", "0",
                   "--no-gemm", "--mixed", "6", "--mixed-batch", "3"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0 and "minilm-l6-squad (6 layers, hidden 384), its own weights" in out
    block = out.split("\nseq 64, batch 1\n")[1].split("\n\n")[0]
    assert [line.split()[0] for line in block.splitlines()[1:]] == engines
    assert "logits off" not in block and "failed" not in block
    mixed = out.split("\nmixed-length windows, batches of 3: ")[1].split("\n\n")[0]
    assert [line.split()[0] for line in mixed.splitlines()[2:-1]] == engines + [model_bench.PADDED]
    assert "logits off" not in mixed and mixed.endswith("at every real token identical")
    if "openvino-int8" in engines:      # the first 8 story windows of <= 128 tokens
        assert "ModelType.TRANSFORMER, 8 calibration windows" in out


@pytest.mark.parametrize("info, core, lines", [
    ({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "1", "model name": "AMD EPYC",
      "flags": "fpu sse avx avx2 fma"}, "Zen 3 (Milan)",
     ["machine: AMD EPYC (AuthenticAMD, family 25 (0x19) model 1 (0x1), Zen 3 (Milan)), ",
      "  vector ISA: avx2  (no AVX-512)"]),
    ({"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17", "model name": "AMD EPYC 9R14",
      "flags": "avx2 avx512f avx512bw avx512_vnni avx512_bf16"}, "Zen 4 (Genoa)",
     ["machine: AMD EPYC 9R14 (AuthenticAMD, family 25 (0x19) model 17 (0x11), Zen 4 (Genoa)), ",
      "  vector ISA: avx2, avx512f, avx512bw, avx512_vnni, avx512_bf16"]),
    ({"vendor_id": "AuthenticAMD", "cpu family": "26", "model": "2", "model name": "AMD EPYC 9R45",
      "flags": "avx2 avx512f avx512_vnni"}, "Zen 5 (Turin)", ["Zen 5 (Turin)), "]),
    ({"vendor_id": "GenuineIntel", "cpu family": "6", "model": "143", "model name": "Xeon",
      "flags": "avx2 avx512f amx_int8"}, None, ["machine: Xeon (GenuineIntel, family 6 (0x6) model 143 (0x8f)), "]),
])
def test_the_machine_line_names_the_core_and_its_isa(info, core, lines):
    d = machine.describe(info)
    assert d["core"] == core
    text = "\n".join(machine.machine_lines(d, "avx2", "picked", dict(isa="avx2", threads=2, gops=100.0,
                                                                      gops_1t=50.0)))
    for line in lines:
        assert line in text, text
    assert "customcpu kernel path: avx2 (picked)" in text
    assert "measured int8 peak (avx2 loop): 100 GOPS on 2 threads, 50 GOPS on 1 thread" in text
