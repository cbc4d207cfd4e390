//! Token + position embeddings.

/// `out[n, c] = wte[tokens[n], :] + wpe[positions[n], :]`.
///
/// Callers validate `tokens < V` and `positions < P` beforehand.
pub fn embed_forward(out: &mut [f32], tokens: &[u32], positions: &[u32], wte: &[f32], wpe: &[f32], c: usize) {
    for (n, o) in out.chunks_exact_mut(c).take(tokens.len()).enumerate() {
        let t = tokens[n] as usize;
        let p = positions[n] as usize;
        let (te, pe) = (&wte[t * c..(t + 1) * c], &wpe[p * c..(p + 1) * c]);
        for i in 0..c {
            o[i] = te[i] + pe[i];
        }
    }
}

/// Backward, accumulating: `dwte[tokens[n]] += dout[n]`, `dwpe[positions[n]] += dout[n]`.
pub fn embed_backward(dwte: &mut [f32], dwpe: &mut [f32], dout: &[f32], tokens: &[u32], positions: &[u32], c: usize) {
    for (n, g) in dout.chunks_exact(c).take(tokens.len()).enumerate() {
        let t = tokens[n] as usize;
        let p = positions[n] as usize;
        for i in 0..c {
            dwte[t * c + i] += g[i];
            dwpe[p * c + i] += g[i];
        }
    }
}
