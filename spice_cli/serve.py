"""``spice serve``: ``SpiceCorpus-v0`` over OpenEnv's protocol on a host and port."""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from spice_cli.common import UsageError, add_game_arguments, one_line


def _free(host: str, port: int) -> None:
    """Refuse a port that cannot be bound, before the corpus loads."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose "
                         "another --port (or --host)") from None


def cmd_serve(args: argparse.Namespace) -> int:
    """spice serve: serve the environment with OpenEnv's HTTP and WebSocket protocol."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_sessions < 1:
        raise UsageError(f"--max-sessions must be at least 1, got {args.max_sessions}")
    try:
        import uvicorn

        from spice_env.integrations.openenv import make_app
    except ImportError as exc:
        raise UsageError(f"spice serve needs openenv-core (pip install 'spice-env[openenv]'): "
                         f"{exc}") from None
    _free(args.host, args.port)
    try:
        app = make_app(args.corpus, max_sessions=args.max_sessions,
                       group_size=args.group_size, prompt_style=args.prompt_style,
                       task_formats=args.task_formats, challenger_reward=args.challenger_reward,
                       format_choice=args.format_choice, label_source=args.label_source)
    except (OSError, ValueError) as exc:
        raise UsageError(one_line(exc)) from None
    print(f"serving SpiceCorpus-v0 with OpenEnv's protocol on http://{args.host}:{args.port} "
          f"(sessions at ws://{args.host}:{args.port}/ws, at most {args.max_sessions})",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        app.state.spice_verifier.close()
    return 0


def add_serve_command(command: Any) -> None:
    """Register ``spice serve`` (``command(name, help)`` makes a sub-parser)."""
    serve: argparse.ArgumentParser = command(
        "serve", "serve SpiceCorpus-v0 with OpenEnv's protocol (one episode at a time per "
        "WebSocket session)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on")
    add_game_arguments(serve, selector=True)
    serve.add_argument("--label-source", choices=["gold", "majority"], default="gold",
                       help="judge answers against the gold answer or their majority")
    serve.add_argument("--max-sessions", type=int, default=8,
                       help="WebSocket sessions served at once")
    serve.add_argument("--log-level", default="warning",
                       choices=["critical", "error", "warning", "info", "debug"],
                       help="the server's log level")
    serve.set_defaults(func=cmd_serve)
