#!/usr/bin/env python3
"""Training steps per second of legion-rs (`legion train`) vs the same model and recipe in PyTorch,
on the CPU, in one run, for the `tiny` and `small` presets (`LegionConfig::tiny()` / `small()`).

PyTorch side: the model is built by `scripts/fixtures/legion.py` (`build_model`: transformers
`CLIPVisionModel` / `LlamaForCausalLM` with eager attention, segment_anything `ImageEncoderViT` /
`PromptEncoder` / `MaskDecoder`, LLaVA's `mlp2x_gelu` projector, GLaMM's `text_hidden_fcs`) at
the sizes of the Rust preset, and its forward is `legion.legion_forward` (LEGION's training
`model_forward`: CLIP hidden state -2 -> projector -> spliced into the LLM input, `[SEG]` hidden
states -> `text_hidden_fcs` -> SAM per image -> masks at the original size). The recipe is
configs/tiny.toml's, with every parameter trained on both sides (the main job loads a pretrained
CLIP tower, `model.clip`, and keeps it frozen; the benchmark leaves that line out), loss 1.0 * CE + 0.4 * BCE + 0.2 * Dice
(`scripts/fixtures/losses.py`, LISA's `sigmoid_ce_loss` / `dice_loss`), global gradient-norm clip
1.0, AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0; lr 2e-3, 30 warm-up steps then linear
decay), batch 8, denormals flushed (legion-rs does the same).

Data: the shipped data/synthscars-tiny train split, tokenised with
data/tokenizers/synthscars-tiny.json through the reference reimplementation of
`scripts/fixtures/tokenizer.py` (llava_v1 prompt + `<p> phrase </p> [SEG]` answer, GLaMM's label
mask), in the exact order `legion train` draws it (the SplitMix64 epoch permutations of
crates/legion-train/src/rng.rs, seed 42), so step k of both sides sees the same 8 records. All
of it (PNG decoding, polygon rasterisation, CLIP/SAM resizing, tokenisation) is done once up front:
the PyTorch time excludes data loading.

Rust side: `target/debug/legion train --config configs/tiny.toml` (the dev profile: dependencies,
burn included, at opt-level 3, the workspace crates at 1; `--release` uses target/release) with
`model.preset`, `run.steps`, no evaluation, validation or intermediate checkpoints,
`RAYON_NUM_THREADS` = `--threads`, and `--devices cpu,cpu,...` with `--replicas` CPU devices
(default: as many as `--threads`): legion-rs uses a multi-core CPU by data parallelism inside the
process (one model replica and one thread per shard of the batch, gradients summed), as
configs/tiny.toml does; PyTorch uses its `--threads` intra-op threads. Both sides get the same
number of cores. `--rounds` (default 3) alternates which side runs first and reports the median
round of each side and the median of the per-round ratios, with the load average before each
round (the machine is shared). Two Rust numbers: `steady` = the same steps as PyTorch's from
`metrics.jsonl`'s per-step `seconds` (each includes decoding that step's 8 images, a few ms); `e2e`
= `summary.json`'s `steps_per_second` (the whole loop: warm-up steps and the final checkpoint).

    cargo build -p legion-cli
    /work/venv/bin/python scripts/bench_train.py                       # tiny and small
    /work/venv/bin/python scripts/bench_train.py --presets tiny --steps 20 --warmup 3

Prints steps/s of both and the ratio burn/PyTorch in steps/s (> 1: legion-rs trains faster).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "scripts/fixtures"

# Sizes of the Rust presets (crates/legion-model/src/legion/config.rs), in `legion.build_model`'s
# layout.
PRESETS = {
    "tiny": {
        "clip": dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64),
        "llm": dict(vocab_size=640, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512),
        "sam": dict(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2, window_size=3,
                    global_attn_indexes=(1,), prompt_dim=16, mask_in_chans=8, decoder_depth=2,
                    decoder_heads=2, decoder_mlp_dim=32, iou_head_hidden_dim=16),
    },
    "small": {
        "clip": dict(image_size=64, patch_size=8, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=128),
        "llm": dict(vocab_size=640, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                    num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024),
        "sam": dict(img_size=128, patch_size=8, embed_dim=64, depth=4, num_heads=4, window_size=4,
                    global_attn_indexes=(1, 3), prompt_dim=32, mask_in_chans=16,
                    decoder_depth=2, decoder_heads=4, decoder_mlp_dim=128,
                    iou_head_hidden_dim=32),
    },
}
# About 1 B parameters (`LegionConfig::mid()`): CLIP ViT-B/16-224, an LLM of hidden 2048 x 16
# layers, SAM ViT-B; for GPUs (scripts/gpu_acceptance.sh).
PRESETS["mid"] = {
    "clip": dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072),
    "llm": dict(vocab_size=640, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048),
    "sam": dict(img_size=1024, patch_size=16, embed_dim=768, depth=12, num_heads=12, window_size=14,
                global_attn_indexes=(2, 5, 8, 11), prompt_dim=256, mask_in_chans=16,
                decoder_depth=2, decoder_heads=8, decoder_mlp_dim=2048, iou_head_hidden_dim=256),
}
MODEL_MAX_LENGTH = 512  # configs/tiny.toml data.model_max_length
BATCH = 8
SEED = 42
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
SAM_MEAN, SAM_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--presets", default="tiny,small", help="comma list of tiny, small, mid")
    ap.add_argument("--steps", type=int, nargs="+", default=[30, 10],
                    help="measured steps per preset (one value for all, or one per preset)")
    ap.add_argument("--warmup", type=int, default=3, help="steps run before timing, both sides")
    ap.add_argument("--threads", type=int, default=2, help="torch threads and RAYON_NUM_THREADS")
    ap.add_argument("--release", action="store_true", help="run target/release/legion")
    ap.add_argument("--binary", type=Path, help="the legion binary to run (default: target/debug "
                    "or target/release by --release)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda:N: PyTorch on that device and "
                    "`legion train --devices` the same (both in f32)")
    ap.add_argument("--replicas", type=int, help="model replicas legion-rs trains on, one thread "
                    "each (`legion train --devices cpu,cpu`: data parallel inside the process, "
                    "as configs/tiny.toml does); default: --threads on the CPU, 1 on a GPU")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, alternating which side runs "
                    "first; the medians of steps/s and of the per-round ratios are reported")
    ap.add_argument("--omp-wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY for PyTorch (as scripts/bench_model.py); 'default' "
                         "leaves it unset")
    ap.add_argument("--no-rust", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    return ap.parse_args()


def load_fixture(name: str):
    spec = importlib.util.spec_from_file_location(f"fixture_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the data order of crates/legion-train/src/rng.rs ---------------------------------------
M64 = (1 << 64) - 1


def mix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def random_u64(seed: int, stream: int, index: int) -> int:
    return mix64(mix64(seed ^ mix64(stream)) ^ index)


def permutation(n: int, seed: int, stream: int) -> list[int]:
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = random_u64(seed, stream, i) % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def stream_items(n: int, seed: int, count: int) -> list[int]:
    """`EpochSampler::item(k)` for k = 0..count."""
    perms: dict[int, list[int]] = {}
    out = []
    for k in range(count):
        epoch = k // n
        if epoch not in perms:
            perms[epoch] = permutation(n, seed, epoch)
        out.append(perms[epoch][k % n])
    return out


# --- the records, as legion-data reads them ----------------------------------------------------
def grounding(record: dict) -> tuple[str, list[int]]:
    """crates/legion-data/src/span.rs: the tagged answer and the ref indices in `[SEG]` order."""
    caption = record["caption"].strip('"').strip()
    spans = []
    for index, ref in enumerate(record["refs"]):
        sentence = ref.get("sentence") or ""
        start = caption.find(sentence) if sentence else -1
        if start >= 0:
            spans.append((start, start + len(sentence), index))
    spans.sort(key=lambda s: s[0])
    kept = []
    for s in spans:
        if not any(s[0] < k[1] and k[0] < s[1] for k in kept):
            kept.append(s)
    out, cursor = "", 0
    for start, end, _ in kept:
        out += caption[cursor:start] + "<p> " + caption[start:end] + " </p> [SEG]"
        cursor = end
    return out + caption[cursor:], [k[2] for k in kept]


def load_records(split_dir: Path):
    import numpy as np
    from PIL import Image
    from pycocotools import mask as coco_mask

    (annotations,) = sorted((split_dir / "annotations").glob("*.json"))
    records = []
    for item in json.loads(annotations.read_text()):
        (record,) = item.values()
        answer, order = grounding(record)
        if not order:
            continue  # the reference training loader skips records without a grounded phrase
        image = np.asarray(Image.open(split_dir / "images" / record["img_file_name"]).convert("RGB"))
        h, w = image.shape[:2]
        masks = []
        for index in order:
            m = np.zeros((h, w), dtype=np.uint8)
            for polygon in record["refs"][index]["segmentation"]:
                rle = coco_mask.frPyObjects([np.asarray(polygon, dtype=np.float64)], h, w)
                m |= coco_mask.decode(rle).astype(np.uint8).reshape(h, w)
            masks.append(m)
        records.append(dict(image=image, answer=answer, masks=np.stack(masks)))
    return records


def preprocess(records, sizes, tok, tokref):
    """CLIP/SAM inputs, token ids and labels of every record, once."""
    import torch
    import torch.nn.functional as F

    clip_size, canvas = sizes["clip"]["image_size"], sizes["sam"]["img_size"]
    clip_mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    clip_std = torch.tensor(CLIP_STD).view(3, 1, 1)
    sam_mean, sam_std = torch.tensor(SAM_MEAN).view(3, 1, 1), torch.tensor(SAM_STD).view(3, 1, 1)
    out = []
    for r in records:
        x = torch.from_numpy(r["image"].copy()).permute(2, 0, 1).float()[None]
        h, w = x.shape[-2:]
        # Square shipped images: shortest-edge resize + centre crop is a plain resize.
        clip = F.interpolate(x, size=(clip_size, clip_size), mode="bicubic", align_corners=False)[0]
        clip = (clip.clamp(0, 255) / 255 - clip_mean) / clip_std
        scale = canvas / max(h, w)
        rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
        sam = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)[0]
        sam = F.pad((sam - sam_mean) / sam_std, (0, canvas - rw, 0, canvas - rh))
        conversation = tokref.with_image_tokens(tokref.llava_v1_prompt(
            [("USER", tokref.BEGIN + tokref.QUESTION), ("ASSISTANT", r["answer"])]))
        ids = tokref.tokenizer_image_token(tok, conversation)
        labels = tokref.labels_for(tok, conversation, ids, MODEL_MAX_LENGTH)
        out.append(dict(clip=clip, sam=sam, ids=ids, labels=labels, resized=(rh, rw),
                        orig=(h, w), masks=torch.from_numpy(r["masks"]).float()))
    return out


def collate(samples, max_text: int, pad: int):
    """`LegionTokenizer::collate`: right-pad with unk, truncate to `model_max_length - (N - 1)`."""
    import torch

    seq = min(max(len(s["ids"]) for s in samples), max_text)
    ids = torch.full((len(samples), seq), pad, dtype=torch.long)
    labels = torch.full((len(samples), seq), -100, dtype=torch.long)
    for row, s in enumerate(samples):
        n = min(len(s["ids"]), seq)
        ids[row, :n] = torch.tensor(s["ids"][:n])
        labels[row, :n] = torch.tensor(s["labels"][:n])
    return dict(
        clip=torch.stack([s["clip"] for s in samples]),
        sam=torch.stack([s["sam"] for s in samples]),
        ids=ids, labels=labels, attention_mask=(ids != pad).long(),
        resized=[s["resized"] for s in samples], orig=[s["orig"] for s in samples],
        masks=[s["masks"] for s in samples], seq=seq)


def to_device(batch: dict, device: str) -> dict:
    import torch

    return {k: (v.to(device) if isinstance(v, torch.Tensor) else
                [m.to(device) for m in v] if k == "masks" else v) for k, v in batch.items()}


def torch_bench(preset: str, batches, warmup: int, seg: int, legion, losses, device: str = "cpu"):
    import torch

    torch.manual_seed(SEED)
    modules = [m.to(device) for m in legion.build_model(PRESETS[preset])]
    batches = [to_device(b, device) for b in batches]
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    optim = torch.optim.AdamW(params, lr=2e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)

    def step(b):
        optim.zero_grad(set_to_none=True)
        _, _, ce, _, _, pred_masks = legion.legion_forward(
            *modules, b["clip"], b["sam"], b["ids"], b["labels"], b["attention_mask"],
            b["resized"], b["orig"], seg=seg)
        pairs = []
        for pred, gt in zip(pred_masks, b["masks"]):
            n = min(pred.shape[0], gt.shape[0])
            if n:
                pairs.append((pred[:n], gt[:n]))
        n_masks = sum(p.shape[0] for p, _ in pairs)
        bce = sum(losses.sigmoid_ce_loss(p, g, n_masks) for p, g in pairs)
        dice = sum(losses.dice_loss(p, g, n_masks) for p, g in pairs)
        loss = 1.0 * ce + 0.4 * bce + 0.2 * dice
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        return loss.item()

    seconds, cpu, loss = [], 0.0, float("nan")
    for i, b in enumerate(batches):
        # crates/legion-train/src/schedule.rs: warm-up over 30 steps (configs/tiny.toml), then
        # linear decay to 0 at the last step.
        warm, total = 30, len(batches)
        lr = 2e-3 * (i / warm if i < warm else
                     (min(max((total - i) / (total - warm), 0.0), 1.0) if total > warm else 1.0))
        for group in optim.param_groups:
            group["lr"] = lr
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = step(b)  # `.item()` waits for the device
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
            cpu += time.process_time() - start_cpu
    return dict(steps=len(seconds), seconds=sum(seconds), steps_per_second=len(seconds) / sum(seconds),
                cpu_seconds_per_step=cpu / len(seconds), last_loss=loss,
                parameters=sum(p.numel() for p in params))


def rust_bench(preset: str, steps: int, warmup: int, threads: int, release: bool,
               binary: Path | None = None, device: str = "cpu", replicas: int = 1):
    binary = binary or ROOT / "target" / ("release" if release else "debug") / "legion"
    if not binary.exists():
        raise SystemExit(f"{binary} missing: cargo build {'--release ' if release else ''}-p legion-cli")
    with tempfile.TemporaryDirectory(prefix=f"bench_train_{preset}_") as out:
        # configs/tiny.toml without its pretrained tower (made for the tiny preset only), every
        # parameter trained as on the PyTorch side.
        config = Path(out) / "bench.toml"
        config.write_text("".join(
            line for line in (ROOT / "configs/tiny.toml").read_text().splitlines(keepends=True)
            if not line.startswith("clip = ")))
        cmd = [str(binary), "train", "--config", str(config), "--set", "trainable.full=true",
               "--set", f"model.preset={preset}", "--set", f"run.steps={steps}",
               # The decay ends at the last step, as on the PyTorch side.
               "--set", f"optim.decay_steps={steps}",
               "--set", "run.evaluate=false", "--set", "run.validate_every=0",
               "--set", "run.checkpoint_every=0", "--devices", ",".join([device] * replicas),
               "--set", f"run.out_dir={out}"]
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        if run.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        summary = json.loads((Path(out) / "summary.json").read_text())
        records = [json.loads(line)["train"] for line in (Path(out) / "metrics.jsonl").open()
                   if '"train"' in line]
    measured = [r["seconds"] for r in records[warmup:]]
    return dict(steps=len(measured), seconds=sum(measured),
                steps_per_second=len(measured) / sum(measured),
                e2e_steps_per_second=summary["steps_per_second"],
                process_cpu_seconds_per_step=cpu / steps, last_loss=records[-1]["loss"],
                parameters=summary["parameters"][1], command=" ".join(cmd[:2] + cmd[2:-2]))


def main() -> None:
    args = parse_args()
    if args.omp_wait_policy != "default":
        os.environ.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy)
    import torch
    from tokenizers import Tokenizer

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    legion, losses, tokref = load_fixture("legion"), load_fixture("losses"), load_fixture("tokenizer")
    tok = Tokenizer.from_file(str(ROOT / "data/tokenizers/synthscars-tiny.json"))
    seg, pad = tok.token_to_id("[SEG]"), tok.token_to_id("<unk>")
    presets = args.presets.split(",")
    steps = dict(zip(presets, args.steps * len(presets) if len(args.steps) == 1 else args.steps))
    records = load_records(ROOT / "data/synthscars-tiny/train")
    print(f"{len(records)} trainable records; batch {BATCH}; {args.threads} threads; "
          f"{args.warmup} warm-up steps; legion {'release' if args.release else 'debug (dev profile)'}")
    results = {}
    for preset in presets:
        total = args.warmup + steps[preset]
        sizes = PRESETS[preset]
        n_img = (sizes["clip"]["image_size"] // sizes["clip"]["patch_size"]) ** 2
        max_text = max(MODEL_MAX_LENGTH - (n_img - 1), 1)
        batches = None
        if not args.no_torch:
            samples = preprocess(records, sizes, tok, tokref)
            order = stream_items(len(samples), SEED, total * BATCH)
            batches = [collate([samples[i] for i in order[s * BATCH:(s + 1) * BATCH]], max_text, pad)
                       for s in range(total)]
            mean_seq = sum(b["seq"] for b in batches) / len(batches)
        replicas = args.replicas or (args.threads if args.device == "cpu" else 1)
        rounds = []
        for k in range(args.rounds):
            # Alternate which side runs first: the shared machine's speed drifts.
            sides = ["torch", "rust"] if k % 2 == 0 else ["rust", "torch"]
            one = {"load_before": os.getloadavg()[0]}
            for side in sides:
                if side == "torch" and batches is not None:
                    one["torch"] = torch_bench(preset, batches, args.warmup, seg, legion, losses,
                                               args.device)
                    one["torch"]["mean_seq"] = mean_seq
                if side == "rust" and not args.no_rust:
                    one["rust"] = rust_bench(preset, total, args.warmup, args.threads,
                                             args.release, args.binary, args.device, replicas)
            if "torch" in one and "rust" in one:
                one["ratio"] = one["rust"]["steps_per_second"] / one["torch"]["steps_per_second"]
            rounds.append(one)
            print(f"{preset} round {k + 1}: " + ", ".join(
                f"{side} {one[side]['steps_per_second']:.3f} steps/s" for side in ("torch", "rust")
                if side in one) + (f", ratio {one['ratio']:.2f}" if "ratio" in one else "")
                + f" (load {one['load_before']:.2f})", flush=True)
        # The reported run of each side is its median round; the ratio is the median of rounds.
        result = {"rounds": rounds, "replicas": replicas}
        for side in ("torch", "rust"):
            runs = sorted((r[side] for r in rounds if side in r), key=lambda r: r["steps_per_second"])
            if runs:
                result[side] = runs[len(runs) // 2]
        ratios = sorted(r["ratio"] for r in rounds if "ratio" in r)
        if ratios:
            result["ratio"] = statistics.median(ratios)
        results[preset] = result
        print(f"\n{preset}: {steps[preset]} measured steps after {args.warmup} warm-up, median of "
              f"{args.rounds} rounds; legion-rs on {replicas} replica(s)")
        if "torch" in result:
            t = result["torch"]
            print(f"  PyTorch {torch.__version__:<12} {t['steps_per_second']:7.3f} steps/s "
                  f"({1 / t['steps_per_second']:.3f} s/step, CPU {t['cpu_seconds_per_step']:.3f} s/step, "
                  f"{t['parameters']:,} params, "
                  f"mean text length {t['mean_seq']:.0f}, last loss {t['last_loss']:.3f})")
        if "rust" in result:
            r = result["rust"]
            print(f"  legion-rs (burn)     {r['steps_per_second']:7.3f} steps/s "
                  f"({1 / r['steps_per_second']:.3f} s/step, {r['parameters']:,} params, "
                  f"last loss {r['last_loss']:.3f}); whole loop {r['e2e_steps_per_second']:.3f} steps/s, "
                  f"process CPU {r['process_cpu_seconds_per_step']:.3f} s/step (start-up and "
                  f"warm-up included)")
        if "ratio" in result:
            loads = ", ".join(f"{r['load_before']:.2f}" for r in rounds)
            print(f"  burn / PyTorch steps/s: {result['ratio']:.2f} (median of rounds: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)}); load average "
                  f"{loads} before each round")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
