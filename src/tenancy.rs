//! Who writes a namespace's workloads: the operator itself, or a ServiceAccount of that
//! namespace that it impersonates (the model Flux uses for multi-tenancy).
//!
//! When a ModelDeployment or ModelPipeline names `spec.serviceAccountName`, or the operator
//! runs with `--default-service-account`, every write of its children (server-side applies and
//! deletes of Deployments, Services, Jobs, provider routes) is sent as
//! `system:serviceaccount:<namespace>:<name>`: the namespace's own RBAC decides what may be
//! created, and a user who may create modelship's objects but not pods gets no more through
//! the operator than that ServiceAccount may do. Status writes, events and the caches' reads
//! stay with the operator's own identity.
use crate::api::{ModelDeployment, ModelPipeline};
use crate::{Error, Result};
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// An object whose children may be written under a ServiceAccount of its namespace.
pub trait Tenant: Resource<DynamicType = ()> {
    /// `spec.serviceAccountName`, if set.
    fn service_account_name(&self) -> Option<&str>;
}

impl Tenant for ModelDeployment {
    fn service_account_name(&self) -> Option<&str> {
        self.spec.service_account_name.as_deref()
    }
}

impl Tenant for ModelPipeline {
    fn service_account_name(&self) -> Option<&str> {
        self.spec.service_account_name.as_deref()
    }
}

/// A ServiceAccount: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Account {
    pub namespace: String,
    pub name: String,
}

impl Account {
    /// The user name the API server knows the ServiceAccount by, which impersonation sends.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The ServiceAccount `owner`'s children are written as: its own `spec.serviceAccountName`,
/// else `default` (`--default-service-account`), in the owner's namespace; `None` when
/// neither is set (the operator's own identity, as before the setting existed).
pub fn account_of<O: Tenant>(owner: &O, default: Option<&str>) -> Option<Account> {
    let name = owner
        .service_account_name()
        .or(default)
        .filter(|n| !n.is_empty())?;
    Some(Account {
        namespace: owner.namespace().unwrap_or_default(),
        name: name.to_string(),
    })
}

/// Builds a Client that sends every request as `user` (an `Impersonate-User` header).
pub type Connect = Arc<dyn Fn(&str) -> Result<Client, kube::Error> + Send + Sync>;

/// Connects as `user` from the operator's own configuration: same server, same credentials,
/// plus the impersonation header.
pub fn connect_from(config: kube::Config) -> Connect {
    Arc::new(move |user: &str| {
        let mut config = config.clone();
        config.auth_info.impersonate = Some(user.to_string());
        Client::try_from(config)
    })
}

/// Impersonating clients kept at most: one per ServiceAccount in use, the least recently
/// used dropped past this (a client is cheap to build again).
pub const MAX_CLIENTS: usize = 256;

/// The clients that impersonate each ServiceAccount in use, built on demand.
pub struct Impersonation {
    connect: Option<Connect>,
    clients: Mutex<HashMap<Account, (Client, Instant)>>,
    capacity: usize,
}

impl Impersonation {
    pub fn new(connect: Option<Connect>) -> Self {
        Self {
            connect,
            clients: Mutex::new(HashMap::new()),
            capacity: MAX_CLIENTS,
        }
    }

    #[cfg(test)]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The client that impersonates `account`.
    pub fn client(&self, account: &Account) -> Result<Client> {
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((client, used)) = map.get_mut(account) {
            *used = now;
            return Ok(client.clone());
        }
        let connect = self.connect.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "cannot impersonate ServiceAccount {account}: the operator has no configuration to connect with"
            ))
        })?;
        let client = connect(&account.user()).map_err(|e| {
            Error::Config(format!("cannot impersonate ServiceAccount {account}: {e}"))
        })?;
        if map.len() >= self.capacity {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(a, _)| a.clone());
            if let Some(a) = oldest {
                map.remove(&a);
            }
        }
        map.insert(account.clone(), (client.clone(), now));
        Ok(client)
    }

    /// Clients held.
    pub fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The identity one owner's children are written with.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    account: Option<Account>,
}

impl Writer {
    /// The operator's own identity.
    pub fn own(client: Client) -> Self {
        Self {
            client,
            account: None,
        }
    }

    pub fn impersonating(client: Client, account: Account) -> Self {
        Self {
            client,
            account: Some(account),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The ServiceAccount impersonated, if any.
    pub fn account(&self) -> Option<&Account> {
        self.account.as_ref()
    }

    pub fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope>>(
        &self,
        namespace: &str,
    ) -> Api<K>
    where
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The error a failed write becomes: a refusal (403) of a write sent as a ServiceAccount
    /// is `Forbidden`, naming the ServiceAccount and what it may not do; anything else as
    /// usual.
    pub fn error(&self, e: kube::Error) -> Error {
        match (&self.account, &e) {
            (Some(account), kube::Error::Api(status)) if status.code == 403 => {
                Error::Forbidden(forbidden_message(account, &status.message))
            }
            _ => Error::from(e),
        }
    }
}

/// What the API server's refusal says: `User "<user>" cannot <verb> resource "<resource>"
/// in API group "<group>" in the namespace "<namespace>"` (or `at the cluster scope`).
#[derive(Debug, PartialEq, Eq)]
pub struct Denied {
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub group: String,
    pub namespace: Option<String>,
}

fn quoted_after<'a>(s: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = s.strip_prefix(prefix)?;
    let end = rest.find('"')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// Reads a 403's message (the RBAC authorizer's wording); `None` when it is worded otherwise.
pub fn parse_denied(message: &str) -> Option<Denied> {
    let at = message.find("User \"")?;
    let (user, rest) = quoted_after(&message[at..], "User \"")?;
    let rest = rest.strip_prefix(" cannot ")?;
    let space = rest.find(' ')?;
    let (verb, rest) = (&rest[..space], &rest[space..]);
    let (resource, rest) = quoted_after(rest, " resource \"")?;
    let (group, rest) = quoted_after(rest, " in API group \"")?;
    let namespace = quoted_after(rest, " in the namespace \"").map(|(ns, _)| ns.to_string());
    Some(Denied {
        user: user.to_string(),
        verb: verb.to_string(),
        resource: resource.to_string(),
        group: group.to_string(),
        namespace,
    })
}

/// What a user reads when a write sent as `account` was refused with `message`.
pub fn forbidden_message(account: &Account, message: &str) -> String {
    let hint = "grant it in the namespace's RBAC (a Role bound to the ServiceAccount), or name another ServiceAccount in spec.serviceAccountName";
    let Some(denied) = parse_denied(message) else {
        return format!(
            "ServiceAccount {account} may not write this object's workloads ({message}): {hint}"
        );
    };
    if denied.user != account.user() {
        // Impersonation itself was refused: the operator's own rights, not the tenant's.
        return format!(
            "the operator may not act as ServiceAccount {account} ({message}): give the operator's ServiceAccount the impersonate verb on serviceaccounts (the chart's ClusterRole does)"
        );
    }
    let resource = match denied.group.as_str() {
        "" => denied.resource.clone(),
        group => format!("{}.{group}", denied.resource),
    };
    let scope = match &denied.namespace {
        Some(ns) => format!("in {ns}"),
        None => "at the cluster scope".to_string(),
    };
    format!(
        "ServiceAccount {account} may not {} {resource} {scope}: {hint}",
        denied.verb
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            namespace: "models".into(),
            name: "tenant".into(),
        }
    }

    #[test]
    fn a_service_account_is_impersonated_by_its_user_name() {
        assert_eq!(account().user(), "system:serviceaccount:models:tenant");
        assert_eq!(account().to_string(), "models/tenant");
    }

    #[test]
    fn the_spec_names_the_account_else_the_default_else_none() {
        let mut md = crate::deployment::testing::sample();
        assert_eq!(account_of(&md, None), None, "neither: the operator's own");
        assert_eq!(account_of(&md, Some("")), None, "an empty flag is unset");
        let ns = md.namespace().unwrap();
        assert_eq!(
            account_of(&md, Some("modelship-tenant")),
            Some(Account {
                namespace: ns.clone(),
                name: "modelship-tenant".into()
            })
        );
        md.spec.service_account_name = Some("trainer".into());
        assert_eq!(
            account_of(&md, Some("modelship-tenant")).map(|a| a.name),
            Some("trainer".into()),
            "the spec wins"
        );
        assert_eq!(account_of(&md, None).map(|a| a.namespace), Some(ns));
    }

    #[test]
    fn a_refusal_names_the_account_the_verb_and_the_resource() {
        let m = r#"deployments.apps "fraud-stable" is forbidden: User "system:serviceaccount:models:tenant" cannot patch resource "deployments" in API group "apps" in the namespace "models""#;
        assert_eq!(
            parse_denied(m),
            Some(Denied {
                user: "system:serviceaccount:models:tenant".into(),
                verb: "patch".into(),
                resource: "deployments".into(),
                group: "apps".into(),
                namespace: Some("models".into()),
            })
        );
        let said = forbidden_message(&account(), m);
        assert!(
            said.starts_with(
                "ServiceAccount models/tenant may not patch deployments.apps in models: grant it in the namespace's RBAC"
            ),
            "{said}"
        );
        // The core group has no suffix; a reason after the sentence is ignored.
        let core = r#"services "fraud" is forbidden: User "system:serviceaccount:models:tenant" cannot delete resource "services" in API group "" in the namespace "models": RBAC: role.rbac.authorization.k8s.io "x" not found"#;
        assert!(
            forbidden_message(&account(), core)
                .starts_with("ServiceAccount models/tenant may not delete services in models:")
        );
    }

    #[test]
    fn a_refused_impersonation_is_the_operators_own_rights() {
        let m = r#"serviceaccounts "tenant" is forbidden: User "system:serviceaccount:modelship-system:modelship" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "models""#;
        let said = forbidden_message(&account(), m);
        assert!(
            said.starts_with("the operator may not act as ServiceAccount models/tenant"),
            "{said}"
        );
        assert!(said.contains("impersonate verb on serviceaccounts"));
    }

    #[test]
    fn a_refusal_worded_otherwise_is_quoted() {
        let said = forbidden_message(&account(), "admission webhook said no");
        assert!(said.contains("models/tenant") && said.contains("admission webhook said no"));
        assert_eq!(parse_denied("admission webhook said no"), None);
    }

    #[tokio::test]
    async fn only_a_403_of_an_impersonated_write_is_forbidden() {
        let status = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("no", "Forbidden")
                    .with_code(code)
                    .boxed(),
            )
        };
        let (client, _) = crate::mock_api::client(serde_json::Value::Null, |_, _| None);
        let own = Writer::own(client.clone());
        assert!(matches!(own.error(status(403)), Error::Kube(_)));
        let tenant = Writer::impersonating(client, account());
        assert!(
            matches!(tenant.error(status(403)), Error::Forbidden(m) if m.contains("models/tenant"))
        );
        assert!(matches!(tenant.error(status(422)), Error::Rejected(_)));
        assert!(matches!(tenant.error(status(500)), Error::Kube(_)));
    }

    #[tokio::test]
    async fn one_client_per_account_and_the_cache_is_bounded() {
        let (client, _) = crate::mock_api::client(serde_json::Value::Null, |_, _| None);
        let built = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = built.clone();
        let connect: Connect = Arc::new(move |user: &str| {
            seen.lock().unwrap().push(user.to_string());
            Ok(client.clone())
        });
        let imp = Impersonation::new(Some(connect)).with_capacity(2);
        let a = |name: &str| Account {
            namespace: "models".into(),
            name: name.into(),
        };
        imp.client(&a("one")).unwrap();
        imp.client(&a("one")).unwrap();
        assert_eq!(built.lock().unwrap().len(), 1, "cached");
        imp.client(&a("two")).unwrap();
        imp.client(&a("three")).unwrap();
        assert_eq!(imp.len(), 2, "bounded");
        assert_eq!(
            built.lock().unwrap().as_slice(),
            [
                "system:serviceaccount:models:one",
                "system:serviceaccount:models:two",
                "system:serviceaccount:models:three"
            ]
        );
        assert!(matches!(
            Impersonation::new(None).client(&a("one")),
            Err(Error::Config(_))
        ));
    }
}
