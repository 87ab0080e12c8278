"""The economy drawn: a dependency-free rgb_array frame, and the "human" window (docs/design.md sections 3, 8).

Top band: each agent's holdings as stacked bars, one colour per resource, agents in slot order.
Bottom band: a strip per agent coloured by its last job, and its age as a grey bar.
"""
from __future__ import annotations

import numpy as np

PALETTE = np.array([[228, 26, 28], [55, 126, 184], [77, 175, 74], [152, 78, 163], [255, 127, 0],
                    [166, 86, 40], [247, 129, 191], [153, 153, 153]], dtype=np.uint8)


def dashboard_frame(economy, height: int = 240, width: int = 480) -> np.ndarray:
    """(height, width, 3) uint8 picture of holdings, jobs and ages of every slot."""
    state = economy.state
    frame = np.full((height, width, 3), 255, dtype=np.uint8)
    if state is None:
        return frame
    holdings = state.holdings.numpy()
    n = holdings.shape[0]
    columns = np.minimum((np.arange(width) * n) // width, n - 1)  # agent shown in each pixel column
    top = int(height * 0.75)
    stacked = np.cumsum(holdings, axis=1)  # [N, R]
    scale = max(float(stacked[:, -1].max()), 1e-12)
    bar_tops = (stacked / scale * (top - 4)).astype(int)  # [N, R] pixel heights
    rows = np.arange(top)[::-1][:, None]  # pixel height above the band bottom, per row
    layer = (rows[:, :, None] >= bar_tops[columns][None, :, :]).sum(axis=2)  # [top, W] resource index or R
    for r in range(holdings.shape[1]):
        frame[:top][layer == r] = PALETTE[r % len(PALETTE)]
    jobs = state.job.numpy()[columns]
    strip = slice(top + 4, top + 4 + (height - top) // 3)
    frame[strip][:, jobs >= 0] = PALETTE[(len(PALETTE) - 1 - jobs[jobs >= 0]) % len(PALETTE)]
    age_fraction = np.clip(state.ages.numpy()[columns] / economy.config.max_age, 0, 1)
    age_rows = np.arange(height - strip.stop)[::-1][:, None]
    frame[strip.stop:][age_rows < (age_fraction * (height - strip.stop))[None, :]] = (90, 90, 90)
    frame[:, :, :][:, ~state.alive.numpy()[columns]] //= 2
    return frame


class RenderModes:
    """The render modes every HomoEcon env takes (docs/design.md section 8): None, "rgb_array"
    (render() returns a dashboard frame) and "human" (each reset and step draws it in a matplotlib
    window; render() returns None). Headless, with a non-interactive matplotlib backend such as
    Agg, "human" draws nothing: there is no screen to draw on."""

    MODES = ("human", "rgb_array")
    FPS = 5

    def __init__(self, render_mode, fps: int):
        self.render_mode, self.fps = render_mode, fps
        self._figure = self._image = None

    @classmethod
    def checked(cls, render_mode):
        if render_mode is not None and render_mode not in cls.MODES:
            raise ValueError(f"render_mode must be None or one of {list(cls.MODES)}, got {render_mode!r}")
        return render_mode

    def render(self, economy):
        if self.render_mode == "rgb_array":
            return dashboard_frame(economy)
        if self.render_mode == "human":
            self._show(economy)
        return None

    def after_step(self, economy) -> None:
        """Gymnasium's rule: a "human" env draws itself on every reset and step."""
        if self.render_mode == "human":
            self._show(economy)

    def _show(self, economy) -> None:
        import matplotlib
        from matplotlib.backends import BackendFilter, backend_registry

        if matplotlib.get_backend().lower() not in backend_registry.list_builtin(BackendFilter.INTERACTIVE):
            return  # headless: nothing to draw on
        import matplotlib.pyplot as plt

        frame = dashboard_frame(economy)
        if self._figure is None or not plt.fignum_exists(self._figure.number):
            self._figure, axes = plt.subplots(num="HomoEcon", clear=True)
            axes.set_axis_off()
            self._image = axes.imshow(frame)
        else:
            self._image.set_data(frame)
        self._figure.suptitle(f"step {economy.state.step}: holdings (top), job and age (bottom)")
        plt.pause(1.0 / self.fps)

    def close(self) -> None:
        if self._figure is not None:
            import matplotlib.pyplot as plt

            plt.close(self._figure)
            self._figure = self._image = None
