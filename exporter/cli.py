"""The ``litellm-exporter`` command."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from collections.abc import Sequence

import psycopg_pool

from . import __version__, logs, webconfig
from .app import Exporter, stop_on_signals
from .config import Config, ConfigError, load

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litellm-exporter",
        description="Prometheus exporter for the LiteLLM proxy's PostgreSQL database.",
        epilog="litellm-exporter demo --help: run against a scratch database filled with generated traffic.",
    )
    parser.add_argument(
        "--config", default="config.yaml", metavar="PATH", help="configuration file (default: %(default)s)"
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to serve /metrics on (overrides web.listen)")
    parser.add_argument(
        "--poll-interval",
        metavar="SECONDS",
        help="poll interval of every collector, in seconds or with a unit such as 5s (overrides the config)",
    )
    parser.add_argument(
        "--web-config",
        metavar="PATH",
        help="an exporter-toolkit web config file: TLS and basic auth (overrides web.config_file)",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration, print problems, exit 0 or 2"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level (default: %(default)s)",
    )
    parser.add_argument("--log-format", default="text", choices=("text", "json"), help="log format (default: text)")
    parser.add_argument("--version", action="version", version=f"litellm-exporter {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from .demo import command

        return command.main(argv[1:])
    args = build_parser().parse_args(argv)

    def load_config() -> Config:
        """The file with the flags applied, its web config file checked too; at start and on reload."""
        config = load(args.config).with_overrides(
            listen=args.listen, poll_interval=args.poll_interval, web_config=args.web_config
        )
        if config.web.config_file:
            webconfig.load(config.web.config_file)
        return config

    try:
        config = load_config()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"litellm-exporter: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"{args.config}: configuration is valid")
        return EXIT_OK

    logs.setup(args.log_level, args.log_format)

    def reload() -> tuple[bool, str]:
        try:
            ok, message = exporter.reload(load_config())
        except ConfigError as exc:
            ok, message = False, "; ".join(exc.problems)
        (log.info if ok else log.error)("reload: %s", message if ok else f"kept the running configuration: {message}")
        return ok, message

    _tune_interpreter()
    # Before anything listens: a SIGTERM that came between the two would kill the process.
    stop = stop_on_signals()
    reload_requested = threading.Event()
    signal.signal(signal.SIGHUP, lambda signum, frame: reload_requested.set())
    try:
        exporter = Exporter(config)
    except ConfigError as exc:  # the web config file changed since it was checked above
        for problem in exc.problems:
            print(f"litellm-exporter: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        exporter.start(reload=reload)
    except psycopg_pool.PoolTimeout:
        cause = exporter.db.unreachable() or f"no connection within {config.database.connect_timeout:g}s"
        print(
            f"litellm-exporter: database.is_required is true and the database at {exporter.db.display_dsn}"
            f" cannot be reached: {cause}",
            file=sys.stderr,
        )
        return EXIT_RUNTIME
    except OSError as exc:
        print(
            f"litellm-exporter: cannot listen on {config.web.host}:{config.web.port}: {exc.strerror}", file=sys.stderr
        )
        return EXIT_RUNTIME

    scheme = "https" if exporter.security.ssl_context else "http"
    log.info(
        "serving on %s://%s:%d/metrics, reading %s", scheme, config.web.host, exporter.port, exporter.db.display_dsn
    )
    while not stop.wait(0.2):
        if reload_requested.is_set():
            reload_requested.clear()
            reload()
    log.info("shutting down")
    exporter.stop()
    return EXIT_OK


def _tune_interpreter() -> None:
    """Keep scrapes quick while a poll's Python work runs on another thread.

    A poll allocates tens of thousands of small tuples; with the default thresholds the garbage
    collector runs full passes every few polls, each holding the interpreter for 50 to 90 ms. The
    exporter's data holds no reference cycles, and what does (a failed poll's traceback) dies
    young, in the first two generations, which still run; so the young generation is collected
    far less often, the oldest in effect never, and what start-up loaded is never scanned. And a
    waiting thread (a scrape) gets the interpreter after 1 ms rather than 5."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1_000_000)
    sys.setswitchinterval(0.001)


if __name__ == "__main__":
    sys.exit(main())
