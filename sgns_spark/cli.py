"""What every job shares: its arguments, its session, and how a user error ends it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pyspark.sql import SparkSession

from sgns_spark.config import Config, load_config
from sgns_spark.errors import UserError
from sgns_spark.session import build_session
from sgns_spark.storage import Storage

EXIT_USER_ERROR = 2


def job_arguments(description: str, needs_input: bool = False) -> argparse.ArgumentParser:
    """Return the argument parser every job starts from."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", required=True, help="run root: local path or Hadoop URI")
    parser.add_argument("--config", help="TOML config file (see conf/default.toml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one setting; repeatable",
    )
    if needs_input:
        parser.add_argument("--input", required=True, help="text corpus: file, directory or glob")
    return parser


def run_job(
    stage: str,
    arguments: argparse.Namespace,
    body: Callable[[SparkSession, Config, Storage], None],
) -> None:
    """Load the config, build the session, run `body`; a UserError ends with one line, exit 2."""
    try:
        config = load_config(arguments.config, arguments.overrides)
        spark = build_session(config, stage)
        body(spark, config, Storage(spark, arguments.root))
    except UserError as error:
        print(f"sgns-spark {stage}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
