//! The clean content of a synthetic image: background, light source, a subject made of named
//! parts (the targets of structure and distortion artifacts), cast shadows and an optional
//! mirror reflection (the targets of physics artifacts).
//!
//! Four content types, as SynthScars' tables: human (a standing figure or a face portrait),
//! animal (a quadruped or a bird), object (a cup, box or bottle on a table) and scene (a house and
//! a tree under the sun). Geometry is built first and painted later, so that the artifact planner
//! can replace a shadow or a reflection before anything is drawn.

use crate::labels::ContentType;

use super::canvas::{Canvas, Pt, Rgb, Ring, bounds, centroid, ellipse, mix, rect, scale, segment};
use super::rng::SplitMix64;

/// A named part of the subject.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// Lower-case name used in summaries and explanations ("left hand").
    pub(crate) noun: String,
    /// Artifact phrases naming this part ("The left hand"); one is picked per artifact.
    pub(crate) phrases: Vec<String>,
    /// The part's shape (non-overlapping simple rings).
    pub(crate) rings: Vec<Ring>,
    pub(crate) color: Rgb,
    /// Whether a structure artifact may deform this part.
    pub(crate) structure: bool,
    /// Whether a distortion patch may be planted in this part.
    pub(crate) distortion: bool,
}

/// Something that casts a shadow away from the light.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    /// Lower-case name ("person", "house").
    pub(crate) noun: String,
    /// Phrases for its shadow ("The shadow of the person").
    pub(crate) phrases: Vec<String>,
    /// Where the shadow starts (the foot point on the ground).
    pub(crate) base: Pt,
    pub(crate) height: f64,
    pub(crate) width: f64,
    /// Shadows on the subject itself (a nose's shadow on the face) are painted over the parts.
    pub(crate) after_parts: bool,
}

impl Subject {
    /// The shadow polygon: a flat ellipse on the ground, on the side away from the light, or
    /// towards it when `wrong` (the physics artifact).
    pub(crate) fn shadow_ring(&self, light_left: bool, wrong: bool) -> Ring {
        let away = if light_left { 1.0 } else { -1.0 };
        let dir = if wrong { -away } else { away };
        let len = self.height * 0.75;
        let rx = len * 0.5 + self.width * 0.2;
        let ry = (self.width * 0.16 + len * 0.06).max(1.6);
        let centre = (self.base.0 + dir * len * 0.45, self.base.1 - ry * 0.3);
        ellipse(centre, rx, ry, 0.0, 18)
    }
}

/// A glossy surface that mirrors the object's body about the horizontal line `axis_y`.
#[derive(Debug, Clone)]
pub(crate) struct Mirror {
    pub(crate) noun: String,
    pub(crate) phrases: Vec<String>,
    /// The mirrored shapes (already reflected, one ring per reflected part).
    pub(crate) rings: Vec<Ring>,
    pub(crate) axis_y: f64,
}

#[derive(Debug, Clone)]
struct Background {
    top: Rgb,
    horizon_sky: Rgb,
    far_ground: Rgb,
    near_ground: Rgb,
    horizon: f64,
}

#[derive(Debug, Clone)]
enum Light {
    /// A sun disc (outdoor).
    Sun { centre: Pt, radius: f64 },
    /// A lamp glow in a corner (indoor).
    Lamp { centre: Pt, radius: f64 },
    /// The sun is one of the parts (scene content).
    InParts,
}

/// The clean content of one image.
#[derive(Debug, Clone)]
pub(crate) struct Scene {
    pub(crate) size: f64,
    /// "a dog standing on a meadow".
    pub(crate) description: String,
    pub(crate) light_left: bool,
    pub(crate) parts: Vec<Part>,
    pub(crate) subjects: Vec<Subject>,
    pub(crate) mirror: Option<Mirror>,
    /// Background decorations painted before the shadows (clouds, picture frames, grass tufts).
    decorations: Vec<(Ring, Rgb)>,
    background: Background,
    light: Light,
    /// Amplitude of the per-pixel noise added after the content.
    pub(crate) noise: f32,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// One of `choices`, each channel moved by up to `amount`.
fn jitter(rng: &mut SplitMix64, choices: &[Rgb], amount: f64) -> Rgb {
    let c = *rng.pick(choices);
    c.map(|v| (f64::from(v) + rng.range(-amount, amount)).clamp(0.02, 0.98) as f32)
}

fn part(noun: &str, phrases: Vec<String>, rings: Vec<Ring>, color: Rgb, s: bool, d: bool) -> Part {
    Part {
        noun: noun.to_string(),
        phrases,
        rings,
        color,
        structure: s,
        distortion: d,
    }
}

const SKIES: [Rgb; 4] = [
    [0.42, 0.62, 0.90],
    [0.58, 0.74, 0.95],
    [0.88, 0.68, 0.52],
    [0.66, 0.76, 0.84],
];
const GROUNDS: [(Rgb, &str); 4] = [
    ([0.33, 0.58, 0.28], "on a meadow"),
    ([0.80, 0.71, 0.50], "on a beach"),
    ([0.88, 0.90, 0.94], "in the snow"),
    ([0.52, 0.52, 0.55], "on a street"),
];
const WALLS: [Rgb; 4] = [
    [0.86, 0.80, 0.68],
    [0.74, 0.74, 0.78],
    [0.68, 0.80, 0.70],
    [0.70, 0.77, 0.88],
];
const FLOORS: [Rgb; 3] = [[0.58, 0.43, 0.28], [0.78, 0.78, 0.76], [0.45, 0.36, 0.32]];
const VIVID: [Rgb; 6] = [
    [0.85, 0.18, 0.16],
    [0.16, 0.36, 0.82],
    [0.18, 0.66, 0.30],
    [0.92, 0.78, 0.14],
    [0.56, 0.24, 0.70],
    [0.95, 0.50, 0.12],
];
const SKINS: [Rgb; 4] = [
    [0.96, 0.80, 0.66],
    [0.86, 0.65, 0.50],
    [0.62, 0.43, 0.30],
    [0.42, 0.29, 0.21],
];
const HAIRS: [Rgb; 4] = [
    [0.10, 0.08, 0.07],
    [0.40, 0.24, 0.12],
    [0.86, 0.72, 0.40],
    [0.66, 0.26, 0.10],
];
const DARK: Rgb = [0.08, 0.07, 0.07];

impl Scene {
    /// Builds the geometry of one image of `content` at `size` pixels.
    pub(crate) fn build(rng: &mut SplitMix64, content: ContentType, size: u32) -> Self {
        let s = f64::from(size);
        let light_left = rng.chance(0.5);
        let mut scene = Scene {
            size: s,
            description: String::new(),
            light_left,
            parts: Vec::new(),
            subjects: Vec::new(),
            mirror: None,
            decorations: Vec::new(),
            background: Background {
                top: [0.0; 3],
                horizon_sky: [0.0; 3],
                far_ground: [0.0; 3],
                near_ground: [0.0; 3],
                horizon: s,
            },
            light: Light::InParts,
            noise: rng.range(0.012, 0.03) as f32,
        };
        match content {
            ContentType::Human => {
                if rng.chance(0.35) {
                    scene.portrait(rng)
                } else if rng.chance(0.3) {
                    let horizon = rng.range(0.45, 0.6);
                    let floor = jitter(rng, &FLOORS, 0.03);
                    scene.room(rng, horizon, floor);
                    scene.figure(rng, "in a room")
                } else {
                    let horizon = rng.range(0.5, 0.66);
                    let place = scene.ground(rng, horizon);
                    scene.figure(rng, &place)
                }
            }
            ContentType::Animal => {
                let horizon = rng.range(0.45, 0.62);
                let place = scene.ground(rng, horizon);
                if rng.chance(0.5) {
                    scene.quadruped(rng, &place)
                } else {
                    scene.bird(rng, &place)
                }
            }
            ContentType::Object => scene.table_object(rng),
            ContentType::Scene => scene.landscape(rng),
        }
        scene
    }

    fn light_corner(&self) -> Pt {
        let s = self.size;
        if self.light_left {
            (0.1 * s, 0.1 * s)
        } else {
            (0.9 * s, 0.1 * s)
        }
    }

    /// An outdoor background with a sun; returns the place phrase ("on a meadow").
    fn ground(&mut self, rng: &mut SplitMix64, horizon_frac: f64) -> String {
        let s = self.size;
        let sky = jitter(rng, &SKIES, 0.05);
        let (ground, place) = *rng.pick(&GROUNDS);
        let ground = jitter(rng, &[ground], 0.05);
        self.background = Background {
            top: scale(sky, 0.85),
            horizon_sky: mix(sky, [1.0; 3], 0.35),
            far_ground: mix(ground, sky, 0.25),
            near_ground: scale(ground, 0.85),
            horizon: horizon_frac * s,
        };
        self.light = Light::Sun {
            centre: self.light_corner(),
            radius: 0.055 * s,
        };
        // A cloud or two on the side away from the sun, for texture.
        for _ in 0..rng.below(3) {
            let c = (
                rng.range(0.3, 0.9) * s,
                rng.range(0.08, 0.3) * horizon_frac * s,
            );
            let r = rng.range(0.05, 0.09) * s;
            let cloud = ellipse(c, r * 1.8, r * 0.6, 0.0, 16);
            self.decorations.push((cloud, [0.96, 0.97, 0.98]));
        }
        place.to_string()
    }

    /// An indoor background: a wall and a floor or table top, a lamp in the corner.
    fn room(&mut self, rng: &mut SplitMix64, horizon_frac: f64, floor: Rgb) {
        let s = self.size;
        let wall = jitter(rng, &WALLS, 0.04);
        self.background = Background {
            top: scale(wall, 0.9),
            horizon_sky: wall,
            far_ground: scale(floor, 1.1),
            near_ground: scale(floor, 0.85),
            horizon: horizon_frac * s,
        };
        self.light = Light::Lamp {
            centre: self.light_corner(),
            radius: 0.35 * s,
        };
        if rng.chance(0.6) && horizon_frac > 0.4 {
            // A picture frame on the wall, away from the lamp.
            let cx = if self.light_left { 0.72 } else { 0.28 } * s;
            let (w, h) = (rng.range(0.14, 0.22) * s, rng.range(0.1, 0.16) * s);
            let y = rng.range(0.12, 0.2) * s;
            self.decorations.push((
                rect(cx - w / 2.0, y, cx + w / 2.0, y + h),
                [0.35, 0.25, 0.18],
            ));
            let m = 0.02 * s;
            self.decorations.push((
                rect(cx - w / 2.0 + m, y + m, cx + w / 2.0 - m, y + h - m),
                jitter(rng, &VIVID, 0.1),
            ));
        }
    }

    fn figure(&mut self, rng: &mut SplitMix64, place: &str) {
        let (s, u) = (self.size, self.size / 64.0);
        let h = rng.range(36.0, 46.0) * u;
        let horizon = self.background.horizon;
        let gy = rng
            .range(horizon + 4.0 * u, 61.0 * u)
            .clamp(h + 5.0 * u, 61.0 * u);
        let cx = rng.range(0.34, 0.66) * s;
        let skin = jitter(rng, &SKINS, 0.03);
        let shirt = jitter(rng, &VIVID, 0.06);
        let trousers = jitter(
            rng,
            &[[0.15, 0.2, 0.4], [0.12, 0.12, 0.14], [0.6, 0.52, 0.36]],
            0.04,
        );
        let hair = jitter(rng, &HAIRS, 0.03);
        let r = 0.11 * h;
        let head = (cx, gy - h + r);
        let neck_y = gy - h + 2.0 * r;
        let hip_y = gy - 0.45 * h;
        let spread = rng.range(0.0, 0.06) * h;
        let legs = vec![
            segment(
                (cx - 0.07 * h, hip_y - 0.02 * h),
                (cx - 0.08 * h - spread, gy),
                0.09 * h,
            ),
            segment(
                (cx + 0.07 * h, hip_y - 0.02 * h),
                (cx + 0.08 * h + spread, gy),
                0.09 * h,
            ),
        ];
        let torso = vec![vec![
            (cx - 0.17 * h, neck_y),
            (cx + 0.17 * h, neck_y),
            (cx + 0.13 * h, hip_y),
            (cx - 0.13 * h, hip_y),
        ]];
        let arm = |rng: &mut SplitMix64, side: f64| {
            let shoulder = (cx + side * 0.15 * h, neck_y + 0.04 * h);
            let raised = rng.chance(0.2);
            let hand = if raised {
                (
                    cx + side * rng.range(0.3, 0.4) * h,
                    neck_y - rng.range(0.02, 0.12) * h,
                )
            } else {
                (
                    cx + side * rng.range(0.22, 0.36) * h,
                    neck_y + rng.range(0.22, 0.32) * h,
                )
            };
            (segment(shoulder, hand, 0.075 * h), hand)
        };
        let (left_arm, left_hand) = arm(rng, -1.0);
        let (right_arm, right_hand) = arm(rng, 1.0);
        let hand_r = 0.055 * h;
        let mut hair_ring: Ring = (0..=10)
            .map(|k| {
                let t = std::f64::consts::PI * (1.0 + k as f64 / 10.0);
                (
                    head.0 + 1.12 * r * t.cos(),
                    head.1 - 0.1 * r + 1.1 * r * t.sin(),
                )
            })
            .collect();
        hair_ring.push((head.0 + 1.0 * r, head.1 + 0.1 * r));
        hair_ring.insert(0, (head.0 - 1.0 * r, head.1 + 0.1 * r));
        let eye_r = (0.02 * h).max(0.6 * u);
        let arms_color = if rng.chance(0.5) { shirt } else { skin };
        self.parts = vec![
            part(
                "legs",
                strings(&["The legs", "The legs of the person"]),
                legs,
                trousers,
                true,
                true,
            ),
            part(
                "shirt",
                strings(&["The shirt", "The torso"]),
                torso,
                shirt,
                true,
                true,
            ),
            part(
                "left arm",
                strings(&["The left arm", "The arm on the left"]),
                vec![left_arm],
                arms_color,
                true,
                true,
            ),
            part(
                "right arm",
                strings(&["The right arm", "The arm on the right"]),
                vec![right_arm],
                arms_color,
                true,
                true,
            ),
            part(
                "left hand",
                strings(&["The left hand", "The hand on the left"]),
                vec![ellipse(left_hand, hand_r, hand_r, 0.0, 12)],
                skin,
                true,
                false,
            ),
            part(
                "right hand",
                strings(&["The right hand", "The hand on the right"]),
                vec![ellipse(right_hand, hand_r, hand_r, 0.0, 12)],
                skin,
                true,
                false,
            ),
            part(
                "face",
                strings(&["The face", "The head of the person"]),
                vec![ellipse(head, r, r * 1.08, 0.0, 16)],
                skin,
                true,
                true,
            ),
            part(
                "hair",
                strings(&["The hair"]),
                vec![hair_ring],
                hair,
                true,
                true,
            ),
            part(
                "eyes",
                vec![],
                vec![
                    ellipse((head.0 - 0.38 * r, head.1 + 0.05 * r), eye_r, eye_r, 0.0, 8),
                    ellipse((head.0 + 0.38 * r, head.1 + 0.05 * r), eye_r, eye_r, 0.0, 8),
                ],
                DARK,
                false,
                false,
            ),
        ];
        self.subjects.push(Subject {
            noun: "person".into(),
            phrases: strings(&["The shadow of the person", "The shadow of the figure"]),
            base: (cx, gy),
            height: h,
            width: 0.34 * h,
            after_parts: false,
        });
        self.description = format!("a person standing {place}");
    }

    fn portrait(&mut self, rng: &mut SplitMix64) {
        let s = self.size;
        self.room(rng, 1.0, [0.5; 3]);
        let skin = jitter(rng, &SKINS, 0.03);
        let shirt = jitter(rng, &VIVID, 0.06);
        let hair = jitter(rng, &HAIRS, 0.03);
        let cx = rng.range(0.42, 0.58) * s;
        let cy = rng.range(0.42, 0.5) * s;
        let rx = rng.range(0.19, 0.24) * s;
        let ry = rx * rng.range(1.2, 1.32);
        let shoulders = ellipse((cx, 1.08 * s), 0.46 * s, 0.26 * s, 0.0, 24);
        let neck = rect(
            cx - 0.35 * rx,
            cy + 0.6 * ry,
            cx + 0.35 * rx,
            cy + 1.25 * ry,
        );
        let ear = |side: f64| {
            ellipse(
                (cx + side * 0.98 * rx, cy + 0.05 * ry),
                0.2 * rx,
                0.3 * rx,
                0.0,
                12,
            )
        };
        let mut hair_ring: Ring = (0..=14)
            .map(|k| {
                let t = std::f64::consts::PI * (1.0 + k as f64 / 14.0);
                (cx + 1.1 * rx * t.cos(), cy - 0.3 * ry + 0.95 * ry * t.sin())
            })
            .collect();
        hair_ring.push((cx + 1.05 * rx, cy - 0.1 * ry));
        hair_ring.insert(0, (cx - 1.05 * rx, cy - 0.1 * ry));
        let eye = |side: f64| {
            ellipse(
                (cx + side * 0.42 * rx, cy - 0.05 * ry),
                0.24 * rx,
                0.13 * rx,
                0.0,
                14,
            )
        };
        let iris = |side: f64| {
            ellipse(
                (cx + side * 0.42 * rx, cy - 0.05 * ry),
                0.1 * rx,
                0.1 * rx,
                0.0,
                10,
            )
        };
        let nose_tip = (cx, cy + 0.32 * ry);
        let nose = vec![
            (cx, cy - 0.02 * ry),
            (cx + 0.13 * rx, nose_tip.1),
            (cx - 0.13 * rx, nose_tip.1),
        ];
        let mouth = ellipse((cx, cy + 0.56 * ry), 0.34 * rx, 0.08 * ry, 0.0, 14);
        let iris_color = jitter(
            rng,
            &[[0.25, 0.4, 0.7], [0.35, 0.22, 0.12], [0.2, 0.5, 0.3]],
            0.05,
        );
        self.parts = vec![
            part(
                "shoulders",
                strings(&["The shoulders"]),
                vec![shoulders],
                shirt,
                true,
                true,
            ),
            part("neck", vec![], vec![neck], scale(skin, 0.9), false, false),
            part(
                "left ear",
                strings(&["The left ear", "The ear on the left"]),
                vec![ear(-1.0)],
                skin,
                true,
                true,
            ),
            part(
                "right ear",
                strings(&["The right ear", "The ear on the right"]),
                vec![ear(1.0)],
                skin,
                true,
                true,
            ),
            part(
                "face",
                strings(&["The face", "The cheek"]),
                vec![ellipse((cx, cy), rx, ry, 0.0, 24)],
                skin,
                true,
                true,
            ),
            part(
                "hair",
                strings(&["The hair", "The fringe of hair"]),
                vec![hair_ring],
                hair,
                true,
                true,
            ),
            part(
                "left eye",
                strings(&["The left eye", "The eye on the left"]),
                vec![eye(-1.0)],
                [0.95, 0.95, 0.93],
                true,
                true,
            ),
            part(
                "right eye",
                strings(&["The right eye", "The eye on the right"]),
                vec![eye(1.0)],
                [0.95, 0.95, 0.93],
                true,
                true,
            ),
            part(
                "irises",
                vec![],
                vec![iris(-1.0), iris(1.0)],
                iris_color,
                false,
                false,
            ),
            part(
                "nose",
                strings(&["The nose"]),
                vec![nose],
                scale(skin, 0.88),
                true,
                true,
            ),
            part(
                "mouth",
                strings(&["The mouth", "The lips"]),
                vec![mouth],
                [0.72, 0.25, 0.25],
                true,
                true,
            ),
        ];
        self.subjects.push(Subject {
            noun: "nose".into(),
            phrases: strings(&["The shadow of the nose", "The shadow beside the nose"]),
            base: nose_tip,
            height: 0.45 * ry,
            width: 0.3 * rx,
            after_parts: true,
        });
        self.description = "a close-up portrait of a person".into();
    }

    fn quadruped(&mut self, rng: &mut SplitMix64, place: &str) {
        let s = self.size;
        let species = *rng.pick(&["dog", "cat", "fox"]);
        let fur = jitter(
            rng,
            &[
                [0.55, 0.38, 0.22],
                [0.5, 0.5, 0.52],
                [0.9, 0.55, 0.2],
                [0.16, 0.15, 0.15],
                [0.92, 0.9, 0.86],
            ],
            0.04,
        );
        let f = rng.sign();
        let rx = rng.range(0.16, 0.21) * s;
        let ry = rx * rng.range(0.4, 0.5);
        let leg_len = rng.range(0.12, 0.16) * s;
        let horizon = self.background.horizon;
        let gy = rng.range(horizon + 0.1 * s, 0.92 * s);
        let by = gy - leg_len - 0.7 * ry;
        let cx = rng.range(0.38, 0.62) * s;
        let leg_w = 0.05 * s;
        let leg = |x: f64, dx: f64| segment((x, by), (x + dx, gy), leg_w);
        let front = vec![
            leg(cx + f * 0.62 * rx, f * 0.02 * s),
            leg(cx + f * 0.36 * rx, -f * 0.02 * s),
        ];
        let back = vec![
            leg(cx - f * 0.42 * rx, f * 0.02 * s),
            leg(cx - f * 0.7 * rx, -f * 0.02 * s),
        ];
        let head_r = 0.075 * s;
        let head = (cx + f * (rx + 0.03 * s), by - ry * 1.05);
        let neck = segment((cx + f * 0.7 * rx, by - 0.2 * ry), head, 0.08 * s);
        let snout = ellipse(
            (head.0 + f * 0.065 * s, head.1 + 0.02 * s),
            0.05 * s,
            0.032 * s,
            0.0,
            12,
        );
        let ear = vec![
            (head.0 - f * 0.02 * s, head.1 - 0.9 * head_r),
            (head.0 + f * 0.05 * s, head.1 - 0.6 * head_r),
            (head.0 + f * 0.005 * s, head.1 - 1.9 * head_r),
        ];
        let tail_root = (cx - f * rx * 0.92, by - ry * 0.3);
        let tail_tip = (
            cx - f * (rx + rng.range(0.08, 0.14) * s),
            by - ry * 0.3 - rng.range(-0.04, 0.12) * s,
        );
        let tail = segment(tail_root, tail_tip, 0.035 * s);
        let eye_r = (0.012 * s).max(0.7);
        let eye = ellipse(
            (head.0 + f * 0.025 * s, head.1 - 0.015 * s),
            eye_r,
            eye_r,
            0.0,
            8,
        );
        let phrase = |what: &str| format!("The {what} of the {species}");
        self.parts = vec![
            part(
                "hind legs",
                strings(&["The hind legs", "The back legs"]),
                back,
                scale(fur, 0.82),
                true,
                true,
            ),
            part("tail", vec![phrase("tail")], vec![tail], fur, true, true),
            part(
                "body",
                vec![phrase("body"), phrase("fur")],
                vec![ellipse((cx, by), rx, ry, 0.0, 20)],
                fur,
                true,
                true,
            ),
            part(
                "front legs",
                strings(&["The front legs", "The forelegs"]),
                front,
                scale(fur, 0.92),
                true,
                true,
            ),
            part("neck", vec![], vec![neck], fur, false, false),
            part(
                "head",
                vec![phrase("head")],
                vec![ellipse(head, head_r, head_r, 0.0, 16)],
                fur,
                true,
                true,
            ),
            part(
                "snout",
                vec![phrase("snout")],
                vec![snout],
                mix(fur, [0.9, 0.85, 0.8], 0.4),
                true,
                true,
            ),
            part(
                "ear",
                vec![phrase("ear")],
                vec![ear],
                scale(fur, 0.8),
                true,
                true,
            ),
            part("eye", vec![], vec![eye], DARK, false, false),
        ];
        self.subjects.push(Subject {
            noun: species.into(),
            phrases: vec![phrase("shadow")],
            base: (cx, gy),
            height: gy - (head.1 - head_r),
            width: 2.0 * rx,
            after_parts: false,
        });
        self.description = format!("a {species} standing {place}");
    }

    fn bird(&mut self, rng: &mut SplitMix64, place: &str) {
        let s = self.size;
        let plumage = jitter(
            rng,
            &[
                [0.2, 0.4, 0.8],
                [0.8, 0.15, 0.12],
                [0.9, 0.8, 0.15],
                [0.5, 0.35, 0.22],
            ],
            0.05,
        );
        let f = rng.sign();
        let horizon = self.background.horizon;
        let gy = rng.range(horizon + 0.1 * s, 0.9 * s);
        let leg_len = rng.range(0.09, 0.13) * s;
        let (rx, ry) = (rng.range(0.12, 0.16) * s, rng.range(0.08, 0.1) * s);
        let by = gy - leg_len - 0.8 * ry;
        let cx = rng.range(0.38, 0.62) * s;
        let head_r = 0.062 * s;
        let head = (cx + f * 0.85 * rx, by - 0.95 * ry);
        let beak = vec![
            (head.0 + f * 0.8 * head_r, head.1 - 0.35 * head_r),
            (head.0 + f * (head_r + 0.07 * s), head.1 + 0.1 * head_r),
            (head.0 + f * 0.8 * head_r, head.1 + 0.45 * head_r),
        ];
        let tail = vec![
            (cx - f * 0.8 * rx, by - 0.3 * ry),
            (cx - f * (rx + 0.1 * s), by - 0.6 * ry - 0.05 * s),
            (cx - f * (rx + 0.12 * s), by - 0.1 * ry),
            (cx - f * 0.8 * rx, by + 0.3 * ry),
        ];
        let wing = ellipse(
            (cx - f * 0.05 * rx, by - 0.05 * ry),
            0.7 * rx,
            0.55 * ry,
            f * 0.25,
            16,
        );
        let leg_w = (0.022 * s).max(1.2);
        let legs = vec![
            segment((cx - 0.2 * rx, by + 0.7 * ry), (cx - 0.25 * rx, gy), leg_w),
            segment((cx + 0.2 * rx, by + 0.7 * ry), (cx + 0.25 * rx, gy), leg_w),
        ];
        let eye_r = (0.012 * s).max(0.7);
        let eye = ellipse(
            (head.0 + f * 0.3 * head_r, head.1 - 0.2 * head_r),
            eye_r,
            eye_r,
            0.0,
            8,
        );
        self.parts = vec![
            part(
                "legs",
                strings(&["The legs of the bird", "The thin legs"]),
                legs,
                [0.85, 0.55, 0.2],
                true,
                false,
            ),
            part(
                "tail",
                strings(&["The tail feathers", "The tail of the bird"]),
                vec![tail],
                scale(plumage, 0.75),
                true,
                true,
            ),
            part(
                "body",
                strings(&["The feathers of the bird", "The body of the bird"]),
                vec![ellipse((cx, by), rx, ry, 0.0, 20)],
                plumage,
                true,
                true,
            ),
            part(
                "head",
                strings(&["The head of the bird"]),
                vec![ellipse(head, head_r, head_r, 0.0, 14)],
                plumage,
                true,
                true,
            ),
            part(
                "beak",
                strings(&["The beak"]),
                vec![beak],
                [0.95, 0.7, 0.15],
                true,
                true,
            ),
            part(
                "wing",
                strings(&["The wing of the bird", "The wing"]),
                vec![wing],
                scale(plumage, 0.7),
                true,
                true,
            ),
            part("eye", vec![], vec![eye], DARK, false, false),
        ];
        self.subjects.push(Subject {
            noun: "bird".into(),
            phrases: strings(&["The shadow of the bird"]),
            base: (cx, gy),
            height: gy - (head.1 - head_r),
            width: 2.0 * rx,
            after_parts: false,
        });
        self.description = format!("a bird standing {place}");
    }

    fn table_object(&mut self, rng: &mut SplitMix64) {
        let s = self.size;
        let glossy = rng.chance(0.5);
        let (table, finish) = if glossy {
            *rng.pick(&[
                ([0.2, 0.22, 0.26], "polished dark"),
                ([0.86, 0.86, 0.9], "glossy marble"),
            ])
        } else {
            *rng.pick(&[
                ([0.55, 0.38, 0.25], "wooden"),
                ([0.86, 0.86, 0.84], "white"),
            ])
        };
        let table = jitter(rng, &[table], 0.03);
        let horizon_frac = rng.range(0.42, 0.55);
        self.room(rng, horizon_frac, table);
        let horizon = horizon_frac * s;
        let gy = rng.range(horizon + 0.16 * s, 0.72 * s);
        let cx = rng.range(0.36, 0.64) * s;
        let colour = jitter(rng, &VIVID, 0.06);
        let (kind, width, height, mirrored);
        match rng.below(3) {
            0 => {
                kind = "cup";
                let w = rng.range(0.22, 0.3) * s;
                let h = rng.range(0.2, 0.28) * s;
                let top = gy - h;
                let body = vec![
                    (cx - w / 2.0, top),
                    (cx + w / 2.0, top),
                    (cx + 0.4 * w, gy),
                    (cx - 0.4 * w, gy),
                ];
                let f = rng.sign();
                let centre = (cx + f * 0.44 * w, top + 0.45 * h);
                let (outer, inner) = (0.3 * h, 0.17 * h);
                // A C-shaped band: one simple polygon (COCO polygons cannot have holes).
                let arc = |r: f64, k: usize| {
                    let t = -std::f64::consts::FRAC_PI_2 + std::f64::consts::PI * k as f64 / 10.0;
                    (centre.0 + f * r * t.cos(), centre.1 + r * t.sin())
                };
                let mut handle: Ring = (0..=10).map(|k| arc(outer, k)).collect();
                handle.extend((0..=10).rev().map(|k| arc(inner, k)));
                let rim = ellipse((cx, top), w / 2.0, 0.045 * s, 0.0, 16);
                mirrored = vec![body.clone(), handle.clone()];
                self.parts = vec![
                    part(
                        "handle",
                        strings(&["The handle of the cup", "The handle"]),
                        vec![handle],
                        scale(colour, 0.85),
                        true,
                        true,
                    ),
                    part(
                        "cup",
                        strings(&["The body of the cup", "The surface of the cup"]),
                        vec![body],
                        colour,
                        true,
                        true,
                    ),
                    part(
                        "rim",
                        strings(&["The rim of the cup"]),
                        vec![rim],
                        mix(colour, [1.0; 3], 0.4),
                        true,
                        true,
                    ),
                ];
                (width, height) = (w, h);
            }
            1 => {
                kind = "box";
                let w = rng.range(0.26, 0.34) * s;
                let h = rng.range(0.18, 0.26) * s;
                let d = 0.07 * s;
                let (x0, x1, y0) = (cx - w / 2.0, cx + w / 2.0, gy - h);
                let front = rect(x0, y0, x1, gy);
                let top = vec![(x0, y0), (x1, y0), (x1 + d, y0 - d), (x0 + d, y0 - d)];
                let side = vec![(x1, y0), (x1 + d, y0 - d), (x1 + d, gy - d), (x1, gy)];
                let cardboard = jitter(rng, &[[0.72, 0.56, 0.36], colour], 0.03);
                mirrored = vec![front.clone()];
                self.parts = vec![
                    part(
                        "front of the box",
                        strings(&["The front of the box", "The front face of the box"]),
                        vec![front],
                        cardboard,
                        true,
                        true,
                    ),
                    part(
                        "top of the box",
                        strings(&["The top of the box", "The lid of the box"]),
                        vec![top],
                        mix(cardboard, [1.0; 3], 0.25),
                        true,
                        true,
                    ),
                    part(
                        "side of the box",
                        strings(&["The side of the box"]),
                        vec![side],
                        scale(cardboard, 0.7),
                        true,
                        true,
                    ),
                ];
                (width, height) = (w + d, h + d);
            }
            _ => {
                kind = "bottle";
                let glass = jitter(
                    rng,
                    &[[0.2, 0.55, 0.3], [0.45, 0.25, 0.1], [0.2, 0.35, 0.7]],
                    0.04,
                );
                let w = rng.range(0.14, 0.18) * s;
                let h = rng.range(0.26, 0.32) * s;
                let nw = 0.06 * s;
                let (x0, x1, ys) = (cx - w / 2.0, cx + w / 2.0, gy - h);
                let shoulder = ys - 0.06 * s;
                let body = vec![
                    (x0, gy),
                    (x1, gy),
                    (x1, ys),
                    (cx + nw / 2.0, shoulder),
                    (cx - nw / 2.0, shoulder),
                    (x0, ys),
                ];
                let neck_top = shoulder - 0.1 * s;
                let neck = rect(cx - nw / 2.0, neck_top, cx + nw / 2.0, shoulder);
                let cap = rect(
                    cx - nw / 2.0 - 0.005 * s,
                    neck_top - 0.035 * s,
                    cx + nw / 2.0 + 0.005 * s,
                    neck_top,
                );
                let label = rect(x0, ys + 0.3 * h, x1, ys + 0.65 * h);
                mirrored = vec![body.clone(), neck.clone()];
                self.parts = vec![
                    part(
                        "bottle",
                        strings(&["The body of the bottle", "The glass of the bottle"]),
                        vec![body],
                        glass,
                        true,
                        true,
                    ),
                    part(
                        "neck of the bottle",
                        strings(&["The neck of the bottle"]),
                        vec![neck],
                        glass,
                        true,
                        true,
                    ),
                    part(
                        "cap",
                        strings(&["The cap of the bottle", "The bottle cap"]),
                        vec![cap],
                        colour,
                        true,
                        true,
                    ),
                    part(
                        "label",
                        strings(&["The label of the bottle", "The label"]),
                        vec![label],
                        [0.93, 0.9, 0.8],
                        true,
                        true,
                    ),
                ];
                (width, height) = (w, h + 0.2 * s);
            }
        }
        self.subjects.push(Subject {
            noun: kind.into(),
            phrases: vec![format!("The shadow of the {kind}")],
            base: (cx, gy),
            height,
            width,
            after_parts: false,
        });
        if glossy {
            let rings = mirrored
                .iter()
                .map(|r| r.iter().map(|&(x, y)| (x, 2.0 * gy - y)).collect())
                .collect();
            self.mirror = Some(Mirror {
                noun: kind.into(),
                phrases: vec![
                    format!("The reflection of the {kind}"),
                    "The reflection on the table".into(),
                ],
                rings,
                axis_y: gy,
            });
        }
        self.description = format!("a {kind} on a {finish} table");
    }

    fn landscape(&mut self, rng: &mut SplitMix64) {
        let s = self.size;
        let horizon_frac = rng.range(0.52, 0.66);
        let _ = self.ground(rng, horizon_frac);
        let sun = match self.light {
            Light::Sun { centre, radius } => ellipse(centre, radius * 1.2, radius * 1.2, 0.0, 16),
            _ => unreachable!("ground() always sets a sun"),
        };
        self.light = Light::InParts;
        let horizon = horizon_frac * s;
        let house_left = rng.chance(0.5);
        let (hx, tx) = if house_left {
            (rng.range(0.24, 0.36) * s, rng.range(0.66, 0.78) * s)
        } else {
            (rng.range(0.64, 0.76) * s, rng.range(0.22, 0.34) * s)
        };
        let hy = rng.range(horizon + 0.08 * s, 0.86 * s);
        let (w, h) = (rng.range(0.26, 0.34) * s, rng.range(0.17, 0.23) * s);
        let roof_h = rng.range(0.12, 0.17) * s;
        let wall = rect(hx - w / 2.0, hy - h, hx + w / 2.0, hy);
        let roof = vec![
            (hx - w / 2.0 - 0.03 * s, hy - h),
            (hx + w / 2.0 + 0.03 * s, hy - h),
            (hx, hy - h - roof_h),
        ];
        let door = rect(hx - 0.045 * s, hy - 0.55 * h, hx + 0.025 * s, hy);
        let win_x = hx + if rng.chance(0.5) { 0.2 } else { -0.28 } * w;
        let window = rect(
            win_x - 0.05 * s,
            hy - 0.8 * h,
            win_x + 0.05 * s,
            hy - 0.45 * h,
        );
        let ty = rng.range(horizon + 0.06 * s, 0.9 * s);
        let trunk_h = rng.range(0.1, 0.14) * s;
        let crown_r = rng.range(0.09, 0.13) * s;
        let trunk = rect(tx - 0.022 * s, ty - trunk_h - 0.02 * s, tx + 0.022 * s, ty);
        let crown = ellipse(
            (tx, ty - trunk_h - 0.7 * crown_r),
            crown_r,
            crown_r * 1.1,
            0.0,
            20,
        );
        let wall_c = jitter(
            rng,
            &[[0.9, 0.86, 0.76], [0.8, 0.55, 0.42], [0.72, 0.78, 0.86]],
            0.03,
        );
        let roof_c = jitter(
            rng,
            &[[0.62, 0.2, 0.15], [0.3, 0.3, 0.34], [0.5, 0.32, 0.2]],
            0.03,
        );
        let leaves = jitter(rng, &[[0.16, 0.45, 0.18]], 0.05);
        let mut parts = vec![
            part(
                "sun",
                strings(&["The sun", "The sun in the sky"]),
                vec![sun],
                [1.0, 0.9, 0.45],
                true,
                true,
            ),
            part(
                "roof",
                strings(&["The roof of the house", "The roof"]),
                vec![roof],
                roof_c,
                true,
                true,
            ),
            part(
                "wall",
                strings(&["The wall of the house", "The facade"]),
                vec![wall],
                wall_c,
                true,
                true,
            ),
            part(
                "door",
                strings(&["The door"]),
                vec![door],
                [0.4, 0.26, 0.16],
                true,
                true,
            ),
            part(
                "window",
                strings(&["The window"]),
                vec![window],
                [0.62, 0.8, 0.95],
                true,
                true,
            ),
            part(
                "trunk",
                strings(&["The trunk of the tree"]),
                vec![trunk],
                [0.42, 0.28, 0.16],
                true,
                true,
            ),
            part(
                "tree",
                strings(&["The crown of the tree", "The leaves of the tree"]),
                vec![crown],
                leaves,
                true,
                true,
            ),
        ];
        // Clouds become parts here, so that a distortion can be planted in the sky.
        if let Some((cloud, colour)) = self.decorations.pop() {
            parts.insert(
                0,
                part(
                    "cloud",
                    strings(&["The cloud"]),
                    vec![cloud],
                    colour,
                    true,
                    true,
                ),
            );
        }
        self.parts = parts;
        self.subjects.push(Subject {
            noun: "house".into(),
            phrases: strings(&["The shadow of the house"]),
            base: (hx, hy),
            height: h + roof_h,
            width: w,
            after_parts: false,
        });
        self.subjects.push(Subject {
            noun: "tree".into(),
            phrases: strings(&["The shadow of the tree"]),
            base: (tx, ty),
            height: trunk_h + 1.6 * crown_r,
            width: 1.4 * crown_r,
            after_parts: false,
        });
        self.description = "a small house next to a tree on a sunny day".into();
    }

    /// Paints background, light source and decorations.
    pub(crate) fn paint_background(&self, canvas: &mut Canvas) {
        let bg = &self.background;
        let n = canvas.size;
        for y in 0..n {
            let yc = y as f64 + 0.5;
            let row = if yc < bg.horizon {
                mix(bg.top, bg.horizon_sky, (yc / bg.horizon.max(1.0)) as f32)
            } else {
                let t = (yc - bg.horizon) / (self.size - bg.horizon).max(1.0);
                mix(bg.far_ground, bg.near_ground, t as f32)
            };
            for x in 0..n {
                canvas.set(x, y, row);
            }
        }
        match self.light {
            Light::Sun { centre, radius } => {
                // Glow, then the disc.
                let glow = ellipse(centre, radius * 2.2, radius * 2.2, 0.0, 24);
                canvas.paint(&[glow], |x, y, c| {
                    let d = dist((x as f64 + 0.5, y as f64 + 0.5), centre) / (radius * 2.2);
                    mix(c, [1.0, 0.97, 0.8], (0.5 * (1.0 - d)) as f32)
                });
                canvas.paint(&[ellipse(centre, radius, radius, 0.0, 16)], |_, _, _| {
                    [1.0, 0.92, 0.5]
                });
            }
            Light::Lamp { centre, radius } => {
                let glow = ellipse(centre, radius, radius, 0.0, 32);
                canvas.paint(&[glow], |x, y, c| {
                    let d = dist((x as f64 + 0.5, y as f64 + 0.5), centre) / radius;
                    mix(c, [1.0, 0.97, 0.85], (0.45 * (1.0 - d) * (1.0 - d)) as f32)
                });
                let bulb = ellipse(centre, 0.045 * self.size, 0.045 * self.size, 0.0, 12);
                canvas.paint(&[bulb], |_, _, _| [1.0, 0.98, 0.85]);
            }
            Light::InParts => {}
        }
        for (ring, colour) in &self.decorations {
            canvas.paint(std::slice::from_ref(ring), |_, _, _| *colour);
        }
    }

    /// Paints the correct (soft, away-from-light) shadow of each subject not in `skip`, for the
    /// subjects whose shadow goes `after_parts` or not.
    pub(crate) fn paint_shadows(&self, canvas: &mut Canvas, skip: &[usize], after_parts: bool) {
        for (k, subject) in self.subjects.iter().enumerate() {
            if skip.contains(&k) || subject.after_parts != after_parts {
                continue;
            }
            let ring = subject.shadow_ring(self.light_left, false);
            canvas.paint(&[ring], |_, _, c| [c[0] * 0.66, c[1] * 0.67, c[2] * 0.72]);
        }
    }

    /// Paints the parts, lit from the light's side.
    pub(crate) fn paint_parts(&self, canvas: &mut Canvas) {
        let towards_light = if self.light_left { -1.0 } else { 1.0 };
        for p in &self.parts {
            let (x0, _, x1, _) = bounds(&p.rings);
            let (mid, half) = ((x0 + x1) / 2.0, ((x1 - x0) / 2.0).max(1.0));
            canvas.paint(&p.rings, |x, _, _| {
                let t = ((x as f64 + 0.5 - mid) / half * towards_light).clamp(-1.0, 1.0);
                scale(p.color, (1.0 + 0.14 * t) as f32)
            });
        }
    }

    /// Paints the correct, faint reflection unless `skip`.
    pub(crate) fn paint_reflection(&self, canvas: &mut Canvas, skip: bool) {
        let Some(mirror) = &self.mirror else { return };
        if skip {
            return;
        }
        let source = canvas.clone();
        let axis = mirror.axis_y;
        canvas.paint(&mirror.rings, |x, y, c| {
            let m = source.sample(x as f64 + 0.5, 2.0 * axis - (y as f64 + 0.5));
            mix(c, m, 0.3)
        });
    }

    /// Adds mild per-pixel noise (deterministic from `rng`, row-major).
    pub(crate) fn paint_noise(&self, canvas: &mut Canvas, rng: &mut SplitMix64) {
        let a = f64::from(self.noise);
        for c in canvas.px.iter_mut() {
            let lum = (rng.unit() + rng.unit() - 1.0) * a;
            let chroma = (rng.unit() - 0.5) * a * 0.5;
            c[0] += (lum + chroma) as f32;
            c[1] += lum as f32;
            c[2] += (lum - chroma) as f32;
        }
    }
}

pub(crate) fn dist(a: Pt, b: Pt) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// A random point on the boundary of one of `rings`, with the outward direction (from the
/// ring's centroid).
pub(crate) fn boundary_point(rng: &mut SplitMix64, rings: &[Ring]) -> (Pt, Pt) {
    let ring = rng.pick(rings);
    let i = rng.below(ring.len());
    let (a, b) = (ring[i], ring[(i + 1) % ring.len()]);
    let t = rng.unit();
    let p = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
    let c = centroid(ring);
    let (dx, dy) = (p.0 - c.0, p.1 - c.1);
    let len = (dx * dx + dy * dy).sqrt().max(1e-9);
    (p, (dx / len, dy / len))
}
