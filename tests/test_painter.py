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
