"""The wheel as installed: the `legion` command on PATH, the GIL released during long work."""

import shutil
import subprocess
import threading
import time

import numpy as np

import legion_rs


def test_legion_cli_is_on_path_and_runs():
    legion = shutil.which("legion")
    assert legion is not None
    out = subprocess.run([legion, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "eval" in out.stdout and "train" in out.stdout
    assert legion_rs.cli_path().is_file()
    bad = subprocess.run([legion, "no-such-command"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "no-such-command" in bad.stderr


def largest_gap_while(work):
    """Runs `work` in a thread and ticks in this one meanwhile; returns (work seconds, largest
    gap between two ticks). With the GIL held by `work`, this thread cannot tick until it ends."""
    started = threading.Event()
    done = threading.Event()

    def run():
        started.set()
        work()
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()
    begin = last = time.perf_counter()
    gap = 0.0
    while not done.is_set():
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    thread.join()
    return time.perf_counter() - begin, gap


def test_long_calls_release_the_gil():
    # ROUGE-L's LCS is quadratic in the words while the GIL-held parts (argument and result
    # conversion) are linear, so a longer text makes the released part dominate on any machine.
    # The length doubles until one call takes >= 0.3 s, whatever the machine's speed or cores: if
    # the call held the GIL, the ticking thread would stall for all of it.
    rng = np.random.default_rng(0)
    vocabulary = [f"word{i}" for i in range(50)]
    words = 500
    while True:
        target = " ".join(rng.choice(vocabulary, words))
        prediction = " ".join(rng.choice(vocabulary, words))
        elapsed, gap = largest_gap_while(lambda: legion_rs.rouge_l(target, prediction))
        if elapsed >= 0.3 or words >= 256_000:
            break
        words *= 2
    assert elapsed >= 0.3, f"{words} words took only {elapsed:.3f} s"
    assert gap < elapsed / 2, f"largest tick gap {gap:.3f} s of {elapsed:.3f} s: the GIL was held"
