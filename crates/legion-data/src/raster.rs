//! Pixel-exact polygon rasterisation under the two conventions the LEGION reference uses.
//!
//! SynthScars annotates each artifact as one or more polygons `[x1, y1, x2, y2, ...]` in float
//! pixel coordinates. The reference (`opendatalab/LEGION`, LEGION arXiv 2503.15264) turns them
//! into masks in two different ways, and the two disagree along every boundary, so legion-rs
//! reproduces both exactly:
//!
//! * **Training masks** — pycocotools (`dataset/gcg_datasets/GranDf_gcg_ds.py`):
//!   `mask.decode(mask.frPyObjects([np.array(seg)], h, w))` per polygon. See [`coco_polygon`],
//!   [`coco_polygons`]. The algorithm is cocoapi's `rleFrPoly` (`common/maskApi.c`): vertices
//!   scaled by 5 and rounded with `(int)(v + .5)` (truncation toward zero, so negative
//!   coordinates round up), a DDA walk along every edge on the 5x grid, then the points where
//!   the walk crosses a pixel-centre column are turned into column-major RLE transitions.
//! * **Evaluation ground truth** — OpenCV (`eval/utils.py`, `generate_mask`, first commit):
//!   `points = np.array(seg, dtype=np.float32).reshape(-1, 2).astype(np.int32)` (float32
//!   rounding, then truncation toward zero) and `cv2.fillPoly(final_mask, [points], 1)` —
//!   **one `fillPoly` call per polygon**, for every polygon of every ref of the image, all
//!   painted into the same mask. See [`cv2_fill_poly`] (that pattern) and
//!   [`cv2_fill_poly_call`] (one call with several polygons, which fills overlaps by OpenCV's
//!   even-odd scanline rule instead of OR-ing). The algorithm is OpenCV's `fillPoly`
//!   (`modules/imgproc/src/drawing.cpp`, checked against OpenCV 5.0.0): every edge is first
//!   drawn as an 8-connected Bresenham line (`Line` + `LineIterator`, clipped by `clipLine`),
//!   then `FillEdgeCollection` fills between pairs of active edges on each scanline in 16.16
//!   fixed point, from `ceil(x_left)` to `floor(x_right)`.
//!
//! # Validation
//! Inputs that the reference would crash on, or that make no sense, are [`RasterError`]s, never
//! panics: an odd number of coordinates, too few coordinates, NaN or infinite values, and
//! points *far* outside the image. "Far" means more than `max(height, width)` pixels beyond
//! the image, i.e. a coordinate `x` must satisfy `-m <= x <= width + m` and `y` must satisfy
//! `-m <= y <= height + m` with `m = max(height, width)`. SynthScars polygons often overshoot
//! the border by float round-off (`x = w + 1e-9`); those are accepted and rasterised like the
//! reference does. Degenerate polygons (collinear points, zero area, one repeated point) are
//! valid and rasterise exactly as the reference does.
//!
//! ```text
//! cargo test -p legion-data --test raster_parity
//! ```

use std::fmt;

use crate::mask::Mask;
use crate::rle::Rle;

/// Largest accepted image side. Keeps every intermediate of both algorithms far from integer
/// overflow (`5 * 3 * 2^24 < 2^31` for pycocotools' `int`s).
pub const MAX_SIDE: usize = 1 << 24;

/// Which coordinate of a point a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    X,
    Y,
}

impl fmt::Display for Axis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Axis::X => "x",
            Axis::Y => "y",
        })
    }
}

/// What is wrong with one polygon. `index` is the position in the flat `[x1, y1, x2, ...]` list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolygonError {
    #[error("{len} coordinates is an odd number; a polygon is a flat list of x, y pairs")]
    OddCoordinateCount { len: usize },
    #[error("{len} coordinates; this convention needs at least {min}")]
    TooFewCoordinates { len: usize, min: usize },
    /// pycocotools' `frPyObjects` dispatches a 4-number polygon to its bbox path, which raises
    /// `TypeError` for the list `[np.array(seg)]` the reference passes. See [`coco_bbox`] for the
    /// box itself.
    #[error(
        "4 coordinates: pycocotools reads a 4-number polygon as a bbox [x, y, w, h] and the \
         reference's call then fails; a polygon needs at least 3 points"
    )]
    FourCoordinates,
    #[error("coordinate {index} ({axis}) is {value}, not a finite number")]
    NonFinite {
        index: usize,
        axis: Axis,
        value: f64,
    },
    #[error("coordinate {index} ({axis}) is {value}, outside the accepted range {min}..={max}")]
    FarOutside {
        index: usize,
        axis: Axis,
        value: f64,
        min: f64,
        max: f64,
    },
}

/// Why a polygon could not be rasterised. The caller adds the file and record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RasterError {
    #[error(
        "image size {height}x{width}: each side must be in 1..={MAX_SIDE} and height * width \
         at most u32::MAX"
    )]
    BadImageSize { height: usize, width: usize },
    /// `polygon` is the position in the list given to a multi-polygon function (0 otherwise).
    #[error("polygon {polygon}: {problem}")]
    Polygon {
        polygon: usize,
        problem: PolygonError,
    },
}

fn check_size(height: usize, width: usize) -> Result<(), RasterError> {
    let ok = (1..=MAX_SIDE).contains(&height)
        && (1..=MAX_SIDE).contains(&width)
        && (height as u64) * (width as u64) <= u64::from(u32::MAX);
    if ok {
        Ok(())
    } else {
        Err(RasterError::BadImageSize { height, width })
    }
}

/// Checks finiteness and the "far outside" bound of one coordinate.
fn check_coordinate(
    index: usize,
    value: f64,
    axis: Axis,
    height: usize,
    width: usize,
) -> Result<(), PolygonError> {
    if !value.is_finite() {
        return Err(PolygonError::NonFinite { index, axis, value });
    }
    let margin = height.max(width) as f64;
    let extent = match axis {
        Axis::X => width,
        Axis::Y => height,
    } as f64;
    let (min, max) = (-margin, extent + margin);
    if value < min || value > max {
        return Err(PolygonError::FarOutside {
            index,
            axis,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// Checks a flat polygon: even length, at least `min_len` numbers, every value in bounds.
fn check_polygon(
    poly: &[f64],
    min_len: usize,
    height: usize,
    width: usize,
) -> Result<(), PolygonError> {
    if !poly.len().is_multiple_of(2) {
        return Err(PolygonError::OddCoordinateCount { len: poly.len() });
    }
    if poly.len() < min_len {
        return Err(PolygonError::TooFewCoordinates {
            len: poly.len(),
            min: min_len,
        });
    }
    for (index, &value) in poly.iter().enumerate() {
        let axis = if index % 2 == 0 { Axis::X } else { Axis::Y };
        check_coordinate(index, value, axis, height, width)?;
    }
    Ok(())
}

fn in_polygon(polygon: usize) -> impl FnOnce(PolygonError) -> RasterError {
    move |problem| RasterError::Polygon { polygon, problem }
}

// ---------------------------------------------------------------------------------------------
// pycocotools
// ---------------------------------------------------------------------------------------------

/// Rasterises one polygon exactly like pycocotools:
/// `mask.decode(mask.frPyObjects([np.array(poly)], height, width))[:, :, 0]`.
///
/// Pycocotools quirks, decided here:
/// * exactly 4 numbers: pycocotools takes them for a bbox and the reference's call raises, so
///   this is [`PolygonError::FourCoordinates`] (use [`coco_bbox`] for a real box);
/// * fewer than 4 numbers: pycocotools raises; here [`PolygonError::TooFewCoordinates`];
/// * an odd count >= 5: pycocotools silently drops the last number; here
///   [`PolygonError::OddCoordinateCount`].
pub fn coco_polygon(poly: &[f64], height: usize, width: usize) -> Result<Mask, RasterError> {
    Ok(coco_polygon_rle(poly, height, width)?.to_mask())
}

/// Like [`coco_polygon`] but returns pycocotools' RLE itself (the run lengths of
/// `frPyObjects`, identical to its compressed `counts` string), without building the mask.
pub fn coco_polygon_rle(poly: &[f64], height: usize, width: usize) -> Result<Rle, RasterError> {
    check_size(height, width)?;
    if poly.len() == 4 {
        return Err(in_polygon(0)(PolygonError::FourCoordinates));
    }
    check_polygon(poly, 6, height, width).map_err(in_polygon(0))?;
    Ok(rle_from_poly(poly, height, width))
}

/// Checks one polygon under the pycocotools convention without rasterising it: the same errors
/// [`coco_polygon`] would give (count, finiteness, far-outside bound).
///
/// # Errors
/// As [`coco_polygon`].
pub fn validate_coco_polygon(poly: &[f64], height: usize, width: usize) -> Result<(), RasterError> {
    check_size(height, width)?;
    if poly.len() == 4 {
        return Err(in_polygon(0)(PolygonError::FourCoordinates));
    }
    check_polygon(poly, 6, height, width).map_err(in_polygon(0))
}

/// The union (pixel-wise OR) of [`coco_polygon`] over several polygons, e.g. all polygons of
/// one SynthScars ref.
///
/// The reference training loader *sums* the per-polygon `uint8` masks (`binary_mask += m`), so
/// where polygons overlap its mask holds 2, 3, ... (and wraps at 256); its losses then treat
/// those as targets above 1. legion-rs ORs instead, giving a proper binary target. The two agree
/// wherever polygons do not overlap (the usual case: one polygon per ref).
///
/// An empty list gives an empty mask. All polygons are checked before any is drawn; the error
/// names the polygon's position in `polys`.
pub fn coco_polygons(polys: &[Vec<f64>], height: usize, width: usize) -> Result<Mask, RasterError> {
    check_size(height, width)?;
    let rles = polys
        .iter()
        .enumerate()
        .map(|(i, poly)| {
            coco_polygon_rle(poly, height, width).map_err(|e| match e {
                RasterError::Polygon { problem, .. } => in_polygon(i)(problem),
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut mask = Mask::zeros(height, width);
    for rle in &rles {
        // Every RLE is `height x width` by construction.
        rle.paint(&mut mask);
    }
    Ok(mask)
}

/// Rasterises a COCO box `[x, y, w, h]` exactly like pycocotools'
/// `mask.decode(mask.frPyObjects(np.array([[x, y, w, h]]), height, width))`: the box becomes the
/// polygon `(x, y), (x, y + h), (x + w, y + h), (x + w, y)` and goes through the polygon
/// rasteriser. The corners must satisfy the same bounds as polygon points; box sides may be
/// zero or negative (pycocotools does not check them either).
pub fn coco_bbox(bbox: [f64; 4], height: usize, width: usize) -> Result<Mask, RasterError> {
    check_size(height, width)?;
    let [x, y, w, h] = bbox;
    let (x_end, y_end) = (x + w, y + h);
    // Report the stored number when it is itself bad, else the derived corner.
    for (index, value, axis) in [
        (0, x, Axis::X),
        (1, y, Axis::Y),
        (2, w, Axis::X),
        (3, h, Axis::Y),
    ] {
        if !value.is_finite() {
            return Err(in_polygon(0)(PolygonError::NonFinite {
                index,
                axis,
                value,
            }));
        }
    }
    for (index, value, axis) in [
        (0, x, Axis::X),
        (1, y, Axis::Y),
        (2, x_end, Axis::X),
        (3, y_end, Axis::Y),
    ] {
        check_coordinate(index, value, axis, height, width).map_err(in_polygon(0))?;
    }
    let corners = [x, y, x, y_end, x_end, y_end, x_end, y];
    Ok(rle_from_poly(&corners, height, width).to_mask())
}

/// cocoapi `rleFrPoly` on a validated polygon (at least 2 points, bounded coordinates).
fn rle_from_poly(xy: &[f64], height: usize, width: usize) -> Rle {
    const SCALE: f64 = 5.0;
    let k = xy.len() / 2;
    let (h, w) = (height as i64, width as i64);
    // C's `(int)(v + .5)`: truncation toward zero, so e.g. -2.5 -> -2.
    let round = |v: f64| (v + 0.5) as i64;
    let x: Vec<i64> = (0..=k).map(|j| round(SCALE * xy[2 * (j % k)])).collect();
    let y: Vec<i64> = (0..=k)
        .map(|j| round(SCALE * xy[2 * (j % k) + 1]))
        .collect();

    // Dense boundary points on the 5x grid, edge after edge.
    let mut u: Vec<i64> = Vec::new();
    let mut v: Vec<i64> = Vec::new();
    for j in 0..k {
        let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
        let dx = (xe - xs).abs();
        let dy = (ys - ye).abs();
        // Always walk in increasing major coordinate, but emit points in edge order.
        let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
        if flip {
            std::mem::swap(&mut xs, &mut xe);
            std::mem::swap(&mut ys, &mut ye);
        }
        if dx >= dy {
            // dx == dy == 0 (repeated vertex): C computes 0/0 here; the one point it emits is
            // never used because its neighbours share its column, so any slope will do.
            let s = if dx == 0 {
                0.0
            } else {
                (ye - ys) as f64 / dx as f64
            };
            for d in 0..=dx {
                let t = if flip { dx - d } else { d };
                u.push(t + xs);
                v.push((ys as f64 + s * t as f64 + 0.5) as i64);
            }
        } else {
            let s = (xe - xs) as f64 / dy as f64;
            for d in 0..=dy {
                let t = if flip { dy - d } else { d };
                v.push(t + ys);
                u.push((xs as f64 + s * t as f64 + 0.5) as i64);
            }
        }
    }

    // Where the walk crosses a pixel-centre column, record the first pixel row below the
    // boundary: that is a 0->1 or 1->0 transition in the column-major pixel order.
    let mut transitions: Vec<u64> = Vec::new();
    for j in 1..u.len() {
        if u[j] == u[j - 1] {
            continue;
        }
        let column = if u[j] < u[j - 1] { u[j] } else { u[j] - 1 };
        let xd = (column as f64 + 0.5) / SCALE - 0.5;
        if xd.floor() != xd || xd < 0.0 || xd > (w - 1) as f64 {
            continue;
        }
        let mut yd = (v[j].min(v[j - 1]) as f64 + 0.5) / SCALE - 0.5;
        if yd < 0.0 {
            yd = 0.0;
        } else if yd > h as f64 {
            yd = h as f64;
        }
        let row = yd.ceil() as u64;
        transitions.push(xd as u64 * height as u64 + row);
    }
    transitions.push(height as u64 * width as u64);
    transitions.sort_unstable();

    // Differences between sorted transitions are the runs; a zero-length run means two
    // transitions cancel, so the following run is merged into the previous one.
    let mut runs: Vec<u64> = Vec::with_capacity(transitions.len());
    let mut previous = 0;
    for t in &mut transitions {
        let next = *t;
        *t -= previous;
        previous = next;
    }
    let mut iter = transitions.into_iter();
    runs.extend(iter.next());
    while let Some(run) = iter.next() {
        if run > 0 {
            runs.push(run);
        } else if let Some(after) = iter.next() {
            // `runs` is non-empty: it received the first difference before this loop.
            *runs.last_mut().expect("first run pushed") += after;
        }
    }
    // Each run is at most height * width <= u32::MAX (checked by check_size), and the runs
    // telescope to height * width, so the RLE is valid.
    let counts = runs.into_iter().map(|r| r as u32).collect();
    Rle::from_counts(height, width, counts).expect("rleFrPoly runs cover the image")
}

// ---------------------------------------------------------------------------------------------
// OpenCV fillPoly
// ---------------------------------------------------------------------------------------------

/// The LEGION evaluation ground truth: each polygon converted like the reference
/// (`float32`, then truncation to `int32`) and filled with its **own** `cv2.fillPoly(mask,
/// [points], 1)` call into one mask, i.e. the OR of the single-polygon fills.
///
/// To build the ground truth of an image, pass every polygon of every ref of that image (the
/// reference does not skip refs whose phrase is absent from the caption). All polygons are
/// checked before anything is drawn; errors name the polygon's position in `polys`.
pub fn cv2_fill_poly(polys: &[Vec<f64>], height: usize, width: usize) -> Result<Mask, RasterError> {
    check_size(height, width)?;
    let converted = convert_cv2_polygons(polys, height, width)?;
    let mut mask = Mask::zeros(height, width);
    for points in &converted {
        fill_poly_call(&mut mask, std::slice::from_ref(points));
    }
    Ok(mask)
}

/// One `cv2.fillPoly(mask, [p0, p1, ...], 1)` call with all `polys` together, after the
/// reference's point conversion. Within one call OpenCV collects the edges of all polygons and
/// fills by parity, so where two polygons overlap the overlap can stay *unfilled* (beyond the
/// outline pixels) — unlike [`cv2_fill_poly`]. Exposed so callers can reproduce any call pattern.
///
/// Each polygon needs at least one point (`cv2.fillPoly` rejects an empty contour); one point
/// paints one pixel and two points a line, as in OpenCV.
pub fn cv2_fill_poly_call(mask: &mut Mask, polys: &[Vec<f64>]) -> Result<(), RasterError> {
    let (height, width) = (mask.height(), mask.width());
    check_size(height, width)?;
    let converted = convert_cv2_polygons(polys, height, width)?;
    fill_poly_call(mask, &converted);
    Ok(())
}

/// A point in integer pixel coordinates.
type Point = (i64, i64);

/// `np.array(seg, dtype=np.float32).reshape(-1, 2).astype(np.int32)` for each polygon.
fn convert_cv2_polygons(
    polys: &[Vec<f64>],
    height: usize,
    width: usize,
) -> Result<Vec<Vec<Point>>, RasterError> {
    polys
        .iter()
        .enumerate()
        .map(|(i, poly)| {
            check_polygon(poly, 2, height, width).map_err(in_polygon(i))?;
            // float32 rounding first (it can carry 99.999999 to 100.0), then truncation toward
            // zero; bounded values fit i32.
            let to_int = |v: f64| i64::from((v as f32) as i32);
            Ok(poly
                .chunks_exact(2)
                .map(|p| (to_int(p[0]), to_int(p[1])))
                .collect())
        })
        .collect()
}

const XY_SHIFT: u32 = 16;
const XY_ONE: i64 = 1 << XY_SHIFT;

/// OpenCV `clipLine(Size, Point&, Point&)`: Cohen–Sutherland-style clipping to
/// `[0, width-1] x [0, height-1]`. Returns whether the clipped segment lies inside. The points
/// are modified even when it returns `false`, exactly like OpenCV (its edge setup reads them).
fn clip_line(width: i64, height: i64, p1: &mut Point, p2: &mut Point) -> bool {
    let (right, bottom) = (width - 1, height - 1);
    if width <= 0 || height <= 0 {
        return false;
    }
    let code = |(x, y): Point| {
        i32::from(x < 0)
            + i32::from(x > right) * 2
            + i32::from(y < 0) * 4
            + i32::from(y > bottom) * 8
    };
    let (mut c1, mut c2) = (code(*p1), code(*p2));
    if (c1 & c2) == 0 && (c1 | c2) != 0 {
        // Integer division truncates toward zero like C; OpenCV's double-based variant gives
        // the same quotient for the bounded coordinates accepted here.
        if c1 & 12 != 0 {
            let a = if c1 < 8 { 0 } else { bottom };
            p1.0 += (a - p1.1) * (p2.0 - p1.0) / (p2.1 - p1.1);
            p1.1 = a;
            c1 = i32::from(p1.0 < 0) + i32::from(p1.0 > right) * 2;
        }
        if c2 & 12 != 0 {
            let a = if c2 < 8 { 0 } else { bottom };
            p2.0 += (a - p2.1) * (p2.0 - p1.0) / (p2.1 - p1.1);
            p2.1 = a;
            c2 = i32::from(p2.0 < 0) + i32::from(p2.0 > right) * 2;
        }
        if (c1 & c2) == 0 && (c1 | c2) != 0 {
            if c1 != 0 {
                let a = if c1 == 1 { 0 } else { right };
                p1.1 += (a - p1.0) * (p2.1 - p1.1) / (p2.0 - p1.0);
                p1.0 = a;
                c1 = 0;
            }
            if c2 != 0 {
                let a = if c2 == 1 { 0 } else { right };
                p2.1 += (a - p2.0) * (p2.1 - p1.1) / (p2.0 - p1.0);
                p2.0 = a;
                c2 = 0;
            }
        }
    }
    (c1 | c2) == 0
}

/// OpenCV `Line(img, p1, p2, color, 8)`: an 8-connected Bresenham line through
/// `LineIterator(..., leftToRight = true)`, clipped to the image first.
fn draw_line(mask: &mut Mask, mut p1: Point, mut p2: Point) {
    let (width, height) = (mask.width() as i64, mask.height() as i64);
    let inside = |(x, y): Point| (0..width).contains(&x) && (0..height).contains(&y);
    let visible = (inside(p1) && inside(p2)) || clip_line(width, height, &mut p1, &mut p2);
    if !visible {
        return;
    }
    let mut dx = p2.0 - p1.0;
    let mut dy = p2.1 - p1.1;
    if dx < 0 {
        // Left to right: start from the other end.
        dx = -dx;
        dy = -dy;
        p1 = p2;
    }
    let y_step = if dy < 0 { -1 } else { 1 };
    dy = dy.abs();
    let steep = dy > dx;
    if steep {
        std::mem::swap(&mut dx, &mut dy);
    }
    let (mut x, mut y) = p1;
    let mut err = dx - 2 * dy;
    for _ in 0..=dx {
        // Clipped endpoints are inside, so every visited pixel is.
        mask.set(y as usize, x as usize, true);
        let minor = err < 0;
        err += -2 * dy + if minor { 2 * dx } else { 0 };
        if steep {
            y += y_step;
            x += i64::from(minor);
        } else {
            x += 1;
            y += if minor { y_step } else { 0 };
        }
    }
}

/// OpenCV's `PolyEdge`: a non-horizontal edge from row `y0` (inclusive) to `y1` (exclusive)
/// with 16.16 fixed-point `x` at the current row and per-row increment `dx`.
#[derive(Clone, Copy)]
struct PolyEdge {
    y0: i64,
    y1: i64,
    x: i64,
    dx: i64,
    next: usize,
}

/// End of a linked list of edges.
const NIL: usize = usize::MAX;

/// OpenCV `CollectPolyEdges` (shift 0, offset 0, 8-connected): draws the outline and appends
/// the polygon's edges.
fn collect_poly_edges(mask: &mut Mask, points: &[Point], edges: &mut Vec<PolyEdge>) {
    let (width, height) = (mask.width() as i64, mask.height() as i64);
    let inside = |(x, y): Point| (0..width).contains(&x) && (0..height).contains(&y);
    let Some(&last) = points.last() else {
        return;
    };
    let mut pt0 = last;
    for &pt1 in points {
        draw_line(mask, pt0, pt1);
        // Fixed-point edge ends; a clipped line's ends make the edge more accurate.
        let (mut t0, mut t1) = (pt0, pt1);
        let (mut y0c, mut y1c) = (pt0.1, pt1.1);
        if !(inside(t0) && inside(t1)) {
            clip_line(width, height, &mut t0, &mut t1);
            if t0.1 != t1.1 {
                y0c = t0.1;
                y1c = t1.1;
            }
        }
        let (x0c, x1c) = (t0.0 << XY_SHIFT, t1.0 << XY_SHIFT);
        if pt0.1 != pt1.1 {
            // y0c != y1c here: either both are the original (distinct) rows or both are the
            // clipped rows, which differ.
            let dx = (x1c - x0c) / (y1c - y0c);
            let edge = if pt0.1 < pt1.1 {
                PolyEdge {
                    y0: pt0.1,
                    y1: pt1.1,
                    x: x0c + (pt0.1 - y0c) * dx,
                    dx,
                    next: NIL,
                }
            } else {
                PolyEdge {
                    y0: pt1.1,
                    y1: pt0.1,
                    x: x1c + (pt1.1 - y1c) * dx,
                    dx,
                    next: NIL,
                }
            };
            edges.push(edge);
        }
        pt0 = pt1;
    }
}

/// OpenCV `FillEdgeCollection`: scanline fill between consecutive active edges.
///
/// Ported with its linked-list bookkeeping intact: the order in which OpenCV inserts, retires
/// and bubble-sorts edges decides which pairs get filled when edges cross, so a cleaner
/// algorithm would differ on self-intersecting and multi-polygon input.
fn fill_edge_collection(mask: &mut Mask, mut edges: Vec<PolyEdge>) {
    let (width, height) = (mask.width() as i64, mask.height() as i64);
    let total = edges.len();
    if total < 2 {
        return;
    }
    let mut y_min = i64::MAX;
    let mut y_max = i64::MIN;
    let mut x_min = i64::MAX;
    let mut x_max = -1i64;
    for e in &edges {
        let x_end = e.x + (e.y1 - e.y0) * e.dx;
        y_min = y_min.min(e.y0);
        y_max = y_max.max(e.y1);
        x_min = x_min.min(e.x).min(x_end);
        x_max = x_max.max(e.x).max(x_end);
    }
    if y_max < 0 || y_min >= height || x_max < 0 || x_min >= width << XY_SHIFT {
        return;
    }
    // Same order as OpenCV's CmpEdges (y0, then x, then dx). A stable sort of equal keys keeps
    // insertion order, but equal keys describe identical edges, so the order does not matter.
    edges.sort_by_key(|e| (e.y0, e.x, e.dx));
    // Sentinel "next edge to insert" after the last real one, and the list head.
    let sentinel = PolyEdge {
        y0: i64::from(i32::MAX),
        y1: 0,
        x: 0,
        dx: 0,
        next: NIL,
    };
    edges.push(sentinel);
    let head = edges.len();
    edges.push(sentinel);

    let mut i = 0;
    let mut e = 0;
    let y_end = y_max.min(height);
    let mut y = edges[0].y0;
    while y < y_end {
        let mut draw = false;
        let clipped_row = y < 0;
        let mut prelast = head;
        let mut last = edges[head].next;
        while last != NIL || edges[e].y0 == y {
            if last != NIL && edges[last].y1 == y {
                // The edge ends at this row: drop it from the active list.
                edges[prelast].next = edges[last].next;
                last = edges[last].next;
                continue;
            }
            let keep_prelast = prelast;
            if last != NIL && (edges[e].y0 > y || edges[last].x < edges[e].x) {
                prelast = last;
                last = edges[last].next;
            } else if i < total {
                // The next edge starts at this row: insert it before `last`.
                edges[prelast].next = e;
                edges[e].next = last;
                prelast = e;
                i += 1;
                e = i;
            } else {
                break;
            }
            if draw {
                if !clipped_row {
                    let (a, b) = (edges[keep_prelast].x, edges[prelast].x);
                    let (left, right) = if a > b { (b, a) } else { (a, b) };
                    // ceil(left) ..= floor(right) in pixels.
                    let x1 = (left + XY_ONE - 1) >> XY_SHIFT;
                    let x2 = right >> XY_SHIFT;
                    if x1 < width && x2 >= 0 {
                        let (x1, x2) = (x1.max(0), x2.min(width - 1));
                        if x1 <= x2 {
                            mask.fill_span(y as usize, x1 as usize, x2 as usize);
                        }
                    }
                }
                edges[keep_prelast].x += edges[keep_prelast].dx;
                edges[prelast].x += edges[prelast].dx;
            }
            draw = !draw;
        }

        // Bubble-sort the active list by x for the next row.
        let mut keep_prelast = NIL;
        loop {
            let mut prelast = head;
            let mut last = edges[head].next;
            let mut last_exchange = NIL;
            while last != keep_prelast && edges[last].next != NIL {
                let te = edges[last].next;
                if edges[last].x > edges[te].x {
                    edges[prelast].next = te;
                    edges[last].next = edges[te].next;
                    edges[te].next = last;
                    prelast = te;
                    last_exchange = prelast;
                } else {
                    prelast = last;
                    last = te;
                }
            }
            if last_exchange == NIL {
                break;
            }
            keep_prelast = last_exchange;
            if keep_prelast == edges[head].next || keep_prelast == head {
                break;
            }
        }
        y += 1;
    }
}

/// One `cv2.fillPoly` call on already converted points.
fn fill_poly_call(mask: &mut Mask, polygons: &[Vec<Point>]) {
    let mut edges = Vec::with_capacity(polygons.iter().map(Vec::len).sum::<usize>() + 2);
    for points in polygons {
        collect_poly_edges(mask, points, &mut edges);
    }
    fill_edge_collection(mask, edges);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polygon_problem(result: Result<Mask, RasterError>) -> (usize, PolygonError) {
        match result {
            Err(RasterError::Polygon { polygon, problem }) => (polygon, problem),
            other => panic!("expected a polygon error, got {other:?}"),
        }
    }

    #[test]
    fn coco_square_covers_pixel_centres() {
        // Expected values from pycocotools 2.0.11. In COCO, pixel (r, c) spans [c, c+1) x
        // [r, r+1): the square 1..3 covers pixels 1..=2, not 3.
        let m = coco_polygon(&[1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 1.0], 5, 5).unwrap();
        assert_eq!(m.area(), 4);
        for r in 0..5 {
            for c in 0..5 {
                let inside = (1..=2).contains(&r) && (1..=2).contains(&c);
                assert_eq!(m.get(r, c), Some(inside), "pixel ({r}, {c})");
            }
        }
    }

    #[test]
    fn cv2_square_includes_outline() {
        // Expected values from OpenCV 5.0.0: fillPoly includes the outline, so 3x3 pixels.
        let m = cv2_fill_poly(&[vec![1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 1.0]], 5, 5).unwrap();
        assert_eq!(m.area(), 9);
        assert_eq!(m.get(0, 0), Some(false));
        assert_eq!(m.get(3, 3), Some(true));
    }

    #[test]
    fn cv2_single_point_and_line() {
        // One point paints one pixel, two points a line (OpenCV draws the outline first).
        let m = cv2_fill_poly(&[vec![3.7, 2.2]], 6, 8).unwrap();
        assert_eq!((m.area(), m.get(2, 3)), (1, Some(true)));
        let m = cv2_fill_poly(&[vec![1.0, 1.0, 5.0, 1.0]], 6, 8).unwrap();
        assert_eq!(m.area(), 5);
    }

    #[test]
    fn cv2_truncates_through_float32() {
        // 4.99999999 rounds to 5.0f32 before the int conversion; 4.9999 truncates to 4.
        let a = cv2_fill_poly(&[vec![4.999_999_99, 1.0]], 3, 8).unwrap();
        assert_eq!(a.get(1, 5), Some(true));
        let b = cv2_fill_poly(&[vec![4.9999, 1.0]], 3, 8).unwrap();
        assert_eq!(b.get(1, 4), Some(true));
    }

    #[test]
    fn cv2_single_call_vs_separate_calls_on_overlap() {
        // Two identical squares: one call cancels the interior by parity (only the outline is
        // left), separate calls OR to the full square.
        let square = vec![0.0, 0.0, 0.0, 6.0, 6.0, 6.0, 6.0, 0.0];
        let separate = cv2_fill_poly(&[square.clone(), square.clone()], 8, 8).unwrap();
        let mut single = Mask::zeros(8, 8);
        cv2_fill_poly_call(&mut single, &[square.clone(), square]).unwrap();
        assert_eq!(separate.area(), 49);
        assert!(single.area() < separate.area());
        assert_eq!(single.get(3, 3), Some(false));
    }

    #[test]
    fn coco_union_is_or() {
        let a = vec![0.0, 0.0, 0.0, 4.0, 4.0, 4.0, 4.0, 0.0];
        let b = vec![2.0, 2.0, 2.0, 6.0, 6.0, 6.0, 6.0, 2.0];
        let union = coco_polygons(&[a.clone(), b.clone()], 8, 8).unwrap();
        let mut expected = coco_polygon(&a, 8, 8).unwrap();
        expected
            .union_with(&coco_polygon(&b, 8, 8).unwrap())
            .unwrap();
        assert_eq!(union, expected);
        assert_eq!(coco_polygons(&[], 3, 4).unwrap(), Mask::zeros(3, 4));
    }

    #[test]
    fn coco_rle_matches_mask() {
        let poly = [0.3, 0.2, 6.7, 1.1, 3.2, 5.9];
        let rle = coco_polygon_rle(&poly, 7, 9).unwrap();
        assert_eq!(rle.to_mask(), coco_polygon(&poly, 7, 9).unwrap());
        assert_eq!(Rle::from_mask(&rle.to_mask()).unwrap(), rle);
    }

    #[test]
    fn degenerate_polygons_are_valid() {
        let collinear = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        assert!(coco_polygon(&collinear, 5, 5).is_ok());
        assert!(cv2_fill_poly(&[collinear.to_vec()], 5, 5).is_ok());
        let point = [2.0, 2.0, 2.0, 2.0, 2.0, 2.0];
        assert_eq!(coco_polygon(&point, 5, 5).unwrap().area(), 0);
        assert_eq!(cv2_fill_poly(&[point.to_vec()], 5, 5).unwrap().area(), 1);
    }

    #[test]
    fn round_off_overshoot_is_accepted() {
        let poly = vec![
            0.0,
            0.0,
            10.000_000_001,
            0.0,
            10.000_000_001,
            5.000_000_001,
            -1e-9,
            5.0,
        ];
        assert_eq!(coco_polygon(&poly, 5, 10).unwrap().area(), 50);
        assert!(cv2_fill_poly(&[poly], 5, 10).is_ok());
    }

    #[test]
    fn bad_coordinate_counts() {
        assert_eq!(
            polygon_problem(coco_polygon(&[1.0, 2.0, 3.0, 4.0, 5.0], 5, 5)),
            (0, PolygonError::OddCoordinateCount { len: 5 })
        );
        assert_eq!(
            polygon_problem(coco_polygon(&[1.0, 2.0], 5, 5)),
            (0, PolygonError::TooFewCoordinates { len: 2, min: 6 })
        );
        assert_eq!(
            polygon_problem(coco_polygon(&[1.0, 2.0, 3.0, 4.0], 5, 5)),
            (0, PolygonError::FourCoordinates)
        );
        assert_eq!(
            polygon_problem(cv2_fill_poly(&[vec![1.0, 1.0], vec![]], 5, 5)),
            (1, PolygonError::TooFewCoordinates { len: 0, min: 2 })
        );
        assert_eq!(
            polygon_problem(cv2_fill_poly(&[vec![1.0, 1.0, 2.0]], 5, 5)),
            (0, PolygonError::OddCoordinateCount { len: 3 })
        );
    }

    #[test]
    fn non_finite_and_far_outside() {
        let (_, p) = polygon_problem(coco_polygon(&[0.0, 0.0, f64::NAN, 1.0, 2.0, 2.0], 5, 5));
        assert!(matches!(
            p,
            PolygonError::NonFinite {
                index: 2,
                axis: Axis::X,
                ..
            }
        ));
        let (_, p) = polygon_problem(cv2_fill_poly(&[vec![0.0, f64::INFINITY]], 5, 5));
        assert!(matches!(
            p,
            PolygonError::NonFinite {
                index: 1,
                axis: Axis::Y,
                ..
            }
        ));
        // Image 4 high, 10 wide: margin 10, so y in -10..=14 and x in -10..=20.
        assert!(coco_polygon(&[-10.0, -10.0, 20.0, 14.0, 0.0, 14.0], 4, 10).is_ok());
        let (i, p) = polygon_problem(coco_polygons(
            &[
                vec![0.0, 0.0, 1.0, 1.0, 2.0, 0.0],
                vec![0.0, 0.0, 1.0, 14.5, 2.0, 0.0],
            ],
            4,
            10,
        ));
        assert_eq!(i, 1);
        assert_eq!(
            p,
            PolygonError::FarOutside {
                index: 3,
                axis: Axis::Y,
                value: 14.5,
                min: -10.0,
                max: 14.0
            }
        );
        let err = cv2_fill_poly(&[vec![-1e12, 0.0]], 4, 10).unwrap_err();
        assert!(err.to_string().contains("coordinate 0 (x)"), "{err}");
    }

    #[test]
    fn bad_image_sizes() {
        let tri = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        for (h, w) in [(0, 5), (5, 0), (MAX_SIDE + 1, 1), (70_000, 70_000)] {
            assert_eq!(
                coco_polygon(&tri, h, w),
                Err(RasterError::BadImageSize {
                    height: h,
                    width: w
                })
            );
            assert!(cv2_fill_poly(&[tri.to_vec()], h, w).is_err());
        }
        let mut empty = Mask::zeros(0, 3);
        assert!(cv2_fill_poly_call(&mut empty, &[tri.to_vec()]).is_err());
    }

    #[test]
    fn bbox_checks_corners() {
        assert_eq!(coco_bbox([1.0, 1.0, 3.0, 2.0], 5, 6).unwrap().area(), 6);
        let (_, p) = polygon_problem(coco_bbox([1.0, 1.0, f64::NAN, 2.0], 5, 6));
        assert!(matches!(p, PolygonError::NonFinite { index: 2, .. }));
        let (_, p) = polygon_problem(coco_bbox([1.0, 1.0, 100.0, 2.0], 5, 6));
        assert!(matches!(
            p,
            PolygonError::FarOutside {
                index: 2,
                axis: Axis::X,
                ..
            }
        ));
    }

    #[test]
    fn random_polygons_never_panic() {
        // Deterministic LCG; coordinates span the whole accepted range and a bit beyond.
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..300 {
            let h = 1 + (next() * 12.0) as usize;
            let w = 1 + (next() * 12.0) as usize;
            let m = h.max(w) as f64;
            let n = 1 + (next() * 8.0) as usize;
            let poly: Vec<f64> = (0..2 * n)
                .map(|_| -1.2 * m + next() * (3.4 * m + 1.0))
                .collect();
            let _ = coco_polygon(&poly, h, w);
            let _ = cv2_fill_poly(std::slice::from_ref(&poly), h, w);
            let mut mask = Mask::zeros(h, w);
            let _ = cv2_fill_poly_call(&mut mask, &[poly.clone(), poly]);
        }
    }
}
