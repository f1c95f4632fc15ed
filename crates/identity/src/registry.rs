//! The set of agents the gateway knows, by name.

use std::collections::HashMap;

use crate::{IdentityError, ScramVerifier};

/// Agents and their SCRAM verifiers, built from configuration.
#[derive(Debug, Clone, Default)]
pub struct AgentRegistry {
    agents: HashMap<String, ScramVerifier>,
}

impl AgentRegistry {
    /// Build from `(name, key_hash)` pairs. Duplicate names and unparsable hashes are
    /// errors naming the agent.
    pub fn new<'a>(
        agents: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, IdentityError> {
        let mut map = HashMap::new();
        for (name, key_hash) in agents {
            let verifier = ScramVerifier::parse(key_hash).map_err(|e| match e {
                IdentityError::InvalidVerifier { reason } => IdentityError::InvalidAgentKeyHash {
                    agent: name.to_owned(),
                    reason,
                },
                other => other,
            })?;
            if map.insert(name.to_owned(), verifier).is_some() {
                return Err(IdentityError::DuplicateAgent {
                    agent: name.to_owned(),
                });
            }
        }
        Ok(Self { agents: map })
    }

    /// The verifier of agent `name`, if it exists.
    pub fn verifier(&self, name: &str) -> Option<&ScramVerifier> {
        self.agents.get(name)
    }

    /// Does `password` belong to agent `name`? An unknown agent costs the same PBKDF2 work
    /// as a known one and returns false, so timing does not reveal which agents exist.
    pub fn verify_password(&self, name: &str, password: &str) -> bool {
        match self.agents.get(name) {
            Some(v) => v.verify_password(password),
            None => {
                let _ = ScramVerifier::fake(name).verify_password(password);
                false
            }
        }
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// True when no agent is configured.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_verify() {
        let a = ScramVerifier::from_password("pcs_a", 4096).to_string();
        let b = ScramVerifier::from_password("pcs_b", 4096).to_string();
        let reg = AgentRegistry::new([("alpha", a.as_str()), ("beta", b.as_str())]).expect("valid");
        assert_eq!(reg.len(), 2);
        assert!(!reg.is_empty());
        assert_eq!(reg.verifier("alpha").map(ToString::to_string), Some(a));
        assert!(reg.verifier("gamma").is_none());
        assert!(reg.verify_password("alpha", "pcs_a"));
        assert!(!reg.verify_password("alpha", "pcs_b"));
        assert!(!reg.verify_password("gamma", "pcs_a"));
        assert!(AgentRegistry::new([]).expect("empty").is_empty());
    }

    #[test]
    fn duplicate_agent_is_an_error_naming_it() {
        let a = ScramVerifier::from_password("pcs_a", 4096).to_string();
        let err = AgentRegistry::new([("alpha", a.as_str()), ("alpha", a.as_str())]).unwrap_err();
        assert_eq!(
            err,
            IdentityError::DuplicateAgent {
                agent: "alpha".into()
            }
        );
        assert!(err.to_string().contains("\"alpha\""));
    }

    #[test]
    fn bad_hash_is_an_error_naming_the_agent() {
        let err = AgentRegistry::new([("alpha", "plaintext-key")]).unwrap_err();
        assert!(
            matches!(&err, IdentityError::InvalidAgentKeyHash { agent, .. } if agent == "alpha")
        );
        let msg = err.to_string();
        assert!(
            msg.contains("alpha") && msg.contains("SCRAM-SHA-256$<iterations>"),
            "{msg}"
        );
    }
}
