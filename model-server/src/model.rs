//! The model: a linear or logistic function of a feature vector, with a label per side of a
//! threshold. Loaded from a JSON file of weights.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `score = sigmoid(w·x + b)`, a probability.
    Logistic,
    /// `score = w·x + b`.
    Linear,
}

/// The model file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub kind: Kind,
    /// Feature names, for people; only their count matters here.
    #[serde(default)]
    pub features: Vec<String>,
    pub weights: Vec<f64>,
    #[serde(default)]
    pub bias: f64,
    /// `labels[0]` below the threshold, `labels[1]` at or above it.
    pub labels: [String; 2],
    pub threshold: f64,
}

/// One prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction<'a> {
    pub score: f64,
    pub label: &'a str,
}

/// Where a model comes from: `file:///path`, or a plain path.
pub fn path_of(uri: &str) -> Result<PathBuf, String> {
    match uri.split_once("://") {
        None => Ok(PathBuf::from(uri)),
        Some(("file", path)) => Ok(PathBuf::from(path)),
        Some((scheme, _)) => Err(format!(
            "MODEL_URI {uri:?}: only file:// or a plain path is supported, not {scheme}://"
        )),
    }
}

impl Model {
    pub fn load(uri: &str) -> Result<Model, String> {
        let path = path_of(uri)?;
        let text = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Model::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &[u8]) -> Result<Model, String> {
        let model: Model = serde_json::from_slice(text).map_err(|e| format!("not a model: {e}"))?;
        if model.weights.is_empty() {
            return Err("a model needs at least one weight".into());
        }
        if !model.features.is_empty() && model.features.len() != model.weights.len() {
            return Err(format!(
                "{} features but {} weights",
                model.features.len(),
                model.weights.len()
            ));
        }
        if model
            .weights
            .iter()
            .chain([&model.bias, &model.threshold])
            .any(|w| !w.is_finite())
        {
            return Err("weights, bias and threshold must be finite numbers".into());
        }
        Ok(model)
    }

    pub fn inputs(&self) -> usize {
        self.weights.len()
    }

    /// Predicts one instance, or says why the instance is invalid.
    pub fn predict(&self, instance: &[f64]) -> Result<Prediction<'_>, String> {
        if instance.len() != self.weights.len() {
            return Err(format!(
                "an instance has {} features, the model takes {}",
                instance.len(),
                self.weights.len()
            ));
        }
        let linear = self.bias
            + self
                .weights
                .iter()
                .zip(instance)
                .map(|(w, x)| w * x)
                .sum::<f64>();
        let score = match self.kind {
            Kind::Linear => linear,
            Kind::Logistic => 1.0 / (1.0 + (-linear).exp()),
        };
        Ok(Prediction {
            score,
            label: self.label(score),
        })
    }

    /// Predicts with `shift` added to the score (clamped to [0, 1] for a probability); the
    /// label follows the shifted score.
    pub fn predict_shifted(&self, instance: &[f64], shift: f64) -> Result<Prediction<'_>, String> {
        let p = self.predict(instance)?;
        if shift == 0.0 {
            return Ok(p);
        }
        let score = match self.kind {
            Kind::Logistic => (p.score + shift).clamp(0.0, 1.0),
            Kind::Linear => p.score + shift,
        };
        Ok(Prediction {
            score,
            label: self.label(score),
        })
    }

    fn label(&self, score: f64) -> &str {
        &self.labels[usize::from(score >= self.threshold)]
    }

    /// A deliberately wrong answer: the other label, and a score on the other side
    /// (`1 - score` for a probability, `score + 1` otherwise).
    pub fn alter<'a>(&'a self, prediction: &Prediction<'a>) -> Prediction<'a> {
        let score = match self.kind {
            Kind::Logistic => 1.0 - prediction.score,
            Kind::Linear => prediction.score + 1.0,
        };
        let label = if prediction.label == self.labels[0] {
            &self.labels[1]
        } else {
            &self.labels[0]
        };
        Prediction { score, label }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logistic() -> Model {
        Model::parse(br#"{"kind":"logistic","weights":[1.0,-1.0],"bias":0.0,"labels":["no","yes"],"threshold":0.5}"#).unwrap()
    }

    #[test]
    fn logistic_scores_are_probabilities() {
        let model = logistic();
        let p = model.predict(&[0.0, 0.0]).unwrap();
        assert_eq!(
            p,
            Prediction {
                score: 0.5,
                label: "yes"
            }
        );
        let p = model.predict(&[0.0, 3.0]).unwrap();
        assert!(p.score < 0.05);
        assert_eq!(p.label, "no");
    }

    #[test]
    fn linear_scores() {
        let model = Model::parse(br#"{"kind":"linear","weights":[2.0],"bias":1.0,"labels":["low","high"],"threshold":4}"#).unwrap();
        assert_eq!(
            model.predict(&[1.0]).unwrap(),
            Prediction {
                score: 3.0,
                label: "low"
            }
        );
        assert_eq!(
            model.predict(&[2.0]).unwrap(),
            Prediction {
                score: 5.0,
                label: "high"
            }
        );
    }

    #[test]
    fn altered_always_disagrees() {
        let model = logistic();
        for x in [-3.0, 0.0, 0.0001, 2.0] {
            let p = model.predict(&[x, 0.0]).unwrap();
            let a = model.alter(&p);
            assert_ne!(a.label, p.label);
        }
    }

    #[test]
    fn bad_models_and_instances() {
        assert!(
            Model::parse(br#"{"kind":"logistic","weights":[],"labels":["a","b"],"threshold":0.5}"#)
                .is_err()
        );
        assert!(Model::parse(br#"{"kind":"logistic","features":["a"],"weights":[1,2],"labels":["a","b"],"threshold":0.5}"#).is_err());
        assert!(
            Model::parse(br#"{"kind":"tree","weights":[1],"labels":["a","b"],"threshold":0.5}"#)
                .is_err()
        );
        assert!(logistic().predict(&[1.0]).is_err());
    }

    #[test]
    fn uris() {
        assert_eq!(
            path_of("file:///m/x.json").unwrap(),
            PathBuf::from("/m/x.json")
        );
        assert_eq!(
            path_of("models/x.json").unwrap(),
            PathBuf::from("models/x.json")
        );
        assert!(path_of("s3://bucket/x.json").is_err());
    }

    #[test]
    fn shipped_models_load() {
        for name in ["churn-v1.json", "churn-v2.json", "price-linear.json"] {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/").to_owned() + name;
            Model::load(&path).unwrap();
        }
    }
}
