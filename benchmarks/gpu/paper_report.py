"""The figures of ``bench_gpu_paper.py``: issue 17's targets against a run's rows, and the
run as Markdown (one table per section, ratios within the run)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from benchmarks.gpu.paper_plan import MNIST_REFERENCE, REFERENCE, Setting
from benchmarks.harness.paper_models import CELLS

SECTIONS = {
    "cifar10": "CIFAR-10 (nvae.hierarchy defaults), batch 32; ratios against naive cells, fp32, eager",
    "batch": "CIFAR-10, peak memory against batch size, with the fastest setting",
    "mnist": "MNIST (experiments/mnist.yaml), batch 100; ratios against its naive cells, fp32, eager",
    "extra": "CIFAR-10, batch 32: the fastest setting with more; the whole model compiled",
}


def best_setting(rows: list[dict[str, Any]]) -> Setting | None:
    """The fastest CIFAR-10 batch-32 setting whose steps stayed finite (plain settings only:
    not the rows with regularizers or cuDNN's autotuner)."""
    candidates = [
        r for r in rows if r["status"] == "ok" and r["finite"] and r["setting"]["section"] == "cifar10"
    ]
    if not candidates:
        return None
    return Setting(**max(candidates, key=lambda r: r["images_per_s"])["setting"])


def _row(rows: list[dict[str, Any]], setting: Setting, *, any_batch: bool = False) -> dict[str, Any] | None:
    """The measured row of ``setting`` (at any batch with ``any_batch``), if any."""
    return next((r for r in rows if r["status"] == "ok" and _same(r, setting, any_batch=any_batch)), None)


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 17's targets against this run's rows: each ``{target, measured, met}`` with
    ``met`` None where a row it needs is missing."""
    reference = _row(rows, REFERENCE, any_batch=True)  # batch 32 but where a test asks for less
    best = best_setting(rows)
    best_row = _row(rows, best) if best else None
    out = []

    def add(target: str, measured: str | None, met: bool | None) -> None:
        out.append({"target": target, "measured": measured or "not measured", "met": met})

    if reference and best_row:
        speed = best_row["images_per_s"] / reference["images_per_s"]
        add(
            "fastest setting >= 2x the images/s of eager fp32 with the naive cells",
            f"{speed:.2f}x ({best.name}: {best_row['images_per_s']:.1f} against {reference['images_per_s']:.1f})",
            speed >= 2,
        )
        if "step_peak_mib" in best_row and "step_peak_mib" in reference:
            # what the step adds, as the earlier tables (benchmarks/README.md, Method); the
            # whole peak (model, optimizer state and gradients included) beside it
            step = best_row["step_peak_mib"] / reference["step_peak_mib"]
            whole = best_row["peak_alloc_mib"] / reference["peak_alloc_mib"]
            add(
                "... at most 0.6x its peak memory",
                f"{step:.2f}x what the step adds ({best_row['step_peak_mib']:.0f} MiB against "
                f"{reference['step_peak_mib']:.0f}); whole peak {whole:.2f}x",
                step <= 0.6,
            )
        else:
            add("... at most 0.6x its peak memory", None, None)
        compiled = [r for r in rows if r["status"] == "ok" and r["setting"]["compile"] == "cells"]
        if best.compile:
            seconds = best_row["compile_time_s"]
            add("... compiled in at most 2 minutes", f"{seconds:.0f} s", seconds <= 120)
        elif compiled:
            fastest = max(compiled, key=lambda r: r["images_per_s"])
            seconds = fastest["compile_time_s"]
            add(
                "... compiled in at most 2 minutes",
                f"the fastest setting is eager; the fastest compiled one ({fastest['name']}) took {seconds:.0f} s",
                seconds <= 120,
            )
        else:
            add("... compiled in at most 2 minutes", None, None)
    else:
        for target in (
            "fastest setting >= 2x the images/s of eager fp32 with the naive cells",
            "... at most 0.6x its peak memory",
            "... compiled in at most 2 minutes",
        ):
            add(target, None, None)
    ratios = {}  # bf16 images/s over fp16's, per pair of rows that differ in precision only
    for row in rows:
        setting = Setting(**row["setting"])
        if row["status"] == "ok" and setting.precision == "fp16" and setting.section == "cifar10":
            twin = _row(rows, dataclasses.replace(setting, precision="bf16"))
            if twin is not None:
                ratios[setting.label.replace("fp16 + scaler", "fp16/bf16")] = (
                    twin["images_per_s"] / row["images_per_s"]
                )
    add(
        "fp16 and bf16 within 10% of each other",
        "; ".join(f"{label}: bf16 {ratio:.2f}x fp16" for label, ratio in ratios.items()),
        all(abs(r - 1) <= 0.10 for r in ratios.values()) if ratios else None,
    )
    return out


def _same(row: dict[str, Any], setting: Setting, *, any_batch: bool = False) -> bool:
    """Whether ``row`` measured ``setting`` (with whatever number of steps)."""
    ignored = ("steps", "batch") if any_batch else ("steps",)
    return row["setting"] == {**dataclasses.asdict(setting), **{k: row["setting"][k] for k in ignored}}


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def markdown(doc: dict[str, Any]) -> str:
    """The run as Markdown: what ran where, the targets, one table per section."""
    rows = doc["rows"]
    lines = [
        "### GPU at paper scale (benchmarks/gpu/bench_gpu_paper.py)",
        "",
        f"- device: {doc['device']}; torch {doc['torch']} (CUDA {doc['cuda']}), Python {doc['python']}",
        f"- command: `{doc['command']}`; started {doc['started']}, {doc['elapsed_s']:.0f} s",
        f"- TF32 allowed (torch's defaults, left as they are): cuDNN convolutions "
        f"{doc['tf32']['cudnn.allow_tf32']}, matrix products {doc['tf32']['cuda.matmul.allow_tf32']}",
        "- images/s: batch / median step after the warm-up steps; peak: max_memory_allocated over "
        "the setting (model, optimizer, gradients included); step peak: what the timed steps "
        "allocated above the memory allocated before them (the memory target's measure); compile: "
        "the first three steps beyond three steady ones; finite: every step's loss (steps the "
        "fp16 scaler skipped in brackets)",
        "",
        "**Targets** (issue 17; ratios within this run)",
        "",
        "| target | measured | met? |",
        "|---|---|---|",
    ]
    for t in doc["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured']} | {met} |")
    sections: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        sections.setdefault(row["setting"]["section"], []).append(row)
    columns = [
        "setting", "cells", "params", "steps", "ms / step", "images/s", "vs ref", "peak MiB",
        "vs ref", "step peak MiB", "compile s", "finite", "notes",
    ]  # fmt: skip
    best = next((r for r in rows if r["name"] == doc.get("best")), None)
    for section, members in sections.items():
        if section == "batch" and best is not None:
            members = sorted([best, *members], key=lambda r: r["setting"]["batch"])
        lines += ["", f"**{SECTIONS.get(section, section)}**", ""]
        reference = _row(rows, MNIST_REFERENCE if section == "mnist" else REFERENCE, any_batch=True)
        lines += ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        for row in members:
            s = row["setting"]
            ok = row["status"] == "ok"
            notes = [] if ok or row["status"] == "skipped" else [row["status"]]
            for key in ("planned", "reason"):
                if row.get(key):
                    notes.append(row[key])
            if ok and row.get("graph_breaks"):
                notes.append(f"{row['graph_breaks']} graph breaks")
            if ok and row.get("cudagraph_skips"):
                notes.append(f"{row['cudagraph_skips']} graphs without CUDA graphs")
            if row.get("note"):
                notes.append(row["note"])
            speed = peak = "-"
            if ok and reference:
                speed = f"{row['images_per_s'] / reference['images_per_s']:.2f}x"
                if "peak_alloc_mib" in row and "peak_alloc_mib" in reference:
                    peak = f"{row['peak_alloc_mib'] / reference['peak_alloc_mib']:.2f}x"
            finite = "-"
            if ok:
                finite = ("yes" if row["finite"] else f"**no** ({row['nonfinite_steps']})") + (
                    f" ({row['skipped_steps']} skipped)" if row["skipped_steps"] else ""
                )
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{row['label']}, batch {s['batch']}",
                        s["cells"],
                        f"{row['params']:,}" if ok else "-",
                        str(row.get("steps_run", "-")),
                        _fmt(row.get("ms_per_step")),
                        _fmt(row.get("images_per_s")),
                        speed,
                        _fmt(row.get("peak_alloc_mib"), ".0f"),
                        peak,
                        _fmt(row.get("step_peak_mib"), ".0f"),
                        _fmt(row.get("compile_time_s"), ".0f"),
                        finite,
                        "; ".join(notes).replace("|", "/").replace("\n", " ")[:300],
                    ]
                )
                + " |"
            )
    lines += ["", "Cells: " + "; ".join(f"`{k}`: {v}" for k, v in CELLS.items()), ""]
    return "\n".join(lines)
