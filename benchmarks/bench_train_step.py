"""Benchmark: one LoRA training step with the vision-feature cache on vs off, and the PEFT-example loop.

Three loops on the same scaled BLIP-2 (real input shapes, blip2-opt-2.7b's FLOP proportions; see
benchmarks/common.py), timed round-robin in one process, with dropout off and on:

  cached    captune's loop with the feature store: `store.get` + `forward_loss_sum` (Q-Former + LM)
  uncached  captune's loop with `train.feature_cache=off`: `encode_images` (frozen ViT) every step
  peft      the public PEFT BLIP-2 example: `model(pixel_values=..., input_ids=..., labels=input_ids)`
            on the processor's ids (ViT every step, loss also on image tokens and padding)

Every loop does forward, backward, AdamW step and zero_grad on the LoRA parameters (captune's default
placement, Q-Former + OPT q/v, r 8). Images are preprocessed before timing (the data path is
bench_data.py's subject). The FLOP table counts the real and the scaled model on the meta device.

    python benchmarks/bench_train_step.py                    # batch 16, 5 rounds, dropout off and on
    python benchmarks/bench_train_step.py --tiny             # seconds: smoke test of the code paths
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common


def text_tokens_of(collator, captions: list[str], batch: int) -> float:
    """Median padded text length (BOS + prompt + caption + EOS) of batches of `batch` captions."""
    widths = []
    for start in range(0, len(captions) - batch + 1, batch):
        widths.append(int(collator(captions[start:start + batch]).input_ids.shape[1]) - len(collator.image_ids))
    return statistics.median(widths) if widths else 0.0


def flops_rows(sizes: common.ScaledSizes, text_tokens: int, real: bool) -> dict[str, dict[str, float]]:
    rows = {"scaled": common.step_flops(common.scaled_meta_config(sizes), 1, text_tokens)}
    if real:
        from captune.model.presets import real_config

        rows["blip2-opt-2.7b"] = common.step_flops(real_config("blip2-opt-2.7b"), 1, text_tokens)
    return rows


def run_setting(label: str, sizes: common.ScaledSizes, dropout: common.Dropout, args: argparse.Namespace,
                images: list[Any], captions: list[str]) -> dict[str, Any]:
    import torch

    from captune.model.features import VisionFeatureStore, encode_images
    from captune.model.lora import apply_lora
    from captune.train.batches import CaptionCollator
    from captune.train.steps import forward_loss_sum

    torch.manual_seed(0)
    base, processor = common.build_scaled(sizes, dropout)
    model, placement = apply_lora(base, common.lora_config(dropout.lora), "opt")
    blip = model.get_base_model()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.05)
    collator = CaptionCollator(processor.tokenizer, "opt", blip.config.image_token_index,
                               blip.config.num_query_tokens, common.PROMPT, 40)

    n = len(images)
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    keys = [f"img-{i}" for i in range(n)]
    store = VisionFeatureStore("bench", None, torch.float32)  # fp32 model: the cache holds fp32 (loop.py's rule)
    model.eval()
    for start in range(0, n, args.batch):
        store.put(keys[start:start + args.batch], encode_images(model, pixels[start:start + args.batch]))
    model.train()

    batches = [list(range(s, s + args.batch)) for s in range(0, n - args.batch + 1, args.batch)]
    peft_inputs = [processor(images=[images[i] for i in idx], text=[captions[i] for i in idx], padding=True,
                             return_tensors="pt") for idx in batches]
    order = itertools.cycle(range(len(batches)))
    peft_order = itertools.cycle(range(len(batches)))

    def captune_step(cached: bool) -> None:
        idx = batches[next(order)]
        batch = collator([captions[i] for i in idx])
        tokens = float((batch.labels != -100).sum())
        embeds = store.get([keys[i] for i in idx]) if cached else encode_images(model, pixels[idx])
        loss_sum, _ = forward_loss_sum(model, batch, embeds)
        (loss_sum / tokens).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def peft_step() -> None:
        enc = peft_inputs[next(peft_order)]
        out = model(pixel_values=enc["pixel_values"], input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"], labels=enc["input_ids"])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    variants = {"cached": lambda: captune_step(True), "uncached": lambda: captune_step(False), "peft": peft_step}
    if "peft" not in args.loops:
        variants.pop("peft")
    weights = list(model.parameters())
    saved = {name: common.saved_activations_mib(fn, weights)[0] for name, fn in variants.items()}
    load = common.wait_for_quiet(args.load, args.wait_tries)
    times = common.interleaved(variants, args.repeats, warmup=args.warmup)
    result: dict[str, Any] = {"dropout": label, "lora_modules": len(placement.modules), "load_before": load,
                              "load_after": round(common.load_average(), 2), "variants": {}}
    print(f"\n[dropout {label}] batch {args.batch}, {args.repeats} rounds (+{args.warmup} warm-up), "
          f"load {load:.2f} -> {result['load_after']:.2f}")
    print(f"  {'loop':<9} {'median step':>12} {'min':>10} {'max':>10} {'samples/s':>10} {'activations':>11} "
          f"{'vs cached':>10}")
    for name, runs in times.items():
        st = common.stats(runs)
        ratio = common.paired_ratio(runs, times["cached"])
        result["variants"][name] = {"median_s": st.median, "min_s": st.low, "max_s": st.high, "runs_s": runs,
                                    "samples_per_s": args.batch / st.median, "saved_activations_mib": saved[name],
                                    "ratio_vs_cached": ratio}
        print(f"  {name:<9} {common.fmt_s(st.median):>12} {common.fmt_s(st.low):>10} {common.fmt_s(st.high):>10} "
              f"{args.batch / st.median:>10.2f} {saved[name]:>7.1f} MiB {ratio:>9.2f}x")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16, help="samples per step (default 16, train.batch_size)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per loop (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--dropout", nargs="+", choices=["off", "on"], default=["off", "on"])
    ap.add_argument("--loops", nargs="+", choices=["cached", "uncached", "peft"],
                    default=["cached", "uncached", "peft"], help="(cached and uncached always run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--no-real-flops", action="store_true", help="skip counting the real model's FLOPs (~10 s)")
    common.add_run_args(ap, "a tiny model, 2 rounds: a smoke test, not a measurement")
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    sizes = common.TINY_SIZES if args.tiny else common.ScaledSizes()
    if args.tiny:
        args.batch, args.repeats, args.warmup, args.no_real_flops = 2, 2, 0, True
    info = common.print_machine()

    from captune.train.batches import CaptionCollator

    n = args.batch * 4
    images, source = common.load_images(n, sizes.image_size)
    captions = common.caption_texts(n, seed=1)
    processor = common.scaled_processor(sizes)
    collator = CaptionCollator(processor.tokenizer, "opt", 0, sizes.num_query_tokens, common.PROMPT, 40)
    text_tokens = text_tokens_of(collator, common.caption_texts(400, seed=2), args.batch)
    print(f"images: {source}; captions: {'Flickr8K' if common.has_flickr8k() else 'synthetic'}; prompt "
          f"{common.PROMPT!r}; median padded text length {text_tokens:g} tokens + {sizes.num_query_tokens} queries")
    rows = flops_rows(sizes, round(text_tokens), not args.no_real_flops)
    print("FLOPs of one training step per sample (FlopCounterMode on the meta device, LoRA qformer+lm r8):")
    print(common.flop_table(rows))

    results = {"machine": info, "sizes": sizes.__dict__, "batch": args.batch, "text_tokens": text_tokens,
               "flops": rows, "settings": []}
    for label in args.dropout:
        dropout = common.Dropout() if label == "on" else common.NO_DROPOUT
        results["settings"].append(run_setting(label, sizes, dropout, args, images, captions))
    results["peak_rss_mib"] = common.peak_rss_mib()
    print(f"\npeak RSS of the process: {results['peak_rss_mib']:.0f} MiB; 'activations' = tensors autograd "
          "saves for backward in one step (weights excluded)")
    for setting in results["settings"]:
        v = setting["variants"]
        line = f"dropout {setting['dropout']}: cache speed-up {v['uncached']['ratio_vs_cached']:.2f}x"
        if "peft" in v:
            line += f", vs the PEFT example {v['peft']['ratio_vs_cached']:.2f}x"
        print(line + f" (FLOP bound {rows['scaled']['cache_bound']:.2f}x)")
    common.write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
