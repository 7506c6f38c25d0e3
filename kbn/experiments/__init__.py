"""The study's chapters, one module each, so the notebooks stay thin.

A chapter module (``gradient_check``, ``bn_ablation``, ``lambda_search``,
``sigma_sensitivity``, ``how_bn_helps``) is named after its notebook (``notebooks/NN_<module>.ipynb``) and
has ``Parameters`` (the notebook's parameters cell, checked), ``DEPENDS_ON`` (the chapters
whose results it reads) and ``run(params) -> ChapterOutput`` (tables, figures, glued
values, its trainings). A new chapter is a notebook, a module here and a ToC entry.

Shared helpers, by concern:
:mod:`.parameters` (checking a notebook's parameters), :mod:`.recipe` (data, recipe, smoke
mode), :mod:`.trainings` (every training through kbn.runs.run_trials, recorded),
:mod:`.chapter` (ChapterOutput: show, glue, save), :mod:`.display` (tables, figures, run
notes), :mod:`.results` (result files: JSON and CSV), :mod:`.stats` (mean ± std, noise,
comparisons with the original), :mod:`.reference` (the original report's numbers).
"""
