"""The Ray pieces that need no cluster: options, deployment settings, the `serve run` builder,
Ray's proxy errors rewritten into bertqa's JSON, and the CLI's refusals (exit 2, one line)."""
import asyncio
import json

import pytest

pytest.importorskip("ray.serve", reason="needs the ray extra: pip install 'bertqa[ray]'")
pytest.importorskip("starlette")

from bertqa.cli import main  # noqa: E402
from bertqa.serve import ray as ray_serve  # noqa: E402
from bertqa.serve.config import ServeConfig  # noqa: E402
from bertqa.serve.ray_proxy import JSONRayErrors  # noqa: E402


def test_parse_autoscale_and_options_validate():
    assert ray_serve.parse_autoscale("1:4") == (1, 4)
    for bad in ("4", "a:b", "1:", ":3"):
        with pytest.raises(ValueError, match="MIN:MAX"):
            ray_serve.parse_autoscale(bad)
    with pytest.raises(ValueError, match="1 <= MIN <= MAX"):
        ray_serve.RayOptions(autoscale=(3, 1))
    with pytest.raises(ValueError, match="--replicas must be >= 1"):
        ray_serve.RayOptions(replicas=0)
    with pytest.raises(ValueError, match="--max-queued must be >= 1"):
        ray_serve.RayOptions(max_queued=0)


def test_replicas_that_cannot_fit_a_local_ray_are_refused_before_deploying():
    assert ray_serve.check_fits(ray_serve.RayOptions(replicas=2), cpus=2) is None
    assert ray_serve.check_fits(ray_serve.RayOptions(replicas=4, replica_cpus=0.5), cpus=2) is None
    with pytest.raises(ValueError, match=r"3 replica\(s\) x --replica-cpus 1 need 3 CPUs and this machine's Ray has 2"):
        ray_serve.check_fits(ray_serve.RayOptions(replicas=3), cpus=2)
    with pytest.raises(ValueError, match="need 3 CPUs"):
        ray_serve.check_fits(ray_serve.RayOptions(autoscale=(2, 4), replica_cpus=1.5), cpus=2)
    note = ray_serve.check_fits(ray_serve.RayOptions(autoscale=(1, 4)), cpus=2)
    assert note.startswith("note: at most 2 of the 4 replicas fit")
    assert ray_serve.check_fits(ray_serve.RayOptions(autoscale=(1, 4), replica_cpus=0.5), cpus=2) is None


def test_deployment_options_follow_the_serve_config():
    config = ServeConfig(max_batch=8, max_queue=32)
    fixed = ray_serve.deployment_options(config, ray_serve.RayOptions(replicas=3, replica_cpus=0.5))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["max_ongoing_requests"] == 40 and fixed["max_queued_requests"] == 32
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5}
    assert fixed["backpressure_config"].retry_after_s == 1
    auto = ray_serve.deployment_options(config, ray_serve.RayOptions(autoscale=(1, 4), max_ongoing=9))
    assert "num_replicas" not in auto and auto["max_ongoing_requests"] == 9
    assert auto["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}


def test_build_takes_the_config_file_args():
    app = ray_serve.build({"model": "bundled", "replicas": 2, "max_batch": 4})
    assert app is not None
    with pytest.raises(ValueError, match="unknown bertqa.serve.ray args: colour"):
        ray_serve.build({"colour": "blue"})


def test_the_example_config_file_is_what_serve_run_reads_and_builds():
    """examples/ray-serve.yaml (docs/scale-out.md): Ray's schema accepts it, its import path is
    our builder, and the builder, called as `serve run` calls it, gives the options it names."""
    yaml = pytest.importorskip("yaml")
    from pathlib import Path
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema
    from ray._common.utils import import_attr
    path = Path(__file__).resolve().parent.parent / "examples" / "ray-serve.yaml"
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app_config,) = config.applications
    assert app_config.import_path == "bertqa.serve.ray:build" and app_config.route_prefix == "/"
    app = call_user_app_builder_with_args_if_necessary(import_attr(app_config.import_path), app_config.args)
    deployment = app._bound_deployment
    assert deployment.name == ray_serve.APP_NAME and deployment.num_replicas == app_config.args["replicas"]
    assert deployment.max_ongoing_requests == app_config.args["max_queue"] + app_config.args["max_batch"]
    load_kwargs, serve_config = deployment.init_args
    assert load_kwargs == {"model": "bundled", "target": "cpu", "precision": "fp"}
    assert serve_config["max_batch"] == 16 and serve_config["timeout_s"] == 30


def run_asgi(status: int, content_type: bytes, body: bytes, headers=()):
    """What JSONRayErrors sends for an app that answers (status, content_type, body)."""
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), *headers]})
        await send({"type": "http.response.body", "body": body})
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    asyncio.run(JSONRayErrors(app)({"type": "http", "method": "POST", "path": "/v1/answer"}, receive, send))
    start, *bodies = sent
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in bodies)


def test_ray_backpressure_text_becomes_the_json_overloaded_error():
    status, headers, body = run_asgi(503, b"text/plain; charset=utf-8", b"Request dropped due to backpressure",
                                     [(b"retry-after", b"1")])
    assert status == 503 and headers[b"retry-after"] == b"1" and headers[b"content-type"] == b"application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "overloaded" and "backpressure" in error["message"]
    assert json.loads(run_asgi(500, b"text/plain", b"replica died")[2])["error"]["code"] == "internal"


def test_json_and_successful_text_replies_pass_unchanged():
    assert run_asgi(503, b"application/json", b'{"error": {}}')[2] == b'{"error": {}}'
    assert run_asgi(200, b"text/plain; version=0.0.4", b"bertqa_x 1\n")[2] == b"bertqa_x 1\n"


@pytest.mark.parametrize("argv, message", [
    (["serve", "--replicas", "2"], "--replicas, --autoscale and --ray-address need --ray"),
    (["serve", "--ray", "--autoscale", "3:1"], "1 <= MIN <= MAX"),
    (["serve", "--ray", "--autoscale", "many"], "MIN:MAX"),
    (["batch", "--data", "x.jsonl"], "needs --write-predictions"),
    (["eval", "--ray", "--data", "missing.json"], "missing.json does not exist"),
])
def test_cli_refusals_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertqa: error: ") and message in err and err.count("\n") == 1, err
