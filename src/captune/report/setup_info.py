"""The report's Setup section as plain (label, value) facts, so Markdown and HTML say the same thing.

Parts a run does not have (no training in a zero-shot-only grid, no timings) are stated as absent
rather than skipped, so a reader can tell "not done" from "forgotten".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from captune.env import environment_info
from captune.report.load import RunData


@dataclass
class Section:
    title: str
    items: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""

    def add(self, label: str, value: Any) -> None:
        if value is not None and value != "":
            self.items.append((label, str(value)))


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"


def _lora_placement(modules: list[str]) -> str:
    """`qformer ×8, language_model ×4 (query, value, q_proj, v_proj)` from the adapted module names."""
    if not modules:
        return "–"
    parts = Counter(m.split(".", 1)[0] for m in modules)
    leaves = list(dict.fromkeys(m.rsplit(".", 1)[-1] for m in modules))
    return ", ".join(f"{k} ×{n}" for k, n in parts.items()) + f" ({', '.join(leaves)})"


def environment(run: RunData) -> tuple[dict[str, str], str]:
    """Hardware and versions: those the run recorded, else this machine's, labelled as such."""
    for source in (run.train_summary or {}, run.scores):
        env = source.get("environment") if isinstance(source, dict) else None
        if isinstance(env, dict) and env:
            flat: dict[str, str] = {}
            for k, v in env.items():
                if isinstance(v, dict):
                    flat.update({f"{k}: {kk}": str(vv) for kk, vv in v.items()})
                else:
                    flat[k] = str(v)
            return flat, "recorded by the run"
    return environment_info(), "not recorded by the run: these are the machine and libraries that built this report"


def adapter_selection(summary: dict[str, Any], data: dict[str, Any], tc: dict[str, Any]) -> str:
    """Which images chose the adapter (recorded by training; older runs: what their config implies)."""
    selection = summary.get("selection")
    if isinstance(selection, dict) and selection.get("description"):
        return str(selection["description"])
    if not tc.get("validate_every"):
        return "no selection: the adapter of the last step is evaluated"
    return f"split {data.get('val_split', '?')!s} (not recorded whether those images were also evaluated)"


def devices(run: RunData) -> dict[str, str]:
    """The device each stage recorded (train/summary.json, scores.json); runs from before it was recorded say so."""
    out = {}
    if run.train_summary is not None:
        out["device: training"] = str(run.train_summary.get("device") or "not recorded")
    per_system = run.scores.get("devices") if isinstance(run.scores, dict) else None
    found = sorted({str(v) for v in (per_system or {}).values() if v})
    if found:
        missing = [k for k, v in per_system.items() if not v]
        out["device: captioning"] = ", ".join(found) + (f" ({len(missing)} systems not recorded)" if missing else "")
    else:
        out["device: captioning"] = "not recorded"
    return out


def setup_sections(run: RunData) -> list[Section]:
    cfg = run.config or {}
    model, lora, data, tc = (cfg.get(k) or {} for k in ("model", "lora", "data", "train"))
    summary = run.train_summary or {}
    trained = run.train_summary is not None
    out = []

    s = Section("Model")
    s.add("model", model.get("name_or_path", "– (no config.yaml)"))
    s.add("revision", model.get("revision"))
    s.add("family", summary.get("family") or model.get("family"))
    s.add("dtype", model.get("dtype"))
    s.add("quantization", model.get("quantization"))
    s.add("device asked for", model.get("device"))
    out.append(s)

    s = Section("LoRA")
    if trained:
        params = summary.get("parameters") or {}
        s.add("preset", lora.get("preset"))
        s.add("rank r / alpha / dropout", f"{lora.get('r')} / {lora.get('alpha')} / {lora.get('dropout')}")
        if lora.get("use_dora"):
            s.add("DoRA", "yes")
        modules = summary.get("lora_modules") or []
        s.add("placement", f"{len(modules)} modules: {_lora_placement(modules)}")
        if params:
            share = params.get("trainable_share")
            s.add("trainable parameters", f"{params.get('trainable', 0):,} of {params.get('total', 0):,}"
                  + (f" ({share:.3%})" if isinstance(share, (int, float)) else ""))
    else:
        s.note = "no training in this run (train/summary.json absent): a zero-shot-only grid, no LoRA adapter."
    out.append(s)

    s = Section("Data")
    s.add("dataset", data.get("path"))
    s.add("format", data.get("format"))
    if run.dataset_splits:
        s.add("dataset splits", ", ".join(f"{k} {v:,}" for k, v in run.dataset_splits.items()))
    if trained:
        s.add("training images", summary.get("train_images"))
    s.add("evaluated images", f"{run.scores.get('images')} (split {data.get('eval_split', '?')!s})")
    if trained:
        s.add("adapter selected on", adapter_selection(summary, data, tc))
    skipped = run.scores.get("skipped_images") or []
    if skipped:
        s.add("left out of every system", f"{len(skipped)} unreadable images (first: {skipped[0]})")
    s.add("max images per split", data.get("max_images"))
    out.append(s)

    s = Section("Training")
    if trained:
        steps = tc.get("max_steps") or f"{tc.get('epochs')} epochs"
        s.add("optimizer steps", f"{summary.get('steps')} (asked: {steps}), {summary.get('samples')} samples")
        s.add("batch × accumulation", f"{tc.get('batch_size')} × {tc.get('grad_accum')}")
        s.add("learning rate", f"{tc.get('lr')} ({tc.get('schedule')}, warmup {tc.get('warmup_steps')} steps)")
        s.add("weight decay / grad clip", f"{tc.get('weight_decay')} / {tc.get('max_grad_norm')}")
        s.add("precision", tc.get("precision"))
        s.add("seed", tc.get("seed"))
        s.add("training prompt", repr(tc.get("prompt", "")))
        s.add("final training loss", None if summary.get("final_loss") is None else f"{summary['final_loss']:.4f}")
        if summary.get("bad_steps"):
            s.add("skipped (non-finite) steps", summary["bad_steps"])
        if summary.get("best_step"):
            s.add("best validation step", summary["best_step"])
        s.add("adapter kept", summary.get("adapter_is"))
        s.add("processes", summary.get("processes"))
        s.add("feature cache", summary.get("feature_cache"))
    else:
        s.note = "no training in this run."
    out.append(s)

    env, where = environment(run)
    s = Section("Hardware and versions", note=where)
    for label, value in devices(run).items():
        s.add(label, value)
    for k, v in env.items():
        s.add(k, v)
    out.append(s)

    s = Section("Wall time per stage")
    if trained:
        s.add("training (whole stage)", _seconds(summary.get("wall_seconds")))
        s.add("training (optimizer loop)", _seconds(summary.get("train_seconds")))
        if summary.get("samples_per_s"):
            s.add("training throughput", f"{summary['samples_per_s']:.1f} samples/s")
    if run.grid_timings:
        for k, v in run.grid_timings.items():
            s.add(f"grid: {k}", _seconds(v))
    if not s.items:
        s.note = "no timings recorded (train/summary.json and grid_timings.json absent)."
    out.append(s)
    return out


SYSTEM_FIELDS = ("adapter", "prompt", "num_beams", "do_sample", "top_p", "temperature", "max_new_tokens",
                 "no_repeat_ngram_size", "repetition_penalty", "samples")


def systems_table(run: RunData) -> tuple[list[str], list[list[str]]]:
    """Each system's decoding settings (the grid's rows), reference marked."""
    rows = []
    for name in run.systems:
        st = run.settings.get(name, {})
        label = name + (" (reference)" if name == run.reference else "")
        rows.append([label, *[("–" if st.get(f) is None else repr(st[f]) if f == "prompt" else str(st[f]))
                              for f in SYSTEM_FIELDS]])
    return ["System", *SYSTEM_FIELDS], rows
