//! AdamW (decoupled weight decay, bias-corrected moments) on host `f32` parameters, the
//! linear warm-up of the learning rate, and global-norm gradient clipping. The arithmetic
//! is per element in `f64`, in index order, so a step gives the same bits every time.

#[derive(Debug, Clone)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl AdamW {
    pub fn new(len: usize, weight_decay: f64) -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, m: vec![0.0; len], v: vec![0.0; len], t: 0 }
    }

    /// One update of `params` by `grads` at learning rate `lr`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64) {
        assert_eq!(params.len(), self.m.len(), "AdamW: parameter count changed");
        assert_eq!(grads.len(), self.m.len(), "AdamW: gradient count differs from parameters");
        self.t += 1;
        let (c1, c2) = (1.0 - self.beta1.powi(self.t), 1.0 - self.beta2.powi(self.t));
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            let g = g as f64;
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            let update = (*m / c1) / ((*v / c2).sqrt() + self.eps);
            let x = *p as f64;
            *p = (x - lr * (update + self.weight_decay * x)) as f32;
        }
    }
}

/// The learning rate at `step` (1-based): rising linearly over `warmup` steps, then `lr`.
pub fn warmup_lr(lr: f64, step: usize, warmup: usize) -> f64 {
    if warmup == 0 || step >= warmup {
        lr
    } else {
        lr * step as f64 / warmup as f64
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_global_norm(grads: &mut [f32], max_norm: f64) -> f64 {
    let norm = grads.iter().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt();
    if norm > max_norm {
        let scale = (max_norm / norm) as f32;
        grads.iter_mut().for_each(|g| *g *= scale);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_adamw_step_moves_each_parameter_by_lr_against_its_gradient_sign() {
        // Bias correction makes the first step's update exactly g / |g| (up to eps).
        let mut p = vec![1.0f32, -2.0, 0.5];
        let mut opt = AdamW::new(3, 0.0);
        opt.step(&mut p, &[0.3, -4.0, 0.0], 0.1);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6 && p[2] == 0.5, "{p:?}");
        // Decoupled decay shrinks parameters with no gradient: p -= lr * wd * p.
        let mut q = vec![2.0f32];
        AdamW::new(1, 0.5).step(&mut q, &[0.0], 0.1);
        assert!((q[0] - 1.9).abs() < 1e-6, "{q:?}");
    }

    #[test]
    fn adamw_minimises_a_quadratic() {
        let mut p = vec![3.0f32, -5.0];
        let mut opt = AdamW::new(2, 0.0);
        for _ in 0..500 {
            let g: Vec<f32> = p.iter().map(|x| 2.0 * x).collect();
            opt.step(&mut p, &g, 0.05);
        }
        assert!(p.iter().all(|x| x.abs() < 0.05), "{p:?}");
    }

    #[test]
    fn warmup_and_clipping() {
        assert_eq!(warmup_lr(1.0, 1, 4), 0.25);
        assert_eq!(warmup_lr(1.0, 4, 4), 1.0);
        assert_eq!(warmup_lr(1.0, 9, 4), 1.0);
        assert_eq!(warmup_lr(0.5, 1, 0), 0.5);
        let mut g = vec![3.0f32, 4.0];
        assert_eq!(clip_global_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        let mut small = vec![0.1f32];
        clip_global_norm(&mut small, 1.0);
        assert_eq!(small, [0.1]);
    }
}
