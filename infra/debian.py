"""Debian packages the project needs: install the missing ones with apt-get, showing progress.

``python -m infra.debian SPEC ...`` (what ``scripts/ensure-deb`` runs). A SPEC is
``PATH:PACKAGE`` (installed when PATH exists: the fast check for a package's
main file) or a bare ``PACKAGE`` (asked of dpkg, for a library whose path
depends on the architecture). Needs root, or sudo without a password.

Stdlib only, so it can run before the project's dependencies are installed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

# apt-get's own output is hundreds of lines for a browser; a line every this many
# percent says it is alive, and the full output is shown only if it fails.
_PROGRESS_STEP_PERCENT = 20
_ERROR_TAIL_LINES = 30


class InstallError(RuntimeError):
    """apt-get could not install a package we need."""


def missing(specs: Sequence[str]) -> list[str]:
    """The packages of ``specs`` that are not installed (see the module docstring)."""
    packages = []
    for spec in specs:
        path, sep, package = spec.rpartition(":")
        if sep and Path(path).exists():
            continue
        if not sep and _dpkg_installed(package):
            continue
        packages.append(package)
    return packages


def _dpkg_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.startswith("ii")


def ensure(specs: Sequence[str]) -> None:
    """Install the missing packages of ``specs``; raises InstallError if apt-get fails."""
    packages = missing(specs)
    if not packages:
        return
    apt = shutil.which("apt-get")
    if apt is None:
        raise InstallError(f"{', '.join(packages)} missing and apt-get is not available")
    sudo = [] if os.geteuid() == 0 or not shutil.which("sudo") else ["sudo", "-n"]
    logger.info("installing Debian packages with apt-get: %s", " ".join(packages))
    _apt(sudo, apt, ["update"], "updating package lists")
    _apt(sudo, apt, ["install", "-y", "--no-install-recommends", *packages], "installing")
    still = missing(specs)
    if still:
        raise InstallError(f"apt-get finished but {', '.join(still)} is still missing")


def _apt(sudo: list[str], apt: str, args: list[str], doing: str) -> None:
    """Run apt-get, logging its machine-readable progress (APT::Status-Fd) in steps."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # apt-get writes status lines to fd 3, our pipe, and everything else (its output and
    # dpkg's) to a file shown if it fails. The shell moves the descriptors inside sudo,
    # which closes any we pass; apt marks the status fd close-on-exec, so it must not be
    # stdout, which dpkg's maintainer scripts write to.
    shell = ["sh", "-c", 'exec "$@" 3>&1 1>&2', "sh"]
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            [*sudo, *shell, apt, "-q", "-o", "APT::Status-Fd=3", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=output,
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        next_percent = {"dlstatus": 0.0, "pmstatus": 0.0}  # downloading, then unpacking
        for line in proc.stdout:
            # "dlstatus:3:42.5:Retrieving file 3 of 40" / "pmstatus:pkg:60.0:Unpacking pkg"
            kind, _, rest = line.rstrip("\n").partition(":")
            percent_text, _, what = rest.partition(":")[2].partition(":")
            try:
                percent = float(percent_text)
            except ValueError:
                continue
            if kind in next_percent and percent >= next_percent[kind]:
                logger.info("apt-get: %s %3.0f%% %s", doing, percent, what)
                next_percent[kind] = percent + _PROGRESS_STEP_PERCENT
        if proc.wait() != 0:
            output.seek(0)
            lines = output.read().decode(errors="replace").splitlines()
            tail = "\n".join(lines[-_ERROR_TAIL_LINES:])
            command = " ".join(["apt-get", *args])
            raise InstallError(f"{command} failed with code {proc.returncode}:\n{tail}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    specs = sys.argv[1:] if argv is None else argv
    if not specs or any(s.startswith("-") for s in specs):
        print("usage: python -m infra.debian PATH:PACKAGE|PACKAGE ...", file=sys.stderr)
        return 2
    try:
        ensure(specs)
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
