#!/usr/bin/env python3
"""Builds the legion-rs wheel: the `legion_rs` extension module plus the `legion` CLI.

maturin builds one crate per wheel (PyO3/maturin#368), so the CLI binary is built first with
cargo, copied to python/legion_rs/bin/, and maturin then packs it with the extension; the
wheel's `legion` entry point runs it.

  pip install maturin
  python python/build_wheel.py                      # release build -> target/wheels/
  python python/build_wheel.py --profile dev        # faster build (dependencies still -O3)
  python python/build_wheel.py --cli target/debug/legion --profile dev   # reuse a built CLI

Then `pip install target/wheels/legion_rs-*.whl`. CARGO_TARGET_DIR is honoured.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGED_CLI = ROOT / "python" / "legion_rs" / "bin" / ("legion.exe" if os.name == "nt" else "legion")


def run(command):
    print("+", " ".join(str(c) for c in command), file=sys.stderr, flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="release", help="cargo profile of both builds (release, dev, ...)")
    parser.add_argument("--cli", type=Path, help="an already built `legion` binary to bundle instead of building one")
    parser.add_argument("--out", type=Path, help="wheel folder (default <target dir>/wheels)")
    args = parser.parse_args()

    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    cli = args.cli
    if cli is None:
        run(["cargo", "build", "--locked", "--profile", args.profile, "-p", "legion-cli", "--bin", "legion"])
        profile_dir = "debug" if args.profile in ("dev", "test") else args.profile
        cli = target_dir / profile_dir / STAGED_CLI.name
    if not cli.is_file():
        sys.exit(f"build_wheel: the legion binary {cli} does not exist")
    STAGED_CLI.parent.mkdir(exist_ok=True)
    shutil.copy2(cli, STAGED_CLI)
    STAGED_CLI.chmod(0o755)

    out = args.out or target_dir / "wheels"
    maturin = shutil.which("maturin") or sys.exit("build_wheel: maturin is not installed (pip install maturin)")
    run([maturin, "build", "--locked", "--profile", args.profile, "--out", str(out)])


if __name__ == "__main__":
    main()
