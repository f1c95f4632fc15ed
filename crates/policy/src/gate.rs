//! The Gate: what protocol crates call to decide a command.
//!
//! It holds the policies in force with the agents' groups and the connections' tags (all
//! swapped together on reload, so a decision never mixes two versions), and the shared
//! classification cache. Every decision names the snapshot (policy hash) it was made under.

use crate::cache::ClassificationCache;
use crate::engine::{Actor, Decision, PolicySet, Request, Target};
use crate::sql::Classification;
use crate::Action;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

/// One consistent version of everything a decision depends on.
pub struct GateState {
    pub policies: Arc<PolicySet>,
    pub actors: HashMap<String, Actor>,
    pub targets: HashMap<String, Target>,
}

/// A decision and the version it was made under.
#[derive(Debug, Clone)]
pub struct GateDecision {
    pub decision: Decision,
    /// Hash of the policy snapshot in force (see the `policy_snapshot` ledger event).
    pub snapshot: String,
}

pub struct Gate {
    state: RwLock<Arc<GateState>>,
    cache: ClassificationCache,
}

impl Gate {
    pub fn new(state: GateState, cache_entries: usize) -> Gate {
        Gate {
            state: RwLock::new(Arc::new(state)),
            cache: ClassificationCache::new(cache_entries),
        }
    }

    /// The version in force.
    pub fn current(&self) -> Arc<GateState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a new version in force; sessions use it from their next statement.
    pub fn replace(&self, state: GateState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
    }

    /// The classification of SQL text (cached by text).
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        self.cache.classify(sql)
    }

    /// The actor with the configuration's groups of the agent added to the token's groups
    /// (what policy and the masking assignment both match on).
    pub fn with_configured_groups(&self, who: &Actor) -> Actor {
        Self::merge_groups(&self.current(), who).unwrap_or_else(|| who.clone())
    }

    fn merge_groups(state: &GateState, who: &Actor) -> Option<Actor> {
        let configured = state.actors.get(&who.name)?;
        let mut groups = who.groups.clone();
        groups.extend(configured.groups.iter().cloned());
        groups.sort();
        groups.dedup();
        Some(Actor {
            groups,
            ..who.clone()
        })
    }

    /// Whether any policy in force could let `who` write on `connection` (see
    /// [`crate::engine::PolicySet::may_permit_writes`]); `false`: its sessions may only read.
    pub fn may_write(&self, who: &Actor, connection: &str) -> bool {
        let state = self.current();
        let actor = Self::merge_groups(&state, who).unwrap_or_else(|| who.clone());
        state.policies.may_permit_writes(&actor, connection)
    }

    /// Decides a classified command for an agent on a connection. `who` carries what the
    /// session knows (name, token groups, chain, grant); the configuration's groups of the
    /// agent are added here, so a reload that changes them applies at once.
    pub fn decide(
        &self,
        who: &Actor,
        connection: &str,
        classification: &Classification,
        text: &str,
        justification: Option<&str>,
    ) -> GateDecision {
        let state = self.current();
        let merged;
        let actor = match Self::merge_groups(&state, who) {
            Some(m) => {
                merged = m;
                &merged
            }
            None => who,
        };
        let unknown_target;
        let target = match state.targets.get(connection) {
            Some(t) => t,
            None => {
                unknown_target = Target {
                    name: connection.to_string(),
                    kind: "postgres".into(),
                    tags: Default::default(),
                };
                &unknown_target
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let decision = state.policies.decide(&Request {
            actor,
            target,
            classification,
            text,
            justification,
            now,
        });
        GateDecision {
            decision,
            snapshot: state.policies.hash().to_string(),
        }
    }
}

/// The classification of a protocol-level function call by OID (the function's name is not
/// on the wire).
pub fn function_call_by_oid(oid: u32) -> Classification {
    let mut c = Classification::default();
    c.actions.insert(Action::FunctionCall);
    c.checks.insert((Action::FunctionCall, None));
    c.functions = BTreeSet::from([format!("oid:{oid}")]);
    c.notes
        .push("FunctionCall message: a function called by OID through the protocol".into());
    c
}
