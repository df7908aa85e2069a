"""Benchmark: the encode-once evaluation grid vs every system run on its own, side by side.

Same scaled BLIP-2 (real input shapes, blip2-opt-2.7b's proportions; benchmarks/common.py), same
images, same systems (captune's default grid: 9 base systems + 2 LoRA systems), every caption exactly
`--new-tokens` long (min_new_tokens = max_new_tokens, so a random model's early EOS cannot hide decoding):

  grid         `captune.grid.run.run_grid(cfg, score=False)`: open/check images, preprocess + ViT once per
               image, Q-Former once per adapter state, then every system decodes from the shared features,
               systems whose rows line up sharing one generate call per batch (model loading excluded: the
               independent arm gets its model for free)
  independent  for each system `Captioner.caption_paths`: pixel preprocessing + ViT + Q-Former + generate
  grid-unfused with --unfused: run_grid(fuse=False), one generate call per system and batch

All arms must give identical captions (checked). Then the grid's time is split into preprocessing, ViT,
Q-Former, prefill (the query + prompt positions, once per beam) and decoding (each system timed on its own),
and the FLOP-based upper bound of the speed-up is computed for the scaled and the real model.

    python benchmarks/bench_grid.py                 # 8 images, 2 rounds
    python benchmarks/bench_grid.py --tiny          # seconds: smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

STAGES = ("preprocess", "vision", "qformer", "image_prefill", "prompt_prefill", "decode")


def make_dataset(root: Path, n: int, size: int):
    """`n` eval images (Flickr8K's when present, else noise PNGs) as a LoadedDataset in the test split."""
    from captune.data.records import ImageRecord, LoadedDataset

    if common.has_flickr8k():
        paths = common.flickr8k_images(n)
        source = "Flickr8K"
    else:
        paths = []
        for i, img in enumerate(common.random_images(n, size)):
            paths.append(root / f"img{i:05d}.png")
            img.save(paths[-1])
        source = "noise PNGs"
    caps = common.caption_texts(n)
    records = [ImageRecord(i, p.name, Path(p), "test", (caps[i],)) for i, p in enumerate(paths)]
    return LoadedDataset(records=records, format="bench", root=root), source


def prepare(root: Path, sizes: common.ScaledSizes) -> tuple[Path, Path]:
    """Save the scaled model and a LoRA adapter for it (B nudged off zero so that LoRA changes outputs)."""
    import torch

    from captune.model.adapters import save_adapter
    from captune.model.lora import apply_lora

    model_dir = common.save_scaled(root / "model", sizes)
    base, _ = common.build_scaled(sizes)
    peft_model, _ = apply_lora(base, common.lora_config(), "opt")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
    return model_dir, save_adapter(peft_model, root / "adapter")


def grid_config(model_dir: Path, data_root: Path, out: Path, name: str, args: argparse.Namespace):
    from captune.config import load_config

    cfg = load_config(None, [
        f"model.name_or_path={model_dir}", f"data.path={data_root}", f"output_dir={out}", f"name={name}",
        f"generate.batch_size={args.batch}", f"generate.max_new_tokens={args.new_tokens}",
        f"generate.min_new_tokens={args.new_tokens}", "eval.human_baseline=false",
    ])
    chosen = getattr(args, "systems", "default")
    if chosen != "default":
        from captune.config import config_from_dict, config_to_dict
        from captune.demo.recipe import demo_systems

        data = config_to_dict(cfg)
        data["eval"]["systems"] = demo_systems() if chosen == "demo" else ISSUE_SYSTEMS
        cfg = config_from_dict(data)
    return cfg


# The 8 systems of the grid issue's prototype: greedy, beam 3, three prompts, nucleus, top-k, LoRA greedy.
ISSUE_SYSTEMS = [
    {"name": "zero-shot-greedy"},
    {"name": "zero-shot-beam3", "num_beams": 3},
    {"name": "prompt-photo", "prompt": "a photo of"},
    {"name": "prompt-picture", "prompt": "a picture of"},
    {"name": "prompt-question", "prompt": "Question: what is in this image? Answer:"},
    {"name": "sample-nucleus-0.9", "do_sample": True, "top_p": 0.9},
    {"name": "sample-topk-50", "do_sample": True, "top_k": 50, "temperature": 0.7},
    {"name": "lora-greedy", "adapter": True},
]


def prompt_tokens(tokenizer, prompt: str) -> int:
    return 1 + (len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0)


def flop_bound(config, systems, tokenizer, images: int, new_tokens: int) -> dict[str, Any]:
    """FLOPs of both arms from `generation_flops` (the grid shares vision, Q-Former and the image prefill per
    adapter state; independent systems redo them, and plain `generate` prefills the images once per beam)."""
    grid = {"vision": 0.0, "qformer": 0.0, "image_prefill": 0.0, "prompt_prefill": 0.0, "decode": 0.0}
    independent = 0.0
    states = {s.adapter for s in systems}
    for s in systems:
        p = prompt_tokens(tokenizer, s.decode.prompt)
        alone = common.generation_flops(config, images, p, new_tokens, s.decode.num_beams)
        shared = common.generation_flops(config, images, p, new_tokens, s.decode.num_beams, shared_prefix=True)
        independent += alone["total"]
        grid["prompt_prefill"] += shared["prompt_prefill"]
        grid["decode"] += shared["decode"]
    once = common.generation_flops(config, images, 1, 1, 1, shared_prefix=True)
    grid["vision"] = once["vision"]
    grid["qformer"] = len(states) * once["qformer"]
    grid["image_prefill"] = len(states) * once["image_prefill"]
    total = sum(grid.values())
    return {**grid, "grid": total, "independent": independent, "bound": independent / total}


def breakdown(model_dir: Path, adapter_dir: Path, records, systems, args: argparse.Namespace) -> dict[str, float]:
    """Where the grid's time goes, stage by stage as run_grid does it: preprocessing, ViT, Q-Former, the
    shared image prefill, and per system the prompt prefill + first token vs the remaining decoding."""
    import torch

    from captune.config import ModelConfig
    from captune.generate.captioner import Captioner
    from captune.model.adapters import load_adapter
    from captune.model.features import encode_images, pixel_values
    from captune.model.load import load_blip2

    loaded = load_blip2(ModelConfig(name_or_path=str(model_dir)))
    model = load_adapter(loaded.model, adapter_dir)
    model.eval()
    cap = Captioner(model, loaded.processor, loaded.family)
    paths = [r.path for r in records]
    bs = args.batch
    parts: dict[str, float] = {}
    pix = []
    with common.section("preprocess", parts):
        for i in range(0, len(paths), bs):
            pix.append(pixel_values(paths[i:i + bs], loaded.processor.image_processor))
    with common.section("vision", parts), torch.no_grad():
        embeds = torch.cat([encode_images(model, p) for p in pix])
    for state in sorted({s.adapter for s in systems}):
        with common.section("qformer", parts):
            feats = torch.cat([cap.lm_inputs(embeds[i:i + bs], state) for i in range(0, len(paths), bs)])
        for i in range(0, len(paths), bs):
            with common.section("image_prefill", parts):
                prefix = cap.prefix_cache(feats[i:i + bs], state)
            for s in (s for s in systems if s.adapter == state):
                one = replace(s.decode, max_new_tokens=1, min_new_tokens=1)
                for key, settings in ((f"first/{s.name}", one), (f"generate/{s.name}", s.decode)):
                    with common.section(key, parts):
                        cap.generate_from_features(feats[i:i + bs], settings, s.adapter, seed=i, prefix=prefix)
    for s in systems:
        parts[f"decode/{s.name}"] = parts[f"generate/{s.name}"] - parts[f"first/{s.name}"]
    parts["prompt_prefill"] = sum(v for k, v in parts.items() if k.startswith("first/"))
    parts["decode"] = sum(v for k, v in parts.items() if k.startswith("decode/"))
    return parts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8, help="eval images (default 8)")
    ap.add_argument("--batch", type=int, default=8, help="generation batch size (default 8)")
    ap.add_argument("--new-tokens", type=int, default=20, help="exact caption length in tokens (default 20)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of both arms (default 2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-stage breakdown")
    ap.add_argument("--unfused", action="store_true",
                    help="also time the grid with one generate call per system (run_grid(fuse=False))")
    ap.add_argument("--systems", choices=["default", "demo", "issue"], default="default",
                    help="captune's default grid (11 systems), the demo's 8 (greedy, beam 3 + no-repeat-3, "
                         "2 prompts, nucleus, top-k + no-repeat-2, LoRA greedy and beam 3 + no-repeat-3) or the "
                         "grid issue's prototype 8 (greedy, beam 3, 3 prompts, nucleus, top-k, LoRA greedy)")
    common.add_run_args(ap, "a tiny model: a smoke test, not a measurement")
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    sizes = common.TINY_SIZES if args.tiny else common.ScaledSizes()
    if args.tiny:
        args.images, args.batch, args.new_tokens, args.repeats = 3, 2, 3, 1
    info = common.print_machine()

    from captune.generate.captioner import Captioner
    from captune.grid.run import read_predictions, resolve_systems, run_grid
    from captune.model.adapters import load_adapter
    from captune.model.load import load_blip2
    from captune.model.presets import real_config

    with tempfile.TemporaryDirectory(prefix="bench_grid_") as tmp:
        root = Path(tmp)
        model_dir, adapter_dir = prepare(root, sizes)
        (root / "data").mkdir()
        dataset, source = make_dataset(root / "data", args.images, sizes.image_size)
        records = dataset.select("eval")
        cfg0 = grid_config(model_dir, root / "data", root / "runs", "probe", args)
        systems = resolve_systems(cfg0, with_adapter=True)
        print(f"{len(records)} {source} images, {len(systems)} systems ({', '.join(s.name for s in systems)}), "
              f"batch {args.batch}, exactly {args.new_tokens} new tokens per caption")

        loaded = load_blip2(cfg0.model)
        model = load_adapter(loaded.model, adapter_dir)
        model.eval()
        captioner = Captioner(model, loaded.processor, loaded.family)
        paths = [str(r.path) for r in records]
        independent: dict[str, list[str]] = {}

        def run_independent() -> None:
            for s in systems:
                out = captioner.caption_paths(paths, s.decode, s.adapter, batch_size=args.batch)
                independent[s.name] = [c[0] for c in out]

        grid_runs: list[dict[str, float]] = []
        unfused_runs: list[dict[str, float]] = []

        def grid_arm(runs: list[dict[str, float]], fuse: bool):
            def run_the_grid() -> None:
                name = f"grid{len(runs)}" if fuse else f"unfused{len(runs)}"
                cfg = grid_config(model_dir, root / "data", root / "runs", name, args)
                start = time.perf_counter()
                result = run_grid(cfg, adapter_dir=adapter_dir, progress=False, dataset=dataset, score=False,
                                  fuse=fuse)
                runs.append(dict(result.timings, wall=time.perf_counter() - start))
            return run_the_grid

        arms = {"grid": grid_arm(grid_runs, True), "independent": run_independent}
        if args.unfused:
            arms["grid-unfused"] = grid_arm(unfused_runs, False)
        load = common.wait_for_quiet(args.load, args.wait_tries)
        times = common.interleaved(arms, args.repeats, warmup=0)
        grid_net = [g["wall"] - g.get("load_model", 0.0) for g in grid_runs]
        ratio = common.paired_ratio(times["independent"], grid_net)
        pred_dir = root / "runs" / "grid0" / "predictions"
        ids = [r.image_id for r in records]
        same = all(read_predictions(pred_dir / f"{s.name}.json", ids) == dict(zip(ids, independent[s.name],
                                                                                  strict=True)) for s in systems)
        st_grid, st_ind = common.stats(grid_net), common.stats(times["independent"])
        print(f"load {load:.2f} -> {common.load_average():.2f}")
        print(f"grid (run_grid, model load excluded): {st_grid}; {len(records) * len(systems) / st_grid.median:.1f} "
              "captions/s")
        print(f"independent systems:                  {st_ind}; "
              f"{len(records) * len(systems) / st_ind.median:.1f} captions/s")
        print(f"speed-up of the grid: {ratio:.2f}x (median of paired rounds); identical captions: {same}")
        unfused_net: list[float] = []
        if args.unfused:
            unfused_net = [g["wall"] - g.get("load_model", 0.0) for g in unfused_runs]
            same_unfused = all(
                read_predictions(root / "runs" / "unfused0" / "predictions" / f"{s.name}.json", ids)
                == read_predictions(pred_dir / f"{s.name}.json", ids) for s in systems)
            print(f"grid without fusing systems into shared generate calls: {common.stats(unfused_net)}; fusing "
                  f"gains {common.paired_ratio(unfused_net, grid_net):.2f}x; identical captions: {same_unfused}")
        stages = {k: v for k, v in grid_runs[-1].items() if not k.startswith("generate/")}
        stages["generate"] = sum(v for k, v in grid_runs[-1].items() if k.startswith("generate/"))
        print("run_grid's own timings (last round): " + ", ".join(f"{k} {common.fmt_s(v)}" for k, v in stages.items()))

        tok = loaded.processor.tokenizer
        bounds = {"scaled": flop_bound(common.scaled_meta_config(sizes), systems, tok, len(records), args.new_tokens)}
        if not args.tiny:
            bounds["blip2-opt-2.7b"] = flop_bound(real_config("blip2-opt-2.7b"), systems, tok, len(records),
                                                  args.new_tokens)
        print("FLOPs of the grid by stage (analytic LM, counted ViT/Q-Former) and the speed-up bound:")
        for name, b in bounds.items():
            shares = ", ".join(f"{k} {b[k] / b['grid']:.1%}" for k in STAGES if k != "preprocess")
            print(f"  {name:>15}: {shares} of the grid; independent/grid {b['bound']:.2f}x")

        parts: dict[str, float] = {}
        if not args.no_breakdown:
            parts = breakdown(model_dir, adapter_dir, records, systems, args)
            total = sum(parts[k] for k in STAGES)
            print("measured grid stages (one pass, same images): " + ", ".join(
                f"{k} {common.fmt_s(parts[k])} ({parts[k] / total:.0%})" for k in STAGES))
            print(f"  {'system':<24} {'prompt+1st':>11} {'decode':>10} {'generate':>10}")
            for s in systems:
                print(f"  {s.name:<24} {common.fmt_s(parts['first/' + s.name]):>11} "
                      f"{common.fmt_s(parts['decode/' + s.name]):>10} {common.fmt_s(parts['generate/' + s.name]):>10}")
            states = len({s.adapter for s in systems})
            shared = parts["preprocess"] + parts["vision"] + parts["qformer"] + parts["image_prefill"]
            per_system = total - shared
            once = parts["preprocess"] + parts["vision"] + (parts["qformer"] + parts["image_prefill"]) / states
            expected = (len(systems) * once + per_system) / total
            print(f"shared stages {common.fmt_s(shared)}, per-system stages (prompt prefill + decoding) "
                  f"{common.fmt_s(per_system)} = {per_system / total:.0%} of the grid; sharing can give at most "
                  f"~{expected:.2f}x with {len(systems)} systems (each independent system redoing the shared "
                  f"stages once, beams not counted)")
    results = {"machine": info, "sizes": sizes.__dict__, "images": len(records), "systems": [s.name for s in systems],
               "new_tokens": args.new_tokens, "batch": args.batch, "grid_s": grid_net, "grid_timings": grid_runs,
               "grid_unfused_s": unfused_net,
               "independent_s": times["independent"], "speedup": ratio, "identical_captions": same,
               "flops": bounds, "breakdown_s": parts, "load_before": load, "peak_rss_mib": common.peak_rss_mib()}
    print(f"peak RSS: {results['peak_rss_mib']:.0f} MiB")
    common.write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
