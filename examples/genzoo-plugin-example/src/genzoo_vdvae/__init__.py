"""genzoo-plugin-example: a third-party genzoo plugin, found through its entry point.

It adds

- the cell ``vdvae.bottleneck_cell``, VDVAE's bottleneck residual block (Child 2021), which drops in
  wherever a genzoo cell key goes (e.g. ``hierarchy.decoder_cell`` of ``nvae.hierarchy``);
- a training-stability monitor that works through the lifecycle hooks and adds the report
  columns ``vdvae.max_grad_norm``, ``vdvae.mean_grad_norm`` and ``vdvae.loss_spikes``;
- the metric ``vdvae.reconstruction_psnr``.

genzoo calls the ``@genzoo.hookimpl`` functions of this module: the entry point in
``pyproject.toml`` (group ``genzoo.plugins``) names it. It uses only what ``genzoo`` exports.
"""

from __future__ import annotations

from typing import Any

import genzoo

from genzoo_vdvae import bottleneck_cell, psnr
from genzoo_vdvae.stability import BOOK

GENZOO_PLUGIN_API = 1
"""The genzoo plugin API this plugin is written for; genzoo refuses to load it on a mismatch."""


@genzoo.hookimpl
def genzoo_register(registry: genzoo.Registry) -> None:
    bottleneck_cell.register(registry)
    psnr.register(registry)


@genzoo.hookimpl
def genzoo_run_start(run: genzoo.RunInfo) -> None:
    BOOK.run_start(run)


@genzoo.hookimpl
def genzoo_step_end(run: genzoo.RunInfo, metrics: dict[str, float]) -> None:
    BOOK.step_end(run, metrics)


@genzoo.hookimpl
def genzoo_run_end(run: genzoo.RunInfo) -> None:
    BOOK.run_end(run)


@genzoo.hookimpl
def genzoo_report_columns(results: dict[str, Any]) -> dict[str, float] | None:
    return BOOK.report_columns(results)
