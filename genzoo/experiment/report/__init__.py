"""Reporting an experiment: ``report.md``, ``results.json`` and ``results.csv`` from the run
folders (:mod:`.render`), their Markdown (:mod:`.markdown`), the statistics (:mod:`.statistics`),
effects against budget (:mod:`.budget`), training curves (:mod:`.curves`) and sample grids
(:mod:`.sampling`)."""

from genzoo.experiment.report.render import (
    COLUMNS,
    Column,
    ablation_sentence,
    collect_results,
    render_report,
    withhold_shared_speeds,
)

__all__ = [
    "COLUMNS",
    "Column",
    "ablation_sentence",
    "collect_results",
    "render_report",
    "withhold_shared_speeds",
]
