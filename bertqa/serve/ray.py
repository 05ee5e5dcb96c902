"""bertqa on Ray Serve: the `bertqa serve` app in every replica, behind one Ray HTTP endpoint.

Each replica is a Ray actor that loads the model once (from a directory written by
`bertqa prepare` / QAModel.save it starts in about a second: no calibration) and then runs the
very app of bertqa.serve.app, mounted with `@serve.ingress`: the same routes, schemas, limits,
JSON errors, dynamic batcher and /metrics (per replica). Ray adds the proxy in front, routing
between replicas, replicas on other machines, restarts and autoscaling.

Batching stays the replica's own Batcher rather than `@serve.batch`: it already groups windows
(not requests) by length, decodes each request with its own options, and is what `bertqa
serve` answers with, so answers are the same in both; `@serve.batch` would batch whole
requests without the length grouping and duplicate that code.

Back-pressure, two layers, both 503 with Retry-After:
  * the replica's bounded queue (--max-queue per replica): the JSON `overloaded` error of
    `bertqa serve`. max_ongoing_requests defaults to max_queue + max_batch, so that Ray keeps
    sending a replica requests while its batcher can take them: batches fill, and overload is
    answered by the replica in JSON.
  * Ray's router queue (max_queued_requests, per proxy): requests that no replica can take
    (all at max_ongoing_requests, or while replicas start). Ray answers those itself, in
    text/plain ("Request dropped due to backpressure").

`serve run` takes `bertqa.serve.ray:build` with the arguments of build() (docs/scale-out.md).
Needs the `ray` extra: pip install 'bertqa[ray]'.
"""
from __future__ import annotations

import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass

from ray import serve
from ray.serve.config import BackpressureConfig

from bertqa.serve.config import ServeConfig

APP_NAME = "bertqa"
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class RayOptions:
    """How many replicas and how much of a node each takes; None: derived from ServeConfig."""
    replicas: int = 1
    autoscale: tuple[int, int] | None = None     # (min, max) replicas; replaces `replicas`
    replica_cpus: float = 1.0                     # Ray CPUs each replica reserves
    max_ongoing: int | None = None                # requests one replica holds; None: queue + batch
    max_queued: int | None = None                 # waiting for any replica, per proxy; None: max_queue
    health_check_period_s: float = 2.0

    def __post_init__(self):
        if self.replicas < 1:
            raise ValueError(f"--replicas must be >= 1, got {self.replicas}")
        if self.autoscale is not None and not 1 <= self.autoscale[0] <= self.autoscale[1]:
            raise ValueError(f"--autoscale MIN:MAX needs 1 <= MIN <= MAX, got {self.autoscale}")
        if self.replica_cpus <= 0:
            raise ValueError(f"--replica-cpus must be > 0, got {self.replica_cpus}")
        for name in ("max_ongoing", "max_queued"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


def check_fits(options: RayOptions, cpus: float) -> str | None:
    """For a Ray that cannot grow (the local one a command starts): a ValueError when the replicas
    that must run do not fit its CPUs (Serve would wait for them forever, the command never
    ready); a note when autoscaling could ask for more replicas than fit, else None."""
    must = options.autoscale[0] if options.autoscale else options.replicas
    fit = int(cpus / options.replica_cpus + 1e-9)
    if must > fit:
        raise ValueError(f"{must} replica(s) x --replica-cpus {options.replica_cpus:g} need "
                         f"{must * options.replica_cpus:g} CPUs and this machine's Ray has {cpus:g}: lower "
                         "--replicas (or MIN) or --replica-cpus, or give --ray-address a cluster with more")
    if options.autoscale and options.autoscale[1] > fit:
        return (f"note: at most {fit} of the {options.autoscale[1]} replicas fit in this machine's "
                f"{cpus:g} Ray CPUs (--replica-cpus {options.replica_cpus:g}); more would wait for CPUs")
    return None


def parse_autoscale(text: str) -> tuple[int, int]:
    """'1:4' -> (1, 4)."""
    lo, sep, hi = text.partition(":")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise ValueError(f"--autoscale takes MIN:MAX replicas, e.g. 1:4, got {text!r}")
    return int(lo), int(hi)


@serve.ingress()
class QAReplica:
    """One replica: the model, loaded once, and the bertqa.serve app over it."""

    def __init__(self, load_kwargs: dict, config: dict):
        import bertqa
        t0 = time.perf_counter()
        self.qa = bertqa.load(**load_kwargs)
        self.load_s = time.perf_counter() - t0
        self.config = ServeConfig(**config)
        self.bertqa_app = None               # `app` is the wrapper's (Ray's) property

    def __serve_build_asgi_app__(self):
        from bertqa.serve.app import create_app
        self.bertqa_app = create_app(self.qa, self.config)
        return self.bertqa_app

    def check_health(self) -> None:
        """Ray restarts a replica whose batcher thread died (its requests would all time out)."""
        healthy = getattr(getattr(self.bertqa_app, "state", None), "healthy", None)
        if healthy is not None and not healthy():
            raise RuntimeError("the batcher of this replica is not running")


def deployment_options(config: ServeConfig, ray_options: RayOptions) -> dict:
    """serve.deployment options: replicas or autoscaling, back-pressure, health, shutdown."""
    o = ray_options
    options = dict(
        name=APP_NAME,
        max_ongoing_requests=o.max_ongoing or config.max_queue + config.max_batch,
        max_queued_requests=o.max_queued or config.max_queue,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=RETRY_AFTER_S),
        ray_actor_options={"num_cpus": o.replica_cpus},
        health_check_period_s=o.health_check_period_s,
        health_check_timeout_s=max(10.0, 3 * o.health_check_period_s),
        graceful_shutdown_timeout_s=config.grace_s,
        max_constructor_retry_count=3,      # a model that does not load fails the deploy in minutes, not hours
    )
    if o.autoscale is None:
        options["num_replicas"] = o.replicas
    else:
        # one full forward batch of windows in flight per replica is where a replica is busy
        options["autoscaling_config"] = {"min_replicas": o.autoscale[0], "max_replicas": o.autoscale[1],
                                         "target_ongoing_requests": max(1, config.max_batch)}
    return options


def application(load_kwargs: dict, config: ServeConfig, ray_options: RayOptions):
    """The bound Serve application: replicas of QAReplica that call bertqa.load(**load_kwargs)."""
    deployment = serve.deployment(QAReplica, **deployment_options(config, ray_options))
    return deployment.bind(load_kwargs, asdict(config))


def build(args: dict):
    """The builder `serve run` calls: args are the config file's `args` (docs/scale-out.md):
    model, target, precision, threads, replicas, autoscale ('MIN:MAX'), replica_cpus,
    max_ongoing, max_queued, and any ServeConfig field (max_batch, max_queue, timeout_s, ...)."""
    args = dict(args)
    load_kwargs = {k: args.pop(k) for k in ("model", "target", "precision", "threads", "spec",
                                             "backend", "attention") if k in args}
    load_kwargs.setdefault("model", "bundled")
    ray_fields = {k: args.pop(k) for k in ("replicas", "replica_cpus", "max_ongoing", "max_queued",
                                           "health_check_period_s") if k in args}
    if "autoscale" in args:
        ray_fields["autoscale"] = parse_autoscale(str(args.pop("autoscale")))
    unknown = set(args) - set(ServeConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown bertqa.serve.ray args: {', '.join(sorted(unknown))}")
    return application(load_kwargs, ServeConfig(**args), RayOptions(**ray_fields))


def free_port(host: str) -> int:
    """A port free on host now (Ray's proxy takes a fixed port, not 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def deploy(load_kwargs: dict, config: ServeConfig, ray_options: RayOptions) -> tuple[str, float]:
    """Start Serve's proxy on config.host:port (on a Ray this process is connected to) and the
    application; return (its URL, seconds until every replica answered ready)."""
    from bertqa.errors import BertQAError
    port = config.port or free_port(config.host)
    serve.start(http_options={"host": config.host, "port": port})
    t0 = time.perf_counter()
    try:
        serve.run(application(load_kwargs, config, ray_options), name=APP_NAME, route_prefix="/")
    except RuntimeError as e:     # the replicas did not start: say why in one line
        raise BertQAError(f"the Ray Serve application did not start: {failure_reason(e)}") from None
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{port}", time.perf_counter() - t0


def failure_reason(e: Exception) -> str:
    """The last 'SomeError: message' line of the replicas' traceback (the deployment's status
    message), else Ray's own message."""
    try:
        deployments = serve.status().applications[APP_NAME].deployments
        text = "\n".join(d.message for d in deployments.values())
    except Exception:             # noqa: BLE001 - only a better message is lost
        text = ""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and line.split(":")[0].strip().endswith(("Error", "Exception", "Unavailable"))]
    return lines[-1] if lines else str(e).splitlines()[0]


def wait_for_signal() -> str:
    """Block until SIGINT or SIGTERM; the signal's name. The handler stays: a second Ctrl-C
    while the replicas drain is noted, not a KeyboardInterrupt in the middle of the shutdown."""
    received = []
    done = threading.Event()

    def note(sig, frame):
        received.append(signal.Signals(sig).name)
        done.set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, note)
    while not done.wait(0.5):
        pass
    return received[0]


def undeploy(started_here: bool) -> None:
    """Our application goes; on a Ray this process started, Serve and Ray go too. Replicas
    finish their in-flight requests first (graceful_shutdown_timeout_s)."""
    if started_here:
        serve.shutdown()
    else:
        serve.delete(APP_NAME)
