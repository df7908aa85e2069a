"""Benchmark: image decode + preprocessing throughput vs what the model consumes.

The data path is captune's own: `captune.model.features.pixel_values` (= `captune.data.open_image` with
JPEG draft decoding + the BLIP-2 image processor at 224 px, CLIP normalisation), on Flickr8K from
../shared (or $CAPTUNE_SHARED): the 224 px JPEGs as stored there, and the 60 originals (up to 500 px,
closer to what users have). Throughput in images/s with

  main       the calling process only (what `train.feature_cache=off` and the grid's encode stage do today)
  threads=N  a thread pool mapping batches (Pillow releases the GIL while decoding and resizing)
  workers=N  a torch DataLoader with N worker processes (batches come back through shared memory)

and then the scaled model's consumption: a training step without the feature cache (images/s = batch /
step time) and the bare ViT forward of the grid's encode stage. Data loading must never be the bottleneck.

    python benchmarks/bench_data.py                 # 512 images per run, 3 repeats
    python benchmarks/bench_data.py --tiny          # seconds: smoke test
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


class _Batches:
    """A map-style dataset whose items are whole preprocessed batches (one `pixel_values` call each)."""

    def __init__(self, chunks: list[list[Path]], image_processor) -> None:
        self.chunks = chunks
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int):
        from captune.model.features import pixel_values

        return pixel_values(self.chunks[index], self.image_processor)


def run_main(chunks: list[list[Path]], image_processor) -> int:
    from captune.model.features import pixel_values

    return sum(int(pixel_values(c, image_processor).shape[0]) for c in chunks)


def run_threads(chunks: list[list[Path]], image_processor, threads: int) -> int:
    from captune.model.features import pixel_values

    with ThreadPoolExecutor(threads) as pool:
        return sum(int(t.shape[0]) for t in pool.map(lambda c: pixel_values(c, image_processor), chunks))


def run_workers(chunks: list[list[Path]], image_processor, workers: int) -> int:
    from torch.utils.data import DataLoader

    loader = DataLoader(_Batches(chunks, image_processor), batch_size=None, num_workers=workers,
                        multiprocessing_context="fork")
    return sum(int(t.shape[0]) for t in loader)


def consumption(batch: int, repeats: int, tiny: bool) -> dict[str, float]:
    """Images/s the scaled model consumes: uncached training step, and the bare ViT forward (grid encode)."""
    import torch

    from captune.model.features import encode_images
    from captune.model.lora import apply_lora
    from captune.train.batches import CaptionCollator
    from captune.train.steps import forward_loss_sum

    sizes = common.TINY_SIZES if tiny else common.ScaledSizes()
    base, processor = common.build_scaled(sizes)
    model, _ = apply_lora(base, common.lora_config(0.0), "opt")
    blip = model.get_base_model()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    collator = CaptionCollator(processor.tokenizer, "opt", blip.config.image_token_index,
                               blip.config.num_query_tokens, common.PROMPT, 40)
    images, _ = common.load_images(batch, sizes.image_size)
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    text = collator(common.caption_texts(batch, seed=3))

    def step() -> None:
        model.train()
        loss, n = forward_loss_sum(model, text, encode_images(model, pixels))
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def vit() -> None:
        model.eval()
        encode_images(model, pixels)

    times = common.interleaved({"step": step, "vit": vit}, repeats, warmup=1)
    return {"uncached_step_images_per_s": batch / common.stats(times["step"]).median,
            "vit_images_per_s": batch / common.stats(times["vit"]).median}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512, help="images per run (default 512)")
    ap.add_argument("--batch", type=int, default=16, help="images per pixel_values call (default 16)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2], help="thread / worker counts (default 1 2)")
    ap.add_argument("--step-batch", type=int, default=8, help="training batch for the consumption side")
    common.add_run_args(ap, "a few images: a smoke test, not a measurement")
    args = ap.parse_args(argv)
    common.set_threads(1)
    if args.tiny:
        args.images, args.batch, args.repeats, args.parallel, args.step_batch = 8, 4, 1, [1], 2
    info = common.print_machine()
    if not common.has_flickr8k():
        print(f"skipped: Flickr8K not found under {common.FLICKR8K} (set CAPTUNE_SHARED)")
        return {"skipped": f"no Flickr8K under {common.FLICKR8K}"}

    processor = common.scaled_processor(common.ScaledSizes())
    image_processor = processor.image_processor
    sets = {"flickr8k-224": common.flickr8k_images(args.images)}
    originals = sorted((common.SHARED / "data" / "flickr8k-originals").glob("*.jpg"))
    if originals:
        sets["originals-500"] = [originals[i % len(originals)] for i in range(args.images)]
    results: dict[str, Any] = {"machine": info, "images": args.images, "batch": args.batch, "throughput": {}}
    load = common.wait_for_quiet(args.load, args.wait_tries)
    results["load_before"] = load
    for name, paths in sets.items():
        chunks = [paths[i:i + args.batch] for i in range(0, len(paths), args.batch)]
        modes = {"main": lambda c=chunks: run_main(c, image_processor)}
        for k in args.parallel:
            modes[f"threads={k}"] = lambda c=chunks, k=k: run_threads(c, image_processor, k)
            modes[f"workers={k}"] = lambda c=chunks, k=k: run_workers(c, image_processor, k)
        times = common.interleaved(modes, args.repeats, warmup=0)
        results["throughput"][name] = {}
        print(f"\n{name}: {len(paths)} images per run, batches of {args.batch}, {args.repeats} repeats")
        for mode, runs in times.items():
            st = common.stats(runs)
            rate = len(paths) / st.median
            results["throughput"][name][mode] = {"images_per_s": rate, "median_s": st.median, "runs_s": runs}
            print(f"  {mode:<10} {rate:8.0f} images/s  ({st})")
    print(f"\nconsumption by the scaled model (batch {args.step_batch}, 1 torch thread):")
    used = consumption(args.step_batch, max(2, args.repeats), args.tiny)
    results["consumption"] = used
    print(f"  training step without the feature cache: {used['uncached_step_images_per_s']:.1f} images/s")
    print(f"  ViT forward alone (the grid's encode stage): {used['vit_images_per_s']:.1f} images/s")
    slowest = min(v["main"]["images_per_s"] for v in results["throughput"].values())
    results["headroom_vs_vit"] = slowest / used["vit_images_per_s"]
    print(f"the main process alone decodes {results['headroom_vs_vit']:.1f}x faster than the ViT consumes "
          f"(slowest image set); load {load:.2f} -> {common.load_average():.2f}")
    results["peak_rss_mib"] = common.peak_rss_mib()
    common.write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
