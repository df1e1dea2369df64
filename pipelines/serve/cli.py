"""`python -m pipelines serve --model MODEL [--host 127.0.0.1] [--port 8000] [--api-key KEY] …`

Serves MODEL (a checkpoint folder, a preset, or models:/NAME@ALIAS | models:/NAME/VERSION with
--tracking-uri) behind the OpenAI-compatible API on Ray Serve. MODEL is checked first (a
registered version is downloaded and verified; a failing one is refused with the reason, exit
status 2). Without RAY_ADDRESS / --ray-address a private Ray cluster is started on 127.0.0.1
with its own temporary directory, and everything (Serve, its HTTP proxy, the replicas, Ray) is
stopped on Ctrl-C or SIGTERM: no process and no listening port is left behind. With a cluster
address, the application is deployed there and deleted again on exit.

`--backend inprocess` runs the same API and engine in this one process (no Ray; for debugging,
and to measure what Ray Serve adds).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any

import yaml

from pipelines.core.signals import unwind_on_sigterm
from pipelines.serve.config import ServeSettings, deep_merge, nested

logger = logging.getLogger("pipelines.serve")

FLAGS: dict[str, tuple[str, Any, str]] = {
    # flag: (settings path, type, help)
    "--model": ("model.model", str, "Checkpoint folder, preset name, or models:/NAME@ALIAS."),
    "--design": ("model.design", str, "vlora or input_space (presets; checked for checkpoints)."),
    "--tracking-uri": ("model.tracking_uri", str, "MLflow registry URI for models:/ MODEL."),
    "--served-model-name": ("model.served_model_name", str, "The id clients send as `model`."),
    "--device": ("model.device", str, "auto, cpu or cuda."),
    "--dtype": ("model.dtype", str, "auto, float32, bfloat16 or float16."),
    "--host": ("http.host", str, "Listen address (default 127.0.0.1)."),
    "--port": ("http.port", int, "Listen port (default 8000)."),
    "--api-key": ("api.api_key", str, "Bearer key required on /v1 routes."),
    "--api-key-env": ("api.api_key_env", str, "Environment variable holding the bearer key."),
    "--max-batch-size": ("llm.engine.max_batch_size", int, "Requests decoded together."),
    "--llm-replicas": ("llm.num_replicas", int, "Generation replicas."),
    "--encoder-replicas": ("encoder.num_replicas", int, "Image encoder replicas."),
    "--ingress-replicas": ("ingress.num_replicas", int, "HTTP ingress replicas."),
    "--encoder-batch-size": ("encoder.max_batch_size", int, "Images per encoder forward."),
    "--llm-cpus": ("llm.num_cpus", float, "Logical CPUs per generation replica."),
    "--llm-gpus": ("llm.num_gpus", float, "GPUs per generation replica."),
    "--encoder-gpus": ("encoder.num_gpus", float, "GPUs per encoder replica."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines serve",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, (path, kind, help_text) in FLAGS.items():
        parser.add_argument(flag, dest=path, type=kind, help=help_text)
    parser.add_argument(
        "--allow-image-urls",
        dest="api.allow_image_urls",
        action="store_const",
        const=True,
        help="Fetch http(s) image_url parts (size and time limits: api.max_image_bytes, "
        "api.image_url_timeout_s).",
    )
    parser.add_argument("--config", help="YAML file of ServeSettings (flags override it).")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="Any ServeSettings field, e.g. llm.engine.max_waiting=64 (YAML values).",
    )
    parser.add_argument(
        "--backend",
        choices=["ray", "inprocess"],
        default="ray",
        help="ray (Ray Serve deployments, default) or inprocess (one process, no Ray).",
    )
    parser.add_argument("--ray-address", help="Deploy to this Ray cluster (default $RAY_ADDRESS).")
    parser.add_argument(
        "--num-cpus", type=int, help="Logical CPUs of the private local Ray cluster."
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="Log level of Serve and the replicas."
    )
    return parser


def settings_from_cli(args: argparse.Namespace) -> ServeSettings:
    data: dict[str, Any] = {}
    if args.config:
        with open(args.config) as handle:
            data = yaml.safe_load(handle) or {}
    for override in args.overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"--set {override}: expected SECTION.FIELD=VALUE")
        data = deep_merge(data, nested({key.strip(): yaml.safe_load(value)}))
    flags = {path: value for path, value in vars(args).items() if "." in path and value is not None}
    data = deep_merge(data, nested(flags))
    return ServeSettings.model_validate(data)


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _start_local_ray(num_cpus: int | None, temp_dir: str) -> None:
    import ray

    from pipelines.core.ray_cluster import QUIET_HOOK, _bind_local_cluster_to_loopback, worker_env

    _bind_local_cluster_to_loopback()
    cpus = num_cpus or max(4, 2 * (os.cpu_count() or 1))
    ray.init(
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        include_dashboard=False,
        num_cpus=cpus,
        object_store_memory=512 * 2**20,
        runtime_env={"env_vars": worker_env(), "worker_process_setup_hook": QUIET_HOOK},
        log_to_driver=True,
        logging_level=logging.WARNING,
    )


def serve_on_ray(settings: ServeSettings, resolved, args: argparse.Namespace) -> None:
    import ray
    from ray import serve

    from pipelines.serve.app import build_application

    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    temp_dir = None
    try:
        if address:
            from pipelines.core.ray_cluster import join_cluster

            join_cluster(address)
        else:
            temp_dir = tempfile.mkdtemp(prefix="vlora-serve-", dir="/tmp")
            _start_local_ray(args.num_cpus, temp_dir)
        # ray.init replaces the SIGTERM handler with its core worker's failure handler, which
        # arms a 3 s alarm that kills the process mid-shutdown (orphaning the replicas):
        # SIGTERM unwinds through the `finally` below instead, like Ctrl-C.
        unwind_on_sigterm()
        serve.start(
            http_options={
                "host": settings.http.host,
                "port": settings.http.port,
                "request_timeout_s": settings.api.request_timeout_s + 30,
            },
            logging_config={"log_level": args.log_level, "enable_access_log": False},
        )
        serve.run(
            build_application(settings, resolved),
            name=settings.app_name,
            route_prefix=settings.route_prefix,
            logging_config={"log_level": args.log_level, "enable_access_log": False},
        )
        _announce(settings, resolved)
        while True:
            time.sleep(3600)
    finally:
        _ignore_signals()  # a second Ctrl-C must not cut the shutdown short
        with contextlib.suppress(Exception):
            if address:
                serve.delete(settings.app_name)
            else:
                serve.shutdown()
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        print("stopped", flush=True)


def serve_in_process(settings: ServeSettings, resolved) -> None:
    import torch
    import uvicorn

    from pipelines.serve.api import InProcessBackend, create_app
    from pipelines.serve.chat_server import ChatServer
    from pipelines.serve.model_source import load_model

    torch.set_num_threads(settings.llm.torch_threads or max(1, int(settings.llm.num_cpus)))
    model = load_model(resolved, settings.model)
    llm = settings.llm
    server = ChatServer(model, resolved, llm.engine, int(llm.cache_mb * 2**20))
    app = create_app(InProcessBackend(server), settings.api)
    config = uvicorn.Config(
        app, host=settings.http.host, port=settings.http.port, log_level="warning", access_log=False
    )
    try:
        _announce(settings, resolved)
        uvicorn.Server(config).run()  # returns on SIGINT / SIGTERM (uvicorn's handlers)
    finally:
        server.shutdown()
        print("stopped", flush=True)


def _announce(settings: ServeSettings, resolved) -> None:
    print(
        f"serving '{resolved.served_name}' ({resolved.design}, {resolved.version}) at "
        f"http://{settings.http.host}:{settings.http.port}/v1 — Ctrl-C to stop",
        flush=True,
    )


def _ignore_signals() -> None:
    signal.alarm(0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        with contextlib.suppress(ValueError):
            signal.signal(sig, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    from pipelines.serve.model_source import ModelSourceError, resolve_model

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from_cli(args)
        resolved = resolve_model(settings.model, verify=True)
    except (ValueError, FileNotFoundError, ModelSourceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not port_is_free(settings.http.host, settings.http.port):
        print(
            f"error: port {settings.http.port} on {settings.http.host} is in use", file=sys.stderr
        )
        return 2
    try:
        if args.backend == "inprocess":
            serve_in_process(settings, resolved)
        else:
            serve_on_ray(settings, resolved, args)
    except KeyboardInterrupt:
        pass
    except SystemExit as stop:  # SIGTERM (pipelines.core.signals): a clean stop
        return 0 if stop.code == 128 + signal.SIGTERM else int(stop.code or 0)
    return 0
