#!/usr/bin/env python3
"""Write tokenizer.json for a checkpoint folder that ships only a SentencePiece tokenizer.model.

Vicuna / GLaMM / LEGION folders often carry only `tokenizer.model` (+ `tokenizer_config.json`,
`special_tokens_map.json`, `added_tokens.json` with GLaMM's `<im_start>`, `<im_end>`, `<bbox>`,
`<point>`, `[SEG]`, `<p>`, `</p>`). The Rust `tokenizers` crate used by legion-rs reads only
`tokenizer.json`. This script loads the folder with transformers' fast LLaMA tokenizer (converted
from the SentencePiece model, added tokens included) and saves its `tokenizer.json` into the same
folder (or --out). It then tokenizes the LEGION prompt with the converted tokenizer and, when the
`sentencepiece` package is there, with SentencePiece itself, and fails if the ids differ.

  pip install transformers sentencepiece protobuf
  python scripts/convert_tokenizer.py /path/to/GLaMM-GranD-Pretrained
  legion convert /path/to/GLaMM-GranD-Pretrained --out models/glamm   # then finds tokenizer.json
"""

import argparse
import json
import sys
from pathlib import Path

PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions. USER: The <im_start> provides "
    "an overview of the picture.\nPlease provide a detailed analysis of artifacts in this photo. "
    "ASSISTANT: <p> a deformed hand </p> [SEG] with six fingers. café 12345 </s>"
)
GLAMM_TOKENS = ["<im_start>", "<im_end>", "<bbox>", "<point>", "[SEG]", "<p>", "</p>"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="checkpoint folder with tokenizer.model")
    parser.add_argument("--out", type=Path, help="where to write tokenizer.json (default: FOLDER/tokenizer.json)")
    parser.add_argument("--force", action="store_true", help="replace an existing tokenizer.json")
    args = parser.parse_args()

    model = args.folder / "tokenizer.model"
    out = args.out or args.folder / "tokenizer.json"
    if not model.is_file():
        print(f"error: {model} does not exist", file=sys.stderr)
        return 2
    if out.exists() and not args.force:
        print(f"error: {out} exists (pass --force to replace it)", file=sys.stderr)
        return 2

    try:
        from transformers import LlamaTokenizerFast
    except ImportError:
        print("error: needs `pip install transformers sentencepiece protobuf`", file=sys.stderr)
        return 2
    # Without tokenizer.json in the folder, this converts tokenizer.model (needs protobuf);
    # legacy=True is how Vicuna / LLaVA / GLaMM tokenize (their hub configs).
    fast = LlamaTokenizerFast.from_pretrained(str(args.folder), legacy=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    from tokenizers import Tokenizer, processors

    backend = Tokenizer.from_str(fast.backend_tokenizer.to_str())
    # Vicuna / GLaMM prepend BOS (`add_bos_token: true`); legion-rs encodes with the
    # tokenizer.json's post-processor, so write that rule explicitly (transformers 5 leaves it
    # out of a converted backend).
    bos = fast.convert_tokens_to_ids("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", bos)])
    backend.save(str(out))
    print(f"wrote {out} ({len(fast)} tokens, BOS = {bos} prepended)")

    missing = [t for t in GLAMM_TOKENS if fast.convert_tokens_to_ids(t) in (None, fast.unk_token_id)]
    if missing:
        print(f"note: no GLaMM tokens {missing} in this tokenizer (plain Vicuna?); LEGION needs them")

    ids_json = Tokenizer.from_file(str(out)).encode(PROMPT).ids
    ids_fast = fast(PROMPT, add_special_tokens=False).input_ids
    if ids_json != [bos] + ids_fast:
        print(f"error: the saved tokenizer.json gives other ids than transformers:\n{ids_json}\n{ids_fast}",
              file=sys.stderr)
        return 1
    try:
        import sentencepiece as spm
    except ImportError:
        print("sentencepiece not installed: the SentencePiece comparison was skipped")
        return 0
    # SentencePiece knows no added tokens: compare on the text between them.
    sp = spm.SentencePieceProcessor(model_file=str(model))
    text = "Please provide a detailed analysis of artifacts in this photo, with six fingers. café 12345"
    ids_sp = sp.encode(text)
    ids_conv = Tokenizer.from_file(str(out)).encode(text).ids
    ids_sp = [sp.bos_id()] + ids_sp
    if ids_sp != ids_conv:
        print(f"error: SentencePiece and the converted tokenizer differ:\n{ids_sp}\n{ids_conv}", file=sys.stderr)
        return 1
    print(json.dumps({"checked": "ids equal to SentencePiece and transformers", "tokens": len(ids_conv)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
