"""What a chapter's entry point returns, and how its notebook shows it.

Every chapter module has ``Parameters`` (:mod:`.parameters`), ``DEPENDS_ON`` (the
chapters whose results it reads, by module name) and ``run(params) -> ChapterOutput``.
Its notebook is then: the parameters cell, ``out = chapter.run(...)``, displays
(``out.show("table")``) and ``out.glue()``; the text pastes the glued values and figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .display import Table, figure_png, glue_all, plain
from .parameters import ChapterParameters
from .results import write_results, write_table
from .trainings import Trainings


@dataclass
class ChapterOutput:
    """A chapter's results: glued values, display tables, figures, its trainings.

    name: the chapter module's name (``bn_ablation``), which names its result files.
    values: glued under their keys (numbers as Python floats, sentences as str).
    tables: display-ready DataFrames, shown without index; glued as ``table_<name>``.
    figures: glued under their keys as PNG (the text shows them with ``glue:figure``).
    results: the JSON payload (configs, raw tables) later chapters and readers use.
    trainings: every training the chapter ran (None if it trains nothing).
    """

    name: str
    params: ChapterParameters
    values: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    trainings: Trainings | None = None
    seconds: float = 0.0

    def show(self, name: str) -> Table:
        """The table ``name``, for display as a cell's last expression."""
        return Table(self.tables[name])

    def glue(self) -> None:
        """Glue every value, table (``table_<name>``) and figure (its key) for the text."""
        from myst_nb import glue

        glue_all(self.values)
        for name, df in self.tables.items():
            glue(f"table_{name}", Table(df), display=False)
        for key, fig in self.figures.items():
            glue(key, figure_png(fig), display=False)

    def save(self) -> None:
        """Write the results JSON and the trainings' CSV tables into ``results_dir`` (if
        the parameters name one; see :mod:`.results`)."""
        folder = self.params.results_folder()
        if folder is None:
            return
        trainings = self.trainings.summary() if self.trainings else {
            "n_runs": 0, "n_cached": 0, "n_trained": 0, "seconds": 0.0}
        write_results(folder, self.name, {
            "chapter": self.name, "smoke": self.params.smoke,
            "parameters": self.params.to_dict(), "seconds": self.seconds,
            "trainings": trainings, "values": {k: plain(v) for k, v in self.values.items()},
            **self.results})
        if self.trainings is not None:
            write_table(folder, f"{self.name}_runs", self.trainings.runs_table(self.name))
            write_table(folder, f"{self.name}_histories", self.trainings.histories_table(self.name))


class Stopwatch:
    """Seconds since the chapter started (for its run note and the provenance page)."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
