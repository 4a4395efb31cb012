#!/usr/bin/env python3
"""Check a `legion export` file against the GLaMM / LEGION checkpoint it came from, in Python.

Loads the original (one .safetensors / .bin file, or an HF folder, sharded or not) and the
export as reference-style state dicts (the `LegionForCausalLM.state_dict()` naming: model.*,
lm_head.*), optionally with a PEFT adapter merged into the original the way PEFT does it
(`W += lora_alpha / r * B @ A`, modules_to_save replaced), and compares every tensor:

- every exported key must be in the original, with the same shape; values equal (bit for bit
  when --exact, else within --atol after casting both to float32);
- original keys missing from the export must be expected ones: `model.region_encoder.*`
  (not part of legion-rs' model), CLIP `position_ids` buffers, and with --no-clip the whole
  `model.vision_tower.*`.

With --fixture-forward (the tiny fixture only) it also loads the export into the PyTorch
reference modules of scripts/fixtures/legion.py and reruns the fixture's forward, comparing the
logits with tests/fixtures/legion/logits.npy.

  legion convert ORIGINAL --out models/native [--adapter ADAPTER]
  legion export models/native --out exported.safetensors
  python scripts/check_export.py ORIGINAL exported.safetensors [--adapter ADAPTER] [--exact]

Exit status 0 when everything matches, 1 otherwise.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import torch

ALLOWED_DROPS = [r"^model\.region_encoder\.", r"(^|\.)position_ids$"]


def load_state(path: Path) -> dict:
    """One file, or an HF folder (index JSON or single weights file), as a flat state dict."""
    from safetensors.torch import load_file

    def load_one(f: Path) -> dict:
        if f.suffix == ".safetensors":
            return load_file(str(f))
        state = torch.load(str(f), map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        return dict(state)

    if path.is_file():
        return load_one(path)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            weight_map = json.loads((path / index).read_text())["weight_map"]
            state = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load_one(path / shard))
            return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return load_one(path / name)
    raise SystemExit(f"error: no checkpoint in {path}")


def merge_adapter(state: dict, adapter: Path) -> dict:
    """PEFT's merge_and_unload on a state dict."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_state(adapter / "adapter_model.safetensors"
                         if (adapter / "adapter_model.safetensors").is_file()
                         else adapter / "adapter_model.bin")
    state = dict(state)
    pairs = {}
    for key, value in tensors.items():
        key = key.removeprefix("base_model.model.")
        m = re.match(r"^(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
        if m:
            pairs.setdefault(m.group(1), {})[m.group(2)] = value
        elif key in state:
            state[key] = value  # modules_to_save
        else:
            raise SystemExit(f"error: adapter tensor {key} is not in the original")

    def pattern_value(patterns: dict, name: str, default):
        for pattern, value in patterns.items():
            if re.match(rf"^(.*\.)?(?:{pattern})$", name):
                return value
        return default

    for module, pair in pairs.items():
        r = pattern_value(config.get("rank_pattern") or {}, module, config["r"])
        alpha = pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"])
        scale = alpha / (r ** 0.5 if config.get("use_rslora") else r)
        weight = state[f"{module}.weight"]
        state[f"{module}.weight"] = (weight.float() + scale * (pair["B"].float() @ pair["A"].float())).to(weight.dtype)
    return state


def fixture_forward(exported: dict) -> float:
    """Max |logits - fixture logits| of the fixture forward on the exported weights."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
    import legion as fixture  # scripts/fixtures/legion.py

    out = Path(fixture.OUT)
    clip, projector, llm, sam, fcs = fixture.build(torch.Generator().manual_seed(0))
    prefix = "model.vision_tower.vision_tower."
    clip_state = {k[len(prefix):]: v for k, v in exported.items() if k.startswith(prefix)}
    if not any(k.startswith("vision_model.") for k in clip.state_dict()):
        clip_state = {k.removeprefix("vision_model."): v for k, v in clip_state.items()}
    result = clip.load_state_dict(clip_state, strict=False)
    bad = [k for k in result.missing_keys + result.unexpected_keys if not k.endswith("position_ids")]
    if bad:
        raise SystemExit(f"error: CLIP tensors do not fit the reference module: {bad}")
    projector.load_state_dict({k.removeprefix("model.mm_projector."): v for k, v in exported.items()
                               if k.startswith("model.mm_projector.")}, strict=True)
    llm.load_state_dict({k: v for k, v in exported.items()
                         if k.startswith(("model.embed_tokens", "model.layers", "model.norm", "lm_head"))},
                        strict=True)
    sam.load_state_dict({k.removeprefix("model.grounding_encoder."): v for k, v in exported.items()
                         if k.startswith("model.grounding_encoder.")}, strict=True)
    fcs.load_state_dict({k.removeprefix("model.text_hidden_fcs."): v for k, v in exported.items()
                         if k.startswith("model.text_hidden_fcs.")}, strict=True)
    meta = json.loads((out / "meta.json").read_text())
    args = [torch.from_numpy(np.load(out / f"{n}.npy")) for n in
            ("clip_pixels", "sam_pixels", "input_ids", "labels", "attention_mask")]
    with torch.no_grad():
        logits = fixture.legion_forward(clip, projector, llm, sam, fcs, *args,
                                        [tuple(x) for x in meta["resize_list"]],
                                        [tuple(x) for x in meta["orig_sizes"]])[0]
    return float((logits - torch.from_numpy(np.load(out / "logits.npy"))).abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("original", type=Path, help="the GLaMM / LEGION checkpoint converted from")
    parser.add_argument("exported", type=Path, help="the `legion export` safetensors file")
    parser.add_argument("--adapter", type=Path, help="PEFT adapter folder merged at convert time")
    parser.add_argument("--no-clip", action="store_true", help="the export was made with --no-clip")
    parser.add_argument("--exact", action="store_true", help="require bit-exact tensors")
    parser.add_argument("--atol", type=float, default=1e-6, help="tolerance without --exact")
    parser.add_argument("--fixture-forward", action="store_true",
                        help="also rerun the tiny fixture's PyTorch forward on the export")
    args = parser.parse_args()

    original = load_state(args.original)
    if args.adapter:
        original = merge_adapter(original, args.adapter)
    exported = load_state(args.exported)
    drops = ALLOWED_DROPS + ([r"^model\.vision_tower\."] if args.no_clip else [])

    problems = []
    worst = 0.0
    for key, value in sorted(exported.items()):
        if key not in original:
            problems.append(f"{key}: in the export, not in the original")
            continue
        ref = original[key]
        if tuple(value.shape) != tuple(ref.shape):
            problems.append(f"{key}: shape {tuple(value.shape)} vs original {tuple(ref.shape)}")
            continue
        if args.exact:
            if value.dtype != ref.dtype or not torch.equal(value, ref):
                problems.append(f"{key}: differs ({value.dtype} vs {ref.dtype})")
        else:
            err = float((value.float() - ref.float()).abs().max()) if value.numel() else 0.0
            worst = max(worst, err)
            if err > args.atol:
                problems.append(f"{key}: max abs difference {err:.3e} > {args.atol}")
    dropped = [k for k in original if k not in exported]
    unexpected_drops = [k for k in dropped if not any(re.search(p, k) for p in drops)]
    problems += [f"{k}: in the original, not in the export" for k in unexpected_drops]

    print(f"{len(exported)} exported tensors compared with {args.original}"
          f"{' + adapter ' + str(args.adapter) if args.adapter else ''}: "
          f"{'bit-exact' if args.exact else f'max abs difference {worst:.3e}'}; "
          f"{len(dropped)} original tensors not exported (allowed: {len(dropped) - len(unexpected_drops)})")
    if args.fixture_forward:
        err = fixture_forward(exported)
        print(f"fixture forward on the export: max abs logit difference {err:.3e}")
        if err > 1e-5:
            problems.append(f"fixture forward differs by {err:.3e}")
    for p in problems[:50]:
        print(f"  {p}", file=sys.stderr)
    if problems:
        print(f"FAILED: {len(problems)} problems", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
