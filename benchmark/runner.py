"""The runner: a ``RunConfig`` planned into jobs (:mod:`owsbench.plan`) and executed (in this
process by :class:`owsbench.execute.LocalExecutor`, or as SLURM tasks by
:class:`owsbench.slurm.SlurmExecutor`).

For each eval dataset and seed, post-hoc methods are grouped by the segmenter they sit on
(``NAME@SEGMENTER``; default ``deeplabv3plus``); each trained method is a group of its own. Each
group's models are fitted once per (recipe, train dataset, seed) and cached, then every eval
split is streamed once through the group. A row is written as soon as its split is measured;
jobs whose rows are all in ``results.jsonl`` already are skipped, so a rerun only does what is
missing.
"""

from __future__ import annotations

from typing import Any

from owsbench import plan as planning
from owsbench.config import MethodSpec, RunConfig
from owsbench.errors import BadInput
from owsbench.execute import Executor, LocalExecutor, resolve_device
from owsbench.plan import Datasets, Job


class Runner:
    """Runs one ``RunConfig``: ``run()`` = ``plan()`` + ``executor.run`` (default a
    ``LocalExecutor`` into ``config.out``; ``owsbench.slurm.SlurmExecutor`` for SLURM).

    The constructor validates the config (``BadInput`` for unknown ids, a segmenter named for a
    trained method, unknown splits, an unavailable device, ``--procs-per-job`` off CPU) without
    touching any data.
    """

    def __init__(self, config: RunConfig, executor: Executor | None = None) -> None:
        self.config = config
        self.specs = planning.validate(config)
        self.device = resolve_device(config.device)
        if config.procs_per_job > 1 and self.device.type != "cpu":
            raise BadInput(f"--procs-per-job runs on CPU only (the device is {self.device})")
        self.datasets = Datasets(config.progress)
        self.executor = executor or LocalExecutor(
            config.out, config.progress, datasets=self.datasets
        )

    def plan(self) -> list[Job]:
        """The run's jobs (datasets are opened and prepared; nothing is fitted)."""
        return planning.plan(self.config, self.datasets)

    def run(self) -> list[dict[str, Any]]:
        """Do every missing (method, dataset, split, seed) row; return all rows of the run."""
        return self.executor.run(self.plan())

    # -- the merged configs, as the plan has them -------------------------------------------
    def segmenter_config(self, segmenter_id: str) -> Any:
        return planning.segmenter_config(self.config, segmenter_id)

    def method_config(self, spec: MethodSpec) -> Any:
        return planning.method_config(self.config, spec)

    fit_config = staticmethod(planning.fit_config)
