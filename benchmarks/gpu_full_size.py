"""GPU benchmark at full size: blip2-opt-2.7b's architecture with random weights in bf16.

Builds `captune.model.presets.real_config("blip2-opt-2.7b")` on the GPU (no download: random weights,
captune's dtype policy: bf16 with the Q-Former in fp32), adds captune's default LoRA (Q-Former + OPT q/v,
r 8) and measures, as captune's loop does it with `train.precision=bf16` (autocast bf16):

  training step   batch 8/16/32 x feature cache on/off x gradient checkpointing off/on: median step
                  time, samples/s, peak GPU memory, MFU (model FLOPs counted with FlopCounterMode on one
                  step, without recomputation, over the GPU's peak dense bf16 rate)
  generation      batch 64, greedy and beam 5, exactly 20 new tokens (min_new_tokens = max_new_tokens):
                  captions/s for the whole path (ViT + Q-Former + LM) and for the LM alone

Also prints the computed estimates (meta device, no GPU needed): weights, LoRA + AdamW state, saved
activations, FLOPs per step. Results go to `--out` as JSON. Stays inside `--budget` seconds (default
420): configurations left when time runs out are reported as skipped.

    python benchmarks/gpu_full_size.py --out results.json     # on one H100: about 3-5 minutes
    python benchmarks/gpu_full_size.py --estimate-only        # no GPU: the computed estimates only
    python benchmarks/gpu_full_size.py --tiny                 # CPU, seconds: smoke test of the code paths
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
MODEL = "blip2-opt-2.7b"
GiB = 2**30


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def text_batch(config, batch: int, text_tokens: int, device, seed: int = 0):
    """Synthetic ids shaped like captune's OPT batches: queries, BOS, a 3-token prompt, caption, EOS."""
    import torch

    from captune.train.batches import IGNORE, TextBatch

    g = torch.Generator().manual_seed(seed)
    q = config.num_query_tokens
    text = torch.randint(4, config.text_config.vocab_size, (batch, text_tokens), generator=g)
    text[text == config.image_token_index] = 5
    text[:, 0] = config.text_config.bos_token_id
    text[:, -1] = config.text_config.eos_token_id
    ids = torch.cat([torch.full((batch, q), config.image_token_index), text], dim=1)
    labels = ids.clone()
    labels[:, :q + 4] = IGNORE
    return TextBatch(ids, torch.ones_like(ids), labels).to(device)


def build(config, device, dtype: str):
    """Random-weight BLIP-2 on `device` in captune's dtype policy, with captune's LoRA; (peft model, trainable).

    Initialised in fp32 (transformers' own init, ~15 GB at full size) and then cast, as `load_blip2` does."""
    import torch
    from transformers import Blip2ForConditionalGeneration

    from captune.model.load import apply_dtype_policy
    from captune.model.lora import apply_lora

    with torch.device(device):
        model = Blip2ForConditionalGeneration(config)
    apply_dtype_policy(model, dtype)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    model, _ = apply_lora(model, common.lora_config(), "opt")
    return model, [p for p in model.parameters() if p.requires_grad]


class Device:
    """Synchronisation, peak memory and autocast for CUDA, or their CPU stand-ins."""

    def __init__(self, name: str, dtype: str) -> None:
        import torch

        self.torch = torch
        self.name = name
        self.cuda = name.startswith("cuda")
        self.dtype = dtype

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            common.reset_peak_rss()

    def peak_gib(self) -> float:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() / GiB
        return common.peak_rss_mib() / 1024

    def autocast(self):
        import contextlib

        if self.dtype == "bf16":
            return self.torch.autocast("cuda" if self.cuda else "cpu", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def oom(self) -> type[BaseException]:
        return self.torch.cuda.OutOfMemoryError if self.cuda else MemoryError


def train_step_fn(model, trainable, optimizer, config, batch: int, cached: bool, dev: Device, text_tokens: int):
    """One step exactly as captune's loop runs it: features from the store (CPU, copied over) or the ViT."""
    import torch

    from captune.model.features import VisionFeatureStore, encode_images
    from captune.train.steps import forward_loss_sum

    size = config.vision_config.image_size
    vdtype = next(model.get_base_model().vision_model.parameters()).dtype
    pixels = torch.randn(batch, 3, size, size, device=dev.name)
    text = text_batch(config, batch, text_tokens, dev.name)
    tokens = float((text.labels != -100).sum())
    keys = [f"k{i}" for i in range(batch)]
    store = None
    if cached:
        store = VisionFeatureStore("bench", None, vdtype)
        store.put(keys, encode_images(model, pixels))

    def step() -> None:
        embeds = store.get(keys).to(dev.name) if store is not None else encode_images(model, pixels)
        with dev.autocast():
            loss_sum, _ = forward_loss_sum(model, text, embeds)
        (loss_sum / tokens).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def counted_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure_training(model, trainable, config, args, dev: Device, peak: float | None, deadline: float) -> list[dict]:
    import torch

    from captune.model.lora import set_checkpointing

    blip = model.get_base_model()
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.05)
    rows: list[dict[str, Any]] = []
    model_flops: dict[tuple[int, bool], float] = {}
    for batch in args.batches:
        for cached in (True, False):
            for gc in (False, True):
                row: dict[str, Any] = {"batch": batch, "feature_cache": cached, "gradient_checkpointing": gc}
                rows.append(row)
                if time.perf_counter() > deadline:
                    row["skipped"] = "time budget"
                    continue
                if gc:
                    set_checkpointing(blip.language_model, True)
                model.train()
                try:
                    dev.reset_peak()
                    step = train_step_fn(model, trainable, optimizer, config, batch, cached, dev, args.text_tokens)
                    if not gc and (batch, cached) not in model_flops:
                        model_flops[(batch, cached)] = counted_flops(step)
                    for _ in range(args.warmup):
                        step()
                    dev.sync()
                    times = []
                    for _ in range(args.steps):
                        t = time.perf_counter()
                        step()
                        dev.sync()
                        times.append(time.perf_counter() - t)
                    med = statistics.median(times)
                    flops = model_flops.get((batch, cached))
                    row.update(step_s=med, runs_s=times, samples_per_s=batch / med, peak_memory_gib=dev.peak_gib(),
                               model_flops_per_step=flops)
                    if flops and peak:
                        row["mfu"] = flops / med / (peak * 1e12)
                except dev.oom() as exc:
                    row["error"] = f"out of memory: {str(exc).splitlines()[0]}"
                    optimizer.zero_grad(set_to_none=True)
                finally:
                    if gc:
                        set_checkpointing(blip.language_model, False)
                mfu = f"{row['mfu']:.1%}" if "mfu" in row else "-"
                state = row.get("error") or (f"{common.fmt_s(row['step_s'])}/step, {row['samples_per_s']:.1f} "
                                             f"samples/s, peak {row['peak_memory_gib']:.2f} GiB, MFU {mfu}")
                print(f"  train batch {batch:>2} cache {'on ' if cached else 'off'} gc {'on ' if gc else 'off'}: "
                      f"{state}", flush=True)
    return rows


def measure_generation(model, config, args, dev: Device, peak: float | None, deadline: float) -> list[dict]:
    """Captioning as captune's Captioner does it (`inputs_embeds` = image features + BOS, fixed length),
    called on the LM directly: the real tokenizer is not needed for random weights."""
    import torch

    from captune.model.features import encode_images, query_features

    blip = model.get_base_model()
    model.eval()
    lm = blip.language_model
    size = config.vision_config.image_size
    n = args.gen_batch
    pixels = torch.randn(n, 3, size, size, device=dev.name)
    bos = torch.full((n, 1), config.text_config.bos_token_id, device=dev.name)
    rows: list[dict[str, Any]] = []
    for beams in args.beams:
        row: dict[str, Any] = {"batch": n, "num_beams": beams, "new_tokens": args.new_tokens}
        rows.append(row)
        if time.perf_counter() > deadline:
            row["skipped"] = "time budget"
            continue

        def encode() -> torch.Tensor:
            with torch.no_grad():
                feats = query_features(model, encode_images(model, pixels))
            return torch.cat([feats.to(lm.dtype), lm.get_input_embeddings()(bos)], dim=1)

        def generate(embeds: torch.Tensor, beams: int = beams) -> torch.Tensor:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=dev.name)
            with torch.no_grad():
                return lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=args.new_tokens,
                                   min_new_tokens=args.new_tokens, num_beams=beams, do_sample=False,
                                   pad_token_id=config.text_config.pad_token_id,
                                   eos_token_id=config.text_config.eos_token_id)

        try:
            dev.reset_peak()
            embeds = encode()
            out = generate(embeds)
            row["generated_shape"] = list(out.shape)
            flops = counted_flops(lambda: generate(encode()))
            enc_t, gen_t = [], []
            for _ in range(args.gen_repeats):
                dev.sync()
                t = time.perf_counter()
                embeds = encode()
                dev.sync()
                t1 = time.perf_counter()
                generate(embeds)
                dev.sync()
                enc_t.append(t1 - t)
                gen_t.append(time.perf_counter() - t1)
            total = statistics.median(e + g for e, g in zip(enc_t, gen_t, strict=True))
            row.update(encode_s=statistics.median(enc_t), generate_s=statistics.median(gen_t), total_s=total,
                       captions_per_s=n / total, lm_captions_per_s=n / statistics.median(gen_t),
                       flops=flops, peak_memory_gib=dev.peak_gib())
            if peak:
                row["mfu"] = flops / total / (peak * 1e12)
            print(f"  generate batch {n} beams {beams}: {row['captions_per_s']:.1f} captions/s end to end "
                  f"(encode {common.fmt_s(row['encode_s'])}, LM {common.fmt_s(row['generate_s'])}), "
                  f"peak {row['peak_memory_gib']:.2f} GiB", flush=True)
        except dev.oom() as exc:
            row["error"] = f"out of memory: {str(exc).splitlines()[0]}"
            print(f"  generate batch {n} beams {beams}: {row['error']}")
    return rows


def estimates(config, batches: list[int], text_tokens: int) -> dict[str, Any]:
    """Computed on the meta device: memory of weights, LoRA + AdamW state, saved activations; FLOPs."""
    import torch

    model = common.meta_model(config, dtype="bf16")
    weights = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" not in n)
    lora = [p for p in model.parameters() if p.requires_grad]
    lora_params = sum(p.numel() for p in lora)
    lora_state = lora_params * 4 * 4  # fp32 weights, grads, AdamW exp_avg and exp_avg_sq
    # Activations in bf16 throughout (what autocast computes in); autocast keeps layer norms and softmax
    # in fp32, so the real peak is somewhat higher: the GPU run measures it.
    all_bf16 = common.meta_model(config, dtype="bf16").to(torch.bfloat16)
    rows = []
    for batch in batches:
        for gc in (False, True):
            f = common.step_flops(config, batch, text_tokens, gc, model=all_bf16)
            layers = config.text_config.num_hidden_layers
            seq = config.num_query_tokens + text_tokens
            extra = layers * batch * seq * config.text_config.hidden_size * 2 if gc else 0.0  # checkpointed inputs
            saved = f["saved_bytes"] + extra
            transient = 2 * f["logits_fp32_bytes"]  # logits' gradient and softmax during the loss backward
            cached_total = weights + lora_state + saved + transient + f["embeds_bytes"]
            rows.append({"batch": batch, "gradient_checkpointing": gc, "step_flops": f["step"],
                         "cached_step_flops": f["cached_step"], "saved_activation_bytes": saved,
                         "transient_bytes": transient, "estimated_peak_bytes": cached_total,
                         "flops_split": {k: f[k] for k in ("vision_forward", "qformer_forward", "lm_forward",
                                                            "backward")}})
    return {"weights_bytes": weights, "lora_params": lora_params, "lora_adamw_state_bytes": lora_state,
            "text_tokens": text_tokens, "rows": rows}


def print_estimates(est: dict[str, Any], peak: float) -> None:
    state = est["lora_adamw_state_bytes"] / 2**20
    print(f"estimates (computed, not measured): weights {est['weights_bytes'] / GiB:.2f} GiB (bf16, Q-Former fp32); "
          f"LoRA {est['lora_params'] / 1e6:.2f} M params, + grads + AdamW {state:.0f} MiB")
    print(f"  {'batch':>5} {'gc':>3} {'TFLOP/step':>10} {'cached':>8} {'activations':>11} {'peak est.':>9} "
          f"{'ms/step at 100% MFU (off/on cache)':>36}")
    for r in est["rows"]:
        print(f"  {r['batch']:>5} {'on' if r['gradient_checkpointing'] else 'off':>3} {r['step_flops'] / 1e12:>10.2f} "
              f"{r['cached_step_flops'] / 1e12:>8.2f} {r['saved_activation_bytes'] / GiB:>9.2f} G "
              f"{r['estimated_peak_bytes'] / GiB:>7.2f} G {1e3 * r['step_flops'] / (peak * 1e12):>17.1f} / "
              f"{1e3 * r['cached_step_flops'] / (peak * 1e12):.1f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--text-tokens", type=int, default=23,
                    help="BOS + prompt + caption + EOS (23: the median padded Flickr8K batch)")
    ap.add_argument("--gen-batch", type=int, default=64)
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--gen-repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s (default: from the GPU's name)")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; later configurations are skipped")
    ap.add_argument("--estimate-only", action="store_true", help="no GPU needed: print the computed estimates")
    ap.add_argument("--no-estimates", action="store_true", help="skip the meta-device estimates")
    ap.add_argument("--tiny", action="store_true", help="a tiny model on CPU: smoke test, not a measurement")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.budget
    common.set_threads(1)
    import torch

    from captune.model.presets import real_config

    if args.tiny:
        config = common.scaled_meta_config(common.TINY_SIZES)
        args.batches, args.steps, args.warmup, args.gen_batch = [2], 1, 0, 2
        args.beams, args.new_tokens, args.gen_repeats, args.text_tokens = [1, 2], 3, 1, 6
        device, dtype = "cpu", "fp32"
    else:
        config = real_config(MODEL)
        device, dtype = ("cuda", "bf16") if torch.cuda.is_available() else ("cpu", "bf16")
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else common.cpu_model()
    peak = peak_tflops(gpu, args.peak_tflops) or PEAK_BF16_TFLOPS["H100"]
    info = {**common.machine_info(), "device": gpu, "peak_bf16_tflops": peak, "model": "tiny" if args.tiny else MODEL}
    print(f"device: {gpu}; peak bf16 {peak:g} TFLOP/s; torch {torch.__version__}; model {info['model']}")
    results: dict[str, Any] = {"machine": info, "args": vars(args)}
    if not args.no_estimates:
        results["estimates"] = estimates(config, args.batches, args.text_tokens)
        print_estimates(results["estimates"], peak)
    if args.estimate_only:
        common.write_json(args.out, results)
        return results
    if device == "cpu" and not args.tiny:
        sys.exit("no CUDA GPU: run with --estimate-only (or --tiny for the CPU smoke test)")
    t = time.perf_counter()
    torch.manual_seed(0)
    model, trainable = build(config, device, dtype)
    print(f"built {info['model']} with random weights in {time.perf_counter() - t:.1f} s; "
          f"{sum(p.numel() for p in trainable) / 1e6:.2f} M trainable", flush=True)
    dev = Device(device, dtype)
    results["training"] = measure_training(model, trainable, config, args, dev, peak, deadline)
    results["generation"] = measure_generation(model, config, args, dev, peak, deadline)
    results["wall_s"] = time.perf_counter() - start
    print(f"done in {results['wall_s']:.0f} s")
    common.write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
