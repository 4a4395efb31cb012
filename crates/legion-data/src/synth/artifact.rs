//! Planted artifacts: what is altered, its annotation polygons, its phrase and explanation.
//!
//! Every artifact alters exactly the pixels whose centres lie inside its (final, clipped, rounded)
//! annotation polygons, so the annotation is the truth a model can learn. The three SynthScars
//! categories are rendered so that a small network can localise them at 64 px and tell their
//! kind at the 32 px of the tiny preset's CLIP:
//! - structure: an extra limb-like protrusion, a swirl warp across a part's contour, or a slice of
//!   the part shifted sideways (a broken symmetric shape);
//! - distortion: a checkerboard texture, coarse colour noise, an unnatural colour blotch or a
//!   directional smear, stained magenta ([`DISTORTION_STAIN`]), in a blob inside the part (area
//!   from tens of pixels to a fifth of the image);
//! - physics: a hard, near-black shadow cast towards the light instead of away from it, or a
//!   reflection whose colour (and sometimes position) does not match the object it mirrors.

use crate::labels::ArtifactCategory;

use super::canvas::{
    Canvas, Pt, Rgb, Ring, area, bounds, clip_to_square, contains, ellipse, mix, rect,
};
use super::rng::SplitMix64;
use super::scene::{Scene, boundary_point};

/// How an artifact alters its pixels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// A dark shadow towards the light; painted in place of the subject's correct shadow.
    WrongShadow { subject: usize, after_parts: bool },
    /// A mismatched reflection: mirrored source shifted by `dx`, channels rotated by `rotate`.
    Reflection { dx: f64, axis_y: f64, rotate: usize },
    /// A limb-like growth in the part's colour.
    Protrusion { color: Rgb },
    /// Pixels rotated about `centre`, by `strength` radians at the centre fading to 0 at `radius`.
    Swirl {
        centre: Pt,
        radius: f64,
        strength: f64,
    },
    /// A horizontal band shifted sideways by `shift` pixels.
    Tear { shift: f64 },
    /// A high-contrast checkerboard with `cell`-pixel squares.
    Checker { cell: usize },
    /// Uniform per-channel noise of half-width `amplitude`.
    Noise { amplitude: f32 },
    /// A blend towards an unnatural `tint`.
    Blotch { tint: Rgb },
    /// A directional blur along `dir` (unit vector) over `reach` pixels each way.
    Smear { dir: Pt, reach: f64 },
}

impl Effect {
    /// The explanation template; `{n}` is replaced by the noun.
    fn explanations(&self) -> &'static [&'static str] {
        match self {
            Self::WrongShadow { .. } => &[
                "It falls towards the light source instead of away from it, which is physically impossible.",
                "Its direction contradicts the position of the light, since it lies on the lit side of the {n}.",
                "It is far too dark and points the wrong way compared with the lighting of the scene.",
            ],
            Self::Reflection { dx, .. } if *dx == 0.0 => &[
                "It does not match the {n}: its colour differs from the object it mirrors.",
                "Its colour is inconsistent with the {n} above it, which a mirror image cannot be.",
            ],
            Self::Reflection { .. } => &[
                "It is inconsistent with the {n} above it, with a shifted position and a wrong colour.",
                "It is displaced sideways and recoloured, so it cannot be a mirror image of the {n}.",
            ],
            Self::Protrusion { .. } => &[
                "An extra finger-like protrusion grows out of the {n}, which is structurally impossible.",
                "A spurious limb-like growth sticks out of the {n} at an unnatural angle.",
            ],
            Self::Swirl { .. } => &[
                "Its outline is twisted into a swirl, so the {n} looks melted and deformed.",
                "Its contour is warped and bent in a way that no real {n} could be.",
            ],
            Self::Tear { .. } => &[
                "A horizontal slice of the {n} is shifted sideways, breaking its symmetry.",
                "Its edges are broken and misaligned, as if the {n} had been cut and displaced.",
            ],
            Self::Checker { .. } => &[
                "It shows a harsh checkerboard texture that does not belong to the {n}.",
                "A grid-like high-frequency pattern covers part of the {n}, unlike any real material.",
            ],
            Self::Noise { .. } => &[
                "Its surface is covered in coarse colour noise, unlike the rest of the {n}.",
                "Grainy, speckled pixels corrupt the texture of the {n}.",
            ],
            Self::Blotch { .. } => &[
                "An unnatural colour blotch stains the {n}, inconsistent with its material.",
                "A patch of the {n} has an implausible colour that clashes with its surroundings.",
            ],
            Self::Smear { .. } => &[
                "Its texture is smeared and blurred, losing the detail of the {n}.",
                "A streaky blur drags across the {n}, as if the paint had been wiped.",
            ],
        }
    }
}

/// One planned artifact.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) category: ArtifactCategory,
    /// The ref's `sentence` (may end with a period).
    pub(crate) phrase: String,
    /// Lower-case name for the summary ("left hand", "shadow of the cup").
    pub(crate) noun: String,
    pub(crate) explanation: String,
    /// The final annotation polygons (clipped, rounded, possibly overshooting by round-off).
    pub(crate) polygons: Vec<Ring>,
    pub(crate) effect: Effect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Part(usize),
    Shadow(usize),
    Reflection,
}

/// Plans up to `count` artifacts of one `kind` on distinct targets of `scene` (fewer when the
/// scene has fewer targets of that kind). One kind per image: what the image shows wrong is a
/// single question a model can learn to answer, and the kind named by the phrases
/// ([`kind_phrase`]) is then the image's.
pub(crate) fn plan(
    rng: &mut SplitMix64,
    scene: &Scene,
    count: usize,
    kind: ArtifactCategory,
) -> Vec<Planned> {
    let mut used: Vec<Target> = Vec::new();
    let mut planned = Vec::new();
    let probe = Canvas::new(scene.size as usize);
    for _ in 0..count {
        for _attempt in 0..24 {
            let free = |t: &Target| !used.contains(t);
            let parts_where = |ok: fn(&super::scene::Part) -> bool| -> Vec<Target> {
                (0..scene.parts.len())
                    .filter(|&k| ok(&scene.parts[k]) && !scene.parts[k].phrases.is_empty())
                    .map(Target::Part)
                    .filter(|t| free(t))
                    .collect()
            };
            let structure = parts_where(|p| p.structure);
            let distortion = parts_where(|p| p.distortion);
            let mut physics: Vec<Target> = (0..scene.subjects.len())
                .map(Target::Shadow)
                .filter(|t| free(t))
                .collect();
            if scene.mirror.is_some() && free(&Target::Reflection) {
                physics.push(Target::Reflection);
            }
            let mut options: Vec<(ArtifactCategory, &Vec<Target>)> = Vec::new();
            for (category, targets) in [
                (ArtifactCategory::Structure, &structure),
                (ArtifactCategory::Distortion, &distortion),
                (ArtifactCategory::Physics, &physics),
            ] {
                if category == kind && !targets.is_empty() {
                    options.push((category, targets));
                }
            }
            if options.is_empty() {
                break;
            }
            let (category, targets) = *rng.pick(&options);
            let target = *rng.pick(targets);
            let made = match (category, target) {
                (ArtifactCategory::Structure, Target::Part(k)) => structure_on(rng, scene, k),
                (ArtifactCategory::Distortion, Target::Part(k)) => distortion_on(rng, scene, k),
                (_, Target::Shadow(k)) => shadow_of(rng, scene, k),
                _ => reflection(rng, scene),
            };
            if let Some(mut artifact) = made {
                // Every polygon must alter at least one pixel, or the ref would be invisible.
                if artifact
                    .polygons
                    .iter()
                    .all(|p| !probe.pixels_in(std::slice::from_ref(p)).is_empty())
                {
                    artifact.category = category;
                    artifact.phrase = kind_phrase(category, &artifact.phrase);
                    planned.push(artifact);
                    used.push(target);
                    break;
                }
            }
        }
    }
    planned
}

/// The word that starts the phrase of a structure artifact ("Deformed left hand").
const STRUCTURE_WORD: &str = "Deformed";
/// The word that starts the phrase of a distortion artifact ("Garbled left hand").
const DISTORTION_WORD: &str = "Garbled";

/// The ref phrase of an artifact of `kind` on a target named `target` ("The left hand"): the
/// phrase names the kind, so a model's phrase can be scored for it ([`named_kind`]). Structure
/// and distortion replace the leading "The" by their word; a physics target is already a shadow
/// or a reflection ("The shadow of the bird").
pub(crate) fn kind_phrase(kind: ArtifactCategory, target: &str) -> String {
    let word = match kind {
        ArtifactCategory::Structure => STRUCTURE_WORD,
        ArtifactCategory::Distortion => DISTORTION_WORD,
        ArtifactCategory::Physics => return target.to_string(),
    };
    let rest = target.strip_prefix("The ").unwrap_or(target);
    format!("{word} {rest}")
}

/// The artifact kind a phrase names in the generator's vocabulary (its first kind word, case
/// ignored): "deformed" is structure, "garbled" distortion, "shadow" or "reflection" physics.
/// `None` when the phrase names none.
pub fn named_kind(phrase: &str) -> Option<ArtifactCategory> {
    phrase
        .split(|c: char| !c.is_alphanumeric())
        .find_map(|word| match word.to_lowercase().as_str() {
            "deformed" => Some(ArtifactCategory::Structure),
            "garbled" => Some(ArtifactCategory::Distortion),
            "shadow" | "reflection" => Some(ArtifactCategory::Physics),
            _ => None,
        })
}

/// Clips to the image, drops slivers, rounds to 1/1000 px and, when `overshoot` is set, moves
/// coordinates on the far border out by a float round-off (as in the release, e.g. 64.0000001).
fn finish(ring: &[Pt], size: f64, overshoot: Option<f64>) -> Option<Ring> {
    let clipped = clip_to_square(ring, size);
    if clipped.len() < 3 || area(&clipped) < 1.5 {
        return None;
    }
    let round = |v: f64| {
        let r = (v * 1000.0).round() / 1000.0;
        match overshoot {
            Some(eps) if r == size => size + eps,
            _ => r,
        }
    };
    Some(clipped.iter().map(|&(x, y)| (round(x), round(y))).collect())
}

fn overshoot(rng: &mut SplitMix64) -> Option<f64> {
    // 1e-7 (a float32 round-off) or a few f64 ulps at 64.
    rng.chance(0.4)
        .then(|| *rng.pick(&[1e-7, 2e-7, 1.4210854715202004e-14]))
}

fn with_period(rng: &mut SplitMix64, phrase: &str) -> String {
    if rng.chance(0.25) {
        format!("{phrase}.")
    } else {
        phrase.to_string()
    }
}

fn explain(rng: &mut SplitMix64, effect: &Effect, noun: &str) -> String {
    rng.pick(effect.explanations()).replace("{n}", noun)
}

fn make(
    rng: &mut SplitMix64,
    phrases: &[String],
    noun: String,
    polygons: Vec<Ring>,
    effect: Effect,
) -> Option<Planned> {
    if polygons.is_empty() || phrases.is_empty() {
        return None;
    }
    let chosen = rng.pick(phrases).clone();
    let phrase = with_period(rng, &chosen);
    let explanation = explain(rng, &effect, &noun);
    Some(Planned {
        category: ArtifactCategory::Structure,
        phrase,
        noun,
        explanation,
        polygons,
        effect,
    })
}

/// Whether the pixel sets of two polygons are disjoint (multi-polygon refs are unions of
/// disjoint pieces, so no pixel is altered twice).
fn disjoint(size: usize, a: &Ring, b: &Ring) -> bool {
    let canvas = Canvas::new(size);
    let pa = canvas.pixels_in(std::slice::from_ref(a));
    canvas
        .pixels_in(std::slice::from_ref(b))
        .iter()
        .all(|p| !pa.contains(p))
}

fn structure_on(rng: &mut SplitMix64, scene: &Scene, k: usize) -> Option<Planned> {
    let part = &scene.parts[k];
    let s = scene.size;
    let over = overshoot(rng);
    let (x0, y0, x1, y1) = bounds(&part.rings);
    let tall = y1 - y0 >= 0.12 * s && x1 - x0 >= 0.08 * s;
    let kind = rng.below(if tall { 3 } else { 2 });
    let (polygons, effect) = match kind {
        0 => {
            let mut polygons = Vec::new();
            let pieces = if rng.chance(0.25) { 2 } else { 1 };
            for _ in 0..pieces {
                let (p, d) = boundary_point(rng, &part.rings);
                let a = d.1.atan2(d.0) + rng.range(-0.5, 0.5);
                let d = (a.cos(), a.sin());
                let n = (-d.1, d.0);
                let len = rng.range(0.2, 0.32) * s;
                let w = (rng.range(0.06, 0.09) * s).max(2.0);
                let at = |t: f64, off: f64| (p.0 + d.0 * t + n.0 * off, p.1 + d.1 * t + n.1 * off);
                let ring = vec![
                    at(-1.0, -w / 2.0),
                    at(0.65 * len, -0.45 * w),
                    at(len, 0.0),
                    at(0.65 * len, 0.45 * w),
                    at(-1.0, w / 2.0),
                ];
                if let Some(ring) = finish(&ring, s, over)
                    && polygons.iter().all(|q| disjoint(s as usize, q, &ring))
                {
                    polygons.push(ring);
                }
            }
            let color = mix(part.color, [0.0; 3], 0.12);
            (polygons, Effect::Protrusion { color })
        }
        1 => {
            let (p, _) = boundary_point(rng, &part.rings);
            let radius = rng.range(0.12, 0.2) * s;
            let strength = rng.sign() * rng.range(2.8, 4.0);
            let polygons = finish(&ellipse(p, radius, radius, 0.0, 16), s, over)
                .into_iter()
                .collect();
            (
                polygons,
                Effect::Swirl {
                    centre: p,
                    radius,
                    strength,
                },
            )
        }
        _ => {
            let h = (rng.range(0.08, 0.14) * s).max(3.0);
            let top = rng.range(y0, (y1 - h).max(y0));
            let margin = 0.04 * s;
            let band = rect(x0 - margin, top, x1 + margin, top + h);
            let shift = rng.sign() * rng.range(0.08, 0.12) * s;
            let polygons = finish(&band, s, over).into_iter().collect();
            (polygons, Effect::Tear { shift })
        }
    };
    make(rng, &part.phrases, part.noun.clone(), polygons, effect)
}

/// A star-shaped blob: an ellipse with jittered radii (always a simple polygon).
fn blob(rng: &mut SplitMix64, c: Pt, r: f64) -> Ring {
    let aspect = rng.range(0.7, 1.3);
    let rot = rng.range(0.0, std::f64::consts::PI);
    let (sr, cr) = rot.sin_cos();
    (0..12)
        .map(|k| {
            let t = std::f64::consts::TAU * k as f64 / 12.0;
            let rr = r * rng.range(0.78, 1.15);
            let (px, py) = (rr * aspect * t.cos(), rr / aspect * t.sin());
            (c.0 + px * cr - py * sr, c.1 + px * sr + py * cr)
        })
        .collect()
}

fn point_inside(rng: &mut SplitMix64, rings: &[Ring]) -> Pt {
    let (x0, y0, x1, y1) = bounds(rings);
    for _ in 0..40 {
        let p = (rng.range(x0, x1), rng.range(y0, y1));
        if contains(rings, p.0, p.1) {
            return p;
        }
    }
    ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
}

const TINTS: [Rgb; 4] = [
    [0.95, 0.1, 0.85],
    [0.1, 0.95, 0.9],
    [0.55, 1.0, 0.05],
    [1.0, 0.35, 0.0],
];

/// The colour every distortion but a blotch (already a tint) is stained with over its
/// texture, so that its kind survives the tiny CLIP's 2x downsampling (at 32 px a 1-pixel
/// checkerboard or fine noise averages to the part's colour).
const DISTORTION_STAIN: Rgb = [0.95, 0.1, 0.85];

fn distortion_on(rng: &mut SplitMix64, scene: &Scene, k: usize) -> Option<Planned> {
    let part = &scene.parts[k];
    let s = scene.size;
    let over = overshoot(rng);
    let effect = match rng.below(4) {
        0 => Effect::Checker {
            cell: 1 + rng.below(2),
        },
        1 => Effect::Noise {
            amplitude: rng.range(0.3, 0.45) as f32,
        },
        2 => {
            // One of the two tints farthest from the part's colour, so the blotch always shows.
            let mut tints = TINTS;
            let far = |t: &Rgb| -> f32 { (0..3).map(|k| (t[k] - part.color[k]).powi(2)).sum() };
            tints.sort_by(|a, b| far(b).total_cmp(&far(a)));
            Effect::Blotch {
                tint: *rng.pick(&tints[..2]),
            }
        }
        _ => {
            let a = rng.range(0.0, std::f64::consts::PI);
            Effect::Smear {
                dir: (a.cos(), a.sin()),
                reach: (0.08 * s).max(4.0),
            }
        }
    };
    let part_area: f64 = part.rings.iter().map(|r| area(r)).sum();
    let mut polygons: Vec<Ring> = Vec::new();
    if part_area > 0.03 * s * s && !matches!(effect, Effect::Smear { .. }) && rng.chance(0.25) {
        // The whole part (a large artifact; several polygons for a part such as the legs).
        polygons = part
            .rings
            .iter()
            .filter_map(|r| finish(r, s, over))
            .collect();
        return make(rng, &part.phrases, part.noun.clone(), polygons, effect);
    }
    let (x0, y0, x1, y1) = bounds(&part.rings);
    let extent = (x1 - x0).max(y1 - y0) / 2.0;
    // Small to large, bounded by the part's size.
    let r_max = extent.clamp(0.12 * s, 0.3 * s);
    let r_min = 0.1 * s;
    let pieces = if rng.chance(0.2) { 2 } else { 1 };
    for piece in 0..pieces {
        let r = r_min + (r_max - r_min) * rng.unit() / (1.0 + piece as f64);
        // A smear must cross an edge to be visible; the other effects sit inside the part.
        let c = if matches!(effect, Effect::Smear { .. }) {
            boundary_point(rng, &part.rings).0
        } else {
            point_inside(rng, &part.rings)
        };
        if let Some(ring) = finish(&blob(rng, c, r), s, over)
            && polygons.iter().all(|q| disjoint(s as usize, q, &ring))
        {
            polygons.push(ring);
        }
    }
    make(rng, &part.phrases, part.noun.clone(), polygons, effect)
}

fn shadow_of(rng: &mut SplitMix64, scene: &Scene, k: usize) -> Option<Planned> {
    let subject = &scene.subjects[k];
    let over = overshoot(rng);
    let ring = subject.shadow_ring(scene.light_left, true);
    let polygons = finish(&ring, scene.size, over).into_iter().collect();
    let effect = Effect::WrongShadow {
        subject: k,
        after_parts: subject.after_parts,
    };
    make(
        rng,
        &subject.phrases,
        subject.noun.clone(),
        polygons,
        effect,
    )
}

fn reflection(rng: &mut SplitMix64, scene: &Scene) -> Option<Planned> {
    let mirror = scene.mirror.as_ref()?;
    let s = scene.size;
    let over = overshoot(rng);
    let dx = if rng.chance(0.4) {
        0.0
    } else {
        rng.sign() * rng.range(0.05, 0.09) * s
    };
    let polygons: Vec<Ring> = mirror
        .rings
        .iter()
        .filter_map(|r| {
            let shifted: Ring = r.iter().map(|&(x, y)| (x + dx, y)).collect();
            finish(&shifted, s, over)
        })
        .collect();
    let effect = Effect::Reflection {
        dx,
        axis_y: mirror.axis_y,
        rotate: 1 + rng.below(2),
    };
    make(rng, &mirror.phrases, mirror.noun.clone(), polygons, effect)
}

/// The union of the pixels of `polygons`, each polygon filled on its own (a union, not an
/// even-odd combination), row-major and without duplicates.
pub(crate) fn union_pixels(canvas: &Canvas, polygons: &[Ring]) -> Vec<(usize, usize)> {
    let mut px: Vec<(usize, usize)> = polygons
        .iter()
        .flat_map(|p| canvas.pixels_in(std::slice::from_ref(p)))
        .map(|(x, y)| (y, x))
        .collect();
    px.sort_unstable();
    px.dedup();
    px.into_iter().map(|(y, x)| (x, y)).collect()
}

/// Applies one artifact to the canvas (reading its source from the canvas as it is now).
pub(crate) fn apply(canvas: &mut Canvas, artifact: &Planned, rng: &mut SplitMix64) {
    let source = canvas.clone();
    for (x, y) in union_pixels(canvas, &artifact.polygons) {
        let (xc, yc) = (x as f64 + 0.5, y as f64 + 0.5);
        let c = source.get(x, y);
        let out = match &artifact.effect {
            Effect::WrongShadow { .. } => [c[0] * 0.1, c[1] * 0.1, c[2] * 0.14],
            Effect::Reflection { dx, axis_y, rotate } => {
                let m = source.sample(xc - dx, 2.0 * axis_y - yc);
                let m = [m[*rotate % 3], m[(rotate + 1) % 3], m[(rotate + 2) % 3]];
                mix(c, m, 0.85)
            }
            Effect::Protrusion { color } => {
                let n = (rng.unit() - 0.5) as f32 * 0.04;
                color.map(|v| v + n)
            }
            Effect::Swirl {
                centre,
                radius,
                strength,
            } => {
                let (vx, vy) = (xc - centre.0, yc - centre.1);
                let t = (1.0 - (vx * vx + vy * vy).sqrt() / radius).max(0.0);
                let turn = strength * t * t;
                let (sa, ca) = turn.sin_cos();
                let m = source.sample(centre.0 + vx * ca - vy * sa, centre.1 + vx * sa + vy * ca);
                // Faint spiral arms, so that the warp also shows on flat colour.
                let arms = (3.0 * (vy.atan2(vx) + turn)).sin();
                m.map(|v| v * (1.0 + (0.2 * t * arms) as f32))
            }
            Effect::Tear { shift } => source.sample(xc - shift, yc),
            Effect::Checker { cell } => {
                if (x / cell + y / cell) % 2 == 0 {
                    c.map(|v| v * 0.3)
                } else {
                    c.map(|v| v * 0.4 + 0.6)
                }
            }
            Effect::Noise { amplitude } => {
                c.map(|v| v + (rng.unit() as f32 - 0.5) * 2.0 * amplitude)
            }
            Effect::Blotch { tint } => mix(c, *tint, 0.7),
            Effect::Smear { dir, reach } => {
                let steps = reach.ceil() as i32;
                let mut acc = [0.0f32; 3];
                for k in -steps..=steps {
                    let t = f64::from(k) * reach / f64::from(steps);
                    let m = source.sample(xc + dir.0 * t, yc + dir.1 * t);
                    acc = std::array::from_fn(|i| acc[i] + m[i]);
                }
                let m = acc.map(|v| v / (2 * steps + 1) as f32);
                let grey = (m[0] + m[1] + m[2]) / 3.0;
                // Streaks along the smear direction: brightness varies across it.
                let across = (xc * -dir.1 + yc * dir.0) * 2.2;
                mix(m, [grey; 3], 0.35).map(|v| v * (1.0 + 0.22 * across.sin() as f32))
            }
        };
        let out = match artifact.effect {
            Effect::Checker { .. } | Effect::Noise { .. } | Effect::Smear { .. } => {
                mix(out, DISTORTION_STAIN, 0.85)
            }
            _ => out,
        };
        canvas.set(x, y, out);
    }
}
