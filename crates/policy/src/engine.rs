//! Cedar policies: loading, validation against the published schema, decisions.
//!
//! A statement is allowed only if every (class, object) pair its [`Classification`] lists is
//! allowed; each pair is one Cedar request with the agent as principal, the class as action,
//! the table (or the connection, for classes without a table) as resource, and the statement
//! as context. Per pair, Cedar's own rule applies: a matching `forbid` denies, otherwise a
//! matching `permit` allows, otherwise it is denied (nothing matches → deny). A permit
//! annotated `@review("why")` allows only after a human approves: the pair's verdict is
//! `review`. Over the pairs, deny wins over review, review over allow.
//!
//! Policy ids shown in decisions, errors and the ledger are the `@id("…")` annotation when a
//! policy has one, otherwise `file:line`.

use crate::sql::Classification;
use crate::{Action, PolicyError};
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, Request as CedarRequest, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// The published Cedar schema.
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    /// Allowed only after a human approves (until the approval workflow exists, refused with
    /// its own reason).
    Review,
    Deny,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Review => "review",
            Verdict::Deny => "deny",
        }
    }
}

/// Who asks: an agent, the groups it belongs to (from the configuration and its token) and,
/// when it acts for someone, the delegation chain and the task grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Actor {
    pub name: String,
    pub groups: Vec<String>,
    /// How it logged in (`scram-sha-256`, `oidc`, `gateway-token`, `grant`, …).
    pub auth_method: String,
    /// The human it acts for (first link of the delegation chain, or the grant's requester).
    pub requester: Option<String>,
    /// Everyone in the delegation chain, from the human to this agent.
    pub chain: Vec<String>,
    /// The task grant it acts under.
    pub grant: Option<GrantScope>,
}

/// What a task grant allows: it narrows the agent's policy, never widens it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GrantScope {
    pub id: String,
    /// Classes the grant allows; empty = whatever the agent's policy allows.
    pub actions: Vec<Action>,
}

/// Where: a connection, its protocol kind and its tags (from the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub kind: String,
    pub tags: BTreeMap<String, String>,
}

/// One question to the policies.
pub struct Request<'a> {
    pub actor: &'a Actor,
    pub target: &'a Target,
    pub classification: &'a Classification,
    pub text: &'a str,
    pub justification: Option<&'a str>,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// A decision and what made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// The policies that decided: for a deny, the forbids that matched (none when nothing
    /// permitted it); for review, the @review permits; for allow, the permits.
    pub policies: Vec<String>,
    /// One line, for the client's error message and the ledger.
    pub reason: String,
    /// Every (class, object) pair and its verdict.
    pub checks: Vec<Check>,
    /// Policies that failed to evaluate for some pair (ignored, as Cedar does).
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub action: Action,
    /// The table, or `None` for the connection.
    pub object: Option<String>,
    pub verdict: Verdict,
    pub policies: Vec<String>,
}

/// A policy file as loaded: what an auditor needs to see what was in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyFile {
    pub path: String,
    pub sha256: String,
    pub text: String,
}

struct PolicyInfo {
    /// Shown id: `@id` or `file:line`.
    id: String,
    review: Option<String>,
}

/// Bound on each of the decision-path caches below; past it a cache starts over.
const CACHE_LIMIT: usize = 10_000;

/// A loaded, validated set of policies.
///
/// Deciding is made cheap by three caches, all private to this version of the policies (a
/// reload builds a new set): per (agent, action), only the policies whose scope can match
/// (Cedar evaluates every policy it is given); per (agent, connection, tables), the entities;
/// and, when no policy reads `context.time`, whole decisions per (agent, connection,
/// justification) and statement — by its classification when no policy reads `context.text`
/// (so statements that differ only in literals share one), else by its text
/// statement text, justification).
pub struct PolicySet {
    policies: cedar_policy::PolicySet,
    info: HashMap<PolicyId, PolicyInfo>,
    files: Vec<PolicyFile>,
    hash: String,
    actions: Entities,
    /// Action groups each action belongs to (`select` → `read`).
    action_groups: HashMap<EntityUid, Vec<EntityUid>>,
    authorizer: Authorizer,
    /// Whether some policy may depend on the time (then decisions are not cached).
    time_dependent: bool,
    /// Whether some policy may read the statement's text (then decisions are cached by text).
    text_dependent: bool,
    subsets: Mutex<HashMap<(Actor, Action), Arc<cedar_policy::PolicySet>>>,
    entities: Mutex<HashMap<EntitiesKey, Arc<Entities>>>,
    decisions: Mutex<HashMap<DecisionKey, HashMap<DecisionOf, Decision>>>,
}

type EntitiesKey = (Actor, String, Vec<String>);
/// (agent with its chain and grant, connection, justification)
type DecisionKey = (Actor, String, Option<String>);

#[derive(PartialEq, Eq, Hash)]
enum DecisionOf {
    Text(String),
    Class(Classification),
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, k: K, v: V) {
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
    map.insert(k, v);
}

fn type_name(name: &str) -> EntityTypeName {
    // The names are constants of this module; they always parse.
    EntityTypeName::from_str(name).unwrap_or_else(|_| unreachable!("entity type {name}"))
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(ty), EntityId::new(id))
}

fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _warnings)| s)
        .map_err(|e| PolicyError::BuiltinSchema(e.to_string()))
}

impl PolicySet {
    /// Parses and validates policy files, given as (path shown in errors, text).
    pub fn load(files: &[(String, String)]) -> Result<PolicySet, PolicyError> {
        let schema = schema()?;
        let mut all = cedar_policy::PolicySet::new();
        let mut info = HashMap::new();
        let mut origin: HashMap<PolicyId, (usize, usize)> = HashMap::new(); // file, offset
        let mut seen: HashMap<String, String> = HashMap::new();
        // Every problem of every file is reported, not only the first.
        let mut problems: Vec<PolicyError> = Vec::new();
        for (fi, (path, text)) in files.iter().enumerate() {
            let set = match cedar_policy::PolicySet::from_str(text) {
                Ok(set) => set,
                Err(e) => {
                    problems.extend(diagnostics(text, &e).into_iter().map(
                        |(line, column, message, help)| PolicyError::Syntax {
                            path: path.clone(),
                            line,
                            column,
                            message,
                            help,
                        },
                    ));
                    continue;
                }
            };
            let starts = policy_starts(text);
            if set.templates().next().is_some() {
                let line = set
                    .templates()
                    .next()
                    .and_then(|t| nth_index(t.id()))
                    .and_then(|i| starts.get(i))
                    .map(|&o| line_col(text, o).0)
                    .unwrap_or(1);
                problems.push(PolicyError::Template {
                    path: path.clone(),
                    line,
                });
                continue;
            }
            let mut policies: Vec<_> = set.policies().cloned().collect();
            policies.sort_by_key(|p| nth_index(p.id()).unwrap_or(usize::MAX));
            for (i, p) in policies.into_iter().enumerate() {
                let offset = starts.get(i).copied().unwrap_or(0);
                let line = line_col(text, offset).0;
                let shown = match p.annotation("id") {
                    Some(id) if !id.is_empty() => id.to_string(),
                    _ => format!("{path}:{line}"),
                };
                let here = format!("{path}:{line}");
                if let Some(first) = seen.get(&shown) {
                    problems.push(PolicyError::DuplicateId {
                        path: path.clone(),
                        line,
                        id: shown,
                        first: first.clone(),
                    });
                    continue;
                }
                seen.insert(shown.clone(), here);
                let review = p.annotation("review").map(str::to_string);
                if review.is_some() && p.effect() == cedar_policy::Effect::Forbid {
                    problems.push(PolicyError::ReviewOnForbid {
                        path: path.clone(),
                        line,
                    });
                    continue;
                }
                let id = PolicyId::new(&shown);
                let p = p.new_id(id.clone());
                // Ids are unique (checked above), so adding cannot fail.
                all.add(p).map_err(|e| PolicyError::Syntax {
                    path: path.clone(),
                    line,
                    column: 1,
                    message: e.to_string(),
                    help: String::new(),
                })?;
                origin.insert(id.clone(), (fi, offset));
                info.insert(id, PolicyInfo { id: shown, review });
            }
        }

        let validation = Validator::new(schema.clone()).validate(&all, ValidationMode::Strict);
        // The validator reports a problem once per action a policy may apply to: one per place.
        let mut reported = HashSet::new();
        for e in validation.validation_errors() {
            let (fi, start) = origin.get(e.policy_id()).copied().unwrap_or((0, 0));
            let (path, text) = files
                .get(fi)
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .unwrap_or(("?", ""));
            let offset = miette::Diagnostic::labels(e)
                .and_then(|mut l| l.next())
                .map(|l| l.offset())
                .unwrap_or(start);
            let (line, column) = line_col(text, offset);
            if !reported.insert((fi, offset)) {
                continue;
            }
            let help = miette::Diagnostic::help(e)
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            problems.push(PolicyError::Schema {
                path: path.to_string(),
                line,
                column,
                policy: e.policy_id().to_string(),
                message: e.to_string(),
                help,
            });
        }
        if problems.len() == 1 {
            return Err(problems.remove(0));
        }
        if !problems.is_empty() {
            return Err(PolicyError::Several(problems));
        }

        let files: Vec<PolicyFile> = files
            .iter()
            .map(|(path, text)| PolicyFile {
                path: path.clone(),
                sha256: hex(&Sha256::digest(text.as_bytes())),
                text: text.clone(),
            })
            .collect();
        let mut h = Sha256::new();
        for f in &files {
            h.update((f.path.len() as u64).to_be_bytes());
            h.update(f.path.as_bytes());
            h.update((f.text.len() as u64).to_be_bytes());
            h.update(f.text.as_bytes());
        }
        let actions = schema
            .action_entities()
            .map_err(|e| PolicyError::BuiltinSchema(e.to_string()))?;
        let mut action_groups: HashMap<EntityUid, Vec<EntityUid>> = HashMap::new();
        for a in Action::ALL {
            let u = uid("Portcullis::Action", a.name());
            let groups = ["read", "write"]
                .into_iter()
                .map(|g| uid("Portcullis::Action", g))
                .filter(|g| actions.is_ancestor_of(g, &u))
                .collect();
            action_groups.insert(u, groups);
        }
        // Conservative: any mention of "time" in a policy's text (an attribute, a string)
        // turns whole-decision caching off.
        let time_dependent = all.policies().any(|p| p.to_string().contains("time"));
        // (Not "text" alone: every `context.` contains it.)
        let text_dependent = all.policies().any(|p| {
            let t = p.to_string();
            t.contains(".text") || t.contains("\"text\"")
        });
        Ok(PolicySet {
            policies: all,
            info,
            files,
            hash: hex(&h.finalize()),
            actions,
            action_groups,
            authorizer: Authorizer::new(),
            time_dependent,
            text_dependent,
            subsets: Mutex::new(HashMap::new()),
            entities: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
        })
    }

    /// Reads policy files from disk and loads them.
    pub fn load_files(paths: &[std::path::PathBuf]) -> Result<PolicySet, PolicyError> {
        let mut files = Vec::with_capacity(paths.len());
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|e| PolicyError::Read {
                path: p.display().to_string(),
                reason: e.to_string(),
            })?;
            files.push((p.display().to_string(), text));
        }
        PolicySet::load(&files)
    }

    /// The files this set was loaded from, with their hashes.
    pub fn files(&self) -> &[PolicyFile] {
        &self.files
    }

    /// SHA-256 over every file's path and text: names this version in the ledger.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn len(&self) -> usize {
        self.info.len()
    }

    pub fn is_empty(&self) -> bool {
        self.info.is_empty()
    }

    /// Decides a classified statement.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        let cacheable = !self.time_dependent && !req.classification.needs_session();
        if !cacheable {
            return self.evaluate(req);
        }
        let key = (
            req.actor.clone(),
            req.target.name.clone(),
            req.justification.map(str::to_string),
        );
        let of = if self.text_dependent {
            DecisionOf::Text(req.text.to_string())
        } else {
            DecisionOf::Class(req.classification.clone())
        };
        if let Some(d) = locked(&self.decisions).get(&key).and_then(|m| m.get(&of)) {
            return d.clone();
        }
        let d = self.evaluate(req);
        let mut all = locked(&self.decisions);
        if all.len() >= CACHE_LIMIT {
            all.clear();
        }
        bounded_insert(all.entry(key).or_default(), of, d.clone());
        d
    }

    /// Whether any policy could permit `actor` an action that writes (see [`Action::writes`])
    /// on `connection` or anything in it, judged by the policies' scopes alone: conditions
    /// are taken as possibly true. `false` means the agent may only read there, whatever the
    /// statement, so the gateway can make the target enforce it too (read-only transactions).
    pub fn may_permit_writes(&self, actor: &Actor, connection: &str) -> bool {
        if let Some(grant) = &actor.grant {
            if !grant.actions.is_empty() && !grant.actions.iter().any(|a| a.writes()) {
                return false;
            }
        }
        let inside = format!("{connection}/");
        let here = |u: &EntityUid| match u.type_name().to_string().as_str() {
            "Portcullis::Connection" => u.id().unescaped() == connection,
            "Portcullis::Schema" | "Portcullis::Table" => u.id().unescaped().starts_with(&inside),
            _ => true,
        };
        Action::ALL
            .into_iter()
            .filter(|a| a.writes())
            .any(|action| {
                self.subset(actor, action).policies().any(|p| {
                    p.effect() == cedar_policy::Effect::Permit
                        && match p.resource_constraint() {
                            cedar_policy::ResourceConstraint::Any
                            | cedar_policy::ResourceConstraint::Is(_) => true,
                            cedar_policy::ResourceConstraint::Eq(u)
                            | cedar_policy::ResourceConstraint::In(u)
                            | cedar_policy::ResourceConstraint::IsIn(_, u) => here(&u),
                        }
                })
            })
    }

    /// The policies that can apply to this agent and action: the others' scope cannot match,
    /// so leaving them out changes no decision.
    fn subset(&self, actor: &Actor, action: Action) -> Arc<cedar_policy::PolicySet> {
        let key = (actor.clone(), action);
        if let Some(s) = locked(&self.subsets).get(&key) {
            return s.clone();
        }
        let me = uid("Portcullis::Agent", &actor.name);
        let mine: Vec<EntityUid> = std::iter::once(me.clone())
            .chain(actor.groups.iter().map(|g| uid("Portcullis::Group", g)))
            .collect();
        let act = uid("Portcullis::Action", action.name());
        let act_and_groups: Vec<EntityUid> = std::iter::once(act.clone())
            .chain(self.action_groups.get(&act).cloned().unwrap_or_default())
            .collect();
        let mut set = cedar_policy::PolicySet::new();
        for p in self.policies.policies() {
            let principal_ok = match p.principal_constraint() {
                cedar_policy::PrincipalConstraint::Any
                | cedar_policy::PrincipalConstraint::Is(_) => true,
                cedar_policy::PrincipalConstraint::Eq(u) => u == me,
                cedar_policy::PrincipalConstraint::In(u)
                | cedar_policy::PrincipalConstraint::IsIn(_, u) => mine.contains(&u),
            };
            let action_ok = match p.action_constraint() {
                cedar_policy::ActionConstraint::Any => true,
                cedar_policy::ActionConstraint::Eq(u) => u == act,
                cedar_policy::ActionConstraint::In(list) => {
                    list.iter().any(|u| act_and_groups.contains(u))
                }
            };
            if principal_ok && action_ok {
                // Ids are unique within the full set, so adding cannot fail.
                let _ = set.add(p.clone());
            }
        }
        let set = Arc::new(set);
        bounded_insert(&mut locked(&self.subsets), key, set.clone());
        set
    }

    fn evaluate(&self, req: &Request<'_>) -> Decision {
        let c = req.classification;
        let principal = uid("Portcullis::Agent", &req.actor.name);
        let connection = uid("Portcullis::Connection", &req.target.name);
        let entities = match self.cached_entities(req, &principal, &connection) {
            Ok(e) => e,
            Err(e) => {
                return deny_all(
                    c,
                    format!("the gateway could not describe the request to the policy engine: {e}"),
                )
            }
        };
        let context = match context(req) {
            Ok(ctx) => ctx,
            Err(e) => {
                return deny_all(
                    c,
                    format!("the gateway could not build the policy context: {e}"),
                )
            }
        };

        let mut checks = Vec::with_capacity(c.checks.len());
        let mut errors = Vec::new();
        for (action, object) in &c.checks {
            let resource = match object {
                Some(t) => uid("Portcullis::Table", &format!("{}/{t}", req.target.name)),
                None => connection.clone(),
            };
            let request = match CedarRequest::new(
                principal.clone(),
                uid("Portcullis::Action", action.name()),
                resource,
                context.clone(),
                None,
            ) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(e.to_string());
                    checks.push(Check {
                        action: *action,
                        object: object.clone(),
                        verdict: Verdict::Deny,
                        policies: vec![],
                    });
                    continue;
                }
            };
            if let Some(grant) = &req.actor.grant {
                if !grant.actions.is_empty() && !grant.actions.contains(action) {
                    checks.push(Check {
                        action: *action,
                        object: object.clone(),
                        verdict: Verdict::Deny,
                        policies: vec![format!("grant:{}", grant.id)],
                    });
                    continue;
                }
            }
            let policies = self.subset(req.actor, *action);
            let response = self
                .authorizer
                .is_authorized(&request, &policies, &entities);
            for e in response.diagnostics().errors() {
                errors.push(e.to_string());
            }
            let mut determining: Vec<&PolicyInfo> = response
                .diagnostics()
                .reason()
                .filter_map(|id| self.info.get(id))
                .collect();
            determining.sort_by(|a, b| a.id.cmp(&b.id));
            let verdict = match response.decision() {
                CedarDecision::Deny => Verdict::Deny,
                CedarDecision::Allow if determining.iter().any(|p| p.review.is_some()) => {
                    determining.retain(|p| p.review.is_some());
                    Verdict::Review
                }
                CedarDecision::Allow => Verdict::Allow,
            };
            checks.push(Check {
                action: *action,
                object: object.clone(),
                verdict,
                policies: determining.iter().map(|p| p.id.clone()).collect(),
            });
        }

        let verdict = checks
            .iter()
            .map(|c| c.verdict)
            .max()
            .unwrap_or(Verdict::Deny);
        let deciding: Vec<&Check> = checks.iter().filter(|c| c.verdict == verdict).collect();
        let mut policies: Vec<String> = deciding
            .iter()
            .flat_map(|c| c.policies.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let reason = match (verdict, deciding.first()) {
            (_, None) => "the statement needs nothing the policies could decide".to_string(),
            (Verdict::Deny, Some(first)) if first.policies.is_empty() => format!(
                "no policy permits {} for agent {:?}",
                describe(first),
                req.actor.name
            ),
            (Verdict::Deny, Some(first))
                if first.policies.iter().any(|p| p.starts_with("grant:")) =>
            {
                let g = req.actor.grant.as_ref();
                format!(
                    "{} is outside task grant {} (it allows only {})",
                    describe(first),
                    g.map(|g| g.id.as_str()).unwrap_or(""),
                    g.map(|g| g
                        .actions
                        .iter()
                        .map(|a| a.name())
                        .collect::<Vec<_>>()
                        .join(", "))
                        .unwrap_or_default()
                )
            }
            (Verdict::Deny, Some(first)) => format!(
                "{} is forbidden by policy {}",
                describe(first),
                first.policies.join(", ")
            ),
            (Verdict::Review, Some(first)) => {
                let why: Vec<&str> = first
                    .policies
                    .iter()
                    .filter_map(|id| self.info.values().find(|p| &p.id == id))
                    .filter_map(|p| p.review.as_deref())
                    .filter(|r| !r.is_empty())
                    .collect();
                format!(
                    "{} needs a human's approval (policy {}{})",
                    describe(first),
                    first.policies.join(", "),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", why.join("; "))
                    }
                )
            }
            (Verdict::Allow, Some(_)) => format!("permitted by {}", policies.join(", ")),
        };
        if verdict == Verdict::Deny && deciding.iter().all(|c| c.policies.is_empty()) {
            policies.clear();
        }
        errors.sort();
        errors.dedup();
        Decision {
            verdict,
            policies,
            reason,
            checks,
            errors,
        }
    }

    fn cached_entities(
        &self,
        req: &Request<'_>,
        principal: &EntityUid,
        connection: &EntityUid,
    ) -> Result<Arc<Entities>, String> {
        let tables: Vec<String> = req
            .classification
            .checks
            .iter()
            .filter_map(|(_, o)| o.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let key = (req.actor.clone(), req.target.name.clone(), tables);
        if let Some(e) = locked(&self.entities).get(&key) {
            return Ok(e.clone());
        }
        let e = Arc::new(self.entities(req, principal, connection)?);
        bounded_insert(&mut locked(&self.entities), key, e.clone());
        Ok(e)
    }

    fn entities(
        &self,
        req: &Request<'_>,
        principal: &EntityUid,
        connection: &EntityUid,
    ) -> Result<Entities, String> {
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let mut list = Vec::with_capacity(4 + req.actor.groups.len());
        let groups: HashSet<EntityUid> = req
            .actor
            .groups
            .iter()
            .map(|g| uid("Portcullis::Group", g))
            .collect();
        for g in &groups {
            list.push(Entity::with_uid(g.clone()));
        }
        list.push(
            Entity::new(
                principal.clone(),
                HashMap::from([("name".to_string(), s(&req.actor.name))]),
                groups,
            )
            .map_err(|e| e.to_string())?,
        );
        list.push(
            Entity::new_with_tags(
                connection.clone(),
                HashMap::from([
                    ("name".to_string(), s(&req.target.name)),
                    ("kind".to_string(), s(&req.target.kind)),
                ]),
                HashSet::new(),
                req.target.tags.iter().map(|(k, v)| (k.clone(), s(v))),
            )
            .map_err(|e| e.to_string())?,
        );
        let mut schemas = HashSet::new();
        let tables: BTreeSet<&String> = req
            .classification
            .checks
            .iter()
            .filter_map(|(_, o)| o.as_ref())
            .collect();
        for t in tables {
            let (schema, table) = split_qualified(t);
            let schema_uid = uid(
                "Portcullis::Schema",
                &format!("{}/{schema}", req.target.name),
            );
            if schemas.insert(schema.to_string()) {
                list.push(
                    Entity::new(
                        schema_uid.clone(),
                        HashMap::from([
                            ("name".to_string(), s(schema)),
                            ("connection".to_string(), s(&req.target.name)),
                        ]),
                        HashSet::from([connection.clone()]),
                    )
                    .map_err(|e| e.to_string())?,
                );
            }
            list.push(
                Entity::new(
                    uid("Portcullis::Table", &format!("{}/{t}", req.target.name)),
                    HashMap::from([
                        ("name".to_string(), s(t)),
                        ("schema".to_string(), s(schema)),
                        ("table".to_string(), s(table)),
                        ("connection".to_string(), s(&req.target.name)),
                    ]),
                    HashSet::from([schema_uid]),
                )
                .map_err(|e| e.to_string())?,
            );
        }
        self.actions
            .clone()
            .add_entities(list, None)
            .map_err(|e| e.to_string())
    }

    /// The policy shown as `id`, as Cedar text.
    pub fn policy_text(&self, id: &str) -> Option<String> {
        self.policies
            .policy(&PolicyId::new(id))
            .map(|p| p.to_string())
    }
}

fn describe(c: &Check) -> String {
    match &c.object {
        Some(o) => format!("{} on {o}", c.action),
        None => format!("{} on the connection", c.action),
    }
}

fn deny_all(c: &Classification, reason: String) -> Decision {
    Decision {
        verdict: Verdict::Deny,
        policies: vec![],
        reason,
        checks: c
            .checks
            .iter()
            .map(|(a, o)| Check {
                action: *a,
                object: o.clone(),
                verdict: Verdict::Deny,
                policies: vec![],
            })
            .collect(),
        errors: vec![],
    }
}

fn context(req: &Request<'_>) -> Result<Context, String> {
    let s = |v: &str| RestrictedExpression::new_string(v.to_string());
    let set = |it: &mut dyn Iterator<Item = &str>| RestrictedExpression::new_set(it.map(s));
    let c = req.classification;
    let now = req.now;
    let days = now.div_euclid(86_400);
    // 1970-01-01 was a Thursday (4).
    let weekday = (days + 3).rem_euclid(7) + 1;
    let time = RestrictedExpression::new_record([
        ("unix".to_string(), RestrictedExpression::new_long(now)),
        (
            "hour".to_string(),
            RestrictedExpression::new_long(now.rem_euclid(86_400) / 3600),
        ),
        (
            "weekday".to_string(),
            RestrictedExpression::new_long(weekday),
        ),
    ])
    .map_err(|e| e.to_string())?;
    Context::from_pairs([
        ("text".to_string(), s(req.text)),
        (
            "classes".to_string(),
            set(&mut c.actions.iter().map(|a| a.name())),
        ),
        (
            "reads".to_string(),
            set(&mut c.reads.iter().map(String::as_str)),
        ),
        (
            "writes".to_string(),
            set(&mut c.writes.iter().map(String::as_str)),
        ),
        (
            "functions".to_string(),
            set(&mut c.functions.iter().map(String::as_str)),
        ),
        (
            "statements".to_string(),
            RestrictedExpression::new_long(c.statements.len() as i64),
        ),
        (
            "has_justification".to_string(),
            RestrictedExpression::new_bool(req.justification.is_some_and(|j| !j.trim().is_empty())),
        ),
        (
            "justification".to_string(),
            s(req.justification.unwrap_or("")),
        ),
        ("time".to_string(), time),
        ("auth_method".to_string(), s(&req.actor.auth_method)),
        (
            "has_requester".to_string(),
            RestrictedExpression::new_bool(req.actor.requester.is_some()),
        ),
        (
            "requester".to_string(),
            s(req.actor.requester.as_deref().unwrap_or("")),
        ),
        (
            "chain".to_string(),
            set(&mut req.actor.chain.iter().map(String::as_str)),
        ),
        (
            "grant".to_string(),
            s(req
                .actor
                .grant
                .as_ref()
                .map(|g| g.id.as_str())
                .unwrap_or("")),
        ),
    ])
    .map_err(|e| e.to_string())
}

/// `public."Orders"` → (`public`, `"Orders"`): splits at the first dot outside quotes.
fn split_qualified(name: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, ch) in name.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '.' if !quoted => return (&name[..i], &name[i + 1..]),
            _ => {}
        }
    }
    ("", name)
}

/// Cedar names the policies of a parsed set `policy0`, `policy1`, … in source order.
fn nth_index(id: &PolicyId) -> Option<usize> {
    id.to_string().strip_prefix("policy")?.parse().ok()
}

/// Byte offsets where each policy of a Cedar file begins (after comments and blanks), found by
/// scanning for the `;` that ends each policy outside strings and comments.
fn policy_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    let mut in_policy = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if !in_policy {
            starts.push(i);
            in_policy = true;
        }
        match b {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b';' => in_policy = false,
            _ => {}
        }
        i += 1;
    }
    starts
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0)
        + 1;
    (line, col)
}

/// Line, column, message and help of each parse error.
fn diagnostics(text: &str, e: &cedar_policy::ParseErrors) -> Vec<(usize, usize, String, String)> {
    e.iter()
        .map(|d| {
            let offset = miette::Diagnostic::labels(d)
                .and_then(|mut l| l.next())
                .map(|l| l.offset())
                .unwrap_or(0);
            let (line, column) = line_col(text, offset);
            let help = miette::Diagnostic::help(d)
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            (line, column, d.to_string(), help)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::classify;

    fn actor() -> Actor {
        Actor {
            name: "analyst".into(),
            groups: vec!["readers".into()],
            ..Default::default()
        }
    }
    fn target() -> Target {
        Target {
            name: "shop".into(),
            kind: "postgres".into(),
            tags: BTreeMap::from([("env".into(), "prod".into())]),
        }
    }
    fn decide(policies: &str, sql: &str) -> Decision {
        let set = PolicySet::load(&[("test.cedar".into(), policies.into())]).unwrap();
        let c = classify(sql);
        set.decide(&Request {
            actor: &actor(),
            target: &target(),
            classification: &c,
            text: sql,
            justification: None,
            now: 1_700_000_000,
        })
    }

    #[test]
    fn nothing_matches_means_deny() {
        let d = decide("", "SELECT 1");
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(d.policies.is_empty());
        assert!(
            d.reason.contains("no policy permits select"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn permit_read_group_on_tagged_connection() {
        let p = r#"
            @id("readers-read-prod")
            permit(principal in Portcullis::Group::"readers", action in Portcullis::Action::"read", resource)
            when { resource is Portcullis::Connection && resource.hasTag("env") && resource.getTag("env") == "prod"
                   || resource is Portcullis::Table && resource in Portcullis::Connection::"shop" };
        "#;
        let d = decide(p, "SELECT * FROM orders");
        assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
        assert_eq!(d.policies, ["readers-read-prod"]);
        let d = decide(
            p,
            "WITH x AS (DELETE FROM orders RETURNING 1) SELECT * FROM x",
        );
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(d.reason.contains("delete on public.orders"), "{}", d.reason);
    }

    #[test]
    fn forbid_beats_review_beats_permit() {
        let p = r#"
            permit(principal, action, resource);
            @id("ddl-review") @review("schema changes need a DBA")
            permit(principal, action == Portcullis::Action::"ddl", resource);
            @id("no-drop-orders")
            forbid(principal, action == Portcullis::Action::"ddl", resource == Portcullis::Table::"shop/public.orders");
        "#;
        assert_eq!(decide(p, "SELECT 1").verdict, Verdict::Allow);
        let d = decide(p, "CREATE TABLE t (a int)");
        assert_eq!(d.verdict, Verdict::Review, "{d:?}");
        assert_eq!(d.policies, ["ddl-review"]);
        assert!(
            d.reason.contains("schema changes need a DBA"),
            "{}",
            d.reason
        );
        let d = decide(p, "DROP TABLE orders");
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.policies, ["no-drop-orders"]);
        assert_eq!(
            d.reason,
            "ddl on public.orders is forbidden by policy no-drop-orders"
        );
    }

    #[test]
    fn errors_point_at_file_and_line() {
        let load_err = |text: &str| {
            PolicySet::load(&[("p.cedar".into(), text.into())])
                .err()
                .expect("the policy must be refused")
        };
        let msg = load_err("permit(principal, action, resource);\n\npermit(principal, action == Portcullis::Action::\"selectt\", resource);").to_string();
        assert!(msg.starts_with("p.cedar:3:"), "{msg}");
        assert!(msg.contains("selectt"), "{msg}");
        let e = load_err("// c\npermit(principal, action, resource)\nwhen { context.nope };");
        assert!(e.to_string().starts_with("p.cedar:3:"), "{e}");
        let e =
            load_err("permit(principal, action, resource);\nforbid(principal action, resource);");
        assert!(e.to_string().starts_with("p.cedar:2:"), "{e}");
        let e = load_err("@review(\"x\")\nforbid(principal, action, resource);");
        assert!(
            matches!(e, PolicyError::ReviewOnForbid { line: 1, .. }),
            "{e}"
        );
        // Every error is reported, in every file.
        let e = PolicySet::load(&[
            ("a.cedar".into(), "permit(principal, action == Portcullis::Action::\"nope\", resource);\npermit(principal, action, resource) when { context.nada };".into()),
            ("b.cedar".into(), "\n\nforbid(principal action, resource);".into()),
        ]).err().unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains("a.cedar:1:") && msg.contains("a.cedar:2:") && msg.contains("b.cedar:3:"),
            "{msg}"
        );
    }

    #[test]
    fn ids_default_to_file_and_line() {
        let p = "// header\n\npermit(principal, action, resource);";
        let d = decide(p, "SELECT 1");
        assert_eq!(d.policies, ["test.cedar:3"]);
    }

    #[test]
    fn cached_decisions_respect_policies_that_read_the_text() {
        let set = PolicySet::load(&[(
            "t.cedar".into(),
            "permit(principal, action, resource);\nforbid(principal, action, resource) when { context.text like \"*42*\" };".into(),
        )])
        .unwrap();
        assert!(set.text_dependent);
        let run = |sql: &str| {
            let c = classify(sql);
            set.decide(&Request {
                actor: &actor(),
                target: &target(),
                classification: &c,
                text: sql,
                justification: None,
                now: 0,
            })
            .verdict
        };
        // Same classification, different text: the text decides.
        assert_eq!(run("SELECT * FROM orders WHERE id = 1"), Verdict::Allow);
        assert_eq!(run("SELECT * FROM orders WHERE id = 42"), Verdict::Deny);
        assert_eq!(run("SELECT * FROM orders WHERE id = 1"), Verdict::Allow);
        // Without such a policy, statements differing in literals share one cached decision.
        let plain = PolicySet::load(&[(
            "p.cedar".into(),
            "permit(principal, action, resource) when { context.has_justification || true };"
                .into(),
        )])
        .unwrap();
        assert!(!plain.text_dependent && !plain.time_dependent);
    }

    #[test]
    fn context_time_and_justification() {
        let p = r#"permit(principal, action, resource) when { context.time.hour >= 8 && context.time.weekday <= 5 && !context.has_justification };"#;
        // 1_700_000_000 = Tuesday 2023-11-14 22:13 UTC
        assert_eq!(decide(p, "SELECT 1").verdict, Verdict::Allow);
        let p = r#"permit(principal, action, resource) when { context.time.hour < 22 };"#;
        assert_eq!(decide(p, "SELECT 1").verdict, Verdict::Deny);
    }
}
