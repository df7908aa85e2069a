"""The synthetic fine-grained benchmark: deterministic, loadable, captions true of their images."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captune.cli import main
from captune.data import load_dataset
from captune.demo.judge import ParsedCaption, alignment_scores, judge, parse_caption
from captune.demo.synth import BACKGROUND, COLOURS, SHAPES, SynthObject, generate_synth, load_truth
from captune.errors import DataError

SMALL = {"train": 40, "val": 10, "test": 10}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "bench"
    generate_synth(out, scale=0.025, seed=7, size=24, grid=3)  # 150/25/25, one 8 px patch per cell
    return out


def test_same_seed_gives_byte_identical_files(tmp_path, synth_dir):
    generate_synth(tmp_path / "again", scale=0.025, seed=7, size=24, grid=3, workers=2)  # pool vs none
    assert _digests(tmp_path / "again") == _digests(synth_dir)
    generate_synth(tmp_path / "other", split_sizes=SMALL, seed=8, size=24, grid=3)
    first = (synth_dir / "Flickr8k_text" / "Flickr8k.token.txt").read_text().splitlines()[:5]
    assert (tmp_path / "other" / "Flickr8k_text" / "Flickr8k.token.txt").read_text().splitlines()[:5] != first


def test_output_is_a_flickr8k_dataset(synth_dir):
    data = load_dataset(synth_dir)
    assert data.format == "flickr8k" and data.problems == [] and data.unsplit == []
    assert data.split_counts() == {"train": 150, "val": 25, "test": 25}
    assert all(len(r.refs) == 5 for r in data.records)
    assert Image.open(data.records[0].path).size == (24, 24)
    assert set(load_truth(synth_dir)) == {r.name for r in data.records}


def test_every_caption_parses_back_true_of_its_image(synth_dir):
    truth = load_truth(synth_dir)
    relations, distinct = Counter(), 0
    for record in load_dataset(synth_dir).records:
        objects = truth[record.name]
        distinct += len(set(record.refs)) == 5
        for caption in record.refs:
            parsed = parse_caption(caption)
            assert parsed.pairs, caption
            for category, (asserted, correct, _, _) in judge(parsed, objects).items():
                assert asserted == correct, (category, caption, objects)
            relations.update(rel for _, rel, _ in parsed.relations)
    assert set(relations) == {"left of", "right of", "above", "below"}
    assert distinct >= 190  # five different annotators, nearly always five different captions


def test_objects_fill_exactly_their_grid_cells(synth_dir):
    truth = load_truth(synth_dir)
    seen_colours, seen_shapes = set(), set()
    for name, objects in list(truth.items())[:60]:
        pixels = np.asarray(Image.open(synth_dir / "Flicker8k_Dataset" / f"{name}.png").convert("RGB"))
        by_cell = {(o.row, o.col): o for o in objects}
        for row in range(3):
            for col in range(3):
                cell = pixels[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8].reshape(-1, 3)
                colours = {tuple(int(v) for v in p) for p in cell} - {BACKGROUND}
                obj = by_cell.get((row, col))
                assert colours == ({COLOURS[obj.colour]} if obj else set()), (name, row, col)
        seen_colours.update(o.colour for o in objects)
        seen_shapes.update(o.shape for o in objects)
    assert len(COLOURS) >= 8 and len(SHAPES) >= 5
    assert len(seen_colours) >= 8 and len(seen_shapes) >= 5


def test_parse_caption_phrasings():
    parsed = parse_caption("A pair of tiny violet discs above the white rhombus. Three shapes")
    assert parsed == ParsedCaption(
        pairs=frozenset({("purple", "circle"), ("white", "diamond")}),
        sizes=frozenset({("purple", "circle", "small")}),
        relations=frozenset({(("purple", "circle"), "above", ("white", "diamond"))}),
        counts=frozenset({("purple", "circle", 2), (None, None, 3)}),
    )
    assert parse_caption("A red circle on the left. A blue box.").relations == frozenset()
    assert parse_caption("a photo of a cat").empty


def test_alignment_scores_hand_worked_example():
    truth = {
        "one": [SynthObject("red", "circle", "small", 0, 0), SynthObject("blue", "square", "large", 0, 2),
                SynthObject("blue", "square", "large", 2, 2)],
        "two": [SynthObject("yellow", "triangle", "large", 1, 1)],
    }
    captions = {
        # pairs 3 (green star wrong); sizes 2 right; relation "squares right of circle" right (1 of 2 facts);
        # counts: "two ... boxes" right, "four shapes" wrong.
        "one": "Two big blue boxes to the right of a small red circle and a green star. Four shapes.",
        # pair right, size wrong, nothing else asserted.
        "two": "a small yellow triangle",
    }
    scores = alignment_scores(captions, truth)
    assert scores["images"] == 2 and scores["captions_without_assertions"] == 0
    assert scores["pairs"] == {"precision": 0.75, "recall": 1.0, "asserted": 4, "correct": 3, "facts": 3, "found": 3}
    assert scores["sizes"] == {"precision": 2 / 3, "recall": 2 / 3, "asserted": 3, "correct": 2, "facts": 3,
                               "found": 2}
    assert scores["relations"] == {"precision": 1.0, "recall": 0.5, "asserted": 1, "correct": 1, "facts": 2,
                                   "found": 1}
    assert scores["counts"] == {"precision": 0.5, "recall": 1 / 3, "asserted": 2, "correct": 1, "facts": 3,
                                "found": 1}
    assert alignment_scores({"two": "a photo"}, truth)["pairs"]["precision"] is None
    with pytest.raises(DataError, match="not in the ground truth"):
        alignment_scores({"three": "x"}, truth)


def test_bad_settings_and_unsafe_output_are_refused(tmp_path):
    with pytest.raises(DataError, match="cells under 4 px"):
        generate_synth(tmp_path / "x", size=8, grid=3)
    with pytest.raises(DataError, match="--max-objects"):
        generate_synth(tmp_path / "x", split_sizes=SMALL, grid=1, max_objects=2)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a captune synthetic dataset"):
        generate_synth(tmp_path / "mine", split_sizes=SMALL)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_synth_command(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--scale", "0.005", "--seed", "3", "--size", "32",
                 "--grid", "4"]) == 0
    assert "wrote 40 images (train 30, val 5, test 5)" in capsys.readouterr().err
    assert Image.open(next((out / "Flicker8k_Dataset").glob("*.png"))).size == (32, 32)
    # the old positional spelling still works, with a deprecation line
    assert main(["data", "synth", str(out), "--scale", "0.005", "--seed", "3", "--size", "32", "--grid", "4"]) == 0
    assert "`captune data synth --out OUT`" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(out), "--scale", "0"]) == 1
    assert main(["data", "synth", "--scale", "0.005"]) == 1
    assert "missing --out DIR" in capsys.readouterr().err
