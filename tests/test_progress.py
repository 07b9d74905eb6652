"""What a user sees while a grid runs: under a terminal a status line with the grid's counts and
the running cell's epoch/step, loss, images/s and ETA; elsewhere one line per finished cell."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

from clusterbench.cli import main
from helpers import subprocess_env

TINY = "synthetic[n=120,classes=3,size=8]"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _screen(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[int, str]:
    """Run ``cmd`` with stdout and stderr on a pseudo-terminal; the text that reached it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))  # a terminal's size (0x0: no bar)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), _ANSI.sub("", b"".join(chunks).decode(errors="replace"))


def test_a_terminal_shows_the_running_cell_and_the_grid(tmp_path):
    env = subprocess_env(keep=("kmeans", "cc", "synthetic"))
    rc, text = _screen([sys.executable, "-m", "clusterbench.cli", "run", "--methods", "kmeans", "cc[preset=smoke]",
                        "--datasets", "synthetic[n=48,classes=3,size=8]", "--seeds", "0", "--budget", "steps=6", "--device", "cpu",
                        "--results", str(tmp_path / "res")], env, str(tmp_path))
    assert rc == 0, text
    states = [s.strip() for s in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if s.strip()]
    cell = [s for s in states if "cc[preset=smoke] on synthetic seed 0:" in s and "loss" in s]
    assert cell, text
    assert re.search(r"epoch \d+ step \d+/6 loss \d+\.\d{3} [\d,]+ img/s ETA \d+:\d\d", " ".join(cell)), cell
    assert any("cells 1/2: 1 done, 0 skipped, 0 failed, 1 running, 0 pending" in s for s in cell), cell
    assert any("cells 0/2: 0 done, 0 skipped, 0 failed, 1 running, 1 pending" in s for s in states), states
    assert any(s.startswith("done    cc[preset=smoke] on synthetic seed 0: ACC") for s in states), states
    assert "Traceback" not in text


def test_without_a_terminal_one_line_per_finished_cell(tmp_path, capsys):
    rc = main(["run", "--methods", "kmeans", "kmeans-pca", "--datasets", TINY, "--seeds", "0", "1",
               "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert rc == 0 and "\r" not in err and "cells " not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert [ln.split(":")[0] for ln in lines] == ["loaded synthetic", "done    kmeans on synthetic seed 0",
                                                  "done    kmeans on synthetic seed 1",
                                                  "done    kmeans-pca on synthetic seed 0",
                                                  "done    kmeans-pca on synthetic seed 1"]


def test_quiet_says_nothing_but_the_table(tmp_path, capsys):
    rc = main(["run", "--methods", "kmeans", "--datasets", TINY, "--seeds", "0", "--results", str(tmp_path / "r"),
               "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0 and err == "" and "| kmeans" in out
