"""`captune sweep`: grid parsing and names, errors before training, a local sweep end to end (resume,
report, ablation table), and the Ray backend giving the local backend's adapters."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from captune.cli import main
from captune.errors import UserError
from captune.sweep.spec import expand, parse_grid, parse_seeds, variant_names
from captune.sweep.table import ablation_rows, markdown, paired_lines

SYSTEMS = """
eval:
  metrics: [coco, rouge, diversity]
  bootstrap_samples: 100
  paired_trials: 200
  human_baseline: false
  systems:
    - {name: zero-shot-greedy}
    - {name: prompt-photo, prompt: "a photo of"}
    - {name: lora-greedy, adapter: true}
"""
GRID = ["lora.preset=qformer,qformer+lm"]


@pytest.fixture(scope="module")
def sweep_config(tmp_path_factory, tiny_model_dirs) -> Path:
    from captune.demo.synth import generate_synth

    root = tmp_path_factory.mktemp("sweep")
    generate_synth(root / "synth", scale=0.005, size=32)
    path = root / "run.yaml"
    path.write_text(
        f"name: base\noutput_dir: {root / 'runs'}\nmodel:\n  name_or_path: {tiny_model_dirs['opt']}\n"
        f"data:\n  path: {root / 'synth'}\ntrain:\n  max_steps: 5\n  batch_size: 8\n  lr: 0.003\n"
        "  checkpoint_every: 5\n  tensorboard: false\ngenerate:\n  max_new_tokens: 8\n" + SYSTEMS)
    return path


LOADS: list[str] = []  # base-model loads in this process during the `local_sweep` fixture


@pytest.fixture(scope="module")
def local_sweep(sweep_config: Path) -> Path:
    """2 placements x 1 seed through the CLI: the sweep directory."""
    import captune.model.load as load_module

    out = sweep_config.parent / "local"
    real = load_module.load_blip2
    monkey = pytest.MonkeyPatch()
    monkey.setattr(load_module, "load_blip2", lambda cfg, *a, **k: LOADS.append(cfg.name_or_path) or real(cfg, *a, **k))
    try:
        assert main(["sweep", str(sweep_config), "--grid", GRID[0], "--seeds", "0", "--out", str(out),
                     "--no-progress"]) == 0
    finally:
        monkey.undo()
    return out


def _adapter(out: Path, name: str) -> dict:
    return load_file(out / "variants" / name / "adapter" / "adapter_model.safetensors")


def test_grid_values_are_typed_and_names_safe_and_unique() -> None:
    grid = parse_grid(["lora.preset=qformer,qformer+lm", "lora.r=4,8", "train.lr=1e-3"])
    assert grid == [("lora.preset", ["qformer", "qformer+lm"]), ("lora.r", [4, 8]), ("train.lr", [0.001])]
    assert parse_seeds("0,1,2") == [0, 1, 2]
    names = variant_names([{"lora.preset": "qformer", "lora.r": 4}, {"lora.preset": "lm/x y", "lora.r": 8}], [0, 1])
    assert names == [["qformer-r4-s0", "qformer-r4-s1"], ["lm_x_y-r8-s0", "lm_x_y-r8-s1"]]
    # Labels that collide once made safe fall back to key-qualified, then numbered names.
    clash = variant_names([{"data.path": "a/b"}, {"data.path": "a b"}], [0])
    assert len({n for row in clash for n in row}) == 2
    assert all("/" not in n and " " not in n for row in clash for n in row)


def test_expand_validates_every_variant_and_finds_the_configs_own_point(sweep_config: Path, tmp_path: Path) -> None:
    spec = expand(sweep_config, [*GRID, "lora.r=4,8"], [0, 1], tmp_path)
    assert [v.name for v in spec.variants][:3] == ["qformer-r4-s0", "qformer-r4-s1", "qformer-r8-s0"]
    assert len(spec.variants) == 8
    v = spec.variants[-1]
    assert (v.cfg.lora.preset, v.cfg.lora.r, v.cfg.train.seed) == ("qformer+lm", 8, 1)
    assert v.run_dir == tmp_path / "variants" / "qformer+lm-r8-s1"
    assert v.cfg.train.feature_cache == "disk"  # one feature cache for every variant and the grid
    assert spec.own_point == {"lora.preset": "qformer+lm", "lora.r": 8}  # the config's defaults
    assert expand(sweep_config, ["lora.r=4"], None, tmp_path).own_point is None


@pytest.mark.parametrize(("grid", "named"), [
    ("lora.presett=qformer,lm", "lora.presett"),
    ("lora.preset=qformer,middle", "middle"),
    ("lora.r=8,eight", "lora.r"),
    ("train.seed=1,2", "--seeds"),
    ("lora.preset", "KEY=V1,V2"),
])
def test_bad_grid_is_one_line_before_anything_trains(sweep_config: Path, tmp_path: Path, capsys,
                                                     grid: str, named: str) -> None:
    out = tmp_path / "bad"
    assert main(["sweep", str(sweep_config), "--grid", grid, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("captune: error:") and named in err
    assert not out.exists()


def test_ray_missing_is_one_line_naming_the_extra(monkeypatch, sweep_config: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    spec = expand(sweep_config, GRID, [0], tmp_path)
    from captune.sweep.local import run_sweep

    with pytest.raises(UserError, match=r"pip install captune\[ray\]"):
        run_sweep(spec, backend="ray", progress=False)
    assert not (tmp_path / "variants").exists()


@pytest.mark.slow
def test_local_sweep_scores_every_system_once_and_reports(local_sweep: Path) -> None:
    scores = json.loads((local_sweep / "scores.json").read_text())
    assert scores["systems_order"] == ["zero-shot-greedy", "prompt-photo", "qformer-s0/lora-greedy",
                                       "qformer+lm-s0/lora-greedy"]
    # Baselines decoded once into baselines/, each adapter system in its variant's run directory.
    assert sorted(p.name for p in (local_sweep / "baselines" / "predictions").iterdir()) == [
        "prompt-photo.json", "zero-shot-greedy.json"]
    for name in ("qformer-s0", "qformer+lm-s0"):
        run = local_sweep / "variants" / name
        assert (run / "train" / "summary.json").is_file() and (run / "adapter" / "adapter_config.json").is_file()
        assert [p.name for p in (run / "predictions").iterdir()] == ["lora-greedy.json"]
    pairs = {(c["a"], c["b"]) for c in scores["comparisons"]}
    best = scores["sweep"]["best_baseline"]
    assert pairs == {("qformer-s0/lora-greedy", "qformer+lm-s0/lora-greedy"),
                     ("qformer-s0/lora-greedy", best), ("qformer+lm-s0/lora-greedy", best)}
    report = (local_sweep / "report.md").read_text()
    assert "## Ablation" in report and "qformer+lm-s0/lora-greedy" in report
    assert (local_sweep / "params_vs_cider.png").read_bytes()[:4] == b"\x89PNG"
    page = (local_sweep / "report.html").read_text()
    assert "qformer+lm-s0/lora-greedy" in page and "data:image/png;base64," in page


@pytest.mark.slow
def test_ablation_table_has_parameters_time_and_metrics(local_sweep: Path) -> None:
    scores = json.loads((local_sweep / "scores.json").read_text())
    rows = {r["variant"]: r for r in ablation_rows(scores)}
    assert set(rows) == {"qformer", "qformer+lm"}
    for group, row in rows.items():
        summary = json.loads((local_sweep / "variants" / f"{group}-s0" / "train" / "summary.json").read_text())
        assert row["trainable"] == summary["parameters"]["trainable"]
        assert f"{summary['parameters']['trainable_share']:.2%}" in row["params"]
        cider = scores["systems"][f"{group}-s0/lora-greedy"]["metrics"]["coco/CIDEr"]["value"]
        assert row["CIDEr"] == f"{cider:.3f}"
    assert rows["qformer"]["trainable"] < rows["qformer+lm"]["trainable"]
    assert all(cell.count("(p ") == 2 for line in paired_lines(scores) for cell in [" ".join(line)])


def test_mean_and_sd_over_seeds() -> None:
    def system(cider: float) -> dict:
        return {"metrics": {"coco/CIDEr": {"value": cider, "ci_low": cider - 0.1, "ci_high": cider + 0.1}}}

    scores = {"images": 3, "systems_order": ["b", "v-s0/lora", "v-s1/lora"],
              "systems": {"b": system(0.5), "v-s0/lora": system(1.0), "v-s1/lora": system(2.0)},
              "comparisons": [{"a": "v-s0/lora", "b": "b", "metric": "coco/CIDEr", "delta": 0.5, "p_value": 1 / 201,
                               "trials": 200}],
              "sweep": {"grid": [["k", ["v"]]], "seeds": [0, 1], "own_group": "v", "best_baseline": "b",
                        "adapter_systems": ["lora"],
                        "variants": {n: {"group": "v", "seed": s, "trainable": 10, "trainable_share": 0.01,
                                         "train_seconds": 3.0 + s} for s, n in enumerate(["v-s0", "v-s1"])}}}
    (row,) = ablation_rows(scores)
    assert row["CIDEr"] == "1.500 ± 0.707" and row["train_s"] == "3.5 ± 0.7" and row["seeds"] == 2
    assert paired_lines(scores) == [["v-s0/lora", "b", "+0.500 (p ≤ 0.005)", "–"]]
    assert "1.000 [0.900, 1.100]" in markdown(scores)


@pytest.mark.slow
def test_rerun_skips_finished_and_resumes_interrupted_variants(local_sweep: Path, sweep_config: Path) -> None:
    before = {n: _adapter(local_sweep, n) for n in ("qformer-s0", "qformer+lm-s0")}
    kept = local_sweep / "variants" / "qformer-s0" / "adapter" / "adapter_model.safetensors"
    mtime = kept.stat().st_mtime_ns
    # As if killed after its last checkpoint: resumed from it, not retrained.
    (local_sweep / "variants" / "qformer+lm-s0" / "train" / "summary.json").unlink()
    (local_sweep / "scores.json").unlink()
    time.sleep(0.01)
    assert main(["sweep", str(sweep_config), "--grid", GRID[0], "--seeds", "0", "--out", str(local_sweep),
                 "--no-progress"]) == 0
    assert kept.stat().st_mtime_ns == mtime  # finished: not retrained
    assert (local_sweep / "variants" / "qformer+lm-s0" / "train" / "summary.json").is_file()
    for name, tensors in before.items():
        after = _adapter(local_sweep, name)
        assert all((after[k] == tensors[k]).all() for k in tensors)
    assert (local_sweep / "scores.json").is_file()


@pytest.mark.slow
def test_ray_backend_trains_the_same_adapters_as_local(local_sweep: Path, sweep_config: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="ray not installed (pip install captune[ray])")
    from captune.sweep.local import run_sweep

    src = str(Path(__file__).resolve().parents[1] / "src")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": src, "OMP_NUM_THREADS": "1"}})
    try:
        spec = expand(sweep_config, GRID, [0], tmp_path)
        report = run_sweep(spec, backend="ray", progress=False, say=lambda s: None)
    finally:
        ray.shutdown()
    trials = sorted(p.name for p in (tmp_path / "ray" / "train").iterdir() if p.name.startswith("_trial"))
    assert len(trials) == 2  # one Tune trial per variant
    for name in ("qformer-s0", "qformer+lm-s0"):
        a, b = _adapter(tmp_path, name), _adapter(local_sweep, name)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    local = json.loads((local_sweep / "scores.json").read_text())
    for system in report["systems_order"]:
        assert report["systems"][system]["metrics"] == local["systems"][system]["metrics"]


@pytest.mark.slow
def test_bench_sweep_tiny_checks_identity(tmp_path: Path) -> None:
    """benchmarks/bench_sweep.py at its --tiny size, 2 placements: runs, times both arms, finds them identical."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sweep.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("bench_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--tiny", "--placements", "qformer,lm", "--out", str(tmp_path / "r.json")])
    assert result["identical"] and set(result["adapters_equal"]) == {"qformer", "lm"}
    assert len(result["scores_equal"]) == 2 * 4  # 3 baselines + lora-greedy per run
    assert json.loads((tmp_path / "r.json").read_text())["seconds"]["sweep"] > 0


def test_one_loaded_base_serves_every_variants_grid(local_sweep: Path, sweep_config: Path, tmp_path: Path) -> None:
    """The sweep's captioning loads the base once: each grid takes its adapter off again, so every variant's
    captions equal those of a grid on a freshly loaded model, and the base ends without LoRA layers."""
    import shutil
    from dataclasses import replace

    from captune.data import load_dataset_from_config
    from captune.grid.run import only_systems, run_grid
    from captune.model.load import BaseModels
    from captune.sweep.local import caption_all
    from captune.sweep.spec import expand

    copy = tmp_path / "copy"
    shutil.copytree(local_sweep, copy)
    for pred in copy.rglob("predictions/*.json"):
        pred.unlink()  # every grid must caption again
    spec = expand(sweep_config, GRID, [0], copy)
    dataset = load_dataset_from_config(spec.base.data)
    loads = []
    import captune.grid.run as grid_module
    import captune.model.load as load_module

    real = load_module.load_blip2
    monkey = pytest.MonkeyPatch()
    for module in (load_module, grid_module):
        monkey.setattr(module, "load_blip2", lambda *a, **k: loads.append(1) or real(*a, **k), raising=False)
    try:
        caption_all(spec, progress=False, dataset=dataset)
    finally:
        monkey.undo()
    assert len(loads) == 1  # one base for the baselines and both variants
    for v in spec.variants:
        fresh = replace(only_systems(v.cfg, lambda s: s.adapter), output_dir=str(tmp_path / "fresh"), name=v.name)
        run_grid(fresh, adapter_dir=v.run_dir / "adapter", progress=False, dataset=dataset, score=False)
        for pred in (v.run_dir / "predictions").glob("*.json"):
            assert pred.read_bytes() == (tmp_path / "fresh" / v.name / "predictions" / pred.name).read_bytes()
    bases = BaseModels()
    again = replace(only_systems(spec.variants[0].cfg, lambda s: s.adapter), output_dir=str(tmp_path / "again"))
    run_grid(again, adapter_dir=spec.variants[0].run_dir / "adapter", progress=False, dataset=dataset, score=False,
             bases=bases)  # captions with the adapter on, then takes it off
    assert (tmp_path / "again" / again.name / "predictions").is_dir()
    assert not any("lora_" in n for n, _ in bases.loaded.model.named_parameters())


def test_variants_train_on_one_loaded_base(local_sweep: Path) -> None:
    """Both variants trained (and anything captioned in this process) on one load of the base model."""
    assert len(LOADS) == 1


def test_lent_base_comes_back_clean_and_trains_the_same_adapter(local_sweep: Path, sweep_config: Path,
                                                                  tmp_path: Path, monkeypatch) -> None:
    """A training that fails still takes its LoRA layers off the lent base, untouched; the next variant
    trained on that base gets the adapter the sweep's own run got (the first variant trained on this base,
    there; a fresh load for the Ray trials and `captune run`)."""
    from dataclasses import replace

    from captune.data import load_dataset_from_config
    from captune.model.load import BaseModels
    from captune.train.loop import LoRARecipe, train

    spec = expand(sweep_config, GRID, [0], tmp_path)
    dataset = load_dataset_from_config(spec.base.data)
    bases = BaseModels()
    base = bases.get(spec.base.model)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}

    def boom(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(LoRARecipe, "fit", boom)
    cfg = spec.variants[0].cfg
    with pytest.raises(RuntimeError, match="boom"):
        train(replace(cfg, train=replace(cfg.train, gradient_checkpointing=True)), progress=False, dataset=dataset,
              bases=bases)
    monkeypatch.undo()
    assert not any("lora_" in n for n, _ in base.model.named_parameters()) and not base.model.training
    assert not any(getattr(m, "gradient_checkpointing", False) for m in base.model.modules())
    assert not getattr(base.model.language_model, "_require_grads_hooks", None)
    after = base.model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)

    v = spec.variants[1]  # qformer+lm, which the sweep trained second on its shared base
    train(v.cfg, progress=False, dataset=dataset, bases=bases)
    assert bases.loads == 1
    a, b = _adapter(tmp_path, v.name), _adapter(local_sweep, v.name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ray_backend_under_a_launch_is_one_line(sweep_config: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["sweep", str(sweep_config), "--grid", GRID[0], "--out", str(tmp_path), "--backend", "ray"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("captune: error: --backend ray starts its own trials") and "torchrun" in err[-1]
    assert not (tmp_path / "variants").exists()


@pytest.mark.slow
def test_sweep_under_two_processes_trains_data_parallel_and_shards_the_grid(local_sweep: Path, sweep_config: Path,
                                                                             tmp_path: Path) -> None:
    """torchrun with 2 gloo processes: a missing variant trains data parallel, every grid is captioned in
    shares, and process 0 alone scores and reports. Captions of the same adapters are byte-identical to the
    one-process sweep's, and so are their scores."""
    import os
    import shutil
    import subprocess

    two = tmp_path / "two"
    shutil.copytree(local_sweep, two)
    for pred in two.rglob("predictions/*.json"):
        pred.unlink()  # the baselines and the finished variant are captioned again, sharded
    shutil.rmtree(two / "variants" / "qformer+lm-s0")  # trains again, on 2 processes
    for name in ("scores.json", "report.md", "report.html", "sweep_timings.json"):
        (two / name).unlink(missing_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", CAPTUNE_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29557",
           "-m", "captune", "sweep", str(sweep_config), "--grid", GRID[0], "--seeds", "0", "--out", str(two),
           "--set", "lora.dropout=0.0"]  # dropout masks differ between 1 and 2 processes; the rest must not
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("paired tests") == 1 and res.stderr.count("sweep: 2 variants") == 1  # process 0 only

    summary = json.loads((two / "variants" / "qformer+lm-s0" / "train" / "summary.json").read_text())
    assert summary["processes"] == 2
    from captune.train.loop import train

    one_process = expand(sweep_config, GRID, [0], tmp_path / "one", ["lora.dropout=0.0"]).variants[1]
    train(one_process.cfg, progress=False)
    a, b = _adapter(two, "qformer+lm-s0"), _adapter(tmp_path / "one", "qformer+lm-s0")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=2e-4, rtol=1e-2) for k in a)
    same = [Path("baselines"), Path("variants") / "qformer-s0"]
    for run in same:
        files = sorted(p.name for p in (local_sweep / run / "predictions").glob("*.json"))
        assert files and files == sorted(p.name for p in (two / run / "predictions").glob("*.json"))
        for name in files:
            assert (two / run / "predictions" / name).read_bytes() == \
                (local_sweep / run / "predictions" / name).read_bytes(), (run, name)
    one, got = (json.loads((d / "scores.json").read_text())["systems"] for d in (local_sweep, two))
    for system in ("zero-shot-greedy", "prompt-photo", "qformer-s0/lora-greedy"):
        assert got[system]["metrics"] == one[system]["metrics"], system
    assert (two / "report.md").is_file() and not list(two.rglob("predictions/.*"))  # no temporary files left
