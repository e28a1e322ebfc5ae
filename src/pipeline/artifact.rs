//! The one artifact a run evaluates, serves and publishes: fixed when train reports it. Pure.
use crate::api::{ArtifactRef, ModelSpec};

/// Whether `uri` lies strictly below `base`: `base` (without its trailing `/`) is a prefix
/// that ends on a path boundary, something follows it, and no segment is `.` or `..` (a store
/// or a client may resolve those to somewhere outside the base).
pub fn under_base(uri: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    let Some(rest) = uri.strip_prefix(base).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    !base.is_empty() && !rest.trim_matches('/').is_empty() && !has_dot_segment(uri)
}

fn has_dot_segment(uri: &str) -> bool {
    let path = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    path.contains('\\')
        || path.split('/').any(|segment| {
            let decoded = segment.replace("%2e", ".").replace("%2E", ".");
            decoded == "." || decoded == ".."
        })
}

/// The bases a train-reported URI may be under: `artifactBase`, then the allowed others.
pub fn allowed_bases(model: &ModelSpec) -> Vec<&str> {
    std::iter::once(model.artifact_base.as_str())
        .chain(model.allowed_artifact_bases.iter().map(String::as_str))
        .collect()
}

/// The run's artifact from what train reported: its URI (else `planned`, where train was told
/// to write) and its sha256. A reported URI outside every allowed base is refused, with why.
pub fn fix(
    planned: &str,
    reported: Option<&ArtifactRef>,
    model: &ModelSpec,
) -> Result<ArtifactRef, String> {
    let sha256 = reported.and_then(|a| a.sha256.clone());
    let Some(uri) = reported.and_then(|a| a.uri.clone()) else {
        return Ok(ArtifactRef {
            uri: Some(planned.to_string()),
            sha256,
        });
    };
    let bases = allowed_bases(model);
    // The planned URI is the operator's own; anything else must stay under a base the spec names.
    if uri != planned && !bases.iter().any(|b| under_base(&uri, b)) {
        return Err(format!(
            "stage train reported artifact.uri {uri:?}, which is not under spec.model.artifactBase or spec.model.allowedArtifactBases ({}); nothing outside them is evaluated or published",
            bases.join(", ")
        ));
    }
    Ok(ArtifactRef {
        uri: Some(uri),
        sha256,
    })
}

/// Checks that evaluate scored the fixed artifact. When train reported a digest, evaluate
/// must report the same one: a missing digest fails too, since nothing shows what was scored.
pub fn check_scored(fixed: &ArtifactRef, scored: Option<&ArtifactRef>) -> Result<(), String> {
    if let (Some(want), Some(got)) = (&fixed.uri, scored.and_then(|a| a.uri.as_ref()))
        && want != got
    {
        return Err(format!(
            "stage evaluate scored the artifact at {got:?}, but the run's artifact (fixed when train ended) is at {want:?}"
        ));
    }
    let Some(want) = &fixed.sha256 else {
        return Ok(());
    };
    match scored.and_then(|a| a.sha256.as_ref()) {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(format!(
            "stage evaluate scored an artifact with sha256 {got}, but train reported sha256 {want}: the model evaluated is not the one that would be published"
        )),
        None => Err(format!(
            "stage evaluate reported no artifact.sha256, but train reported sha256 {want}: evaluate must report the digest of the artifact it scored (MODELSHIP_ARTIFACT_SHA256)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing::sample;

    const SHA: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const OTHER: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn art(uri: Option<&str>, sha: Option<&str>) -> ArtifactRef {
        ArtifactRef {
            uri: uri.map(Into::into),
            sha256: sha.map(Into::into),
        }
    }

    #[test]
    fn only_uris_strictly_below_the_base_are_under_it() {
        let base = "s3://models/fraud";
        for ok in [
            "s3://models/fraud/v1/",
            "s3://models/fraud/v1/model.bin",
            "s3://models/fraud/a..b/",
        ] {
            assert!(under_base(ok, base), "{ok}");
            assert!(under_base(ok, "s3://models/fraud/"), "{ok} (base with /)");
        }
        for refused in [
            "s3://models/fraud",
            "s3://models/fraud/",
            "s3://models/fraud-evil/v1/",
            "s3://models/fraudulent/v1/",
            "s3://models/fraud/../other/v1/",
            "s3://models/fraud/v1/../../x/",
            "s3://models/fraud/./v1/",
            "s3://models/fraud/%2e%2e/x/",
            "s3://models/fraud/%2E%2e/x/",
            "s3://models/fraud/..\\x/",
            "gs://models/fraud/v1/",
            "S3://models/fraud/v1/",
            "s3://evil/models/fraud/v1/",
        ] {
            assert!(!under_base(refused, base), "{refused}");
        }
    }

    #[test]
    fn a_reported_uri_outside_every_base_is_refused() {
        let mut p = sample();
        let planned = "s3://models/fraud/fraud-v1/";
        let model = &p.spec.model;
        assert_eq!(
            fix(planned, None, model).unwrap(),
            art(Some(planned), None),
            "nothing reported: the planned URI"
        );
        assert_eq!(
            fix(planned, Some(&art(None, Some(SHA))), model).unwrap(),
            art(Some(planned), Some(SHA))
        );
        assert_eq!(
            fix(
                planned,
                Some(&art(Some("s3://models/fraud/x/"), Some(SHA))),
                model
            )
            .unwrap(),
            art(Some("s3://models/fraud/x/"), Some(SHA))
        );
        let err = fix(
            planned,
            Some(&art(Some("gs://elsewhere/m/"), Some(SHA))),
            model,
        )
        .unwrap_err();
        assert!(
            err.contains("\"gs://elsewhere/m/\"") && err.contains("s3://models/fraud"),
            "{err}"
        );
        // The spec may allow another base explicitly.
        p.spec.model.allowed_artifact_bases = vec!["gs://elsewhere".into()];
        assert_eq!(
            fix(
                planned,
                Some(&art(Some("gs://elsewhere/m/"), None)),
                &p.spec.model
            )
            .unwrap(),
            art(Some("gs://elsewhere/m/"), None)
        );
        assert!(
            fix(
                planned,
                Some(&art(Some("gs://elsewhere/../m/"), None)),
                &p.spec.model
            )
            .is_err()
        );
    }

    #[test]
    fn evaluate_must_score_the_fixed_digest() {
        let fixed = art(Some("s3://models/fraud/v1/"), Some(SHA));
        assert!(check_scored(&fixed, Some(&art(None, Some(SHA)))).is_ok());
        assert!(check_scored(&fixed, Some(&art(Some("s3://models/fraud/v1/"), Some(SHA)))).is_ok());
        let err = check_scored(&fixed, Some(&art(None, Some(OTHER)))).unwrap_err();
        assert!(err.contains(SHA) && err.contains(OTHER), "{err}");
        let err = check_scored(&fixed, None).unwrap_err();
        assert!(
            err.contains("reported no artifact.sha256") && err.contains(SHA),
            "{err}"
        );
        let err =
            check_scored(&fixed, Some(&art(Some("s3://models/fraud/v2/"), Some(SHA)))).unwrap_err();
        assert!(err.contains("s3://models/fraud/v2/"), "{err}");
        // Without a digest from train there is nothing to compare.
        assert!(check_scored(&art(Some("s3://models/fraud/v1/"), None), None).is_ok());
    }
}
