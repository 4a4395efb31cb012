"""The ``legion`` command of the wheel: runs the ``legion`` executable bundled in the package.

The executable is the Rust CLI (crates/legion-cli), copied into ``legion_rs/bin/`` by
``python/build_wheel.py`` before maturin packs the wheel. On POSIX the process is replaced
(``os.execv``), so exit codes, signals and terminal handling are the binary's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli_path() -> Path:
    """Path of the bundled ``legion`` executable.

    Raises:
        FileNotFoundError: the wheel was built without it (plain ``maturin build`` instead of
            ``python/build_wheel.py``).
    """
    name = "legion.exe" if os.name == "nt" else "legion"
    path = Path(__file__).resolve().parent / "bin" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: this legion_rs wheel was built without the `legion` executable; "
            "build it with `python python/build_wheel.py` (README, 'From Python')"
        )
    return path


def main() -> None:
    """Entry point of the ``legion`` console script."""
    try:
        path = cli_path()
    except FileNotFoundError as error:
        print(f"legion: {error}", file=sys.stderr)
        sys.exit(127)
    argv = [str(path), *sys.argv[1:]]
    if os.name == "nt":
        sys.exit(subprocess.call(argv))
    os.execv(argv[0], argv)
