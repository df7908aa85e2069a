"""Smoke tests of the benchmark scripts: each runs in-process at its `--tiny` size (seconds), so they cannot rot.

No timing assertions: only that every code path runs, the results have their shape and `--out` writes JSON.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ["bench_train_step", "bench_grid", "bench_data", "bench_scaling", "gpu_full_size", "profile_cpu",
           "gpu_smoke", "bench_demo", "bench_shard"]


def load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTUNE_NO_PROGRESS", "1")


def run_tiny(name: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{name}.json"
    result = load(name).main(["--tiny", "--out", str(out)])
    if "skipped" not in result:
        assert json.loads(out.read_text())  # the JSON round-trips
    return result


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load(name).main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_train_step_tiny(tmp_path: Path) -> None:
    result = run_tiny("bench_train_step", tmp_path)
    assert [s["dropout"] for s in result["settings"]] == ["off", "on"]
    for setting in result["settings"]:
        assert set(setting["variants"]) == {"cached", "uncached", "peft"}
        assert all(v["median_s"] > 0 and v["ratio_vs_cached"] > 0 for v in setting["variants"].values())
    flops = result["flops"]["scaled"]
    assert 0 < flops["vision_share"] < 1 and flops["cache_bound"] > 1


def test_grid_tiny(tmp_path: Path) -> None:
    result = run_tiny("bench_grid", tmp_path)
    assert result["identical_captions"] is True  # the grid and the independent systems agree
    assert len(result["systems"]) >= 8 and result["speedup"] > 0
    assert {"preprocess", "vision", "qformer", "image_prefill", "prompt_prefill", "decode"} <= set(
        result["breakdown_s"])


def test_data_tiny(tmp_path: Path) -> None:
    result = run_tiny("bench_data", tmp_path)
    if "skipped" in result:
        pytest.skip(result["skipped"])
    assert result["throughput"]["flickr8k-224"]["main"]["images_per_s"] > 0
    assert result["consumption"]["vit_images_per_s"] > 0


def test_scaling_tiny(tmp_path: Path) -> None:
    result = run_tiny("bench_scaling", tmp_path)
    assert [r["images"] for r in result["rows"]] == [32, 64]
    assert all(r["train_steps"] > 0 and r["eval_s"] > 0 for r in result["rows"])


def test_gpu_full_size_tiny(tmp_path: Path) -> None:
    result = run_tiny("gpu_full_size", tmp_path)
    assert result["estimates"]["rows"] and result["estimates"]["weights_bytes"] > 0
    assert len(result["training"]) == 4 and all("step_s" in r for r in result["training"])
    assert [g["num_beams"] for g in result["generation"]] == [1, 2]
    assert all(g["generated_shape"][1] == 3 for g in result["generation"])  # exactly --new-tokens


def test_profile_tiny(tmp_path: Path) -> None:
    result = run_tiny("profile_cpu", tmp_path)
    for phase in ("train", "grid"):
        assert result[phase]["profiled_s"] > 0 and result[phase]["top_cumulative"]


def test_gpu_smoke_dry_run(tmp_path: Path) -> None:
    """The GPU smoke command with model.device=cpu: every stage of both tiny models records cpu; a stage
    recording another device than asked is a failure."""
    smoke = load("gpu_smoke")
    out = tmp_path / "smoke.json"
    result = smoke.main(["--dry-run", "--out", str(out)])
    assert result["failures"] == [] and json.loads(out.read_text())["smoke_s"] > 0
    assert set(result["families"]) == {"tiny-opt", "tiny-t5"}
    for res in result["families"].values():
        assert {"train", "adapter record", "grid: lora-greedy", "grid: zero-shot-greedy", "caption", "export"} <= \
            set(res["devices"])
        assert set(res["devices"].values()) == {"cpu"}
    assert result["full_size"]["exit"] == 0
    assert smoke.wrong_devices(result["families"], "cuda")  # on a GPU machine these records would fail it


def test_compare_runs_finds_identical_and_different_runs(tmp_path: Path) -> None:
    """The identical-output check of issue 18 can fail: a changed caption or score is reported."""
    compare = load("compare_runs").compare
    for name in ("a", "b"):
        (tmp_path / name / "predictions").mkdir(parents=True)
        (tmp_path / name / "predictions" / "s.json").write_text('[{"image_id": 1, "caption": "a dog"}]')
        (tmp_path / name / "scores.json").write_text(json.dumps({"systems": {"s": 0.5}, "timings": {"x": ord(name)}}))
    assert compare(tmp_path / "a", tmp_path / "b") == []  # timings differ, results do not
    (tmp_path / "b" / "scores.json").write_text('{"systems": {"s": 0.6}}')
    (tmp_path / "b" / "predictions" / "s.json").write_text('[{"image_id": 1, "caption": "a cat"}]')
    found = compare(tmp_path / "a", tmp_path / "b")
    assert any("s.json" in d for d in found) and any("systems.s" in d for d in found)
