//! Comparing the weights of two models parameter by parameter (exact-resume and
//! data-parallel checks).

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

struct FloatCollector {
    path: Vec<String>,
    out: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for FloatCollector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = param
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap_or_default();
        self.out.push((self.path.join("."), values));
    }
}

/// Every float parameter of `module` as `(path, values)`, in visiting order.
pub fn float_parameters<M: Module>(module: &M) -> Vec<(String, Vec<f32>)> {
    let mut collector = FloatCollector {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut collector);
    collector.out
}

/// The float parameters of two models of the same structure, paired: `(path, a's, b's)`.
fn paired_parameters<M: Module>(a: &M, b: &M) -> Result<Vec<(String, Vec<f32>, Vec<f32>)>, String> {
    let (a, b) = (float_parameters(a), float_parameters(b));
    if a.len() != b.len() {
        return Err(format!("{} vs {} parameters", a.len(), b.len()));
    }
    a.into_iter()
        .zip(b)
        .map(|((pa, va), (pb, vb))| {
            if pa != pb || va.len() != vb.len() {
                return Err(format!(
                    "parameter {pa} ({}) vs {pb} ({})",
                    va.len(),
                    vb.len()
                ));
            }
            Ok((pa, va, vb))
        })
        .collect()
}

/// The largest absolute difference between the parameters of two models of the same
/// structure, with the parameter path where it occurs; `Err` names a structural mismatch.
///
/// # Errors
/// A message when the models have different parameter lists or shapes.
pub fn max_abs_difference<M: Module>(a: &M, b: &M) -> Result<(f64, String), String> {
    let mut worst = (0.0f64, String::new());
    for (path, va, vb) in paired_parameters(a, b)? {
        for (x, y) in va.iter().zip(&vb) {
            let d = f64::from((x - y).abs());
            if d > worst.0 || (x.is_nan() != y.is_nan()) {
                worst = (if d.is_nan() { f64::INFINITY } else { d }, path.clone());
            }
        }
    }
    Ok(worst)
}

/// The distance between two models of the same structure relative to the first one's size,
/// `||a - b|| / ||a||` over all float parameters. Where training runs are compared this says
/// more than [`max_abs_difference`]: Adam moves every weight by about the learning rate per
/// step whatever its gradient's size, so a near-zero gradient whose sign flips with float
/// rounding moves that one weight the other way.
///
/// # Errors
/// A message when the models have different parameter lists or shapes.
pub fn relative_l2_difference<M: Module>(a: &M, b: &M) -> Result<f64, String> {
    let (mut difference, mut norm) = (0.0f64, 0.0f64);
    for (_, va, vb) in paired_parameters(a, b)? {
        for (x, y) in va.iter().zip(&vb) {
            difference += f64::from(x - y).powi(2);
            norm += f64::from(*x).powi(2);
        }
    }
    Ok((difference / norm).sqrt())
}
