#!/usr/bin/env bash
# Full-size LEGION on this machine, with no released weights: a GLaMM-layout 7B checkpoint of
# zeros (every key and shape of the released layout, bf16; sparse, so it costs no disk) and a
# whole CLIPModel at ViT-L/14-336, from the manifests in
# crates/legion-model/tests/fixtures/manifest/; then `legion convert` to a bf16 bundle and
# `legion analyze` of one 1024-px image on the CPU. Prints peak RSS and wall time of each
# (/usr/bin/time -v) and analyze's per-stage times.
#
#   bash scripts/full_size_smoke.sh                # everything
#   STEPS=convert bash scripts/full_size_smoke.sh  # convert only
#
# Needs ~15 GB free under $WORK (the bundle; the inputs are sparse) and, for analyze, ~16 GB
# of memory. Not in CI (too big for it). Environment:
#   WORK       scratch folder (default /tmp/legion-full-size)
#   LEGION     the legion binary (default: built with `cargo build -p legion-cli`)
#   STEPS      "convert analyze" (default) or a subset
#   MAX_NEW_TOKENS  answer length bound for analyze (default 16)
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/tmp/legion-full-size}
STEPS=${STEPS:-convert analyze}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-16}
manifests=crates/legion-model/tests/fixtures/manifest
if [ -z "${LEGION:-}" ]; then
  cargo build --locked -p legion-cli
  LEGION="${CARGO_TARGET_DIR:-target}/debug/legion"
fi
mkdir -p "$WORK"

# Prints "peak RSS GiB, wall s" from a /usr/bin/time -v log.
measured() {
  awk -F': ' '/Maximum resident set size/ {rss = $2 / 1048576}
              /Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0;
                for (i = 1; i <= n; i++) s = s * 60 + t[i]; wall = s}
              END {printf "peak RSS %.2f GiB, wall %.1f s", rss, wall}' "$1"
}

if [[ " $STEPS " == *" convert "* ]]; then
  python3 scripts/zero_checkpoint.py "$manifests/glamm_legion_7b.json" \
    "$WORK/glamm-7b/model.safetensors" --dtype BF16 --legacy
  python3 scripts/zero_checkpoint.py "$manifests/clip_vit_large_patch14_336.json" \
    "$WORK/clip-vit-large-patch14-336.safetensors" --dtype F32 --legacy
  rm -rf "$WORK/bundle"
  /usr/bin/time -v "$LEGION" convert "$WORK/glamm-7b/model.safetensors" --out "$WORK/bundle" \
    --preset legion-7b --dtype bf16 --clip "$WORK/clip-vit-large-patch14-336.safetensors" \
    --tokenizer crates/legion-model/tests/fixtures/tokenizer/tokenizer.json \
    2> >(tee "$WORK/convert.time" >&2)
  echo "convert: $(measured "$WORK/convert.time"); bundle $(du -h "$WORK/bundle/model.bpk" | cut -f1)"
fi

if [[ " $STEPS " == *" analyze "* ]]; then
  image="$WORK/image-1024.png"
  [ -f "$image" ] || python3 - "$image" <<'EOF'
import struct, sys, zlib
# A 1024x1024 RGB gradient PNG, standard library only.
w = h = 1024
rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 255 // w, y * 255 // h, 128))
               for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
EOF
  /usr/bin/time -v "$LEGION" --log info analyze "$image" --checkpoint "$WORK/bundle" \
    --dtype bf16 --max-new-tokens "$MAX_NEW_TOKENS" --out "$WORK/analysis" \
    2> >(tee "$WORK/analyze.time" >&2)
  echo "analyze: $(measured "$WORK/analyze.time")"
  grep -E "CLIP vision tower|prefill|decode|SAM image encoder" "$WORK/analyze.time" || true
fi
