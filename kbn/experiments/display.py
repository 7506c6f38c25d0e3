"""How the chapters show things: tables without pandas' row numbers, figures as PNG,
glued values as plain Python numbers, and the one-sentence note on what a run was."""

from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


class Table:
    """A DataFrame shown as an HTML table without its index (row numbers mean nothing in
    the chapters' tables: every row is labelled by its own columns). Floats show 4
    decimals; a cell's text is never cut short (notes and labels are part of the report)."""

    OPTIONS = ("display.precision", 4, "display.max_colwidth", None)

    def __init__(self, df: pd.DataFrame):
        self.df = df

    def _repr_html_(self) -> str:
        with pd.option_context(*self.OPTIONS):
            return self.df.to_html(index=False, border=0, na_rep="–")

    def __repr__(self) -> str:
        with pd.option_context(*self.OPTIONS):
            return self.df.to_string(index=False)


def percent_table(df: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """A copy with float columns rounded for display."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(digits)
    return out


def figure_png(fig: Figure, dpi: int = 120):
    """``fig`` as an IPython PNG image (what glue stores and the book renders)."""
    from IPython.display import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return Image(data=buf.getvalue(), format="png")


def plain(value: Any) -> Any:
    """A glue-friendly value: numpy scalars -> Python numbers (so the book can format them)."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def glue_all(values: Mapping[str, Any], display: bool = False) -> None:
    """myst_nb.glue every key -> value (numbers as Python floats, text as str)."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, plain(value), display=display)


def run_note(smoke: bool, n_train: int, seconds: float, detail: str = "",
             smoke_detail: str = "a short schedule and one seed") -> str:
    """One sentence on what this run was: a smoke run (numbers meaningless) or a full one."""
    if smoke:
        return (f"SMOKE RUN on {n_train:,} training images with {smoke_detail}: "
                f"the numbers only show that the pipeline works")
    extra = f", {detail}" if detail else ""
    return f"full run on {n_train:,} training images{extra}, {seconds:.0f} s"
