"""The `healthcomp` command: serve, token, demo."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from healthcomp.core.auth import SERVICE, USER, load_or_create_dev_secret, mint_token
from healthcomp.core.logs import configure
from healthcomp.core.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "workers", "data_dir", "server"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    try:
        base = Settings()
    except ValidationError as exc:
        # One line per setting refused, named as the environment spells it; never the
        # values (a secret may be among them).
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"  {name}: {message}" if name else f"  {message}")
        sys.exit("healthcomp: the configuration is invalid:\n" + "\n".join(lines))
    return base.model_copy(update=overrides) if overrides else base


def _secret(settings: Settings) -> str:
    """The key `serve` verifies with, resolved the same way (SUPABASE_JWT_SECRET, else
    the development secret of the data directory); says on stderr which it is."""
    if settings.supabase_jwt_secret:
        print("healthcomp token: signed with SUPABASE_JWT_SECRET", file=sys.stderr)
        return settings.supabase_jwt_secret
    if settings.is_production:
        sys.exit("healthcomp: no SUPABASE_JWT_SECRET configured; cannot mint tokens")
    if settings.supabase_url:
        # The server then verifies with the project's key set and makes no development
        # secret: a token signed with one would be refused.
        sys.exit(
            "healthcomp token: SUPABASE_URL is set and SUPABASE_JWT_SECRET is not, so the "
            "server accepts only tokens from your Supabase project (sign in there), or set "
            "SUPABASE_JWT_SECRET to mint HS256 tokens here"
        )
    path = (settings.data_dir / "jwt-secret").resolve()
    existed = path.exists()
    secret = load_or_create_dev_secret(settings.data_dir)
    if existed:
        print(f"healthcomp token: signed with the development secret {path}", file=sys.stderr)
    else:
        print(
            f"healthcomp token: there was no development secret in {path.parent}; made one "
            f"({path}). Only a server using this data directory (--data-dir or HC_DATA_DIR; "
            "`serve` uses ./data by default) accepts the token.",
            file=sys.stderr,
        )
    return secret


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    user = None if args.role == SERVICE else args.user
    if args.role != SERVICE and not user:
        sys.exit("healthcomp token: --user is required unless --role service_role")
    print(
        mint_token(
            _secret(settings),
            user_id=user,
            role=args.role,
            name=args.name,
            email=args.email,
            ttl_seconds=args.ttl,
            issuer=settings.expected_issuer,
        )
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    # Before anything imports the metrics (the client library picks its mode then).
    made = metrics_directory() if settings.metrics_mode != "off" else None
    try:
        return _serve(args, settings)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from healthcomp.core.embedded import EMBEDDED_URL_ENV, EmbeddedRedis, start_or_share

    reload_dirs: list[str] | None = None
    if getattr(args, "reload", False):
        if settings.is_production:
            sys.exit("healthcomp: --reload is for development (ENVIRONMENT=production is set)")
        package = Path(__file__).resolve().parent
        reload_dirs = [str(d.resolve()) for d in args.reload_dirs or [package]]
        settings = settings.model_copy(update={"server": "uvicorn", "workers": 1})
    # Make the flags visible to the workers, which build their own Settings.
    os.environ["PORT"] = str(settings.port)
    os.environ["HC_DATA_DIR"] = str(settings.data_dir)
    configure(settings.log_level, json=settings.is_production)
    embedded: EmbeddedRedis | None = None
    if not settings.redis_url:
        # Owner of the data directory's server, or a standby that takes it over (at the
        # same URL, which the workers keep) when the process owning it goes.
        try:
            os.environ[EMBEDDED_URL_ENV], embedded = start_or_share(
                settings.data_dir, fsync=settings.embedded_fsync
            )
        except RuntimeError as exc:
            sys.exit(f"healthcomp: {exc}")
    # Fail fast, in the parent, on a configuration that cannot verify tokens.
    from healthcomp.core.auth import Authenticator, KeySourceMissing

    try:
        Authenticator(settings)
    except KeySourceMissing as exc:
        if embedded is not None:
            embedded.stop()
        sys.exit(f"healthcomp: {exc}")
    if args.demo or settings.demo_on_start:
        from healthcomp.demo import seed_demo_sync

        seed_demo_sync(settings, print_token=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _raise_open_files_limit()
    try:
        if settings.server == "granian":
            _granian(settings)
        else:
            _uvicorn(settings, reload_dirs)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_directory() -> Path | None:
    """The directory where every process of this server keeps its counters, for
    `/metrics` to add up (prometheus-client's multiprocess mode): the one
    `PROMETHEUS_MULTIPROC_DIR` names, emptied (counters start with the server), else a
    new temporary one, returned for removal on the way out.

    prometheus-client decides on import whether it counts into files, so this runs
    before anything in this process imports it (`import healthcomp.cli` does not; a
    test checks it), and the workers inherit the variable."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its directory was set")
    given = os.environ.get(METRICS_DIR_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.db"):
            old.unlink()
        return None
    made = Path(tempfile.mkdtemp(prefix="healthcomp-metrics-"))
    os.environ[METRICS_DIR_ENV] = str(made)
    return made


APP_FACTORY = "healthcomp.app:serve_app"


def _raise_open_files_limit() -> None:
    """Each WebSocket is a file descriptor: take the hard limit the system allows (the
    soft default, often 1,024, would refuse connections long before memory runs out)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1_048_576)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            logging.getLogger("healthcomp").warning("could not raise the open files limit")


def _uvicorn(settings: Settings, reload_dirs: list[str] | None = None) -> None:
    """uvicorn; with `reload_dirs`, a supervisor that restarts the one worker when a
    Python file under them changes (`healthcomp serve --reload`)."""
    import uvicorn

    from healthcomp.uvicorn_server import HttpProtocol, WebSocketProtocol

    heartbeat = settings.ws_heartbeat_seconds
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        # Our logging (core/logs.py: JSON in production, request ids, our own access
        # line per request) takes uvicorn's records too.
        log_config=None,
        # The client's address behind proxies is core.proxies' rule (HC_TRUSTED_PROXIES);
        # uvicorn's own would trust X-Forwarded-For from any loopback peer.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        # A request's head bounded in size and time (uvicorn_server.HttpProtocol), and
        # idle keep-alive connections closed.
        http=HttpProtocol,
        timeout_keep_alive=settings.keep_alive_seconds,
        # WebSockets: the sans-I/O implementation (closing with 1001 on shutdown), no
        # per-message compression (a zlib context per socket would be most of an idle
        # connection's memory), protocol pings that drop a peer silent for a
        # heartbeat, client frames kept small.
        ws=WebSocketProtocol,
        ws_per_message_deflate=False,
        ws_ping_interval=heartbeat,
        ws_ping_timeout=heartbeat,
        ws_max_size=64 * 1024,
        reload=reload_dirs is not None,
        reload_dirs=reload_dirs,
    )


def _granian(settings: Settings) -> None:
    """Granian: HTTP parsing and socket writes in Rust threads, the app on uvloop."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    level = "debug" if settings.log_level == "trace" else settings.log_level
    Granian(
        APP_FACTORY,
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        websockets=True,
        # HTTP/1.1 only: with protocol detection ("auto") a connection that never sends
        # a byte has no timer at all. Here the head's time limit runs from the
        # connection (and from each response: it is also the keep-alive idle limit),
        # and a head larger than the read buffer (our head bound, give or take one
        # read) is answered 431.
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(
            header_read_timeout=int(settings.header_timeout_seconds * 1000),
            max_buffer_size=settings.max_header_bytes,
        ),
        log_level=LogLevels(level),
        log_access=False,  # our own access line (core/logs.py)
    ).serve()


def cmd_payouts(args: argparse.Namespace) -> int:
    """The example payment worker (healthcomp.prizes.worker)."""
    import asyncio

    from healthcomp.prizes import worker

    settings = _settings(args)
    if settings.is_production and not args.provider:
        # The demo provider records every payout as paid and pays nobody: in
        # production that would mark real prizes paid.
        sys.exit(
            "healthcomp payouts: give --provider module:function in production; the demo "
            "provider records payouts as paid without paying anyone (docs/PRIZES.md)"
        )
    configure(settings.log_level, json=settings.is_production)
    totals = asyncio.run(
        worker.run_standalone(
            settings,
            provider=args.provider,
            consumer=args.consumer,
            once=args.once,
            interval=args.interval,
        )
    )
    print(", ".join(f"{n} {what}" for what, n in sorted(totals.items())) or "nothing to pay")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from healthcomp.demo import seed_demo_sync

    seed_demo_sync(_settings(args), print_token=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="healthcomp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API (embedded Redis unless REDIS_URL)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument(
        "--server", choices=["granian", "uvicorn"], help="the HTTP server (default uvicorn)"
    )
    serve.add_argument("--data-dir", dest="data_dir", type=Path)
    serve.add_argument("--demo", action="store_true", help="seed the demo competition first")
    serve.add_argument(
        "--reload",
        action="store_true",
        help="development: restart the server when the code changes (uvicorn, one worker)",
    )
    serve.add_argument(
        "--reload-dir",
        dest="reload_dirs",
        action="append",
        type=Path,
        help="with --reload, a directory to watch (repeatable; default: the package's)",
    )
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="mint a development token (HS256)")
    token.add_argument("--user", help="the user id (`sub`)")
    token.add_argument("--role", default=USER, choices=[USER, SERVICE, "anon"])
    token.add_argument("--name", help="user_metadata.full_name")
    token.add_argument("--email")
    token.add_argument("--ttl", type=int, default=7 * 24 * 3600, help="seconds (default 7 days)")
    token.add_argument("--data-dir", dest="data_dir", type=Path)
    token.set_defaults(func=cmd_token)

    payouts = sub.add_parser(
        "payouts", help="the example payment worker: pay what the payout outboxes hold"
    )
    payouts.add_argument("--once", action="store_true", help="one pass, then exit")
    payouts.add_argument("--interval", type=float, default=5.0, help="seconds between passes")
    payouts.add_argument("--consumer", default="worker-1", help="this worker's name in the group")
    payouts.add_argument(
        "--provider", help="module:function paying a line (default: the demo, which pays nobody)"
    )
    payouts.add_argument("--data-dir", dest="data_dir", type=Path)
    payouts.set_defaults(func=cmd_payouts)

    demo = sub.add_parser("demo", help="seed the demo competition and print a token")
    demo.add_argument("--data-dir", dest="data_dir", type=Path)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
