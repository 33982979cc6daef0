"""The training loop's logger, written with dvclive: one folder per run, plots DVC can overlay."""
from __future__ import annotations

from pathlib import Path

from weldnet.core.paths import remove_output


class DvcLiveLog:
    """Adapter from the training loop's (step, name, value) calls to a dvclive run in ``directory``.

    The folder is emptied first (through weldnet.core.paths.remove_output): a run's log holds that run only.
    """

    def __init__(self, directory: Path):
        from dvclive import Live

        remove_output(directory)
        self.live = Live(str(directory), save_dvc_exp=False, dvcyaml=None, report=None)

    def __call__(self, step: int, name: str, value: float) -> None:
        self.live.step = step
        self.live.log_metric(name, value, plot=True)

    def close(self) -> None:
        self.live.make_summary()
        self.live.end()
