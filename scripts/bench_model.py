#!/usr/bin/env python3
"""PyTorch side of `benches/model.rs`, and the burn/PyTorch ratio table.

Builds the same components, shapes and losses as the criterion bench with the PyTorch reference
modules (transformers `CLIPVisionModel` / `LlamaForCausalLM`, segment_anything `ImageEncoderViT`
/ `PromptEncoder` / `MaskDecoder` with GLaMM's text prompts), random weights, and times
`forward` (under `torch.no_grad()`) and `forward_backward` (loss = sum of the outputs,
`.backward()`, gradients reset to None before each step) with the same protocol as criterion's
flat sampling: a warm-up, then 10 samples of equal iteration counts, median per iteration. Then
it runs `cargo bench -p legion-bench --bench model` with the same thread count
(`RAYON_NUM_THREADS` for burn's rayon pool, `torch.set_num_threads` here), reads criterion's
`target/criterion/<group>/<bench>/new/estimates.json` and prints ms (PyTorch), ms (burn) and
burn/PyTorch (> 1: burn is slower).

    /work/venv/bin/python scripts/bench_model.py --threads 2
    /work/venv/bin/python scripts/bench_model.py --threads 2 --filter 'llama/small'
    /work/venv/bin/python scripts/bench_model.py --hf-attn eager,sdpa   # extra sdpa column

The HF models run with `--hf-attn`'s first entry (default `eager`: matmul + softmax, the same
algorithm as the burn code); further entries are timed as extra columns. SAM always computes
attention with explicit matmuls. `LEGION_BENCH_SAM_IMG` / `--sam-img` sets the SAM encoder
input of the `small` case (default 512; 1024 is SAM's real size).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch and rayon threads")
    ap.add_argument("--sam-img", type=int, default=int(os.environ.get("LEGION_BENCH_SAM_IMG", 512)))
    ap.add_argument("--filter", default="", help="regex on 'group/bench', as criterion's filter")
    ap.add_argument("--hf-attn", default="eager", help="comma list of HF attention implementations")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--warm-up", type=float, default=0.5, help="seconds (criterion: 0.5)")
    ap.add_argument("--measure", type=float, nargs=2, default=[1.0, 2.0], metavar=("TINY", "SMALL"),
                    help="target measurement seconds of the tiny and small cases (criterion: 1, 2)")
    ap.add_argument("--omp-wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY for PyTorch's OpenMP pool (default PASSIVE: on a "
                         "shared, oversubscribed machine libgomp's spinning threads lose their "
                         "core; rayon also parks idle workers); 'default' leaves it unset")
    ap.add_argument("--no-torch", action="store_true", help="only run and read the Rust side")
    ap.add_argument("--no-rust", action="store_true",
                    help="do not run cargo bench; read the existing criterion results")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    return ap.parse_args()


ARGS = parse_args()
# Before importing torch, so that its OpenMP pool starts with the right size.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
if ARGS.omp_wait_policy != "default":
    os.environ["OMP_WAIT_POLICY"] = ARGS.omp_wait_policy

import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
torch.set_num_interop_threads(1)

NUM_TEXT_PROMPTS = 3  # LEGION's decoder call for one image: 3 [SEG] embeddings.


# ---------------------------------------------------------------------------------------------
# Components: each builder returns (parameters to reset, a function computing the scalar loss).


def clip_vision(scale: str, attn: str):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if scale == "tiny":  # ClipVisionConfig::tiny()
        dims = dict(image_size=42, patch_size=14, hidden_size=32, num_hidden_layers=3,
                    num_attention_heads=4, intermediate_size=64)
    else:  # openai/clip-vit-base-patch16
        dims = dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072)
    cfg = CLIPVisionConfig(**dims, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    cfg._attn_implementation = attn
    model = CLIPVisionModel(cfg).eval()
    pixels = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    return model, lambda: model(pixel_values=pixels).last_hidden_state.sum()


def llama(scale: str, attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    if scale == "tiny":  # LlamaConfig::tiny(), 16 tokens
        dims = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
        seq = 16
    else:
        dims = dict(vocab_size=32007, hidden_size=1024, intermediate_size=2752,
                    num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=16)
        seq = 256
    cfg = LlamaConfig(**dims, rms_norm_eps=1e-5, tie_word_embeddings=False)
    cfg._attn_implementation = attn
    model = LlamaForCausalLM(cfg).eval()
    # The same deterministic ids as the Rust bench.
    ids = torch.tensor([[(i * 7919) % cfg.vocab_size for i in range(seq)]])
    return model, lambda: model(input_ids=ids, use_cache=False).logits.sum()


def sam_image_encoder(scale: str, attn: str):
    from segment_anything.modeling import ImageEncoderViT

    norm = partial(torch.nn.LayerNorm, eps=1e-6)
    if scale == "tiny":  # SamImageEncoderConfig::tiny()
        enc = ImageEncoderViT(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              mlp_ratio=4.0, out_chans=16, qkv_bias=True, norm_layer=norm,
                              use_rel_pos=True, window_size=3, global_attn_indexes=(1,))
        size = 64
    else:  # build_sam_vit_b at ARGS.sam_img
        size = ARGS.sam_img
        enc = ImageEncoderViT(img_size=size, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                              mlp_ratio=4.0, out_chans=256, qkv_bias=True, norm_layer=norm,
                              use_rel_pos=True, window_size=14, global_attn_indexes=(2, 5, 8, 11))
    enc = enc.eval()
    images = torch.randn(1, 3, size, size)
    return enc, lambda: enc(images).sum()


def sam_prompt_mask_decoder(scale: str, attn: str):
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    if scale == "tiny":  # SamPromptEncoderConfig::tiny(), SamMaskDecoderConfig::tiny()
        dim, grid, img, mask_chans, depth, heads, mlp, iou_hidden = 16, 8, 64, 8, 2, 2, 32, 16
    else:  # build_sam: prompt encoder and mask decoder
        dim, grid, img, mask_chans, depth, heads, mlp, iou_hidden = 256, 64, 1024, 16, 2, 8, 2048, 256
    pe = PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                       input_image_size=(img, img), mask_in_chans=mask_chans)
    dec = MaskDecoder(transformer_dim=dim,
                      transformer=TwoWayTransformer(depth=depth, embedding_dim=dim,
                                                    num_heads=heads, mlp_dim=mlp),
                      num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=iou_hidden)
    modules = torch.nn.ModuleList([pe, dec]).eval()
    image_embedding = torch.randn(1, dim, grid, grid)
    # The text_hidden_fcs outputs; they carry gradients in LEGION training.
    seg = torch.randn(NUM_TEXT_PROMPTS, dim, requires_grad=True)

    def loss():
        # GLaMM's PromptEncoder.forward with text_embeds only: sparse = the text embeddings,
        # dense = the no-mask embedding.
        sparse = seg[:, None, :]
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            NUM_TEXT_PROMPTS, -1, grid, grid)
        masks, iou = dec(image_embeddings=image_embedding, image_pe=pe.get_dense_pe(),
                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                         multimask_output=False)
        return masks.sum() + iou.sum()

    class Holder:  # zero_grad over the modules and the prompt leaf
        def zero_grad(self, set_to_none=True):
            modules.zero_grad(set_to_none=set_to_none)
            seg.grad = None

    return Holder(), loss


COMPONENTS = {
    "clip_vision": clip_vision,
    "llama": llama,
    "sam_image_encoder": sam_image_encoder,
    "sam_prompt_mask_decoder": sam_prompt_mask_decoder,
}
HF = {"clip_vision", "llama"}
SCALES = ("tiny", "small")
MODES = ("forward", "forward_backward")


# ---------------------------------------------------------------------------------------------
# Timing: criterion's flat sampling.


def measure(step, measure_s: float) -> dict:
    start = time.perf_counter()
    n = 0
    while True:
        step()
        n += 1
        if time.perf_counter() - start >= ARGS.warm_up:
            break
    per_iter = (time.perf_counter() - start) / n
    iters = max(1, round(measure_s / ARGS.samples / per_iter))
    times = []
    for _ in range(ARGS.samples):
        t = time.perf_counter()
        for _ in range(iters):
            step()
        times.append((time.perf_counter() - t) / iters)
    return {"median_ms": 1e3 * statistics.median(times), "mean_ms": 1e3 * statistics.mean(times),
            "iters_per_sample": iters}


def torch_case(component: str, scale: str, mode: str, attn: str) -> dict:
    torch.manual_seed(7)
    holder, loss = COMPONENTS[component](scale, attn)
    if mode == "forward":
        def step():
            with torch.no_grad():
                return loss().item()
    else:
        def step():
            holder.zero_grad(set_to_none=True)
            value = loss()
            value.backward()
            return value.item()
    return measure(step, ARGS.measure[SCALES.index(scale)])


# ---------------------------------------------------------------------------------------------
# Rust side.


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def run_cargo_bench() -> float:
    env = dict(os.environ, RAYON_NUM_THREADS=str(ARGS.threads),
               LEGION_BENCH_SAM_IMG=str(ARGS.sam_img))
    cmd = ["cargo", "bench", "-p", "legion-bench", "--bench", "model"]
    if ARGS.filter:
        cmd += ["--", ARGS.filter]
    print("$ RAYON_NUM_THREADS=%d LEGION_BENCH_SAM_IMG=%d %s"
          % (ARGS.threads, ARGS.sam_img, " ".join(cmd)), flush=True)
    started = time.time()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return started


def criterion_ms(group: str, bench: str, not_before: float) -> float | None:
    path = target_dir() / "criterion" / group / bench / "new" / "estimates.json"
    if not path.exists() or path.stat().st_mtime < not_before:
        return None
    return json.loads(path.read_text())["median"]["point_estimate"] / 1e6


def main() -> None:
    pattern = re.compile(ARGS.filter) if ARGS.filter else None
    attns = ARGS.hf_attn.split(",")
    cases = [(c, s, m) for c in COMPONENTS for s in SCALES for m in MODES
             if pattern is None or pattern.search(f"{c}/{s}_{m}")]
    print(f"threads = {ARGS.threads} (torch.get_num_threads() = {torch.get_num_threads()}), "
          f"torch {torch.__version__}, SAM encoder input {ARGS.sam_img} px, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}", flush=True)

    torch_ms: dict[tuple, dict] = {}
    if not ARGS.no_torch:
        wall = time.time()
        for case in cases:
            for attn in (attns if case[0] in HF else attns[:1]):
                r = torch_case(*case, attn)
                torch_ms[case + (attn,)] = r
                print(f"torch {case[0]}/{case[1]}_{case[2]} [{attn}]: {r['median_ms']:.2f} ms "
                      f"(mean {r['mean_ms']:.2f}, {r['iters_per_sample']} it/sample)", flush=True)
        print(f"torch side: {time.time() - wall:.0f} s", flush=True)

    not_before = 0.0
    if not ARGS.no_rust:
        wall = time.time()
        not_before = run_cargo_bench()
        print(f"rust side: {time.time() - wall:.0f} s", flush=True)

    rows = []
    for case in cases:
        row = {"bench": f"{case[0]}/{case[1]}_{case[2]}",
               "burn_ms": criterion_ms(case[0], f"{case[1]}_{case[2]}", not_before)}
        for attn in attns:
            r = torch_ms.get(case + (attn,))
            row[f"torch_{attn}_ms"] = r["median_ms"] if r else None
        t = row[f"torch_{attns[0]}_ms"]
        row["ratio"] = row["burn_ms"] / t if (t and row["burn_ms"]) else None
        rows.append(row)

    fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    head = ["bench"] + [f"torch {a} ms" for a in attns] + ["burn ms", "burn/torch"]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for row in rows:
        cells = [row["bench"]] + [fmt(row[f"torch_{a}_ms"]) for a in attns]
        cells += [fmt(row["burn_ms"]), fmt(row["ratio"])]
        print("| " + " | ".join(cells) + " |")
    print(f"\nmedians per iteration; threads = {ARGS.threads}; burn/torch > 1: burn slower")
    if ARGS.json:
        ARGS.json.write_text(json.dumps({"threads": ARGS.threads, "sam_img": ARGS.sam_img,
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
