//! Pixel canvas and polygon geometry for the synthetic images.
//!
//! Shapes are simple polygons ("rings") in float pixel coordinates, the SynthScars convention:
//! `(0, 0)` is the top-left corner of the image and pixel `(i, j)` covers `[i, i+1) x [j, j+1)`.
//! A pixel belongs to a shape when its centre `(i + 0.5, j + 0.5)` is inside by the even-odd
//! rule. Artifacts alter exactly the pixels of their annotation polygons, so the annotation is the
//! ground truth of what was changed (up to the rasteriser's edge convention).

/// A point `(x, y)` in pixels.
pub(crate) type Pt = (f64, f64);

/// A simple polygon, vertices in order, implicitly closed.
pub(crate) type Ring = Vec<Pt>;

/// Linear RGB in `[0, 1]` (clamped when quantised).
pub(crate) type Rgb = [f32; 3];

/// Even-odd point-in-polygon test over all `rings` together.
pub(crate) fn contains(rings: &[Ring], x: f64, y: f64) -> bool {
    let mut inside = false;
    for ring in rings {
        let n = ring.len();
        if n < 3 {
            continue;
        }
        let mut j = n - 1;
        for i in 0..n {
            let (xi, yi) = ring[i];
            let (xj, yj) = ring[j];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
    }
    inside
}

/// Axis-aligned bounds `(min_x, min_y, max_x, max_y)` of the rings (zeros when empty).
pub(crate) fn bounds(rings: &[Ring]) -> (f64, f64, f64, f64) {
    let mut b = (
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in rings.iter().flatten() {
        b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
    }
    if b.0.is_finite() {
        b
    } else {
        (0.0, 0.0, 0.0, 0.0)
    }
}

/// Vertex mean of a ring.
pub(crate) fn centroid(ring: &[Pt]) -> Pt {
    let n = ring.len().max(1) as f64;
    let (sx, sy) = ring
        .iter()
        .fold((0.0, 0.0), |(ax, ay), &(x, y)| (ax + x, ay + y));
    (sx / n, sy / n)
}

/// An ellipse as a ring of `n` vertices, rotated by `rot` radians.
pub(crate) fn ellipse(c: Pt, rx: f64, ry: f64, rot: f64, n: usize) -> Ring {
    let (s, co) = rot.sin_cos();
    (0..n)
        .map(|k| {
            let t = std::f64::consts::TAU * k as f64 / n as f64;
            let (px, py) = (rx * t.cos(), ry * t.sin());
            (c.0 + px * co - py * s, c.1 + px * s + py * co)
        })
        .collect()
}

/// Axis-aligned rectangle.
pub(crate) fn rect(x0: f64, y0: f64, x1: f64, y1: f64) -> Ring {
    vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
}

/// A thick segment from `a` to `b` (a quadrilateral of width `w`).
pub(crate) fn segment(a: Pt, b: Pt, w: f64) -> Ring {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = (dx * dx + dy * dy).sqrt().max(1e-9);
    let (nx, ny) = (-dy / len * w / 2.0, dx / len * w / 2.0);
    vec![
        (a.0 + nx, a.1 + ny),
        (b.0 + nx, b.1 + ny),
        (b.0 - nx, b.1 - ny),
        (a.0 - nx, a.1 - ny),
    ]
}

/// Clips a polygon to the image square `[0, size]^2` (Sutherland-Hodgman; the window is convex,
/// so a simple polygon stays simple).
pub(crate) fn clip_to_square(ring: &[Pt], size: f64) -> Ring {
    // Each edge of the window: inside test and intersection with the segment p->q.
    type Inside = fn(Pt, f64) -> bool;
    type Crossing = fn(Pt, Pt, f64) -> Pt;
    let edges: [(Inside, Crossing); 4] = [
        (|p, _| p.0 >= 0.0, |p, q, _| lerp_at_x(p, q, 0.0)),
        (|p, s| p.0 <= s, |p, q, s| lerp_at_x(p, q, s)),
        (|p, _| p.1 >= 0.0, |p, q, _| lerp_at_y(p, q, 0.0)),
        (|p, s| p.1 <= s, |p, q, s| lerp_at_y(p, q, s)),
    ];
    let mut out: Ring = ring.to_vec();
    for (inside, cross) in edges {
        if out.is_empty() {
            break;
        }
        let input = std::mem::take(&mut out);
        let mut prev = *input.last().expect("checked non-empty above");
        for &cur in &input {
            match (inside(cur, size), inside(prev, size)) {
                (true, true) => out.push(cur),
                (true, false) => {
                    out.push(cross(prev, cur, size));
                    out.push(cur);
                }
                (false, true) => out.push(cross(prev, cur, size)),
                (false, false) => {}
            }
            prev = cur;
        }
    }
    out
}

fn lerp_at_x(p: Pt, q: Pt, x: f64) -> Pt {
    let t = (x - p.0) / (q.0 - p.0);
    (x, p.1 + t * (q.1 - p.1))
}

fn lerp_at_y(p: Pt, q: Pt, y: f64) -> Pt {
    let t = (y - p.1) / (q.1 - p.1);
    (p.0 + t * (q.0 - p.0), y)
}

/// Area of a ring (shoelace, absolute).
pub(crate) fn area(ring: &[Pt]) -> f64 {
    let n = ring.len();
    let mut s = 0.0;
    for i in 0..n {
        let (x0, y0) = ring[i];
        let (x1, y1) = ring[(i + 1) % n];
        s += x0 * y1 - x1 * y0;
    }
    s.abs() / 2.0
}

/// A square RGB image being drawn.
#[derive(Debug, Clone)]
pub(crate) struct Canvas {
    pub(crate) size: usize,
    pub(crate) px: Vec<Rgb>,
}

impl Canvas {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            px: vec![[0.0; 3]; size * size],
        }
    }

    pub(crate) fn get(&self, x: usize, y: usize) -> Rgb {
        self.px[y * self.size + x]
    }

    pub(crate) fn set(&mut self, x: usize, y: usize, c: Rgb) {
        self.px[y * self.size + x] = c;
    }

    /// Bilinear sample at continuous coordinates (pixel centres at `i + 0.5`), clamped to the
    /// border.
    pub(crate) fn sample(&self, x: f64, y: f64) -> Rgb {
        let max = (self.size - 1) as f64;
        let fx = (x - 0.5).clamp(0.0, max);
        let fy = (y - 0.5).clamp(0.0, max);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.size - 1), (y0 + 1).min(self.size - 1));
        let (tx, ty) = ((fx - x0 as f64) as f32, (fy - y0 as f64) as f32);
        let (a, b, c, d) = (
            self.get(x0, y0),
            self.get(x1, y0),
            self.get(x0, y1),
            self.get(x1, y1),
        );
        std::array::from_fn(|k| {
            let top = a[k] + (b[k] - a[k]) * tx;
            let bottom = c[k] + (d[k] - c[k]) * tx;
            top + (bottom - top) * ty
        })
    }

    /// Pixels whose centres lie inside `rings` (even-odd), in row-major order.
    pub(crate) fn pixels_in(&self, rings: &[Ring]) -> Vec<(usize, usize)> {
        let (x0, y0, x1, y1) = bounds(rings);
        let s = self.size as f64;
        let (xa, xb) = (x0.max(0.0).floor() as usize, x1.min(s).ceil() as usize);
        let (ya, yb) = (y0.max(0.0).floor() as usize, y1.min(s).ceil() as usize);
        let mut out = Vec::new();
        for y in ya..yb.min(self.size) {
            for x in xa..xb.min(self.size) {
                if contains(rings, x as f64 + 0.5, y as f64 + 0.5) {
                    out.push((x, y));
                }
            }
        }
        out
    }

    /// Applies `f(x, y, colour)` to every pixel inside `rings`.
    pub(crate) fn paint(&mut self, rings: &[Ring], mut f: impl FnMut(usize, usize, Rgb) -> Rgb) {
        for (x, y) in self.pixels_in(rings) {
            let c = f(x, y, self.get(x, y));
            self.set(x, y, c);
        }
    }

    /// Quantises to 8-bit RGB (round half up after clamping).
    pub(crate) fn to_rgb8(&self) -> Vec<u8> {
        self.px
            .iter()
            .flat_map(|c| c.map(|v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8))
            .collect()
    }
}

/// `a + (b - a) * t`, per channel.
pub(crate) fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    std::array::from_fn(|k| a[k] + (b[k] - a[k]) * t)
}

/// Per-channel scale.
pub(crate) fn scale(c: Rgb, f: f32) -> Rgb {
    c.map(|v| v * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_odd_fill_uses_pixel_centres() {
        let canvas = Canvas::new(8);
        // The square [1, 3) x [1, 3) holds exactly the centres of pixels 1 and 2 in each axis.
        let px = canvas.pixels_in(&[rect(1.0, 1.0, 3.0, 3.0)]);
        assert_eq!(px, vec![(1, 1), (2, 1), (1, 2), (2, 2)]);
        // Two nested rings make a hole (even-odd).
        let outer = rect(0.0, 0.0, 8.0, 8.0);
        let inner = rect(2.0, 2.0, 6.0, 6.0);
        let ring_px = canvas.pixels_in(&[outer, inner]);
        assert_eq!(ring_px.len(), 64 - 16);
        assert!(!ring_px.contains(&(3, 3)));
    }

    #[test]
    fn clipping_keeps_the_inside_and_cuts_at_the_border() {
        let clipped = clip_to_square(&rect(-2.0, 1.0, 3.0, 9.0), 4.0);
        let (x0, y0, x1, y1) = bounds(std::slice::from_ref(&clipped));
        assert_eq!((x0, y0, x1, y1), (0.0, 1.0, 3.0, 4.0));
        assert!((area(&clipped) - 9.0).abs() < 1e-12);
        assert!(clip_to_square(&rect(5.0, 5.0, 6.0, 6.0), 4.0).is_empty());
    }
}
