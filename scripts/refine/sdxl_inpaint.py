#!/usr/bin/env python3
"""SDXL inpainting for `legion refine --generator-cmd`, with the reference's settings
(opendatalab/LEGION scripts/refine/inpainter.py: guidance 8.0, 25 steps, strength 0.84, seed 42).

    pip install diffusers transformers accelerate torch
    legion refine image.png --checkpoint C --out refine/ \
        --generator-cmd 'python scripts/refine/sdxl_inpaint.py --image {image} --mask {mask} --prompt {prompt} --out {out}'

legion-rs writes {image} (RGB PNG) and {mask} (grey PNG, 255 = repaint; already dilated) and
reads {out}; any output size is resized back, and pixels outside the mask are kept.
"""

import argparse

import torch
from diffusers import AutoPipelineForInpainting
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--mask", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="diffusers/stable-diffusion-xl-1.0-inpainting-0.1")
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = AutoPipelineForInpainting.from_pretrained(args.model, torch_dtype=dtype).to(device)
    image = Image.open(args.image).convert("RGB")
    mask = Image.open(args.mask).convert("L")
    size = image.size
    result = pipe(
        prompt=args.prompt,
        image=image.resize((args.size, args.size)),
        mask_image=mask.resize((args.size, args.size)),
        guidance_scale=8.0,
        num_inference_steps=25,
        strength=0.84,
        generator=torch.Generator(device=device).manual_seed(42),
    ).images[0]
    result.resize(size).save(args.out)


if __name__ == "__main__":
    main()
