//! The LSTM forecaster (burn): an MQ-RNN-style encoder/decoder that emits
//! every horizon and all three quantiles in one pass.
//!
//! The encoder LSTM reads the last `window` points (target, related series,
//! calendar). A small MLP, shared across horizons, decodes each horizon
//! from the final hidden state plus what is known about that future step:
//! the same phase one season earlier (smoothed), the last value, how far
//! ahead it is and its calendar position. P50 is the last value plus a
//! learnt correction; P10 and P90 sit a softplus below and above it, so the
//! quantiles never cross. Training minimises the pinball (quantile) loss,
//! weighted per point so anomalous stretches teach less, with Adam, early
//! stopping on the newest 15 % of origins, and normalisation fitted on the
//! training points only.
//!
//! Reference: Wen et al., "A Multi-Horizon Quantile Recurrent Forecaster"
//! (2017).

use std::path::Path;

use burn::{
    grad_clipping::GradientClippingConfig,
    nn::{Linear, LinearConfig, LstmConfig as BurnLstmConfig},
    optim::{AdamConfig, GradientsParams},
    prelude::*,
    tensor::activation::{relu, softplus},
};
use serde::{Deserialize, Serialize};

use crate::{
    error::ForecastError,
    infer::{Dense, Encoder, Plain},
    model::{Forecast, Input, Model, QUANTILES},
    window::{Layout, Scaler},
};

/// Training and shape settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LstmConfig {
    pub window: usize,
    pub hidden: usize,
    pub horizon: usize,
    /// Steps per season (a day); 1 for none.
    pub season: usize,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    /// Origins per epoch at most (sampled afresh each epoch).
    pub samples_per_epoch: usize,
    pub seed: u64,
}

impl Default for LstmConfig {
    fn default() -> Self {
        Self {
            window: 48,
            hidden: 32,
            horizon: 288,
            season: 288,
            epochs: 30,
            batch: 64,
            learning_rate: 3e-3,
            patience: 5,
            samples_per_epoch: 1024,
            seed: 42,
        }
    }
}

#[derive(Module, Debug)]
struct Net {
    lstm: burn::nn::Lstm,
    dec1: Linear,
    dec2: Linear,
}

impl Net {
    fn new(layout: &Layout, hidden: usize, device: &Device) -> Self {
        Self {
            lstm: BurnLstmConfig::new(layout.encoder_features(), hidden, true).init(device),
            dec1: LinearConfig::new(hidden + layout.decoder_features(), hidden).init(device),
            dec2: LinearConfig::new(hidden, 3).init(device),
        }
    }

    /// enc `[b, window, fe]`, dec `[b, h, fd]` -> `[b, h, 3]` (P10, P50, P90).
    fn forward(&self, enc: Tensor<3>, dec: Tensor<3>) -> Tensor<3> {
        let [b, h, fd] = dec.dims();
        let (_, state) = self.lstm.forward(enc, None);
        let hidden = state.hidden.unsqueeze_dim::<3>(1).repeat_dim(1, h);
        let last = dec.clone().narrow(2, 1, 1);
        let x = Tensor::cat(vec![hidden, dec], 2);
        let o = self.dec2.forward(relu(self.dec1.forward(x)));
        let mid = last + o.clone().narrow(2, 1, 1);
        let below = softplus(o.clone().narrow(2, 0, 1), 1.0);
        let above = softplus(o.narrow(2, 2, 1), 1.0);
        debug_assert_eq!(fd, 7);
        let _ = b;
        Tensor::cat(vec![mid.clone() - below, mid.clone(), mid + above], 2)
    }
}

impl Net {
    /// The weights copied out for [`Plain::forward`].
    fn plain(&self) -> Result<Plain, ForecastError> {
        Ok(Plain {
            encoder: Encoder::from_lstm(&self.lstm)?,
            dec1: Dense::from_linear(&self.dec1)?,
            dec2: Dense::from_linear(&self.dec2)?,
        })
    }
}

/// What is saved next to the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    config: LstmConfig,
    layout: Layout,
    scaler: Scaler,
    related: Option<Scaler>,
    epochs_run: usize,
    val_loss: f64,
}

/// The LSTM behind the [`Model`] interface.
#[derive(Debug)]
pub struct LstmModel {
    pub config: LstmConfig,
    device: Device,
    /// The burn network (for training and saving) and its plain copy (for
    /// serving; see [`crate::infer`]).
    trained: Option<(Meta, Net, Plain)>,
}

/// One batch of inputs as flat vectors.
#[derive(Default)]
struct Batch {
    enc: Vec<f32>,
    dec: Vec<f32>,
    y: Vec<f32>,
    w: Vec<f32>,
    n: usize,
}

impl LstmModel {
    pub fn new(config: LstmConfig) -> Self {
        Self {
            config,
            device: default_device(),
            trained: None,
        }
    }

    /// Epochs trained and the best validation loss, once fitted.
    pub fn training_summary(&self) -> Option<(usize, f64)> {
        self.trained
            .as_ref()
            .map(|(m, _, _)| (m.epochs_run, m.val_loss))
    }

    /// The layout used for a history of `n` points: the season is dropped
    /// when the history cannot hold it plus a useful number of origins.
    fn layout_for(&self, n: usize, related: bool) -> Layout {
        let c = &self.config;
        let mut l = Layout {
            window: c.window,
            horizon: c.horizon,
            season: c.season.max(1),
            related,
        };
        if n < l.first_origin() + l.horizon + 64 {
            l.season = 1;
        }
        l
    }

    fn batch(
        &self,
        layout: &Layout,
        z: &[f32],
        zr: Option<&[f32]>,
        w: Option<&[f64]>,
        input: &Input<'_>,
        origins: &[usize],
    ) -> Batch {
        let mut b = Batch::default();
        for &o in origins {
            layout.encoder(z, zr, input.start, input.step, o, &mut b.enc);
            layout.decoder(z, input.start, input.step, o, layout.horizon, &mut b.dec);
            b.y.extend_from_slice(&z[o..o + layout.horizon]);
            b.w.extend((o..o + layout.horizon).map(|t| w.map_or(1.0, |w| w[t] as f32)));
            b.n += 1;
        }
        b
    }

    fn tensors(
        layout: &Layout,
        b: &Batch,
        device: &Device,
    ) -> (Tensor<3>, Tensor<3>, Tensor<2>, Tensor<2>) {
        let (n, h) = (b.n, layout.horizon);
        (
            Tensor::from_data(
                TensorData::new(b.enc.clone(), [n, layout.window, layout.encoder_features()]),
                device,
            ),
            Tensor::from_data(
                TensorData::new(b.dec.clone(), [n, h, layout.decoder_features()]),
                device,
            ),
            Tensor::from_data(TensorData::new(b.y.clone(), [n, h]), device),
            Tensor::from_data(TensorData::new(b.w.clone(), [n, h]), device),
        )
    }

    /// Weighted pinball loss summed over the three quantiles.
    fn loss(pred: Tensor<3>, y: Tensor<2>, w: Tensor<2>) -> Tensor<1> {
        let wsum = w.clone().sum().into_scalar::<f32>().max(1e-6);
        let mut total: Option<Tensor<1>> = None;
        for (k, q) in QUANTILES.iter().enumerate() {
            let p = pred.clone().narrow(2, k, 1).squeeze_dim::<2>(2);
            let e = y.clone() - p;
            let l = relu(e.clone()) * (*q as f32) + relu(-e) * (1.0 - *q as f32);
            let l = (l * w.clone()).sum().div_scalar(wsum);
            total = Some(match total {
                Some(t) => t + l,
                None => l,
            });
        }
        total.expect("three quantiles")
    }
}

/// The CPU (flex) device unless a GPU backend was compiled in and asked
/// for with `SHADOW_FORECAST_DEVICE=wgpu|cuda`.
pub fn default_device() -> Device {
    match std::env::var("SHADOW_FORECAST_DEVICE").as_deref() {
        #[cfg(feature = "wgpu")]
        Ok("wgpu") => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        Ok("cuda") => Device::cuda(0),
        _ => Device::flex(),
    }
}

/// A small seeded generator for shuffling (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

impl Model for LstmModel {
    fn name(&self) -> &'static str {
        "lstm"
    }

    fn min_history(&self) -> usize {
        let l = Layout {
            window: self.config.window,
            horizon: self.config.horizon,
            season: 1,
            related: false,
        };
        l.first_origin() + l.horizon + 64
    }

    fn fit(&mut self, input: &Input<'_>) -> Result<(), ForecastError> {
        input.validate(self.min_history())?;
        let layout = self.layout_for(input.len(), input.related.is_some());
        let scaler = Scaler::fit(input.values, input.weights);
        let rel_scaler = input.related.map(|r| Scaler::fit(r, input.weights));
        let z = scaler.norm_all(input.values);
        let zr = rel_scaler.zip(input.related).map(|(s, r)| s.norm_all(r));
        let origins: Vec<usize> = layout.train_origins(input.len()).collect();
        let split = origins.len() - (origins.len() * 15 / 100).max(1);
        let (train, val) = origins.split_at(split);
        // Validation on at most 256 evenly spread origins keeps each epoch cheap.
        let val: Vec<usize> = val
            .iter()
            .step_by(val.len().div_ceil(256).max(1))
            .copied()
            .collect();
        let c = self.config.clone();

        self.device.seed(c.seed);
        let train_device = self.device.clone().autodiff();
        let mut net = Net::new(&layout, c.hidden, &train_device);
        let mut optim = AdamConfig::new()
            .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
            .init();
        let mut rng = Rng(c.seed | 1);
        let vb = self.batch(&layout, &z, zr.as_deref(), input.weights, input, &val);
        let (ve, vd, vy, vw) = Self::tensors(&layout, &vb, &self.device);
        let (mut best, mut best_loss, mut since, mut epochs) = (net.valid(), f64::INFINITY, 0, 0);
        for _ in 0..c.epochs {
            epochs += 1;
            let n = c.samples_per_epoch.min(train.len());
            let picks: Vec<usize> = (0..n).map(|_| train[rng.below(train.len())]).collect();
            for chunk in picks.chunks(c.batch) {
                let b = self.batch(&layout, &z, zr.as_deref(), input.weights, input, chunk);
                let (e, d, y, w) = Self::tensors(&layout, &b, &train_device);
                let loss = Self::loss(net.forward(e, d), y, w);
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = optim.step(c.learning_rate, net, grads);
            }
            let v = net.valid();
            let vl = f64::from(
                Self::loss(v.forward(ve.clone(), vd.clone()), vy.clone(), vw.clone())
                    .into_scalar::<f32>(),
            );
            if vl < best_loss {
                (best, best_loss, since) = (v, vl, 0);
            } else {
                since += 1;
                if since >= c.patience {
                    break;
                }
            }
        }
        if !best_loss.is_finite() {
            return Err(ForecastError::Model {
                model: "lstm".into(),
                reason: "training diverged (non-finite loss)".into(),
            });
        }
        let meta = Meta {
            config: c,
            layout,
            scaler,
            related: rel_scaler,
            epochs_run: epochs,
            val_loss: best_loss,
        };
        let plain = best.plain()?;
        self.trained = Some((meta, best, plain));
        Ok(())
    }

    fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError> {
        let (meta, enc, dec) = self.prepare(input, horizon)?;
        let (_, _, plain) = self.trained.as_ref().expect("prepared");
        let out = plain.forward(&enc, &dec, meta.layout.decoder_features());
        Ok(Self::denormalised(meta, input, horizon, &out))
    }
}

impl LstmModel {
    /// Checks the input and builds the encoder and decoder rows of one
    /// forecast from its end.
    fn prepare(
        &self,
        input: &Input<'_>,
        horizon: usize,
    ) -> Result<(&Meta, Vec<f32>, Vec<f32>), ForecastError> {
        let Some((meta, _, _)) = &self.trained else {
            return Err(ForecastError::Model {
                model: "lstm".into(),
                reason: "not trained".into(),
            });
        };
        let l = meta.layout;
        if horizon > l.horizon {
            return Err(ForecastError::Horizon {
                requested: horizon,
                max: l.horizon,
            });
        }
        input.validate(l.first_origin())?;
        if l.related != input.related.is_some() {
            return Err(ForecastError::Model {
                model: "lstm".into(),
                reason: format!(
                    "trained {} a related series",
                    if l.related { "with" } else { "without" }
                ),
            });
        }
        // Only the tail that the window and the seasonal lag reach is needed.
        let keep = l.first_origin() + 1;
        let off = input.len().saturating_sub(keep);
        let z = meta.scaler.norm_all(&input.values[off..]);
        let zr = meta
            .related
            .zip(input.related)
            .map(|(s, r)| s.norm_all(&r[off..]));
        let o = z.len();
        let start = input.time(off);
        let (mut enc, mut dec) = (Vec::new(), Vec::new());
        l.encoder(&z, zr.as_deref(), start, input.step, o, &mut enc);
        l.decoder(&z, start, input.step, o, horizon, &mut dec);
        Ok((meta, enc, dec))
    }

    fn denormalised(meta: &Meta, input: &Input<'_>, horizon: usize, out: &[f32]) -> Forecast {
        let q = |k: usize| {
            (0..horizon)
                .map(|h| meta.scaler.denorm(out[h * 3 + k]))
                .collect()
        };
        Forecast {
            start: input.time(input.len()),
            step: input.step,
            p10: q(0),
            p50: q(1),
            p90: q(2),
        }
    }

    /// The same forecast evaluated by burn on the model's device: what
    /// [`crate::infer`] is checked against.
    pub fn forecast_with_burn(
        &self,
        input: &Input<'_>,
        horizon: usize,
    ) -> Result<Forecast, ForecastError> {
        let (meta, enc, dec) = self.prepare(input, horizon)?;
        let (_, net, _) = self.trained.as_ref().expect("prepared");
        let l = meta.layout;
        let e = Tensor::<3>::from_data(
            TensorData::new(enc, [1, l.window, l.encoder_features()]),
            &self.device,
        );
        let d = Tensor::<3>::from_data(
            TensorData::new(dec, [1, horizon, l.decoder_features()]),
            &self.device,
        );
        let out: Vec<f32> = net
            .forward(e, d)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| ForecastError::Model {
                model: "lstm".into(),
                reason: format!("{e:?}"),
            })?;
        Ok(Self::denormalised(meta, input, horizon, &out))
    }
}

impl LstmModel {
    /// Writes `lstm.bpk` (weights, burnpack) and `lstm.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ForecastError> {
        let err = |reason: String| ForecastError::Persist {
            path: dir.display().to_string(),
            reason,
        };
        let (meta, net, _) = self
            .trained
            .as_ref()
            .ok_or_else(|| err("not trained".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        net.clone()
            .save_file(dir.join("lstm.bpk"))
            .map_err(|e| err(format!("{e:?}")))?;
        let json = serde_json::to_vec_pretty(meta).map_err(|e| err(e.to_string()))?;
        std::fs::write(dir.join("lstm.json"), json).map_err(|e| err(e.to_string()))
    }

    /// Loads what [`LstmModel::save`] wrote.
    pub fn load(dir: &Path) -> Result<Self, ForecastError> {
        let err = |reason: String| ForecastError::Persist {
            path: dir.display().to_string(),
            reason,
        };
        let json = std::fs::read(dir.join("lstm.json")).map_err(|e| err(e.to_string()))?;
        let meta: Meta = serde_json::from_slice(&json).map_err(|e| err(e.to_string()))?;
        let device = default_device();
        let net = Net::new(&meta.layout, meta.config.hidden, &device)
            .try_load_file(dir.join("lstm.bpk"))
            .map_err(|e| err(format!("{e:?}")))?;
        let plain = net.plain()?;
        Ok(Self {
            config: meta.config.clone(),
            device,
            trained: Some((meta, net, plain)),
        })
    }
}
