//! COCO run-length encoding of binary masks.
//!
//! COCO stores a mask as the lengths of alternating runs of 0s and 1s over the pixels in
//! **column-major** (Fortran) order, starting with a run of 0s (possibly empty). On disk the
//! counts are either a JSON list ("uncompressed", used for crowd annotations) or a compact
//! ASCII string (pycocotools `rleToString` / `rleFrString` in `cocodataset/cocoapi`,
//! `common/maskApi.c`): each count from the fourth on is first replaced by its difference to
//! the count two places before it (the run of the same value), then written little-endian in
//! 5-bit groups, one character per group (`'0' + group`, bit `0x20` = "more groups follow",
//! bit `0x10` of the last group = sign).
//!
//! An [`Rle`] is always valid: its counts sum to `height * width`. Every constructor checks
//! that, so decoding to a [`Mask`] cannot fail.
//!
//! ```text
//! cargo test -p legion-data --lib rle
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::mask::Mask;

/// Errors from building or parsing an RLE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    /// The run lengths do not cover the mask exactly.
    #[error("RLE counts sum to {sum}, expected height {height} x width {width} = {expected}")]
    CountSum {
        height: usize,
        width: usize,
        expected: u64,
        sum: u64,
    },
    /// COCO stores counts as 32-bit unsigned integers.
    #[error("mask size {height}x{width} has more than u32::MAX pixels, which COCO RLE cannot hold")]
    TooLarge { height: usize, width: usize },
    /// A character outside `'0'..='o'` (ASCII 48..=111) in a compressed string.
    #[error("RLE string byte {position} is {byte:#04x}, outside the COCO alphabet '0'..='o'")]
    BadCharacter { position: usize, byte: u8 },
    /// The string ended while a count still announced more groups.
    #[error("RLE string ends inside count {count_index} (its last group sets the 'more' bit)")]
    Truncated { count_index: usize },
    /// A count spans more than 12 groups (60 bits; a valid count needs at most 7).
    #[error("RLE string count {count_index} has more than 12 groups (starts at byte {position})")]
    CountTooLong { count_index: usize, position: usize },
    /// A decoded count is negative or above `u32::MAX`.
    #[error("RLE string count {count_index} decodes to {value}, outside 0..=u32::MAX")]
    CountOutOfRange { count_index: usize, value: i64 },
    /// An uncompressed count above `u32::MAX`.
    #[error("RLE count {count_index} is {value}, above u32::MAX")]
    UncompressedCountTooLarge { count_index: usize, value: u64 },
}

/// A COCO run-length-encoded binary mask (`{"size": [h, w], "counts": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rle {
    height: usize,
    width: usize,
    counts: Vec<u32>,
}

fn pixel_count(height: usize, width: usize) -> Result<u64, RleError> {
    let n = (height as u64)
        .checked_mul(width as u64)
        .filter(|&n| n <= u64::from(u32::MAX))
        .ok_or(RleError::TooLarge { height, width })?;
    Ok(n)
}

impl Rle {
    /// An RLE from run lengths (first run = 0s), checking they sum to `height * width`.
    pub fn from_counts(height: usize, width: usize, counts: Vec<u32>) -> Result<Self, RleError> {
        let expected = pixel_count(height, width)?;
        let sum: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        if sum != expected {
            return Err(RleError::CountSum {
                height,
                width,
                expected,
                sum,
            });
        }
        Ok(Self {
            height,
            width,
            counts,
        })
    }

    /// Parses a compressed COCO counts string (pycocotools `rleFrString`) for an `height x width`
    /// mask.
    ///
    /// Stricter than pycocotools, which reads garbage silently: bytes outside the alphabet, a
    /// truncated last count, counts outside `0..=u32::MAX` and a wrong total are errors.
    /// pycocotools shifts 32-bit `int`s, so it decodes correctly only counts whose stored value
    /// fits in 30 bits (masks below ~5e8 pixels); within that range the two agree exactly.
    pub fn from_coco_string(height: usize, width: usize, s: &str) -> Result<Self, RleError> {
        pixel_count(height, width)?;
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let count_index = counts.len();
            let start = pos;
            let mut value: i64 = 0;
            let mut group = 0u32;
            loop {
                let Some(&byte) = bytes.get(pos) else {
                    return Err(RleError::Truncated { count_index });
                };
                if !(48..=111).contains(&byte) {
                    return Err(RleError::BadCharacter {
                        position: pos,
                        byte,
                    });
                }
                // 12 groups = 60 bits; a 13th would shift past an i64.
                if group == 12 {
                    return Err(RleError::CountTooLong {
                        count_index,
                        position: start,
                    });
                }
                let c = i64::from(byte - 48);
                value |= (c & 0x1f) << (5 * group);
                pos += 1;
                group += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        // Sign-extend from the last group's top bit.
                        value |= -1i64 << (5 * group);
                    }
                    break;
                }
            }
            // From the fourth count on, the string holds the difference to counts[i - 2].
            if count_index > 2 {
                value = value
                    .checked_add(i64::from(counts[count_index - 2]))
                    .ok_or(RleError::CountOutOfRange { count_index, value })?;
            }
            let count = u32::try_from(value)
                .map_err(|_| RleError::CountOutOfRange { count_index, value })?;
            counts.push(count);
        }
        Self::from_counts(height, width, counts)
    }

    /// The compressed COCO counts string (pycocotools `rleToString`).
    pub fn to_coco_string(&self) -> String {
        let mut out = String::with_capacity(self.counts.len() * 2);
        for (i, &count) in self.counts.iter().enumerate() {
            let mut value = i64::from(count);
            if i > 2 {
                value -= i64::from(self.counts[i - 2]);
            }
            loop {
                let mut c = (value & 0x1f) as u8;
                value >>= 5; // arithmetic shift keeps the sign
                let more = if c & 0x10 != 0 {
                    value != -1
                } else {
                    value != 0
                };
                if more {
                    c |= 0x20;
                }
                out.push(char::from(c + 48));
                if !more {
                    break;
                }
            }
        }
        out
    }

    /// Run-length encodes a mask (pycocotools `rleEncode`), scanning columns top to bottom.
    pub fn from_mask(mask: &Mask) -> Result<Self, RleError> {
        let (height, width) = (mask.height(), mask.width());
        pixel_count(height, width)?;
        let data = mask.as_slice();
        let mut counts = Vec::new();
        let mut current = 0u8;
        let mut run = 0u32;
        for col in 0..width {
            for row in 0..height {
                let v = data[row * width + col];
                if v != current {
                    counts.push(run);
                    run = 0;
                    current = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        Ok(Self {
            height,
            width,
            counts,
        })
    }

    /// Decodes to a row-major mask (pycocotools `rleDecode`).
    pub fn to_mask(&self) -> Mask {
        let mut mask = Mask::zeros(self.height, self.width);
        self.paint(&mut mask);
        mask
    }

    /// Sets every foreground pixel of this RLE in `mask` (a pixel-wise OR), walking each run
    /// down its columns.
    ///
    /// # Panics
    /// If `mask` is not `height x width`.
    pub(crate) fn paint(&self, mask: &mut Mask) {
        let (height, width) = (self.height, self.width);
        assert_eq!(
            (mask.height(), mask.width()),
            (height, width),
            "RLE and mask sizes"
        );
        let mut index = 0usize; // column-major position
        let mut foreground = false;
        for &count in &self.counts {
            let count = count as usize;
            if foreground {
                // Counts sum to height * width (checked at construction), so runs stay inside.
                let (mut col, mut row) = (index / height, index % height);
                let mut left = count;
                while left > 0 {
                    let span = left.min(height - row);
                    mask.fill_column(col, row, row + span);
                    left -= span;
                    (col, row) = (col + 1, 0);
                }
            }
            index += count;
            foreground = !foreground;
        }
    }

    /// Mask height.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Mask width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The run lengths, first run = 0s, column-major.
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// Number of foreground pixels (sum of the odd-indexed runs).
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| u64::from(c))
            .sum()
    }
}

/// The JSON shape shared by both COCO encodings.
#[derive(Serialize, Deserialize)]
struct RleRepr {
    size: [usize; 2],
    counts: CountsRepr,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum CountsRepr {
    Compressed(String),
    Uncompressed(Vec<u64>),
}

impl Serialize for Rle {
    /// Always writes the compressed form `{"size": [h, w], "counts": "<string>"}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RleRepr {
            size: [self.height, self.width],
            counts: CountsRepr::Compressed(self.to_coco_string()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Rle {
    /// Reads `{"size": [h, w], "counts": "<string>"}` or `{"size": [h, w], "counts": [ints]}`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = RleRepr::deserialize(deserializer)?;
        let [height, width] = repr.size;
        let rle = match repr.counts {
            CountsRepr::Compressed(s) => Rle::from_coco_string(height, width, &s),
            CountsRepr::Uncompressed(raw) => raw
                .iter()
                .enumerate()
                .map(|(count_index, &value)| {
                    u32::try_from(value)
                        .map_err(|_| RleError::UncompressedCountTooLarge { count_index, value })
                })
                .collect::<Result<Vec<u32>, _>>()
                .and_then(|counts| Rle::from_counts(height, width, counts)),
        };
        rle.map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny deterministic generator so the tests need no extra dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn encode_is_column_major() {
        // 2x3, row-major:
        // 1 0 0
        // 1 1 0
        let m = Mask::from_raw(2, 3, vec![1, 0, 0, 1, 1, 0]).unwrap();
        let rle = Rle::from_mask(&m).unwrap();
        // Columns: [1,1] [0,1] [0,0] -> 0 zeros, 2 ones, 1 zero, 1 one, 2 zeros.
        assert_eq!(rle.counts(), &[0, 2, 1, 1, 2]);
        assert_eq!(rle.area(), 3);
        assert_eq!(rle.to_mask(), m);
    }

    #[test]
    fn random_masks_round_trip_through_string() {
        let mut rng = Lcg(7);
        for _ in 0..200 {
            let h = 1 + (rng.next() % 20) as usize;
            let w = 1 + (rng.next() % 20) as usize;
            let density = rng.next() % 5;
            let data = (0..h * w)
                .map(|_| u8::from(rng.next() % 5 < density))
                .collect();
            let m = Mask::from_raw(h, w, data).unwrap();
            let rle = Rle::from_mask(&m).unwrap();
            assert_eq!(rle.area(), m.area() as u64);
            let s = rle.to_coco_string();
            let back = Rle::from_coco_string(h, w, &s).unwrap();
            assert_eq!(back, rle);
            assert_eq!(back.to_mask(), m);
        }
    }

    #[test]
    fn large_and_negative_deltas_round_trip() {
        // Deltas against counts[i-2] go negative; big counts need several groups.
        let counts = vec![5, 1_000_000, 3, 7, 2_000_000, 0, 1];
        let total: u32 = counts.iter().sum();
        let rle = Rle::from_counts(1, total as usize, counts.clone()).unwrap();
        let s = rle.to_coco_string();
        assert_eq!(
            Rle::from_coco_string(1, total as usize, &s)
                .unwrap()
                .counts(),
            &counts[..]
        );
    }

    #[test]
    fn count_sum_is_checked() {
        assert!(matches!(
            Rle::from_counts(2, 2, vec![1, 2]),
            Err(RleError::CountSum {
                sum: 3,
                expected: 4,
                ..
            })
        ));
        // "1" = one count of 1, for a 2x2 mask.
        assert!(matches!(
            Rle::from_coco_string(2, 2, "1"),
            Err(RleError::CountSum { .. })
        ));
        assert!(matches!(
            Rle::from_counts(70_000, 70_000, vec![]),
            Err(RleError::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_strings_are_errors() {
        assert!(matches!(
            Rle::from_coco_string(2, 2, "4 "),
            Err(RleError::BadCharacter {
                position: 1,
                byte: b' '
            })
        ));
        assert!(matches!(
            Rle::from_coco_string(2, 2, "p"),
            Err(RleError::BadCharacter { position: 0, .. })
        ));
        // 'P' = 48 + 0x20: "more" bit set on the last byte.
        assert_eq!(
            Rle::from_coco_string(2, 2, "P"),
            Err(RleError::Truncated { count_index: 0 })
        );
        // '@' = 48 + 0x10: one group with the sign bit, i.e. -16.
        assert!(matches!(
            Rle::from_coco_string(2, 2, "@"),
            Err(RleError::CountOutOfRange { count_index: 0, .. })
        ));
        let long = "o".repeat(40);
        assert!(matches!(
            Rle::from_coco_string(2, 2, &long),
            Err(RleError::CountTooLong { count_index: 0, .. })
        ));
        assert!(Rle::from_coco_string(2, 2, "\u{e9}").is_err());
    }

    #[test]
    fn garbage_strings_never_panic() {
        let mut rng = Lcg(99);
        for _ in 0..5000 {
            let len = (rng.next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| char::from((rng.next() % 128) as u8))
                .collect();
            let h = (rng.next() % 6) as usize;
            let w = (rng.next() % 6) as usize;
            if let Ok(rle) = Rle::from_coco_string(h, w, &s) {
                assert_eq!(rle.to_mask().as_slice().len(), h * w);
            }
            // Alphabet-only garbage exercises the arithmetic paths.
            let s: String = (0..len)
                .map(|_| char::from(48 + (rng.next() % 64) as u8))
                .collect();
            if let Ok(rle) = Rle::from_coco_string(h, w, &s) {
                let back = Rle::from_coco_string(h, w, &rle.to_coco_string()).unwrap();
                assert_eq!(back, rle);
            }
        }
    }

    #[test]
    fn serde_both_count_forms() {
        let compressed: Rle = serde_json::from_str(r#"{"size":[2,3],"counts":"021O1"}"#).unwrap();
        assert_eq!(compressed.counts(), &[0, 2, 1, 1, 2]);
        let plain: Rle = serde_json::from_str(r#"{"size":[2,3],"counts":[0,2,1,1,2]}"#).unwrap();
        assert_eq!(plain, compressed);
        let json = serde_json::to_string(&plain).unwrap();
        assert_eq!(json, r#"{"size":[2,3],"counts":"021O1"}"#);
        for bad in [
            r#"{"size":[2,3],"counts":[0,2,1,1]}"#,
            r#"{"size":[2,3],"counts":[0,2,1,1,4294967296]}"#,
            r#"{"size":[2,3],"counts":"0211~"}"#,
            r#"{"size":[2],"counts":"0"}"#,
            r#"{"size":[2,3],"counts":[-1,7]}"#,
            r#"{"size":[2,3]}"#,
        ] {
            assert!(serde_json::from_str::<Rle>(bad).is_err(), "{bad}");
        }
    }
}
