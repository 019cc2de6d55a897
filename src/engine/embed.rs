//! Embeddings from a run's last hidden layer: pooling the per-token states into one vector and
//! normalising it.

use std::fmt;
use std::str::FromStr;

use crate::runtime::HiddenStates;

/// How one vector is made from the per-token hidden states (config `embedding-pooling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pooling {
    /// `Last` for models whose name says Qwen3 embedding (they are trained to put the text's
    /// meaning in the last token's state), `Mean` otherwise.
    #[default]
    Auto,
    /// The average of all tokens' states (sentence-transformers' default).
    Mean,
    /// The last token's state.
    Last,
}

impl Pooling {
    /// `Auto` resolved for a model of this name (file or configured name).
    #[must_use]
    pub fn resolve(self, model_name: &str) -> Pooling {
        match self {
            Pooling::Auto => {
                let name = model_name.to_ascii_lowercase();
                if name.contains("qwen3") && name.contains("embed") {
                    Pooling::Last
                } else {
                    Pooling::Mean
                }
            }
            other => other,
        }
    }
}

impl FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Pooling::Auto),
            "mean" => Ok(Pooling::Mean),
            "last" => Ok(Pooling::Last),
            _ => Err("one of auto, mean, last".to_owned()),
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooling::Auto => "auto",
            Pooling::Mean => "mean",
            Pooling::Last => "last",
        })
    }
}

/// The pooled, L2-normalised vector; `None` when there are no states (or `Auto` unresolved).
pub fn pool(states: &HiddenStates, pooling: Pooling) -> Option<Vec<f32>> {
    if states.num_tokens == 0 || states.embd_size == 0 {
        return None;
    }
    let mut v = match pooling {
        Pooling::Last => states.token(states.num_tokens - 1).to_vec(),
        Pooling::Mean | Pooling::Auto => {
            let mut sum = vec![0f64; states.embd_size];
            for t in 0..states.num_tokens {
                for (s, x) in sum.iter_mut().zip(states.token(t)) {
                    *s += f64::from(*x);
                }
            }
            let n = states.num_tokens as f64;
            sum.into_iter().map(|s| (s / n) as f32).collect()
        }
    };
    normalize(&mut v);
    Some(v)
}

/// Scales `v` to unit length (a zero or non-finite vector is left as it is).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm.is_finite() && norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states() -> HiddenStates {
        HiddenStates {
            values: vec![1.0, 0.0, 3.0, 4.0],
            embd_size: 2,
            num_tokens: 2,
        }
    }

    #[test]
    fn last_takes_the_last_token_normalised() {
        assert_eq!(pool(&states(), Pooling::Last), Some(vec![0.6, 0.8]));
    }

    #[test]
    fn mean_averages_then_normalises() {
        // mean (2, 2) -> (1/sqrt 2, 1/sqrt 2)
        let v = pool(&states(), Pooling::Mean).unwrap();
        assert!((v[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((v[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }

    #[test]
    fn auto_picks_last_for_qwen3_embedding_only() {
        assert_eq!(Pooling::Auto.resolve("Qwen3-Embedding-0.6B"), Pooling::Last);
        assert_eq!(Pooling::Auto.resolve("Qwen2.5-1.5B"), Pooling::Mean);
        assert_eq!(Pooling::Mean.resolve("qwen3-embedding"), Pooling::Mean);
    }

    #[test]
    fn parses_config_values() {
        assert_eq!("last".parse::<Pooling>(), Ok(Pooling::Last));
        assert!("max".parse::<Pooling>().is_err());
    }
}
