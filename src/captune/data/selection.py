"""Which images choose the adapter: validation held out of training, never the evaluated images.

Keeping the adapter with the best validation score is a choice made on the validation images. If
those images are also evaluated, the LoRA systems have seen part of the test set while no baseline
had any selection, so a config whose validation and evaluation images overlap is refused unless it
says `eval.allow_selection_overlap: true` (and then the report says so). `data.val_from_train: N`
holds N training images out instead: chosen by a hash of (run seed, image name), so the same seed
holds out the same images on every machine, and the evaluation split stays whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from captune.config import RunConfig
from captune.data.records import ImageRecord, LoadedDataset, subset_key
from captune.errors import ConfigError


@dataclass
class SelectionPlan:
    """The training images, the validation images that select the adapter, and how they were chosen."""

    train: list[ImageRecord]
    val: list[ImageRecord]
    source: str  # "held out of train" | "split" | "none"
    description: str  # one line for the report's setup table
    overlap: int = 0  # validation images that are also evaluated (only with eval.allow_selection_overlap)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "images": len(self.val), "overlap_with_eval": self.overlap,
                "description": self.description}


def hold_out(records: list[ImageRecord], n: int, seed: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(kept for training, held out): the `n` images ranked first by a seeded hash of their names.

    A hash of the name, not a shuffle of positions, so the choice does not depend on file order."""
    ranked = sorted(range(len(records)), key=lambda i: subset_key(seed, records[i].name))
    held = set(ranked[:n])
    return ([r for i, r in enumerate(records) if i not in held],
            [r for i, r in enumerate(records) if i in held])


def plan_selection(cfg: RunConfig, dataset: LoadedDataset) -> SelectionPlan:
    """Split the training images and the validation images as `cfg` says; refuse overlap with eval."""
    d, tc = cfg.data, cfg.train
    train = dataset.select(d.train_split)
    if not tc.validate_every:
        return SelectionPlan(train, [], "none", "no selection: the adapter of the last step is evaluated")
    if d.val_from_train:
        if d.val_from_train >= len(train):
            raise ConfigError(f"config key 'data.val_from_train': holding out {d.val_from_train} images leaves none "
                              f"of the {len(train)} in split {d.train_split!r} to train on; lower it")
        train, val = hold_out(train, d.val_from_train, tc.seed)
        source, where = "held out of train", f"held out of split {d.train_split!r} (seed {tc.seed})"
    else:
        val = dataset.select(d.val_split)
        if not val:
            raise ConfigError(f"config key 'train.validate_every': split {d.val_split!r} has no images; "
                              "set data.val_from_train, data.val_split or train.validate_every=0")
        source, where = "split", f"of split {d.val_split!r}"
    val = val[: tc.val_max_images]
    evaluated = {r.path for r in dataset.select(d.eval_split)}
    overlap = sum(1 for r in val if r.path in evaluated)
    if overlap and not cfg.eval.allow_selection_overlap:
        raise ConfigError(
            f"config key 'data.val_split': {overlap} of the {len(val)} validation images that select the adapter "
            f"are also evaluated (data.eval_split {d.eval_split!r}); set data.val_from_train (e.g. 300) to hold "
            "validation out of training, or eval.allow_selection_overlap=true to accept it"
        )
    said = "none evaluated" if not overlap else (
        f"{overlap} of them also evaluated (allowed by eval.allow_selection_overlap)")
    return SelectionPlan(train, val, source, f"{len(val)} images {where}; {said}", overlap)
