//! Random variates the scenario generator needs (rand 0.9 has no distributions beyond uniform,
//! and statrs's samplers are built against another rand major version).

use rand::Rng;
use statrs::function::gamma::ln_gamma;

/// Standard normal by Box-Muller.
pub fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gamma(shape, scale 1/shape): mean 1, variance 1/shape. Marsaglia-Tsang.
pub fn gamma_mean_one<R: Rng + ?Sized>(rng: &mut R, shape: f64) -> f64 {
    if !shape.is_finite() || shape <= 0.0 {
        return 1.0;
    }
    if shape < 1.0 {
        let u: f64 = 1.0 - rng.random::<f64>();
        return gamma_mean_one(rng, shape + 1.0) * (shape + 1.0) / shape * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = 1.0 - rng.random::<f64>();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v / shape;
        }
    }
}

/// Poisson: multiplication method for small means, Hormann's PTRS above 10.
pub fn poisson<R: Rng + ?Sized>(rng: &mut R, lambda: f64) -> f64 {
    if !lambda.is_finite() || lambda <= 0.0 {
        return 0.0;
    }
    if lambda < 10.0 {
        let limit = (-lambda).exp();
        let mut k = 0.0;
        let mut p: f64 = rng.random();
        while p > limit {
            k += 1.0;
            p *= rng.random::<f64>();
        }
        return k;
    }
    let slam = lambda.sqrt();
    let loglam = lambda.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = rng.random::<f64>() - 0.5;
        let v: f64 = rng.random();
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
            <= -lambda + k * loglam - ln_gamma(k + 1.0)
        {
            return k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn moments(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        (
            m,
            xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0),
        )
    }

    #[test]
    fn poisson_has_equal_mean_and_variance_on_both_branches() {
        let mut rng = StdRng::seed_from_u64(1);
        for lambda in [0.3, 4.0, 25.0, 400.0] {
            let xs: Vec<f64> = (0..20000).map(|_| poisson(&mut rng, lambda)).collect();
            let (m, v) = moments(&xs);
            assert!((m / lambda - 1.0).abs() < 0.05, "lambda {lambda}: mean {m}");
            assert!((v / lambda - 1.0).abs() < 0.08, "lambda {lambda}: var {v}");
        }
    }

    #[test]
    fn gamma_has_mean_one_and_variance_one_over_shape() {
        let mut rng = StdRng::seed_from_u64(2);
        for shape in [0.5, 4.0, 100.0] {
            let xs: Vec<f64> = (0..20000)
                .map(|_| gamma_mean_one(&mut rng, shape))
                .collect();
            let (m, v) = moments(&xs);
            assert!((m - 1.0).abs() < 0.05, "shape {shape}: mean {m}");
            assert!((v * shape - 1.0).abs() < 0.1, "shape {shape}: var {v}");
        }
    }
}
