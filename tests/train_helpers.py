"""Small datasets and configs for training tests, built in the test's own folder."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from captune.config import RunConfig, load_config

COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "red": (255, 0, 0), "blue": (0, 0, 255)}
CAPTIONS = {
    "black": "a black cat sleeps at night",
    "white": "two white swans on snow",
    "red": "a red fire truck",
    "blue": "the blue sea under a blue sky",
}


def colour_dataset(root: Path, per_colour: int = 1, val: bool = False) -> Path:
    """One image per colour (solid, 32 px) with one caption: a set a tiny model can memorise."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, rgb in COLOURS.items():
        for k in range(per_colour):
            file_name = f"{name}{k}.png"
            Image.new("RGB", (32, 32), rgb).save(root / file_name)
            lines.append({"file_name": file_name, "caption": CAPTIONS[name], "split": "train"})
            if val:
                Image.new("RGB", (32, 32), rgb).save(root / f"val-{file_name}")
                lines.append({"file_name": f"val-{file_name}", "caption": CAPTIONS[name], "split": "val"})
    path = root / "captions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def tiny_train_config(model_dir: Path, data: Path, out: Path, name: str, *extra: str) -> RunConfig:
    return load_config(None, [
        f"model.name_or_path={model_dir}", f"data.path={data}", f"output_dir={out}", f"name={name}",
        "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=2", "train.max_steps=12",
        "train.checkpoint_every=4", "train.tensorboard=false", "train.prompt=", *extra,
    ])
