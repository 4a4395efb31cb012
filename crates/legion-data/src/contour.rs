//! Mask -> polygons, so masks from any source can be stored in the SynthScars (polygon) layout.
//!
//! Outer boundaries are traced along pixel edges (vertices on pixel corners), one polygon per
//! 4-connected component. Polygons on pixel corners rasterise back to the same pixels under the
//! pycocotools convention ([`crate::raster::coco_polygon`]); holes cannot be expressed by the
//! SynthScars polygon list (polygons are OR-ed), so they are filled and the number of pixels
//! this adds is reported by the caller, never hidden.

use std::collections::HashMap;

use crate::mask::Mask;

/// Outer-boundary polygons of `mask` as flat `[x1, y1, x2, y2, ...]` in pixel-corner coordinates,
/// clockwise on screen (y down), collinear vertices removed. Hole boundaries are not returned.
pub fn outer_polygons(mask: &Mask) -> Vec<Vec<f64>> {
    let (h, w) = (mask.height() as i64, mask.width() as i64);
    let fg = |r: i64, c: i64| {
        r >= 0 && c >= 0 && r < h && c < w && mask.get(r as usize, c as usize) == Some(true)
    };
    // Directed boundary edges with the foreground on the right (screen coordinates, y down).
    let mut out_edges: HashMap<(i64, i64), Vec<(i64, i64)>> = HashMap::new();
    let mut edge_count = 0usize;
    for r in 0..h {
        for c in 0..w {
            if !fg(r, c) {
                continue;
            }
            let mut add = |from: (i64, i64), to: (i64, i64)| {
                out_edges.entry(from).or_default().push(to);
                edge_count += 1;
            };
            if !fg(r - 1, c) {
                add((c, r), (c + 1, r));
            }
            if !fg(r, c + 1) {
                add((c + 1, r), (c + 1, r + 1));
            }
            if !fg(r + 1, c) {
                add((c + 1, r + 1), (c, r + 1));
            }
            if !fg(r, c - 1) {
                add((c, r + 1), (c, r));
            }
        }
    }
    let mut starts: Vec<(i64, i64)> = out_edges.keys().copied().collect();
    // Row-major start order makes the output deterministic.
    starts.sort_by_key(|&(x, y)| (y, x));
    let mut polygons = Vec::new();
    for start in starts {
        while let Some(first) = out_edges.get_mut(&start).and_then(|v| v.pop()) {
            let mut loop_pts = vec![start];
            let (mut prev, mut cur) = (start, first);
            while cur != start {
                loop_pts.push(cur);
                let dir = (cur.0 - prev.0, cur.1 - prev.1);
                let options = out_edges
                    .get_mut(&cur)
                    .expect("boundary edges form closed loops");
                // At a corner shared by two diagonal pixels, turn right: stay with the same pixel,
                // so each 4-connected component gets its own simple polygon.
                let right = (-dir.1, dir.0);
                let pick = options
                    .iter()
                    .position(|&n| (n.0 - cur.0, n.1 - cur.1) == right)
                    .unwrap_or(options.len() - 1);
                let next = options.swap_remove(pick);
                prev = cur;
                cur = next;
            }
            let area2: i64 = (0..loop_pts.len())
                .map(|i| {
                    let (a, b) = (loop_pts[i], loop_pts[(i + 1) % loop_pts.len()]);
                    a.0 * b.1 - b.0 * a.1
                })
                .sum();
            if area2 > 0 {
                polygons.push(simplify(&loop_pts));
            }
        }
    }
    debug_assert!(
        out_edges.values().all(|v| v.is_empty()),
        "{edge_count} edges, all used"
    );
    polygons
}

fn simplify(points: &[(i64, i64)]) -> Vec<f64> {
    let n = points.len();
    let mut flat = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (p, c, q) = (points[(i + n - 1) % n], points[i], points[(i + 1) % n]);
        let collinear = (c.0 - p.0) * (q.1 - c.1) - (c.1 - p.1) * (q.0 - c.0) == 0;
        if !collinear {
            flat.push(c.0 as f64);
            flat.push(c.1 as f64);
        }
    }
    flat
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raster::coco_polygons;

    fn mask_from(rows: &[&str]) -> Mask {
        let h = rows.len();
        let w = rows[0].len();
        let data = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| u8::from(b == b'#')))
            .collect();
        Mask::from_raw(h, w, data).unwrap()
    }

    #[test]
    fn square_is_four_corners() {
        let m = mask_from(&["....", ".##.", ".##.", "...."]);
        assert_eq!(
            outer_polygons(&m),
            vec![vec![1.0, 1.0, 3.0, 1.0, 3.0, 3.0, 1.0, 3.0]]
        );
    }

    #[test]
    fn diagonal_pixels_are_separate_polygons() {
        let m = mask_from(&["#.", ".#"]);
        assert_eq!(outer_polygons(&m).len(), 2);
    }

    #[test]
    fn hole_is_filled_outer_boundary_only() {
        let m = mask_from(&["###", "#.#", "###"]);
        let polys = outer_polygons(&m);
        assert_eq!(polys, vec![vec![0.0, 0.0, 3.0, 0.0, 3.0, 3.0, 0.0, 3.0]]);
    }

    #[test]
    fn random_blobs_without_holes_round_trip_through_the_coco_rasteriser() {
        // Deterministic pseudo-random blobs: union of rectangles and diagonal staircases.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut exact = 0;
        let mut cases = 0;
        for _ in 0..300 {
            let (h, w) = (1 + next(24) as usize, 1 + next(24) as usize);
            let mut m = Mask::zeros(h, w);
            for _ in 0..1 + next(5) {
                let (r0, c0) = (next(h as u64) as usize, next(w as u64) as usize);
                let (r1, c1) = (
                    (r0 + 1 + next(8) as usize).min(h),
                    (c0 + 1 + next(8) as usize).min(w),
                );
                for r in r0..r1 {
                    for c in c0..c1 {
                        m.set(r, c, true);
                    }
                }
            }
            let polys = outer_polygons(&m);
            let back = coco_polygons(&polys, h, w).unwrap();
            // Filling holes may add pixels; it must never lose one.
            for r in 0..h {
                for c in 0..w {
                    assert!(
                        m.get(r, c) == Some(false) || back.get(r, c) == Some(true),
                        "lost pixel ({r},{c})"
                    );
                }
            }
            cases += 1;
            exact += usize::from(back == m);
        }
        // Rectangle unions rarely enclose holes; nearly all must be exact.
        assert!(exact * 100 >= cases * 95, "{exact}/{cases} exact");
    }
}
