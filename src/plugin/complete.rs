//! Completion of `kubectl modelship <TAB>`: kubectl (1.26 and later) runs
//! `kubectl_complete-modelship` with the words typed after `modelship`, the last being the
//! one to complete, and reads one candidate a line and then `:<directive>` (the protocol of
//! cobra's `__complete`). That script runs `kubectl-modelship __complete "$@"`.
use super::cli::Cli;
use super::client;
use super::error::PluginError;
use crate::api::{ModelDeployment, ModelPipeline};
use clap::CommandFactory;
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::{Api, ListParams};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// The hidden first argument that asks for completions.
pub const COMMAND: &str = "__complete";

/// cobra's `ShellCompDirectiveNoFileComp`: offer no file names.
const NO_FILES: u8 = 4;

/// What completes the word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidates {
    /// Words known without asking the cluster.
    Words(Vec<String>),
    /// Names of objects of a kind, in the namespace given (or the context's).
    Names(Kind, Option<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ModelDeployment,
    ModelPipeline,
    Namespace,
}

/// The kind a command's NAME names, by the command's name.
fn kind_of(command: &str) -> Option<Kind> {
    match command {
        "deployment" | "history" | "approve" | "promote" | "abort" | "retry" | "status" => {
            Some(Kind::ModelDeployment)
        }
        "pipeline" | "run" | "approve-run" | "reject-run" => Some(Kind::ModelPipeline),
        _ => None,
    }
}

/// The candidates for the last of `args` (the words after `modelship`).
pub fn candidates(args: &[String]) -> Candidates {
    let mut root = Cli::command();
    root.build();
    let (partial, typed) = match args.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", args),
    };
    let mut cmd = &root;
    let mut positionals = 0;
    let mut namespace = None;
    let mut value_of: Option<&clap::Arg> = None;
    // `history --pipeline NAME` names a ModelPipeline.
    let mut pipeline = false;
    for word in typed {
        if let Some(arg) = value_of.take() {
            if arg.get_id() == "namespace" {
                namespace = Some(word.clone());
            }
            continue;
        }
        if let Some(flag) = word.strip_prefix("--") {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (flag, None),
            };
            pipeline |= name == "pipeline";
            let arg = cmd.get_arguments().find(|a| a.get_long() == Some(name));
            match (arg, inline) {
                (Some(a), Some(v)) if a.get_id() == "namespace" => namespace = Some(v.into()),
                (Some(a), None) if takes_value(a) => value_of = Some(a),
                _ => {}
            }
        } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            let c = short.chars().next().unwrap_or_default();
            let arg = cmd.get_arguments().find(|a| a.get_short() == Some(c));
            match arg {
                Some(a) if short.len() > 1 && a.get_id() == "namespace" => {
                    namespace = Some(short[1..].into())
                }
                Some(a) if short.len() == 1 && takes_value(a) => value_of = Some(a),
                _ => {}
            }
        } else if let Some(sub) = cmd.find_subcommand(word) {
            cmd = sub;
            positionals = 0;
        } else {
            positionals += 1;
        }
    }
    let starting = |words: Vec<String>| {
        Candidates::Words(
            words
                .into_iter()
                .filter(|w| w.starts_with(partial))
                .collect(),
        )
    };
    if let Some(arg) = value_of {
        if arg.get_id() == "namespace" {
            return Candidates::Names(Kind::Namespace, None);
        }
        return starting(
            arg.get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect(),
        );
    }
    if partial.starts_with('-') {
        return starting(
            cmd.get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect(),
        );
    }
    if cmd.has_subcommands() {
        return starting(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .map(|s| s.get_name().to_string())
                .collect(),
        );
    }
    if cmd.get_name() == "completion" && positionals == 0 {
        let shells = cmd
            .get_arguments()
            .flat_map(|a| a.get_possible_values())
            .map(|v| v.get_name().to_string())
            .collect();
        return starting(shells);
    }
    let kind = match cmd.get_name() {
        "history" if pipeline => Some(Kind::ModelPipeline),
        name => kind_of(name),
    };
    match kind {
        Some(kind) if positionals == 0 => Candidates::Names(kind, namespace),
        _ => Candidates::Words(vec![]),
    }
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
}

/// Answers kubectl: the candidates, then the directive. Names come from the cluster; a
/// cluster that cannot be reached completes nothing rather than failing the shell.
pub async fn run(args: &[String]) -> u8 {
    let partial = args.last().map(String::as_str).unwrap_or_default();
    let words = match candidates(args) {
        Candidates::Words(words) => words,
        Candidates::Names(kind, namespace) => names(kind, namespace)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.starts_with(partial))
            .collect(),
    };
    for w in words {
        println!("{w}");
    }
    println!(":{NO_FILES}");
    0
}

async fn names(kind: Kind, namespace: Option<String>) -> Result<Vec<String>, PluginError> {
    let (client, ns) = client::connect(namespace, None).await?;
    match kind {
        Kind::ModelDeployment => list::<ModelDeployment>(Api::namespaced(client, &ns)).await,
        Kind::ModelPipeline => list::<ModelPipeline>(Api::namespaced(client, &ns)).await,
        Kind::Namespace => list::<Namespace>(Api::all(client)).await,
    }
}

async fn list<K>(api: Api<K>) -> Result<Vec<String>, PluginError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = api.list_metadata(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(words: &[&str]) -> Candidates {
        let args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        candidates(&args)
    }

    fn words(words: &[&str]) -> Candidates {
        Candidates::Words(words.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn commands_complete_by_prefix() {
        assert_eq!(complete(&["app"]), words(&["approve", "approve-run"]));
        assert_eq!(complete(&["get", ""]), words(&["deployment", "pipeline"]));
    }

    #[test]
    fn a_name_completes_with_objects_of_the_commands_kind() {
        assert_eq!(
            complete(&["get", "deployment", "fr"]),
            Candidates::Names(Kind::ModelDeployment, None)
        );
        assert_eq!(
            complete(&["-n", "models", "approve-run", ""]),
            Candidates::Names(Kind::ModelPipeline, Some("models".into()))
        );
        assert_eq!(
            complete(&["status", "--namespace=ml", ""]),
            Candidates::Names(Kind::ModelDeployment, Some("ml".into()))
        );
        assert_eq!(
            complete(&["history", "--pipeline", ""]),
            Candidates::Names(Kind::ModelPipeline, None)
        );
        // The version after the name is not an object name.
        assert_eq!(complete(&["approve", "fraud", ""]), words(&[]));
    }

    #[test]
    fn flags_and_their_values_complete() {
        assert_eq!(
            complete(&["get", "md", "fraud", "-o", ""]),
            words(&["json", "yaml"])
        );
        assert_eq!(complete(&["status", "fraud", "--t"]), words(&["--timeout"]));
        assert_eq!(
            complete(&["-n", ""]),
            Candidates::Names(Kind::Namespace, None)
        );
        assert_eq!(complete(&["completion", "z"]), words(&["zsh"]));
    }
}
