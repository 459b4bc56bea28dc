"""The ``litellm-exporter`` command."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence

import psycopg_pool
import yaml

from . import __version__, listen, logs, schema, webconfig
from .app import Exporter, stop_on_signals
from .config import Config, ConfigError
from .config_file import DSN_VARIABLES, ENVIRONMENT, REDACTED, resolve, to_document
from .config_schema import DEFAULT_LISTEN

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2

log = logging.getLogger(__name__)


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litellm-exporter",
        usage="%(prog)s [options]\n       %(prog)s demo [demo options]  (litellm-exporter demo --help)",
        description="Prometheus exporter for the LiteLLM proxy's PostgreSQL database.",
        epilog="The database: --dsn, else database.dsn in --config, else "
        + ", else ".join(f"${name}" for name in DSN_VARIABLES)
        + ". Environment: "
        + ", ".join(f"{name} ({flag})" for name, (flag, _) in ENVIRONMENT.items())
        + ". litellm-exporter demo --help: run against a scratch database filled with generated traffic.",
    )
    parser.add_argument(
        "--dsn",
        metavar="URL",
        help="the LiteLLM database, postgresql://USER:PASSWORD@HOST:PORT/DB (overrides database.dsn and "
        + " and ".join(DSN_VARIABLES)
        + ")",
    )
    parser.add_argument(
        "--config", metavar="PATH", help="configuration file (default: none; every setting has a built-in default)"
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address to serve /metrics on (default: {DEFAULT_LISTEN}; :PORT for every interface;"
        " overrides web.listen)",
    )
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
        "--print-config",
        action="store_true",
        help="print the effective configuration as YAML that --config accepts (the password redacted), then exit",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="log level (default: info)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="log format (default: text)")
    parser.add_argument("--version", action="version", version=f"litellm-exporter {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from .demo import command

        return command.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        names = _from_environment(args, os.environ)
    except ConfigError as exc:
        return _config_error(exc)
    written_dsn = ""

    def load_config() -> Config:
        """The file (if any) with the flags applied, its web config file checked too; at start
        and on reload."""
        nonlocal written_dsn
        config, written_dsn = resolve(args.config, dsn=args.dsn)
        config = config.with_overrides(
            listen=args.listen, poll_interval=args.poll_interval, web_config=args.web_config, names=names
        )
        if config.web.config_file:
            webconfig.load(config.web.config_file)
        return config

    try:
        config = load_config()
    except ConfigError as exc:
        return _config_error(exc)
    if args.print_config:
        sys.stdout.write(_printed(config, written_dsn))
        return EXIT_OK
    if args.check_config:
        print(f"{args.config or 'the built-in defaults'}: configuration is valid")
        return EXIT_OK

    logs.setup(args.log_level or "info", args.log_format or "text")

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
        return _config_error(exc)
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
    except listen.ListenError as exc:
        print(f"litellm-exporter: {exc}", file=sys.stderr)
        return EXIT_RUNTIME

    scheme = "https" if exporter.security.ssl_context else "http"
    where = schema.format_listen(config.web.host, exporter.port)
    log.info("serving on %s://%s/metrics, reading %s", scheme, where, exporter.db.display_dsn)
    while not stop.wait(0.2):
        if reload_requested.is_set():
            reload_requested.clear()
            reload()
    log.info("shutting down")
    exporter.stop()
    return EXIT_OK


def _config_error(exc: ConfigError) -> int:
    for problem in exc.problems:
        print(f"litellm-exporter: {problem}", file=sys.stderr)
    return EXIT_CONFIG


def _from_environment(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """Fill the flags not given from their LITELLM_EXPORTER_* variables; returns, by flag, the
    variable each value came from, so that a problem names what the user set."""
    names = {}
    choices = {"--log-level": LOG_LEVELS, "--log-format": LOG_FORMATS}
    for variable, (flag, _) in ENVIRONMENT.items():
        attribute = flag.removeprefix("--").replace("-", "_")
        value = environ.get(variable)
        if value is None or getattr(args, attribute) is not None:
            continue
        if flag in choices and value not in choices[flag]:
            raise ConfigError([f"{variable}: expected one of {', '.join(choices[flag])}, got {value!r}"])
        setattr(args, attribute, value)
        names[flag] = variable
    return names


def _printed(config: Config, dsn: str) -> str:
    text = yaml.safe_dump(to_document(config, dsn), sort_keys=False, allow_unicode=True)
    header = "# litellm-exporter's effective configuration (litellm-exporter --print-config).\n"
    if REDACTED in text:
        header += f"# A password is {REDACTED}: put it back, or write os.environ/NAME to read it from a variable.\n"
    return header + text


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
