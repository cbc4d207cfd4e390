//! Residual connections: `out = a + b` and its backward.

use rayon::prelude::*;

/// Elements per rayon task.
const PER_TASK: usize = 1 << 14;

/// `out[n] = a[n] + b[n]`.
pub fn residual_forward(out: &mut [f32], a: &[f32], b: &[f32]) {
    out.par_chunks_mut(PER_TASK).zip(a.par_chunks(PER_TASK).zip(b.par_chunks(PER_TASK))).for_each(|(o, (a, b))| {
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    });
}

/// In place: `x[n] += y[n]`.
pub fn residual_inplace(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(PER_TASK).zip(y.par_chunks(PER_TASK)).for_each(|(x, y)| {
        for (a, &b) in x.iter_mut().zip(y) {
            *a += b;
        }
    });
}

/// Backward of [`residual_forward`], accumulating: `da[n] += dout[n]`, `db[n] += dout[n]`.
pub fn residual_backward(da: &mut [f32], db: &mut [f32], dout: &[f32]) {
    residual_inplace(da, dout);
    residual_inplace(db, dout);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward() {
        let n = 40_000; // several tasks
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
        let mut out = vec![0.0; n];
        residual_forward(&mut out, &a, &b);
        assert!(out.iter().enumerate().all(|(i, &v)| v == 3.0 * i as f32));
        let (mut da, mut db) = (vec![1.0; n], vec![0.0; n]);
        residual_backward(&mut da, &mut db, &b);
        assert!(da.iter().zip(&b).all(|(&x, &y)| x == 1.0 + y) && db == b);
    }
}
