"""Progress on long work: stage lines always on stderr, bars only on a terminal, --quiet silences
both, and the library itself never prints."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

from cage_eval import progress
from cage_eval.cli.console import Console

SMALL = ["generate", "-e", "synthetic", "--set", "synthetic.dim=8", "--set", "synthetic.n=600",
         "--set", "cage.k=400", "--set", "cage.n_null=5", "--set", "cage.k_null_observation=100",
         "--set", "cage.mmd_n=20", "--set", "cage.mmd_permutations=3", "--set",
         "cage.baselines=false", "--set", "cage.alphas=[1.0]"]
STAGE = re.compile(r"^\[ *\d+\.\d s\] ( *)(.+?)(?: \.\.\.|: \d+\.\d s)$")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cage_eval.cli import main; main()", *args]


def test_stage_lines_without_bars_when_stderr_is_a_pipe(tmp_path):
    proc = subprocess.run(_cli(*SMALL, "--out", str(tmp_path / "run")), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    stages = [m.group(2) for line in lines if (m := STAGE.match(line))]
    assert "CAGE" in stages and "writing tables and plots" in stages
    assert any(s.startswith("observation outcome (eq. 9") for s in stages)
    assert all(STAGE.match(line) for line in lines), lines  # nothing else on stderr
    assert "\r" not in proc.stderr and "%|" not in proc.stderr  # no bar
    # Every stage that starts also ends, with its time, properly nested.
    starts = [line for line in lines if line.endswith(" ...")]
    ends = [line for line in lines if re.search(r": \d+\.\d s$", line)]
    assert len(starts) == len(ends) > 5
    assert proc.stdout.startswith("synthetic: run ")  # the result stays on stdout


def test_quiet_prints_no_progress(tmp_path):
    proc = subprocess.run(_cli("--quiet", *SMALL, "--out", str(tmp_path / "run")),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("synthetic: run ")


def test_bars_on_a_terminal(tmp_path):
    main, child = pty.openpty()
    # A terminal 120 columns wide (a fresh pty has size 0 x 0, where tqdm draws nothing).
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(_cli(*SMALL, "--out", str(tmp_path / "run")), stdout=subprocess.DEVNULL,
                            stderr=child, env={**os.environ, "COLUMNS": "120"})
    os.close(child)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 600)
        if not ready:
            break
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=600) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "decoding and scoring (eq. 9)" in text and "image" in text
    assert re.search(r"\d+/\d+ \[\d\d:\d\d<", text)  # a count, elapsed and an ETA
    assert "\r" in text  # tqdm redraws in place
    assert re.search(r"\d+%\|", text)
    assert "CAGE ..." in text  # stage lines too


def test_console_nests_stages_and_notes():
    out = io.StringIO()
    console = Console(out, bars=False)
    with progress.use(console):
        with progress.stage("outer"):
            progress.note("a fact")
            with progress.stage("inner"), progress.bar(3, "counting", "it") as bar:
                bar.update(3)
    lines = out.getvalue().splitlines()
    assert [STAGE.match(line) is not None or "a fact" in line for line in lines] == [True] * 5
    assert lines[0].endswith("] outer ...") and lines[1].endswith("]   a fact")
    assert lines[2].endswith("]   inner ...") and re.search(r"\]   inner: \d+\.\d s$", lines[3])
    assert re.search(r"\] outer: \d+\.\d s$", lines[4])


def test_the_library_is_silent_by_default(capsys):
    assert isinstance(progress.current(), progress.Silent)
    with progress.stage("nothing"), progress.bar(2, "x") as bar:
        bar.update(2)
        progress.note("nothing either")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
