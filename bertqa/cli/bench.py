"""`bertqa bench`."""
from __future__ import annotations

import argparse
from pathlib import Path

from bertqa.cli.registry import subcommand
from bertqa.errors import BertQAError

# -- bench --------------------------------------------------------------------------------------

# bertqa.bench.peers.ENGINES, named here without importing torch (a test checks they agree)
ENGINE_NAMES = ("torch-fp32", "torch-int8", "customcpu-fp", "customcpu-int", "customcpu-int-sdpa",
                "customcpu-int-padded", "onnxruntime-int8", "onnxruntime-int8-opt", "openvino-fp",
                "openvino-int8", "torchao-int8")
# model shapes: (layers, hidden, heads, intermediate); 'tiny' is for tests and smoke runs
SIZES = {"large": (24, 1024, 16, 4096), "base": (12, 768, 12, 3072), "small": (4, 256, 4, 1024),
         "tiny": (2, 64, 2, 128)}


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", "--configs", dest="engines", default=",".join(ENGINE_NAMES),
                   help="comma-separated, any of " + ", ".join(ENGINE_NAMES) + " (default: all), or "
                        "BACKEND-fp / BACKEND-int for any registered Linear backend")
    p.add_argument("--config", choices=SIZES, default="large",
                   help="model shapes, random weights: BERT-large (default), BERT-base, or small "
                        "ones for quick runs")
    p.add_argument("--layers", type=int, default=None, help="encoder layers (default: the config's)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="a checkpoint directory: its real weights instead of random ones, "
                        "calibrated on the built-in stories' windows")
    p.add_argument("--seq", default="384,128",
                   help="sequence lengths at batch 1, comma-separated ('none': no batch-1 case)")
    p.add_argument("--batch", type=int, default=8, help="the throughput case's batch (0: none)")
    p.add_argument("--batch-seq", type=int, default=128, help="the throughput case's sequence length")
    p.add_argument("--mixed", type=int, default=32, metavar="N",
                   help="the mixed-length case: the windows of N questions in padded batches, "
                        "packed against padded (0: none)")
    p.add_argument("--mixed-data", default=None, metavar="SQUAD.json",
                   help="where the mixed case's questions come from: N spread over this SQuAD file "
                        "(e.g. the eval file); default: the built-in stories")
    p.add_argument("--mixed-batch", type=int, default=8, help="windows per batch in the mixed case")
    p.add_argument("--repeats", "--rounds", dest="repeats", type=int, default=3,
                   help="interleaved timed rounds")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=None,
                   help="where exported peer models are kept between runs "
                        "(default ~/.cache/bertqa/bench)")
    p.add_argument("--calib", type=int, default=300,
                   help="calibration windows (seq 128, random tokens) for OpenVINO's nncf.quantize")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--settle", type=float, default=0.1,
                   help="seconds of untimed pause before each timed forward (ONNX Runtime's pool "
                        "spins ~50 ms after a run, which would land on the next engine)")
    p.add_argument("--no-gemm", action="store_true", help="skip the int8 GEMM table")
    p.add_argument("--no-model", action="store_true", help="skip the whole-model table")
    p.add_argument("--callers", nargs="?", const="customcpu-int", default=None,
                   metavar="TARGET-PRECISION",
                   help="instead: QAModel.answer from the main thread and from a worker thread, "
                        "idle and beside a busy-looping process (--model, default the bundled one; "
                        "--repeats rounds), on customcpu-int or the TARGET-PRECISION given, e.g. cpu-fp")
    p.add_argument("--memory", action="store_true",
                   help="instead: peak memory and start time of preparing BERT-large int8 (writes a "
                        "1.3 GB random checkpoint to a temporary directory, removed afterwards)")


def callers_target(value: str) -> tuple[str, str]:
    """'cpu-fp' -> ('cpu', 'fp'), checked against the targets and precisions."""
    from bertqa.targets import PRECISIONS, TARGETS
    target, _, precision = value.rpartition("-")
    if target not in TARGETS or precision not in PRECISIONS:
        raise BertQAError(f"--callers takes TARGET-PRECISION (targets {', '.join(TARGETS)}; precisions "
                          f"{', '.join(PRECISIONS)}), got {value!r}")
    return target, precision


def _check(args) -> tuple[list[int], list[str]]:
    for flag, value, least in (("--threads", args.threads, 1), ("--layers", args.layers, 1),
                               ("--repeats", args.repeats, 1), ("--batch", args.batch, 0),
                               ("--calib", args.calib, 1), ("--seed", args.seed, 0),
                               ("--mixed", args.mixed, 0), ("--mixed-batch", args.mixed_batch, 1)):
        if value is not None and value < least:
            raise BertQAError(f"{flag} must be >= {least}, got {value}")
    if not 0 <= args.settle <= 10:
        raise BertQAError(f"--settle must lie in 0..10 seconds, got {args.settle}")
    try:
        seqs = [] if args.seq.strip().lower() == "none" else [int(s) for s in args.seq.split(",")]
    except ValueError:
        raise BertQAError(f"--seq takes comma-separated integers or 'none', got {args.seq!r}") from None
    if any(not 8 <= s <= 512 for s in seqs + [args.batch_seq]):
        raise BertQAError(f"--seq and --batch-seq must lie in 8..512, got {seqs} and {args.batch_seq}")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    from bertqa.backends import backend_names
    per_backend = {f"{b}-{p}" for b in backend_names() for p in ("fp", "int", "int-sdpa")}
    unknown = [e for e in engines if e not in ENGINE_NAMES and e not in per_backend]
    if unknown or not engines:
        raise BertQAError(f"unknown engine {', '.join(unknown) or '(none given)'}: --engines takes "
                          f"some of {', '.join(ENGINE_NAMES)}, or BACKEND-fp / BACKEND-int for a "
                          f"registered Linear backend ({', '.join(backend_names())})")
    if not seqs and not args.batch and not args.mixed and not args.no_model:
        raise BertQAError("--seq none, --batch 0 and --mixed 0 leave no case to time")
    return seqs, engines


def print_machine(threads: int) -> None:
    from bertqa.bench import machine
    for line in machine.machine_lines(machine.describe(), *machine.kernel_path(),
                                      machine.measure_int8_peak(threads)):
        print(line)


@subcommand("bench", "the engines a user could pick (PyTorch, ONNX Runtime, OpenVINO, torchao, "
            "customcpu) on BERT shapes, and the int8 GEMM against the machine's peak",
            add_bench_arguments)
def run_bench(args) -> int:
    seqs, engines = _check(args)
    import os

    import torch
    from bertqa.bench.model_bench import format_model_table, run_model_bench
    from bertqa.model.bert import BertConfig
    threads = args.threads or torch.get_num_threads()
    if args.memory:
        from bertqa.bench import cpu_name
        from bertqa.bench.memory_bench import run_memory_bench
        print(f"bertqa bench --memory on {cpu_name()}")
        run_memory_bench(layers=args.layers)
        return 0
    if args.callers:
        from bertqa.bench.callers import run_callers_bench
        target, precision = callers_target(args.callers)
        print(run_callers_bench(args.model, target, precision, args.threads, rounds=args.repeats))
        return 0
    if args.model:
        from bertqa.model.loading import check_model_dir, read_config
        if args.layers:
            raise BertQAError("--layers applies to random weights, not to --model")
        model_dir = check_model_dir(Path(args.model))
        config = read_config(model_dir)
        label = (f"{model_dir.name} ({config.num_hidden_layers} layers, hidden "
                 f"{config.hidden_size}), its own weights")
    else:
        model_dir = None
        layers, hidden, heads, inter = SIZES[args.config]
        config = BertConfig(hidden_size=hidden, num_hidden_layers=args.layers or layers,
                            num_attention_heads=heads, intermediate_size=inter)
        name = {"large": "BERT-large", "base": "BERT-base"}.get(args.config, f"'{args.config}'")
        label = (f"{name} shapes ({config.num_hidden_layers} layers, hidden {hidden}), random "
                 f"weights (seed {args.seed})")
    mixed = None
    if args.mixed and not args.no_model:              # before the timings: a bad file fails fast
        from bertqa.bench.mixed import mixed_case
        from bertqa.model.loading import BUNDLED_DIR
        try:
            mixed = mixed_case(model_dir or BUNDLED_DIR, args.mixed, args.mixed_batch,
                               args.mixed_data, min(384, config.max_window), config.vocab_size)
        except ValueError as e:
            raise BertQAError(f"--mixed: {e}") from None
    print(f"bertqa bench, 1-min load average {os.getloadavg()[0]:.1f}")
    print_machine(threads)
    if not args.no_model:
        cases = [(s, 1) for s in seqs] + ([(args.batch_seq, args.batch)] if args.batch else [])
        run = run_model_bench(config, cases, args.repeats, engines, threads, args.cache_dir,
                              calib=args.calib, seed=args.seed, settle_s=args.settle,
                              model_dir=model_dir, mixed=mixed)
        print(format_model_table(run, label))
        print(f"1-min load average after: {os.getloadavg()[0]:.1f}")
    if not args.no_gemm:
        try:
            from bertqa.bench.gemm import print_gemm_table, run_gemm_bench
        except ImportError as e:
            print(f"\nint8 GEMM table skipped: {e}")
        else:
            print()
            print_gemm_table(run_gemm_bench(threads=threads))
    return 0
