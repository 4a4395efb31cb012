//! Pixel parity of the polygon rasterisers and COCO RLE with pycocotools 2.0.11 and
//! OpenCV 5.0.0.
//!
//! Fixture: `tests/fixtures/raster/raster_cases.json`, made by `scripts/fixtures/raster.py`
//! (`/work/venv/bin/python scripts/fixtures/raster.py`). Masks are stored as pycocotools'
//! compressed RLE strings and coordinates as Python `repr` strings (exact round trip).
//!
//! ```text
//! cargo test -p legion-data --test raster_parity -- --nocapture
//! ```

use legion_data::mask::Mask;
use legion_data::raster::{
    PolygonError, RasterError, coco_bbox, coco_polygon, coco_polygon_rle, coco_polygons,
    cv2_fill_poly, cv2_fill_poly_call,
};
use legion_data::rle::Rle;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    pycocotools: String,
    opencv: String,
    cases: Vec<Case>,
    bbox_cases: Vec<BboxCase>,
    rle_cases: Vec<RleCase>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    height: usize,
    width: usize,
    polygons: Vec<Vec<String>>,
    /// pycocotools' counts string per polygon; `None` where pycocotools raised.
    coco: Vec<Option<String>>,
    /// One `fillPoly` call per polygon (the reference GT pattern); absent when a polygon has
    /// no point.
    cv2: Option<String>,
    cv2_single_call: Option<String>,
}

#[derive(Deserialize)]
struct BboxCase {
    height: usize,
    width: usize,
    bbox: [String; 4],
    coco: String,
}

#[derive(Deserialize)]
struct RleCase {
    height: usize,
    width: usize,
    counts: Vec<u32>,
    string: String,
}

fn load() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/raster/raster_cases.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture present (see header)");
    serde_json::from_str(&text).expect("fixture parses")
}

fn parse_coords(values: &[String]) -> Vec<f64> {
    values
        .iter()
        .map(|v| v.parse::<f64>().expect("fixture coordinate"))
        .collect()
}

fn expected_mask(height: usize, width: usize, counts: &str) -> Mask {
    Rle::from_coco_string(height, width, counts)
        .expect("fixture RLE string")
        .to_mask()
}

fn differing_pixels(a: &Mask, b: &Mask) -> usize {
    assert_eq!((a.height(), a.width()), (b.height(), b.width()));
    a.as_slice()
        .iter()
        .zip(b.as_slice())
        .filter(|(x, y)| x != y)
        .count()
}

#[derive(Default)]
struct Tally {
    comparisons: usize,
    pixels: usize,
    differing: usize,
    failures: Vec<String>,
}

impl Tally {
    fn compare(&mut self, what: &str, case: &str, got: &Mask, want: &Mask) {
        let diff = differing_pixels(got, want);
        self.comparisons += 1;
        self.pixels += got.as_slice().len();
        self.differing += diff;
        if diff != 0 {
            self.failures
                .push(format!("{case}: {what}: {diff} differing pixels"));
        }
    }
}

#[test]
fn polygons_match_pycocotools_and_opencv() {
    let fixture = load();
    let mut coco = Tally::default();
    let mut coco_union = Tally::default();
    let mut cv2_gt = Tally::default();
    let mut cv2_single = Tally::default();
    let mut rle_string_mismatches = Vec::new();
    let mut refused = 0;

    for case in &fixture.cases {
        let (h, w) = (case.height, case.width);
        let polys: Vec<Vec<f64>> = case.polygons.iter().map(|p| parse_coords(p)).collect();

        let mut union = Mask::zeros(h, w);
        let mut all_valid = true;
        for (i, (poly, want)) in polys.iter().zip(&case.coco).enumerate() {
            let label = format!("{} polygon {i}", case.name);
            match want {
                Some(want) => {
                    let rle = coco_polygon_rle(poly, h, w)
                        .unwrap_or_else(|e| panic!("{label}: pycocotools accepted it: {e}"));
                    // pycocotools' own RLE, not just the same pixels.
                    if rle.to_coco_string() != *want {
                        rle_string_mismatches.push(label.clone());
                    }
                    let want_mask = expected_mask(h, w, want);
                    let got = coco_polygon(poly, h, w).expect("same input as above");
                    coco.compare("coco", &label, &got, &want_mask);
                    union.union_with(&want_mask).unwrap();
                }
                None => {
                    // pycocotools raised: 4 numbers (bbox quirk) or fewer.
                    all_valid = false;
                    refused += 1;
                    let expected = if poly.len() == 4 {
                        PolygonError::FourCoordinates
                    } else {
                        PolygonError::TooFewCoordinates {
                            len: poly.len(),
                            min: 6,
                        }
                    };
                    assert_eq!(
                        coco_polygon(poly, h, w),
                        Err(RasterError::Polygon {
                            polygon: 0,
                            problem: expected
                        }),
                        "{label}"
                    );
                }
            }
        }
        if all_valid {
            let got = coco_polygons(&polys, h, w).expect("all polygons valid");
            coco_union.compare("coco union", &case.name, &got, &union);
        } else {
            assert!(coco_polygons(&polys, h, w).is_err(), "{}", case.name);
        }

        if let Some(want) = &case.cv2 {
            let got = cv2_fill_poly(&polys, h, w).expect("cv2 accepted it");
            cv2_gt.compare(
                "cv2 per-polygon calls",
                &case.name,
                &got,
                &expected_mask(h, w, want),
            );
        }
        if let Some(want) = &case.cv2_single_call {
            let mut got = Mask::zeros(h, w);
            cv2_fill_poly_call(&mut got, &polys).expect("cv2 accepted it");
            cv2_single.compare(
                "cv2 single call",
                &case.name,
                &got,
                &expected_mask(h, w, want),
            );
        }
    }

    eprintln!(
        "raster parity vs pycocotools {} / OpenCV {}: {} cases",
        fixture.pycocotools,
        fixture.opencv,
        fixture.cases.len()
    );
    for (name, t) in [
        ("coco per polygon", &coco),
        ("coco union", &coco_union),
        ("cv2 GT (per-polygon calls)", &cv2_gt),
        ("cv2 single call", &cv2_single),
    ] {
        eprintln!(
            "  {name}: {} masks, {} pixels compared, {} differing",
            t.comparisons, t.pixels, t.differing
        );
    }
    eprintln!(
        "  coco RLE strings: {} equal to pycocotools', {} differ; {refused} polygons refused like pycocotools",
        coco.comparisons - rle_string_mismatches.len(),
        rle_string_mismatches.len()
    );

    let failures: Vec<_> = [&coco, &coco_union, &cv2_gt, &cv2_single]
        .iter()
        .flat_map(|t| t.failures.iter())
        .collect();
    assert!(
        failures.is_empty(),
        "{} mismatching masks: {failures:#?}",
        failures.len()
    );
    assert!(
        rle_string_mismatches.is_empty(),
        "RLE strings differ from pycocotools: {rle_string_mismatches:?}"
    );
    // Guard against a fixture that silently lost its cases.
    assert!(coco.comparisons >= 300 && cv2_gt.comparisons >= 300 && refused >= 7);
}

#[test]
fn bboxes_match_pycocotools() {
    let fixture = load();
    let mut tally = Tally::default();
    for (i, case) in fixture.bbox_cases.iter().enumerate() {
        let coords = parse_coords(&case.bbox);
        let bbox = [coords[0], coords[1], coords[2], coords[3]];
        let got = coco_bbox(bbox, case.height, case.width).expect("bbox within bounds");
        let want = expected_mask(case.height, case.width, &case.coco);
        tally.compare("bbox", &format!("bbox case {i} {bbox:?}"), &got, &want);
    }
    eprintln!(
        "bbox parity: {} cases, {} pixels compared, {} differing",
        tally.comparisons, tally.pixels, tally.differing
    );
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert!(tally.comparisons >= 30);
}

#[test]
fn rle_strings_match_pycocotools() {
    let fixture = load();
    for (i, case) in fixture.rle_cases.iter().enumerate() {
        let (h, w) = (case.height, case.width);
        let from_counts = Rle::from_counts(h, w, case.counts.clone()).expect("valid counts");
        assert_eq!(
            from_counts.to_coco_string(),
            case.string,
            "rle case {i}: encode"
        );
        let from_string = Rle::from_coco_string(h, w, &case.string).expect("valid string");
        assert_eq!(
            from_string.counts(),
            &case.counts[..],
            "rle case {i}: decode"
        );
        // Mask round trip: encoding the decoded mask gives pycocotools' counts back.
        let mask = from_string.to_mask();
        assert_eq!(
            Rle::from_mask(&mask).unwrap(),
            from_counts,
            "rle case {i}: mask"
        );
        // serde, both count forms.
        let json = format!(
            r#"{{"size":[{h},{w}],"counts":{}}}"#,
            serde_json::to_string(&case.string).unwrap()
        );
        assert_eq!(serde_json::from_str::<Rle>(&json).unwrap(), from_counts);
        let json = format!(r#"{{"size":[{h},{w}],"counts":{:?}}}"#, case.counts);
        assert_eq!(serde_json::from_str::<Rle>(&json).unwrap(), from_counts);
    }
    eprintln!("rle parity: {} string cases", fixture.rle_cases.len());
    assert!(fixture.rle_cases.len() >= 30);
}
