"""`bertqa serve --ray`, and the model that Ray replicas and actors load (shared with bulk QA)."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

from bertqa.cli.common import load_kwargs
from bertqa.errors import BertQAError


@contextmanager
def model_for_workers(args, what: str):
    """bertqa.load kwargs that every Ray worker can load quickly: the model directory as an
    absolute path, and an int8 model on a custom target prepared once here and saved (a
    prepared directory loads in about a second; calibrating in every replica takes far longer).
    On an existing cluster the workers must read the same path: there, an unprepared int8 model
    is prepared by each worker, and a note says to run `bertqa prepare` to shared storage."""
    from bertqa.model.loading import resolve_model
    from bertqa.saved import is_prepared_dir
    from bertqa.targets import is_custom
    kwargs = load_kwargs(args)
    model_dir = resolve_model(kwargs["model"])
    kwargs["model"] = str(model_dir.resolve())
    custom_int = kwargs["precision"] == "int" and is_custom(kwargs["target"])
    if is_prepared_dir(model_dir) or not custom_int:
        yield kwargs
        return
    if args.ray_address is not None:
        print(f"note: {what}: each Ray worker calibrates the int8 model itself; `bertqa prepare --out DIR` "
              "to a path every node reads, then --model DIR, starts them in about a second", flush=True)
        yield kwargs
        return
    import bertqa
    out = tempfile.mkdtemp(prefix="bertqa-prepared-")
    try:
        qa = bertqa.load(**kwargs)
        qa.save(out)
        print(f"{what}: prepared {qa.model_name} for --target {qa.target} once, in {out}", flush=True)
        del qa
        yield {**kwargs, "model": out, "spec": None}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_serve_ray(args, config) -> int:
    from bertqa import ray_cluster
    ray_cluster.require_ray("bertqa serve --ray")
    from bertqa.serve import ray as ray_serve
    try:
        options = ray_serve.RayOptions(
            replicas=args.replicas, replica_cpus=args.replica_cpus, max_ongoing=args.max_ongoing,
            max_queued=args.max_queued,
            autoscale=ray_serve.parse_autoscale(args.autoscale) if args.autoscale else None)
    except ValueError as e:
        raise BertQAError(str(e)) from None
    with model_for_workers(args, "bertqa serve --ray") as kwargs:
        started_here = ray_cluster.connect(args.ray_address, "bertqa serve --ray")
        try:
            if started_here:
                import ray
                try:
                    note = ray_serve.check_fits(options, ray.cluster_resources().get("CPU", 0.0))
                except ValueError as e:
                    raise BertQAError(str(e)) from None
                if note:
                    print(note, flush=True)
            url, ready_s = ray_serve.deploy(kwargs, config, options)
            replicas = (f"{options.autoscale[0]}..{options.autoscale[1]} replicas (autoscaling)"
                        if options.autoscale else f"{options.replicas} replica(s)")
            print(f"bertqa serve --ray: listening on {url} (POST /v1/answer; OpenAPI at /docs); "
                  f"{replicas} of {kwargs['model']} ready in {ready_s:.1f} s", flush=True)
            how = ray_serve.wait_for_signal()
            print(f"bertqa serve --ray: {how}: stopping the replicas (in-flight requests finish first)",
                  flush=True)
        finally:
            ray_serve.undeploy(started_here)
            ray_cluster.disconnect()
    print("bertqa serve --ray: stopped", flush=True)
    return 0
