"""GPU smoke run of the whole QA pipeline (run on a CUDA machine): the bundled model on
--target gpu in fp and int (default spec: per-channel weights, per-row activations, smoothing,
calibrated shifts, CUDA graphs), answers to the built-in stories compared with the CPU
reference target, and per-question latency. Prints a summary; exits 1 if a run fails.

    python -m bertqa.bench.gpu_smoke
"""
import statistics
import sys
import time

import torch

import bertqa
from bertqa.data.readers import builtin_stories


def run(qa, pairs):
    answers, times = [], []
    for q, c in pairs:
        t0 = time.perf_counter()
        answers.append(qa.answer(q, c).text)
        times.append((time.perf_counter() - t0) * 1e3)
    return answers, statistics.median(times[1:])


def main() -> int:
    print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
    pairs = [(q, s.context) for s in builtin_stories() for q in s.questions]
    reference, _ = run(bertqa.load(model="bundled", target="cpu", precision="fp"), pairs)
    failed = 0
    for precision in ("fp", "int"):
        try:
            qa = bertqa.load(model="bundled", target="gpu", precision=precision)
            answers, p50 = run(qa, pairs)
            same = sum(a == b for a, b in zip(answers, reference))
            print(f"gpu {precision}: {qa.header()['linear backend']} [{qa.header()['quantization']}]")
            print(f"  {same}/{len(pairs)} answers equal cpu fp's; median {p50:.2f} ms per question; "
                  f"no '##': {all('##' not in a for a in answers)}")
        except Exception as e:  # report and go on: this is a smoke run
            failed += 1
            print(f"gpu {precision}: FAILED {type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
