#!/usr/bin/env python3
"""Full-size LEGION components, burn against PyTorch on the same CPU, in one run.

Each side builds the component with random weights in a fresh process (so that each process's
peak RSS is that component's) and times it; rounds alternate which side runs first, and the
table reports medians, burn/PyTorch (> 1: burn is slower), both peak RSS, and the load average
around each run. The Rust side is `benches/full_size.rs` (built once with the dev profile, as
the rest of the workspace, and run directly with `RAYON_NUM_THREADS`); the PyTorch side is this
script with `--worker` (`torch.set_num_threads`, OpenMP at the same count).

    python3 scripts/bench_full_size.py --threads 2 --rounds 2
    python3 scripts/bench_full_size.py --components vicuna-7b --rounds 1 --json out.json

Components:
  sam-vit-h       SAM ViT-H image encoder (segment_anything `build_sam_vit_h`'s), f32, one
                  1024 x 1024 image: 1 warm-up + --repeats forwards.
  clip-vit-l-336  CLIP ViT-L/14-336 vision tower (transformers `CLIPVisionModel`, eager
                  attention), all 24 layers, bf16 weights, one 336 x 336 image: 1 warm-up +
                  --repeats forwards.
  vicuna-7b       Vicuna-7B (`LlamaForCausalLM`, vocabulary 32007, eager attention), bf16
                  weights: one 600-token prefill into an empty KV cache (logits of every
                  position, as `forward` returns them), then --repeats decode steps of one token,
                  each on a fresh copy of that 600-token cache.

bf16 weights are created in bf16 on both sides (torch's default dtype, burn's device dtype):
neither side ever holds the 7B model in f32. Needs about 16 GB of free memory for vicuna-7b.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("sam-vit-h", "clip-vit-l-336", "vicuna-7b")
PROMPT_TOKENS = 600
VOCAB = 32007


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch and rayon threads")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per component")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per process")
    ap.add_argument("--components", default=",".join(COMPONENTS))
    ap.add_argument("--json", type=Path, help="also write every measurement and the table here")
    ap.add_argument("--worker", choices=COMPONENTS, help=argparse.SUPPRESS)
    return ap.parse_args()


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------
# PyTorch worker: one component per process.


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(7)

    def seconds(run) -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    result: dict = {"component": args.worker, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        if args.worker == "sam-vit-h":
            from functools import partial

            from segment_anything.modeling import ImageEncoderViT

            # build_sam_vit_h's image encoder.
            encoder = ImageEncoderViT(
                depth=32, embed_dim=1280, img_size=1024, mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=16, patch_size=16,
                qkv_bias=True, use_rel_pos=True, global_attn_indexes=(7, 15, 23, 31),
                window_size=14, out_chans=256).eval()
            image = torch.randn(1, 3, 1024, 1024)

            def run():
                out = encoder(image)
                assert out.shape == (1, 256, 64, 64)
                out.sum().item()

            seconds(run)
            result["forward_s"] = [seconds(run) for _ in range(args.repeats)]
        elif args.worker == "clip-vit-l-336":
            from transformers import CLIPVisionConfig, CLIPVisionModel

            torch.set_default_dtype(torch.bfloat16)
            # openai/clip-vit-large-patch14-336's vision tower.
            cfg = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024,
                                   num_hidden_layers=24, num_attention_heads=16,
                                   intermediate_size=4096, hidden_act="quick_gelu",
                                   layer_norm_eps=1e-5, projection_dim=768)
            cfg._attn_implementation = "eager"
            tower = CLIPVisionModel(cfg).eval()
            index = torch.arange(3 * 336 * 336, dtype=torch.int64)
            pixels = ((index * 7919 % 1000).float() / 500.0 - 1.0).reshape(1, 3, 336, 336)

            def run():
                # LLaVA's CLIPVisionTower casts the pixels to the tower's dtype.
                out = tower(pixel_values=pixels.to(torch.bfloat16)).last_hidden_state
                assert out.dtype == torch.bfloat16
                out.float().sum().item()

            seconds(run)
            result["forward_s"] = [seconds(run) for _ in range(args.repeats)]
        else:
            from transformers import LlamaConfig, LlamaForCausalLM

            torch.set_default_dtype(torch.bfloat16)
            cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=4096, intermediate_size=11008,
                              num_hidden_layers=32, num_attention_heads=32,
                              num_key_value_heads=32, max_position_embeddings=4096,
                              rms_norm_eps=1e-5, tie_word_embeddings=False)
            cfg._attn_implementation = "eager"
            model = LlamaForCausalLM(cfg).eval()
            ids = torch.tensor([[(i * 7919) % VOCAB for i in range(PROMPT_TOKENS)]])
            holder = {}

            def prefill():
                out = model(input_ids=ids, use_cache=True)
                assert out.logits.shape == (1, PROMPT_TOKENS, VOCAB)
                out.logits[:, -1].float().sum().item()
                holder["cache"] = out.past_key_values

            result["prefill_s"] = seconds(prefill)
            next_id = torch.tensor([[29871]])
            decode = []
            for _ in range(args.repeats):
                cache = copy.deepcopy(holder["cache"])

                def step():
                    out = model(input_ids=next_id, past_key_values=cache, use_cache=True)
                    out.logits.float().sum().item()

                decode.append(seconds(step))
            result["decode_s"] = decode
    result["peak_rss_kib"] = peak_rss_kib()
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# Driver.


def rust_binary() -> Path:
    """Builds benches/full_size.rs (dev profile) and returns the executable."""
    out = subprocess.run(
        ["cargo", "bench", "--locked", "--profile", "dev", "-p", "legion-bench",
         "--bench", "full_size", "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "full_size":
            return Path(msg["executable"])
    sys.exit("cargo did not report the full_size bench executable")


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_side(side: str, component: str, args: argparse.Namespace, binary: Path) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               OMP_WAIT_POLICY="PASSIVE")
    if side == "torch":
        cmd = [sys.executable, __file__, "--worker", component, "--threads", str(args.threads),
               "--repeats", str(args.repeats)]
    else:
        cmd = [str(binary), component, "--repeats", str(args.repeats)]
    load_before = loadavg()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{side} {component} failed with status {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(side=side, wall_s=time.perf_counter() - start,
                  load_before=load_before, load_after=loadavg())
    print(f"  {side:5} {component}: " + ", ".join(
        f"{k} {v}" for k, v in result.items() if k not in ("side", "component")), flush=True)
    return result


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    components = [c for c in args.components.split(",") if c]
    for c in components:
        if c not in COMPONENTS:
            sys.exit(f"unknown component {c}; choose from {', '.join(COMPONENTS)}")
    binary = rust_binary()
    runs = []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds} (load {loadavg():.2f})", flush=True)
        for component in components:
            sides = ("torch", "burn") if r % 2 == 0 else ("burn", "torch")
            for side in sides:
                runs.append(run_side(side, component, args, binary))

    # Every timed run of every round, per metric and side.
    metrics = {"sam-vit-h": [("SAM ViT-H image encoder, 1024 px, f32", "forward_s")],
               "clip-vit-l-336": [("CLIP ViT-L/14-336 forward, bf16", "forward_s")],
               "vicuna-7b": [("Vicuna-7B prefill, 600 tokens, bf16", "prefill_s"),
                             ("Vicuna-7B decode step, 600-token cache, bf16", "decode_s")]}
    rows = []
    for component in components:
        for label, key in metrics[component]:
            row = {"metric": label}
            for side in ("torch", "burn"):
                mine = [run for run in runs if run["component"] == component and run["side"] == side]
                values = []
                for run in mine:
                    v = run[key]
                    values.extend(v if isinstance(v, list) else [v])
                row[f"{side}_s"] = statistics.median(values)
                row[f"{side}_peak_rss_gib"] = max(run["peak_rss_kib"] for run in mine) / 2**20
                row[f"{side}_runs"] = len(values)
            row["ratio"] = row["burn_s"] / row["torch_s"]
            rows.append(row)
    loads = [run[k] for run in runs for k in ("load_before", "load_after")]
    print(f"\n{args.threads} threads each, {args.rounds} rounds, load average "
          f"{min(loads):.2f}-{max(loads):.2f} (median {statistics.median(loads):.2f})\n")
    print("| component | PyTorch s | burn s | burn/PyTorch | peak RSS PyTorch | peak RSS burn |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['metric']} | {row['torch_s']:.3f} | {row['burn_s']:.3f} | "
              f"**{row['ratio']:.2f}** | {row['torch_peak_rss_gib']:.2f} GiB | "
              f"{row['burn_peak_rss_gib']:.2f} GiB |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "table": rows}, indent=1))


if __name__ == "__main__":
    main()
