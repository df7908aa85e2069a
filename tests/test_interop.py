"""Scoring interop: `captune caption --json` writes what `captune score` reads, and predictions may name images by
file (`file_name` / `image`) as well as by COCO `image_id`; bad or ambiguous names are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captune.errors import DataError
from captune.metrics.io import ImageNames, load_predictions, load_reference_set


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from captune.demo.synth import generate_synth

    root = tmp_path_factory.mktemp("interop") / "synth"
    generate_synth(root, scale=0.005, size=32)
    return root


def _write(path: Path, rows: object) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_caption_json_is_scored_end_to_end(synth: Path, tiny_model_dirs, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from captune.cli import app

    found = load_reference_set(synth, "test")
    images = [str(synth / "Flicker8k_Dataset" / found.names[i]) for i in found.refs]
    runner = CliRunner()
    result = runner.invoke(app, ["caption", "--model", str(tiny_model_dirs["opt"]), *images, "--json",
                                 "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # stdout is the JSON alone: `captune caption --json > preds.json` works
    assert [r["file_name"] for r in rows] == images and all(isinstance(r["caption"], str) for r in rows)
    preds = tmp_path / "preds.json"
    preds.write_text(result.stdout)
    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["score", "--pred", f"tiny={preds}", "--refs", str(synth), "--split", "test",
                                 "--metrics", "rouge,diversity", "--bootstrap", "20", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["images"] == len(images) and "rouge/ROUGE-L" in scores["systems"]["tiny"]["metrics"]


def test_file_names_resolve_like_image_ids(synth: Path, tmp_path: Path) -> None:
    found = load_reference_set(synth, "eval")
    ids = list(found.refs)
    by_id = {i: f"caption {i}" for i in ids}
    spellings = [
        lambda i: found.names[i],  # synth_00035.png
        lambda i: found.names[i].rsplit(".", 1)[0],  # no extension
        lambda i: f"Flicker8k_Dataset/{found.names[i]}",  # the folder too
        lambda i: str(synth / "Flicker8k_Dataset" / found.names[i]),  # an absolute path
        lambda i: "C:\\data\\" + found.names[i],  # a Windows path
    ]
    for k, spell in enumerate(spellings):
        key = "image" if k % 2 else "file_name"
        rows = [{key: spell(i), "caption": by_id[i]} for i in reversed(ids)]
        assert load_predictions(_write(tmp_path / f"p{k}.json", rows), found.names) == by_id, k
    coco = [{"image_id": i, "caption": by_id[i], "file_name": "ignored.png"} for i in ids]
    assert load_predictions(_write(tmp_path / "coco.json", coco), found.names) == by_id  # image_id wins


def test_coco_annotations_give_file_names(tmp_path: Path) -> None:
    ann = {"images": [{"id": 7, "file_name": "val2014/COCO_val2014_000000000007.jpg"},
                      {"id": 9, "file_name": "val2014/COCO_val2014_000000000009.jpg"}],
           "annotations": [{"image_id": 7, "caption": "a cat"}, {"image_id": 9, "caption": "a dog"}]}
    found = load_reference_set(_write(tmp_path / "captions_val.json", ann))
    assert found.names == {7: "val2014/COCO_val2014_000000000007.jpg", 9: "val2014/COCO_val2014_000000000009.jpg"}
    rows = [{"file_name": "COCO_val2014_000000000009.jpg", "caption": "x"},
            {"file_name": "COCO_val2014_000000000007.jpg", "caption": "y"}]
    assert load_predictions(_write(tmp_path / "p.json", rows), found.names) == {9: "x", 7: "y"}


def _error(path: Path, names: dict[int, str] | None, rows: object) -> str:
    with pytest.raises(DataError) as info:
        load_predictions(_write(path, rows), names)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


def test_bad_names_are_one_line_errors(tmp_path: Path) -> None:
    names = {0: "train/0001.png", 1: "val/0001.png", 2: "val/0002.png"}
    p = tmp_path / "p.json"
    assert "match no reference image" in _error(p, names, [{"file_name": "nope.png", "caption": "a"}])
    assert "check --refs/--split" in _error(p, names, [{"file_name": "nope.png", "caption": "a"}])
    ambiguous = _error(p, names, [{"file_name": "0001.png", "caption": "a"}])
    assert "more than one reference image" in ambiguous and "'train/0001.png'" in ambiguous
    assert "path inside the image folder" in ambiguous
    assert load_predictions(_write(p, [{"file_name": "x/val/0001.png", "caption": "a"}]), names) == {1: "a"}
    mixed = _error(p, names, [{"image_id": 0, "caption": "a"}, {"file_name": "val/0002.png", "caption": "b"}])
    assert "use one key for every entry" in mixed and "entry #1" in mixed
    twice = _error(p, names, [{"file_name": "val/0002.png", "caption": "a"}, {"image": "0002", "caption": "b"}])
    assert "entries #0 and #1 name the same image" in twice
    assert "not non-empty strings" in _error(p, names, [{"file_name": 3, "caption": "a"}])
    no_names = _error(p, None, [{"file_name": "val/0002.png", "caption": "a"}])
    assert "have no file names" in no_names and "--refs" in no_names
    assert "captions are not strings" in _error(p, names, [{"file_name": "val/0002.png", "caption": 5}])


def test_score_cli_errors_name_the_file(synth: Path, tmp_path: Path, capsys) -> None:
    from captune.cli import main

    refs = _write(tmp_path / "refs.json", {"1": ["a cat"], "2": ["a dog"]})
    preds = _write(tmp_path / "preds.json", [{"file_name": "a.jpg", "caption": "a cat"}])
    assert main(["score", "--pred", str(preds), "--refs", str(refs), "--metrics", "rouge"]) == 1
    err = capsys.readouterr().err
    assert "have no file names" in err and str(preds) in err and len(err.strip().splitlines()) == 1
    preds = _write(tmp_path / "preds2.json", [{"file_name": "synth_99999.png", "caption": "a cat"}])
    assert main(["score", "--pred", str(preds), "--refs", str(synth), "--metrics", "rouge"]) == 1
    assert "match no reference image" in capsys.readouterr().err


def test_image_names_prefer_the_longest_shared_path() -> None:
    index = ImageNames({1: "a/b/x.jpg", 2: "c/b/x.jpg", 3: "y.png"})
    assert index.resolve("a/b/x.jpg") == [1] and index.resolve("/data/c/b/x.png") == [2]
    assert sorted(index.resolve("b/x.jpg")) == [1, 2] and index.resolve("./y") == [3] and index.resolve("z") == []
