"""The study's experiments, one small module each, so the notebooks stay thin.

Each module runs one experiment through :mod:`kbn` and returns tidy pandas DataFrames
(one row per run or per parameter) plus the raw :class:`kbn.trainer.Result` objects for
plots. Shared helpers: :mod:`.common` (data, smoke recipe, progress, paths, JSON, glue),
:mod:`.tables` (mean +- std, comparisons with the original), :mod:`.reference` (the
original report's numbers, in one place).

Modules: :mod:`.gradient_check`, :mod:`.bn_ablation`, :mod:`.lambda_search`,
:mod:`.sigma_sensitivity`.
"""
