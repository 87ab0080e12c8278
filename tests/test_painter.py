"""BackgroundPainter: figures drawn in a worker process come back in order, errors included."""
import numpy as np
import pytest

from homoecon_env.diagnostics import plots
from homoecon_env.diagnostics.painter import BackgroundPainter


def test_images_come_back_in_submission_order_and_failures_raise():
    painter = BackgroundPainter(plots.dashboard_image)
    try:
        assert painter.finished() == []  # nothing asked yet: no worker, nothing to wait for
        history = {"steps": np.arange(5), "reward": np.linspace(0.0, 1.0, 5)}
        painter.submit(10, history, "step 10")
        painter.submit(20, {}, "step 20")
        done = painter.finished(wait=True)
        assert [key for key, _ in done] == [10, 20]
        for _, image in done:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.shape[0] > 100
        assert not np.array_equal(done[0][1], done[1][1])  # two different figures, not one image twice
        assert np.array_equal(done[0][1], plots.dashboard_image(history, "step 10"))  # the worker drew the same
        painter.submit(30, {"no such panel": np.zeros(3)}, "step 30")
        with pytest.raises(ValueError, match="unknown keys"):
            painter.finished(wait=True)
    finally:
        painter.close()
    assert painter.finished(wait=True) == []


def test_worker_ends_when_its_parent_is_killed(tmp_path):
    """A SIGKILLed parent cannot clean up: the worker must notice on its own and exit (not run on under PID 1)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    ready = tmp_path / "ready"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, sys, time\n"
        "from homoecon_env.diagnostics import plots\n"
        "from homoecon_env.diagnostics.painter import BackgroundPainter\n"
        "painter = BackgroundPainter(plots.dashboard_image)\n"
        "painter.submit(1, {}, 'step 1')\n"
        "painter.finished(wait=True)\n"
        f"pathlib.Path({str(ready)!r}).write_text('drawn')\n"
        "time.sleep(600)\n")], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert time.monotonic() < deadline and parent.poll() is None, "the worker never drew"
            time.sleep(0.1)
        children = {int(pid) for path in Path(f"/proc/{parent.pid}/task").glob("*/children")
                    for pid in path.read_text().split()}
        assert children  # the drawing worker (and the resource tracker spawn may start)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)

        def alive(pid):
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
            except OSError:
                return False

        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in children):
            assert time.monotonic() < deadline, f"orphaned workers still running: {children}"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
