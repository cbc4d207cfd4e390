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

/// Backward, accumulating: `dwte[tokens[n]] += dout[n]`, `dwpe[positions[n]] += dout[n]`
/// (either table may be skipped). Shapes: dout `[N, C]`, dwte `[V, C]`, dwpe `[P, C]`.
pub fn embed_backward(
    dwte: Option<&mut [f32]>,
    dwpe: Option<&mut [f32]>,
    dout: &[f32],
    tokens: &[u32],
    positions: &[u32],
    c: usize,
) {
    for (table, ids) in [(dwte, tokens), (dwpe, positions)] {
        let Some(table) = table else { continue };
        for (g, &id) in dout.chunks_exact(c).zip(ids) {
            let row = &mut table[id as usize * c..(id as usize + 1) * c];
            for (r, &x) in row.iter_mut().zip(g) {
                *r += x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backward_is_the_transpose_of_forward() {
        // <embed(wte, wpe), g> is linear in (wte, wpe): its gradient is exactly embed_backward(g).
        let (c, v, p) = (3, 5, 4);
        let tokens = [1u32, 4, 1, 0];
        let positions = [0u32, 1, 2, 3];
        let g: Vec<f32> = (0..tokens.len() * c).map(|i| i as f32 * 0.5 - 2.0).collect();
        let (mut dwte, mut dwpe) = (vec![0f32; v * c], vec![0f32; p * c]);
        embed_backward(Some(&mut dwte), Some(&mut dwpe), &g, &tokens, &positions, c);
        for (which, grad) in [(0, &dwte), (1, &dwpe)] {
            for idx in 0..grad.len() {
                let (mut wte, mut wpe) = (vec![0f32; v * c], vec![0f32; p * c]);
                if which == 0 {
                    wte[idx] = 1.0
                } else {
                    wpe[idx] = 1.0
                }
                let mut out = vec![0f32; tokens.len() * c];
                embed_forward(&mut out, &tokens, &positions, &wte, &wpe, c);
                let d: f32 = out.iter().zip(&g).map(|(a, b)| a * b).sum();
                assert_eq!(d, grad[idx]);
            }
        }
        assert_eq!(dwte[4 * c], g[c]); // token 4 appears once
    }
}
