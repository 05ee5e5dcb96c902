"""`bertqa bench`."""
from __future__ import annotations

import argparse

from bertqa.cli.registry import subcommand
from bertqa.errors import BertQAError

# -- bench --------------------------------------------------------------------------------------

def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seq", default="384,128", help="sequence lengths, comma-separated")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds per sequence length")
    p.add_argument("--configs", default=",".join(CONFIG_NAMES),
                   help="which of " + ", ".join(CONFIG_NAMES) + ", or BACKEND-int / BACKEND-fp for "
                        "any registered Linear backend (on the target that lists it)")
    p.add_argument("--layers", type=int, default=None, help="encoder layers (default: BERT-large's 24)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--settle", type=float, default=0.1,
                   help="seconds of untimed pause before each timed forward (ONNX Runtime's pool "
                        "spins ~50 ms after a run, which would land on the next configuration)")
    p.add_argument("--no-gemm", action="store_true", help="skip the int8 GEMM table")
    p.add_argument("--no-model", action="store_true", help="skip the whole-model table")
    p.add_argument("--memory", action="store_true",
                   help="instead: peak memory and start time of preparing BERT-large int8 (writes a "
                        "1.3 GB random checkpoint to a temporary directory, removed afterwards)")


# bertqa.bench.model_bench.CONFIGS, named here without importing torch (a test checks they agree)
CONFIG_NAMES = ("torch-fp32", "torch-int8", "onnxruntime-int8", "customcpu-fp", "customcpu-int",
                "customcpu-int-sdpa")


@subcommand("bench", "BERT-large shapes: torch fp32 / dynamic int8 / ONNX Runtime int8 / customcpu, "
            "and the int8 GEMM against the machine's peak", add_bench_arguments)
def run_bench(args) -> int:
    import torch
    from bertqa.bench import cpu_name
    from bertqa.bench.model_bench import format_model_table, run_model_bench
    from bertqa.model.bert import BertConfig
    if args.threads is not None and args.threads < 1:
        raise BertQAError(f"--threads must be >= 1, got {args.threads}")
    if args.layers is not None and args.layers < 1:
        raise BertQAError(f"--layers must be >= 1, got {args.layers}")
    if args.repeats < 1:
        raise BertQAError(f"--repeats must be >= 1, got {args.repeats}")
    if not 0 <= args.settle <= 10:
        raise BertQAError(f"--settle must lie in 0..10 seconds, got {args.settle}")
    threads = args.threads or torch.get_num_threads()
    try:
        seqs = [int(s) for s in args.seq.split(",")]
    except ValueError:
        raise BertQAError(f"--seq takes comma-separated integers, got {args.seq!r}") from None
    from bertqa.backends import backend_names
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    per_backend = {f"{b}-{p}" for b in backend_names() for p in ("fp", "int")}
    unknown = sorted(set(configs) - set(CONFIG_NAMES) - per_backend)
    if unknown or not configs or any(not 8 <= s <= 512 for s in seqs):
        raise BertQAError(f"--configs must name some of {', '.join(CONFIG_NAMES)} (or BACKEND-int, "
                          f"BACKEND-fp for a backend of {', '.join(backend_names())}) and --seq lie in "
                          f"8..512 (got configs {configs}, seq {seqs})")
    if args.memory:
        from bertqa.bench.memory_bench import run_memory_bench
        print(f"bertqa bench --memory on {cpu_name()}")
        run_memory_bench(layers=args.layers)
        return 0
    config = BertConfig.bert_large()
    if args.layers:
        config.num_hidden_layers = args.layers
    label = f"BERT-large shapes ({config.num_hidden_layers} layers, hidden {config.hidden_size}), random weights"
    print(f"bertqa bench on {cpu_name()}")
    if not args.no_model:
        results = run_model_bench(config, seqs, args.repeats, configs, threads, settle_s=args.settle)
        print(format_model_table(results, label, threads, args.settle))
    if not args.no_gemm:
        try:
            from bertqa.bench.gemm import print_gemm_table, run_gemm_bench
        except ImportError as e:
            print(f"\nint8 GEMM table skipped: {e}")
        else:
            print()
            print_gemm_table(run_gemm_bench(threads=threads))
    return 0

