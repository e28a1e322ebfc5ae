//! Candidate versions: the semantic version each run bumps, the full version name and the
//! artifact URI. Pure.
use crate::api::{Bump, ModelSpec};
use jiff::Timestamp;
use semver::Version;

/// The longest version: it is put on pods as a label value.
pub const MAX_VERSION_LEN: usize = 63;

/// What a run builds: its candidate's version and where the artifact goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub semver: String,
    pub version: String,
    pub artifact: String,
}

/// The semantic version of the next candidate: the latest candidate's, bumped as the spec
/// says, or `initialVersion` for the first. An `initialVersion` above the bumped version
/// wins, so raising it starts a new major line.
pub fn next_semver(latest: Option<&str>, initial: &str, bump: Bump) -> Result<Version, String> {
    let initial = Version::parse(initial)
        .map_err(|e| format!("spec.model.initialVersion {initial:?}: {e}"))?;
    let Some(latest) = latest else {
        return Ok(initial);
    };
    let latest = Version::parse(latest)
        .map_err(|e| format!("the latest candidate's semantic version {latest:?}: {e}"))?;
    let bumped = match bump {
        Bump::Major => Version::new(latest.major + 1, 0, 0),
        Bump::Minor => Version::new(latest.major, latest.minor + 1, 0),
        Bump::Patch => Version::new(latest.major, latest.minor, latest.patch + 1),
    };
    Ok(if initial > bumped { initial } else { bumped })
}

/// The first six letters and digits of a revision (`refs/heads/main` gives `refshe`).
pub fn short_revision(revision: &str) -> String {
    revision
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(6)
        .collect()
}

/// `<model>-v<semver>-<YYYY-MM-DD>-<short revision>`, the date in UTC.
pub fn version_name(
    model: &str,
    semver: &Version,
    date: Timestamp,
    revision: &str,
) -> Result<String, String> {
    let day = date.strftime("%Y-%m-%d");
    let short = short_revision(revision);
    let mut name = format!("{model}-v{semver}-{day}");
    if !short.is_empty() {
        name.push('-');
        name.push_str(&short);
    }
    if name.len() > MAX_VERSION_LEN {
        return Err(format!(
            "candidate version {name:?} is {} characters long, more than the {MAX_VERSION_LEN} a label value allows: shorten spec.model.name",
            name.len()
        ));
    }
    if !is_label_value(&name) {
        return Err(format!(
            "candidate version {name:?} is not a valid label value"
        ));
    }
    Ok(name)
}

/// Whether `s` is a Kubernetes label value: letters, digits, `-`, `_` and `.`, starting and
/// ending with a letter or digit.
pub fn is_label_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            s.len() <= MAX_VERSION_LEN
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `<artifactBase>/<version>/`.
pub fn artifact_uri(base: &str, version: &str) -> String {
    format!("{}/{version}/", base.trim_end_matches('/'))
}

/// Plans the candidate of a run that starts at `now` from `revision`.
pub fn plan(
    model: &ModelSpec,
    latest: Option<&str>,
    now: Timestamp,
    revision: &str,
) -> Result<Planned, String> {
    let semver = next_semver(latest, &model.initial_version, model.bump)?;
    let version = version_name(&model.name, &semver, now, revision)?;
    let artifact = artifact_uri(&model.artifact_base, &version);
    Ok(Planned {
        semver: semver.to_string(),
        version,
        artifact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn first_candidate_uses_the_initial_version() {
        assert_eq!(
            next_semver(None, "1.0.0", Bump::Minor).unwrap().to_string(),
            "1.0.0"
        );
    }

    #[test]
    fn each_part_bumps_and_resets_the_lower_parts() {
        assert_eq!(
            next_semver(Some("1.2.3"), "1.0.0", Bump::Major)
                .unwrap()
                .to_string(),
            "2.0.0"
        );
        assert_eq!(
            next_semver(Some("1.2.3"), "1.0.0", Bump::Minor)
                .unwrap()
                .to_string(),
            "1.3.0"
        );
        assert_eq!(
            next_semver(Some("1.2.3"), "1.0.0", Bump::Patch)
                .unwrap()
                .to_string(),
            "1.2.4"
        );
    }

    #[test]
    fn a_raised_initial_version_wins_over_the_bump() {
        assert_eq!(
            next_semver(Some("1.2.3"), "2.0.0", Bump::Minor)
                .unwrap()
                .to_string(),
            "2.0.0"
        );
        assert_eq!(
            next_semver(Some("2.0.0"), "2.0.0", Bump::Minor)
                .unwrap()
                .to_string(),
            "2.1.0"
        );
    }

    #[test]
    fn bad_versions_are_named() {
        assert!(
            next_semver(None, "one", Bump::Minor)
                .unwrap_err()
                .contains("initialVersion")
        );
        assert!(
            next_semver(Some("x"), "1.0.0", Bump::Minor)
                .unwrap_err()
                .contains("latest candidate")
        );
    }

    #[test]
    fn version_name_has_semver_date_and_short_revision() {
        let v = Version::new(1, 3, 0);
        let name = version_name("fraud", &v, day("2026-11-26T23:30:00Z"), "f4c9a2e17b").unwrap();
        assert_eq!(name, "fraud-v1.3.0-2026-11-26-f4c9a2");
        assert!(is_label_value(&name));
    }

    #[test]
    fn revisions_with_separators_keep_letters_and_digits() {
        assert_eq!(short_revision("refs/heads/main"), "refshe");
        assert_eq!(short_revision("v1.2"), "v12");
        assert_eq!(short_revision("ab"), "ab");
    }

    #[test]
    fn too_long_a_version_is_refused_with_the_reason() {
        let model = "a-model-name-that-is-thirty-ch";
        let err = version_name(
            model,
            &Version::new(1000, 2000, 3000),
            day("2026-01-01T00:00:00Z"),
            "abcdef",
        )
        .unwrap_err();
        assert!(err.contains("more than the 63"), "{err}");
        let ok = version_name(
            model,
            &Version::new(1, 0, 0),
            day("2026-01-01T00:00:00Z"),
            "abcdef",
        )
        .unwrap();
        assert!(ok.len() <= 63);
    }

    #[test]
    fn label_values() {
        assert!(is_label_value("a.b_c-1"));
        assert!(!is_label_value("-a"));
        assert!(!is_label_value("a/b"));
        assert!(!is_label_value(""));
        assert!(!is_label_value(&"a".repeat(64)));
    }

    #[test]
    fn artifact_goes_under_the_base() {
        assert_eq!(
            artifact_uri("s3://models/fraud/", "fraud-v1"),
            "s3://models/fraud/fraud-v1/"
        );
        assert_eq!(
            artifact_uri("s3://models/fraud", "fraud-v1"),
            "s3://models/fraud/fraud-v1/"
        );
    }

    #[test]
    fn plan_combines_everything() {
        let model: ModelSpec =
            serde_json::from_value(serde_json::json!({"name": "fraud", "artifactBase": "s3://m"}))
                .unwrap();
        let p = plan(
            &model,
            Some("1.2.0"),
            day("2026-11-26T10:00:00Z"),
            "f4c9a2e1",
        )
        .unwrap();
        assert_eq!(p.semver, "1.3.0");
        assert_eq!(p.version, "fraud-v1.3.0-2026-11-26-f4c9a2");
        assert_eq!(p.artifact, "s3://m/fraud-v1.3.0-2026-11-26-f4c9a2/");
    }
}
