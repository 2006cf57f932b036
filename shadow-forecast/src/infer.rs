//! Serving the trained LSTM without a tensor library: one forecast is a
//! batch of one, where a framework's per-operation cost (hundreds of small
//! tensor ops for a 48-step window) outweighs the arithmetic. The weights
//! are copied out of the burn modules once, after training or loading, and
//! the same network is evaluated with plain `f32` loops. Training stays in
//! burn; `lstm::tests` checks that both give the same numbers.

use burn::{nn::Linear, prelude::*};

use crate::error::ForecastError;

/// A dense layer `y = x W + b` with `W` stored row-major as `[d_in, d_out]`,
/// burn's own layout.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, ForecastError> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ForecastError::Model {
            model: "lstm".into(),
            reason: format!("reading weights: {e:?}"),
        })
}

impl Dense {
    pub(crate) fn from_linear(l: &Linear) -> Result<Self, ForecastError> {
        let [d_in, d_out] = l.weight.val().dims();
        let w = values(l.weight.val())?;
        let b = match &l.bias {
            Some(b) => values(b.val())?,
            None => vec![0.0; d_out],
        };
        Ok(Self { w, b, d_in, d_out })
    }

    /// `out = b + x W` (out has `d_out` values).
    fn apply(&self, x: &[f32], out: &mut [f32]) {
        debug_assert_eq!(x.len(), self.d_in);
        out.copy_from_slice(&self.b);
        self.accumulate(x, out);
    }

    /// `out += x W`.
    fn accumulate(&self, x: &[f32], out: &mut [f32]) {
        for (xi, row) in x.iter().zip(self.w.chunks_exact(self.d_out)) {
            if *xi != 0.0 {
                for (o, w) in out.iter_mut().zip(row) {
                    *o += xi * w;
                }
            }
        }
    }
}

/// The encoder LSTM with its four gates fused: `[input, forget, output,
/// cell]` blocks of `hidden` columns each.
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    x: Dense,
    h: Dense,
    hidden: usize,
}

impl Encoder {
    pub(crate) fn from_lstm(l: &burn::nn::Lstm) -> Result<Self, ForecastError> {
        let forget = l.forget_gate.as_ref().ok_or_else(|| ForecastError::Model {
            model: "lstm".into(),
            reason: "coupled input/forget gates are not supported".into(),
        })?;
        let gates = [&l.input_gate, forget, &l.output_gate, &l.cell_gate];
        let fuse =
            |pick: fn(&burn::nn::GateController) -> &Linear| -> Result<Dense, ForecastError> {
                let parts = gates
                    .iter()
                    .map(|g| Dense::from_linear(pick(g)))
                    .collect::<Result<Vec<_>, _>>()?;
                let (d_in, h) = (parts[0].d_in, parts[0].d_out);
                let mut w = Vec::with_capacity(d_in * 4 * h);
                for r in 0..d_in {
                    for p in &parts {
                        w.extend_from_slice(&p.w[r * h..(r + 1) * h]);
                    }
                }
                let b = parts.iter().flat_map(|p| p.b.iter().copied()).collect();
                Ok(Dense {
                    w,
                    b,
                    d_in,
                    d_out: 4 * h,
                })
            };
        let x = fuse(|g| &g.input_transform)?;
        let mut h = fuse(|g| &g.hidden_transform)?;
        // Both transforms add their bias; keep one sum.
        let x = Dense {
            b: x.b.iter().zip(&h.b).map(|(a, b)| a + b).collect(),
            ..x
        };
        h.b.iter_mut().for_each(|b| *b = 0.0);
        Ok(Self {
            x,
            h,
            hidden: l.d_hidden,
        })
    }

    /// Runs over `steps` rows of `x` (`[steps, d_in]`) from a zero state and
    /// returns the final hidden state.
    fn run(&self, x: &[f32]) -> Vec<f32> {
        let n = self.hidden;
        let (mut h, mut c) = (vec![0.0f32; n], vec![0.0f32; n]);
        let mut g = vec![0.0f32; 4 * n];
        for xt in x.chunks_exact(self.x.d_in) {
            self.x.apply(xt, &mut g);
            self.h.accumulate(&h, &mut g);
            for k in 0..n {
                let i = sigmoid(g[k]);
                let f = sigmoid(g[n + k]);
                let o = sigmoid(g[2 * n + k]);
                let cand = g[3 * n + k].tanh();
                c[k] = f * c[k] + i * cand;
                h[k] = o * c[k].tanh();
            }
        }
        h
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The whole network of `lstm::Net` in plain `f32`.
#[derive(Debug, Clone)]
pub(crate) struct Plain {
    pub(crate) encoder: Encoder,
    pub(crate) dec1: Dense,
    pub(crate) dec2: Dense,
}

impl Plain {
    /// `enc` is `[window, fe]`, `dec` is `[h, fd]` with the last value in
    /// column 1; returns `[h, 3]` (P10, P50, P90), as `Net::forward` does.
    pub(crate) fn forward(&self, enc: &[f32], dec: &[f32], fd: usize) -> Vec<f32> {
        let state = self.encoder.run(enc);
        let mut x = state.clone();
        x.resize(state.len() + fd, 0.0);
        let mut hid = vec![0.0f32; self.dec1.d_out];
        let mut o = [0.0f32; 3];
        let mut out = Vec::with_capacity(dec.len() / fd * 3);
        for row in dec.chunks_exact(fd) {
            x[state.len()..].copy_from_slice(row);
            self.dec1.apply(&x, &mut hid);
            hid.iter_mut().for_each(|v| *v = v.max(0.0));
            self.dec2.apply(&hid, &mut o);
            let mid = row[1] + o[1];
            out.extend_from_slice(&[mid - softplus(o[0]), mid, mid + softplus(o[2])]);
        }
        out
    }
}
