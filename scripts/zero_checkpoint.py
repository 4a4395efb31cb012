#!/usr/bin/env python3
"""Writes a full-size checkpoint of zeros from a key -> shape manifest, in seconds and without
using its size on disk: the safetensors header is real (every key and shape of the released
layout), the data section is a sparse hole that reads back as zeros.

For `scripts/full_size_smoke.sh` (convert / analyze the 7B layout on a machine without the
released weights). Manifests: crates/legion-model/tests/fixtures/manifest/ (made by
scripts/fixtures/full_size_manifest.py). Standard library only.

  python3 scripts/zero_checkpoint.py MANIFEST.json OUT.safetensors [--dtype BF16|F16|F32]
                                     [--legacy]   # also the buffers old transformers saved
"""

import argparse
import json
import math
from pathlib import Path

SIZES = {"F32": 4, "BF16": 2, "F16": 2}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", default="BF16", choices=sorted(SIZES))
    parser.add_argument("--legacy", action="store_true",
                        help="include legacy_tensors (rotary inv_freq, CLIP position_ids)")
    args = parser.parse_args()

    manifest = json.loads(args.manifest.read_text())
    tensors = dict(manifest["tensors"])
    if args.legacy:
        tensors.update(manifest.get("legacy_tensors", {}))
    header, offset = {}, 0
    for key in sorted(tensors):
        shape = tensors[key]["shape"]
        declared = tensors[key].get("dtype", "F32")
        # Float tensors get the chosen dtype; integer buffers (position_ids) keep theirs.
        dtype = args.dtype if declared in SIZES else declared
        size = math.prod(shape) * SIZES.get(dtype, 8)
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt", "source": f"zeros from {args.manifest.name}"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data section 8-byte aligned, as safetensors pads
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.truncate(8 + len(text) + offset)  # a hole: zeros, no blocks written
    print(f"{args.out}: {len(tensors)} tensors, {offset / 1e9:.2f} GB of {args.dtype} zeros (sparse)")


if __name__ == "__main__":
    main()
