"""`bertqa batch` (bulk QA over a file with Ray Data) and the Ray part of `bertqa eval --ray`."""
from __future__ import annotations

import argparse
import sys

from bertqa.cli.common import add_model_options
from bertqa.cli.registry import subcommand
from bertqa.errors import BertQAError


def add_ray_arguments(g) -> None:
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (e.g. auto, HEAD_IP:6379); default: start a local Ray")
    g.add_argument("--actors", type=int, default=None,
                   help="model actors (default: as many as the cluster's CPUs hold)")
    g.add_argument("--actor-cpus", type=float, default=1.0, help="Ray CPUs each model actor reserves")
    g.add_argument("--write-predictions", default=None, metavar="OUT.jsonl",
                   help="write one JSON line per question: id, question, answer, score, start, end")


def check_ray_arguments(args) -> None:
    if args.actors is not None and args.actors < 1:
        raise BertQAError(f"--actors must be >= 1, got {args.actors}")
    if args.actor_cpus <= 0:
        raise BertQAError(f"--actor-cpus must be > 0, got {args.actor_cpus}")
    if args.write_predictions:
        from pathlib import Path
        if not Path(args.write_predictions).resolve().parent.is_dir():
            raise BertQAError(f"cannot write {args.write_predictions}: its folder does not exist")


def bulk_answer(args, pairs, v2: bool, batch: int, progress: bool):
    """Answer `pairs` on Ray (local or --ray-address) with the model of `args`; a BulkResult."""
    from bertqa import batch as bulk, ray_cluster
    from bertqa.cli.serve_ray import model_for_workers
    ray_cluster.require_ray("bulk QA (--ray)")
    check_ray_arguments(args)
    with model_for_workers(args, "bulk QA") as kwargs:
        ray_cluster.connect(args.ray_address, "bulk QA (--ray)")
        try:
            result = bulk.answer_pairs(pairs, kwargs, v2, args.actors, args.actor_cpus, batch,
                                       progress=progress)
        finally:
            ray_cluster.disconnect()
    print(f"ray: {len(result.rows)} questions in {result.wall_s:.1f} s wall "
          f"({result.questions_per_s:.1f} q/s) on {result.actors} model actor(s)", file=sys.stderr)
    if args.write_predictions:
        try:
            bulk.write_jsonl(args.write_predictions, result.rows, v2)
        except OSError as e:
            raise BertQAError(f"cannot write {args.write_predictions}: {e.strerror or e}") from None
        print(f"wrote {args.write_predictions}")
    return result


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    g = p.add_argument_group("bulk QA (needs bertqa[ray])")
    g.add_argument("--data", required=True, help="SQuAD or CoQA JSON, or JSONL of {question, context, id?}")
    g.add_argument("--limit", type=int, default=None, help="the first N questions of the file")
    g.add_argument("--batch", type=int, default=1, help="questions per answer_batch call in an actor")
    g.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_ray_arguments(g)


@subcommand("batch", "answer every question of a file on Ray Data model actors (local or a cluster); "
            "JSONL out, EM/F1 for SQuAD files (needs bertqa[ray])", add_batch_arguments)
def run_batch(args) -> int:
    from bertqa.data.pairs import read_pairs
    if args.batch < 1:
        raise BertQAError(f"--batch must be >= 1, got {args.batch}")
    if not args.write_predictions:
        raise BertQAError("bertqa batch needs --write-predictions OUT.jsonl (where the answers go)")
    pairs, squad = read_pairs(args.data, args.limit)
    v2 = squad is not None and squad.version == "2.0"
    result = bulk_answer(args, pairs, v2, args.batch, not args.no_progress)
    if squad is not None:
        from bertqa import batch as bulk
        from bertqa.eval import compare, report
        rows = compare.result_rows([bulk.eval_run(result, v2)], squad)
        print(report.format_table(rows, report.make_meta(squad, result.info["model"], None,
                                                          result.info["threads"], rows[0]["latency"])))
    return 0


def ray_eval_runs(args, data) -> list:
    """`bertqa eval --ray`: the file's questions on Ray model actors, as the eval's one Run."""
    from bertqa import batch as bulk
    from bertqa.data.pairs import QAPair
    if args.compare:
        raise BertQAError("--ray runs one configuration: drop --compare, or run one eval per configuration")
    v2 = data.version == "2.0"
    pairs = [QAPair(q.id, q.question, q.context) for q in data.questions]
    return [bulk.eval_run(bulk_answer(args, pairs, v2, args.batch, not args.no_progress), v2)]
