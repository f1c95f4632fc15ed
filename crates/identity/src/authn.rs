//! Tokens in, principals out: the one place that turns a presented credential into the
//! identity recorded on every event.
//!
//! Three kinds of token reach the gateway:
//! * an **OIDC access token** from a configured issuer (an agent's client-credentials token,
//!   or a person's token when they issue a grant);
//! * a **gateway token**, issued by the token endpoint after an RFC 8693 token exchange (a
//!   person's token as `subject_token`, the agent's as `actor_token`) or an RFC 7522 SAML
//!   bearer grant;
//! * a **task grant credential**, a gateway token bound to a grant that must still be in force.
//!
//! Delegation follows RFC 8693: a token's `sub` is the person the work is for, and its `act`
//! claim the actor, with earlier actors nested inside (`act.act`). The chain recorded on events
//! runs the other way, from the person to the agent acting now.
//!
//! Policy trusts the head of that chain as the human requester (`context.has_requester`), so
//! the tokens that put someone there must be a person's: a token exchange's `subject_token`
//! and the token of whoever creates, lists or revokes grants. [`Authenticator::not_a_person`]
//! says why a token is not (an agent's or a client's own token); the exchange also refuses a
//! subject and actor that are the same principal.

use std::collections::HashMap;

use portcullis_core::config::{IdentityConfig, SamlIdpConfig};
use portcullis_core::{ChainLink, GrantRecord, GrantRef, Identity, Principal};
use serde_json::{json, Map, Value};

use crate::gateway_token::TokenSigner;
use crate::grants::GrantBook;
use crate::jwt::{self, rejected, Claims};
use crate::oidc::{OidcIssuer, VerifiedToken};
use crate::saml::{SamlVerifier, SamlVerifierConfig};
use crate::IdentityError;

/// What a verified token says, before it becomes a [`Principal`].
#[derive(Debug, Clone)]
pub struct Verified {
    pub principal: Principal,
    /// The token's raw claims.
    pub claims: Claims,
}

/// A task grant as requested by a person.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub agent: String,
    pub connection: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub ttl_secs: u64,
    pub actions: Vec<String>,
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub expires_in: i64,
    pub principal: Principal,
}

pub struct Authenticator {
    issuers: Vec<OidcIssuer>,
    saml: Vec<(SamlIdpConfig, SamlVerifier)>,
    signer: TokenSigner,
    pub grants: GrantBook,
    config: IdentityConfig,
    /// Every `[[agents]]` entry (even those without groups), with the groups added to those
    /// a token carries. A name in here is an agent, never a person.
    agent_groups: HashMap<String, Vec<String>>,
    /// SAML assertion ids already exchanged, until they expire: a bearer assertion is good
    /// for one exchange only (SAML profiles §4.1.4.5), so a copied one cannot be replayed.
    saml_seen: std::sync::Mutex<HashMap<String, i64>>,
}

fn string_claim<'a>(c: &'a Claims, name: &str) -> Option<&'a str> {
    c.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The claim inside an `act` object of a gateway token that keeps the actor's own `sub` at
/// its identity provider ([`ChainLink::idp_subject`]) when `sub` there is the agent name.
const ACT_IDP_SUB: &str = "idp_sub";

/// The `act` chain of a token, current actor first (as nested in the token).
fn actors_of(claims: &Claims) -> Vec<ChainLink> {
    let mut out = Vec::new();
    let mut cur = claims.get("act");
    while let Some(Value::Object(act)) = cur {
        if let Some(sub) = act.get("sub").and_then(Value::as_str) {
            out.push(ChainLink {
                subject: sub.to_string(),
                issuer: act.get("iss").and_then(Value::as_str).unwrap_or("").into(),
                idp_subject: act
                    .get(ACT_IDP_SUB)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            });
        }
        cur = act.get("act");
        if out.len() > 16 {
            break;
        }
    }
    out
}

/// Nests links (current actor first) back into an `act` claim.
fn act_claim(links: &[ChainLink]) -> Option<Value> {
    let mut value: Option<Value> = None;
    for link in links.iter().rev() {
        let mut m = Map::new();
        m.insert("sub".into(), json!(link.subject));
        if !link.issuer.is_empty() {
            m.insert("iss".into(), json!(link.issuer));
        }
        if let Some(idp_sub) = &link.idp_subject {
            m.insert(ACT_IDP_SUB.into(), json!(idp_sub));
        }
        if let Some(inner) = value.take() {
            m.insert("act".into(), inner);
        }
        value = Some(Value::Object(m));
    }
    value
}

/// The chain as recorded: the subject, then the actors from the earliest to the current one.
fn chain_of(subject: &str, issuer: &str, actors_current_first: &[ChainLink]) -> Vec<ChainLink> {
    if actors_current_first.is_empty() {
        return vec![];
    }
    let mut chain = vec![ChainLink {
        subject: subject.into(),
        issuer: issuer.into(),
        idp_subject: None,
    }];
    chain.extend(actors_current_first.iter().rev().cloned());
    chain
}

impl Authenticator {
    pub fn new(
        config: IdentityConfig,
        signer: TokenSigner,
        saml_certificates: &[(String, String)],
        agent_groups: HashMap<String, Vec<String>>,
        api_url: Option<&str>,
    ) -> Result<Authenticator, IdentityError> {
        // One client per issuer: each trusts its own ca_file.
        let issuers = config
            .oidc
            .iter()
            .map(|c| OidcIssuer::new(c.clone(), crate::idp_http::http_client(c)?))
            .collect::<Result<Vec<_>, _>>()?;
        let mut saml = Vec::new();
        for idp in &config.saml {
            let pem = saml_certificates
                .iter()
                .find(|(n, _)| n == &idp.name)
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            let recipient = idp
                .recipient
                .clone()
                .or_else(|| api_url.map(|u| format!("{}/oauth/token", u.trim_end_matches('/'))))
                .ok_or_else(|| IdentityError::Setup {
                    what: format!("identity.saml {:?}", idp.name),
                    reason: "set `recipient` (the token endpoint URL) or `api.public_url`".into(),
                })?;
            let v = SamlVerifier::new(SamlVerifierConfig {
                name: idp.name.clone(),
                idp_entity_id: idp.entity_id.clone(),
                certificate_pem: pem,
                audience: idp.audience.clone(),
                recipient,
                leeway_secs: idp.leeway_secs,
            })?;
            saml.push((idp.clone(), v));
        }
        Ok(Authenticator {
            issuers,
            saml,
            signer,
            grants: GrantBook::default(),
            config,
            agent_groups,
            saml_seen: Default::default(),
        })
    }

    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// Is any token-based login configured?
    pub fn accepts_tokens(&self) -> bool {
        !self.issuers.is_empty() || !self.saml.is_empty()
    }

    /// Verifies a token from a configured OIDC issuer.
    pub async fn verify_oidc(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(VerifiedToken, &OidcIssuer), IdentityError> {
        let peeked = jwt::peek(token)?;
        let iss = string_claim(&peeked.claims, "iss").unwrap_or("");
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| {
                rejected(format!(
                    "issuer {iss:?} is not configured (configured: {:?})",
                    self.issuers
                        .iter()
                        .map(|i| i.config.issuer.as_str())
                        .collect::<Vec<_>>()
                ))
            })?;
        Ok((issuer.verify(token, &peeked, now).await?, issuer))
    }

    /// Any token a client may log in with: an OIDC access token, a gateway token or a grant
    /// credential. The result names the agent, the person behind it and the grant.
    pub async fn login(&self, token: &str, now: i64) -> Result<Verified, IdentityError> {
        let peeked = jwt::peek(token)?;
        if string_claim(&peeked.claims, "iss") == Some(self.signer.issuer()) {
            let claims = self.signer.verify(token, &peeked, now)?;
            return self.principal_of_gateway_token(claims, now);
        }
        let (v, issuer) = self.verify_oidc(token, now).await?;
        Ok(self.principal_of_oidc(v, issuer))
    }

    /// Is `name` an `[[agents]]` entry?
    pub fn is_configured_agent(&self, name: &str) -> bool {
        self.agent_groups.contains_key(name)
    }

    /// The claim that names the agent in tokens from `issuer`.
    fn agent_claim_of(&self, issuer: &str) -> &str {
        if issuer == self.signer.issuer() {
            return "agent";
        }
        self.issuers
            .iter()
            .find(|i| i.config.issuer == issuer)
            .map(|i| i.config.agent_claim.as_str())
            .unwrap_or("sub")
    }

    /// Why a verified token does not speak for a person, or `None` when it does; the reason
    /// reads after "the token …". A token speaks for a person unless (docs/identity.md, "Who
    /// counts as a person"):
    /// * its `sub` is an `[[agents]]` entry;
    /// * it is not delegated and the agent it maps to (the issuer's `agent_claim`,
    ///   `client_id` by default) is an `[[agents]]` entry: an agent's own token;
    /// * it is not delegated and its agent claim equals its `sub`: a client's own token
    ///   (OAuth client credentials, or a gateway token from a SAML bearer assertion, which
    ///   names a service principal).
    ///
    /// A delegated token (one with an `act` claim) speaks for its `sub`, the person at the
    /// head of its chain: that is how a chain grows (`alice → planner → executor`).
    pub fn not_a_person(&self, v: &Verified) -> Option<String> {
        let Some(id) = v.principal.identity.as_deref() else {
            return Some(format!(
                "is agent {:?}'s API key, which names no person",
                v.principal.agent
            ));
        };
        let sub = id.subject.as_str();
        if sub.is_empty() {
            return Some("has no `sub` claim, so it names no person".into());
        }
        if self.is_configured_agent(sub) {
            return Some(format!(
                "is agent {sub:?}'s own token (its sub names that [[agents]] entry)"
            ));
        }
        if !id.chain.is_empty() {
            return None;
        }
        let claim = self.agent_claim_of(&id.issuer);
        let agent = v.principal.agent.as_str();
        if agent != sub && self.is_configured_agent(agent) {
            return Some(format!(
                "is agent {agent:?}'s own token (its {claim:?} claim names that [[agents]] entry)"
            ));
        }
        if claim != "sub" && string_claim(&v.claims, claim) == Some(sub) {
            return Some(format!(
                "is client {sub:?}'s own token (its {claim:?} claim equals its sub: a \
                 client-credentials or service token, not a person's login)"
            ));
        }
        None
    }

    fn groups_for(&self, agent: &str, mut groups: Vec<String>) -> Vec<String> {
        if let Some(g) = self.agent_groups.get(agent) {
            groups.extend(g.iter().cloned());
        }
        groups.sort();
        groups.dedup();
        groups
    }

    fn principal_of_oidc(&self, v: VerifiedToken, issuer: &OidcIssuer) -> Verified {
        let sub = v.subject().unwrap_or("").to_string();
        let actors = actors_of(&v.claims);
        // A token that is itself delegated (the provider did the exchange) acts as its
        // current actor; otherwise the agent claim names the agent.
        let agent = actors
            .first()
            .map(|a| a.subject.clone())
            .or_else(|| string_claim(&v.claims, &issuer.config.agent_claim).map(str::to_string))
            .unwrap_or_else(|| sub.clone());
        let groups = self.groups_for(
            &agent,
            jwt::string_list(&v.claims, &issuer.config.groups_claim),
        );
        let identity = Identity {
            issuer: v.issuer.clone(),
            subject: sub.clone(),
            token_id: v.jti(),
            groups,
            chain: chain_of(&sub, &v.issuer, &actors),
            grant: None,
            expires_at: v.exp(),
        };
        Verified {
            principal: Principal {
                agent,
                auth_method: "oidc".into(),
                identity: Some(Box::new(identity)),
            },
            claims: v.claims,
        }
    }

    fn principal_of_gateway_token(
        &self,
        claims: Claims,
        now: i64,
    ) -> Result<Verified, IdentityError> {
        let sub = string_claim(&claims, "sub").unwrap_or("").to_string();
        let agent = string_claim(&claims, "agent")
            .ok_or_else(|| rejected("gateway token has no \"agent\" claim"))?
            .to_string();
        let src_iss = string_claim(&claims, "src_iss").unwrap_or("").to_string();
        let actors = actors_of(&claims);
        let grant = match string_claim(&claims, "grant") {
            Some(id) => {
                let g = self.grants.check(id, now)?;
                if g.agent != agent {
                    return Err(rejected(format!("grant {id} is for agent {:?}", g.agent)));
                }
                Some(GrantRef {
                    id: g.id,
                    connection: g.connection,
                    requester: g.requester,
                    reason: g.reason,
                    ticket: g.ticket,
                    actions: g.actions,
                })
            }
            None => None,
        };
        let method = match string_claim(&claims, "auth") {
            Some("grant") => "grant",
            _ => "gateway-token",
        };
        let identity = Identity {
            issuer: self.signer.issuer().to_string(),
            subject: sub.clone(),
            token_id: string_claim(&claims, "jti").map(str::to_string),
            groups: self.groups_for(&agent, jwt::string_list(&claims, "groups")),
            chain: chain_of(&sub, &src_iss, &actors),
            grant,
            expires_at: claims.get("exp").and_then(Value::as_i64),
        };
        Ok(Verified {
            principal: Principal {
                agent,
                auth_method: method.into(),
                identity: Some(Box::new(identity)),
            },
            claims,
        })
    }

    /// RFC 8693 token exchange: `subject_token` is the person's (or an earlier gateway token
    /// of the chain), `actor_token` the agent's own. The result is a gateway token whose `sub`
    /// is the person and whose `act` names the agent, earlier actors nested inside.
    pub async fn exchange(
        &self,
        subject_token: &str,
        actor_token: &str,
        now: i64,
    ) -> Result<Issued, IdentityError> {
        // An unreachable provider stays what it is (not "your token is bad").
        let subject = self
            .login(subject_token, now)
            .await
            .map_err(|e| in_exchange("subject_token", e))?;
        if subject.claims.get("grant").is_some() {
            return Err(rejected(
                "subject_token: a grant credential cannot be exchanged; use it as it is",
            ));
        }
        let actor = self
            .login(actor_token, now)
            .await
            .map_err(|e| in_exchange("actor_token", e))?;
        // The subject is who policy will see as the human requester: it must be a person.
        if let Some(why) = self.not_a_person(&subject) {
            return Err(IdentityError::NotAPerson {
                reason: format!(
                    "the subject_token {why}; an agent cannot be its own requester: the \
                     subject_token must be the token of the person the agent acts for, and the \
                     actor_token the agent's own"
                ),
            });
        }
        let s_id = subject.principal.identity.clone().unwrap_or_default();
        let a_id = actor.principal.identity.clone().unwrap_or_default();
        let actor_name = actor.principal.agent.clone();
        let (person, person_iss) = match s_id.chain.first() {
            Some(first) => (first.subject.clone(), first.issuer.clone()),
            None => (s_id.subject.clone(), s_id.issuer.clone()),
        };
        if person == actor_name || person == a_id.subject {
            return Err(IdentityError::NotAPerson {
                reason: format!(
                    "the subject_token and the actor_token are the same principal \
                     ({person:?}): a principal cannot act for itself; the subject_token must be \
                     the token of the person the agent acts for, and the actor_token the \
                     agent's own"
                ),
            });
        }
        // RFC 8693 §4.4: when the subject token says who may act for it, the actor must match.
        if let Some(may) = subject.claims.get("may_act").and_then(Value::as_object) {
            let sub_ok = may
                .get("sub")
                .and_then(Value::as_str)
                .is_none_or(|s| s == a_id.subject || s == actor_name);
            let iss_ok = may
                .get("iss")
                .and_then(Value::as_str)
                .is_none_or(|i| i == a_id.issuer);
            if !(sub_ok && iss_ok) {
                return Err(rejected(format!(
                    "subject_token's may_act ({}) does not allow actor {:?} of {:?} to act for {:?}",
                    Value::Object(may.clone()),
                    a_id.subject,
                    a_id.issuer,
                    s_id.subject
                )));
            }
        }
        // The agent joins the chain under its agent name, with its own token's `sub` at its
        // issuer (the service account as the provider knows it); a delegated actor token
        // already has its actors in `act`, so its `sub` (a person) is not the agent's.
        let idp_subject = if a_id.chain.is_empty() && !a_id.subject.is_empty() {
            Some(a_id.subject.clone())
        } else {
            actors_of(&actor.claims)
                .into_iter()
                .next()
                .and_then(|l| l.idp_subject)
        };
        // Earlier actors: those of the subject token (current first).
        let mut actors = vec![ChainLink {
            subject: actor_name.clone(),
            issuer: a_id.issuer.clone(),
            idp_subject,
        }];
        actors.extend(actors_of(&subject.claims));
        let mut exp = now + self.config.tokens.ttl_secs as i64;
        for e in [s_id.expires_at, a_id.expires_at].into_iter().flatten() {
            exp = exp.min(e);
        }
        let mut claims = Claims::new();
        claims.insert("sub".into(), json!(person));
        claims.insert("src_iss".into(), json!(person_iss));
        claims.insert("agent".into(), json!(actor_name));
        claims.insert("groups".into(), json!(a_id.groups));
        claims.insert("auth".into(), json!("token-exchange"));
        if let Some(act) = act_claim(&actors) {
            claims.insert("act".into(), act);
        }
        self.issue(claims, now, exp - now)
    }

    /// RFC 7522 SAML 2.0 bearer grant: a signed assertion from a configured IdP becomes a
    /// gateway token for the service principal it names.
    pub fn saml_bearer(&self, assertion_b64url: &str, now: i64) -> Result<Issued, IdentityError> {
        use base64::Engine;
        let xml = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(assertion_b64url.trim().trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(assertion_b64url.trim()))
            .map_err(|_| IdentityError::SamlRejected {
                reason: "assertion is not base64url-encoded XML (RFC 7522 §2.1)".into(),
            })?;
        if self.saml.is_empty() {
            return Err(IdentityError::SamlRejected {
                reason: "no SAML identity provider is configured ([[identity.saml]])".into(),
            });
        }
        let mut last = None;
        for (idp, verifier) in &self.saml {
            match verifier.verify(&xml, now) {
                Ok(a) => {
                    {
                        let mut seen = self.saml_seen.lock().unwrap_or_else(|p| p.into_inner());
                        seen.retain(|_, until| *until > now);
                        let key = format!("{}\u{0}{}", a.issuer, a.assertion_id);
                        if seen.contains_key(&key) {
                            return Err(IdentityError::SamlRejected {
                                reason: format!(
                                    "assertion {} was already exchanged (a bearer assertion is good for one use)",
                                    a.assertion_id
                                ),
                            });
                        }
                        seen.insert(key, a.not_on_or_after + idp.leeway_secs as i64);
                    }
                    let groups = a
                        .attributes
                        .iter()
                        .filter(|(n, _)| n == &idp.groups_attribute)
                        .flat_map(|(_, v)| v.iter().cloned())
                        .collect::<Vec<_>>();
                    let groups = self.groups_for(&a.subject, groups);
                    let mut claims = Claims::new();
                    claims.insert("sub".into(), json!(a.subject));
                    claims.insert("src_iss".into(), json!(a.issuer));
                    claims.insert("agent".into(), json!(a.subject));
                    claims.insert("groups".into(), json!(groups));
                    claims.insert("auth".into(), json!("saml2-bearer"));
                    claims.insert("saml_id".into(), json!(a.assertion_id));
                    let ttl = (self.config.tokens.ttl_secs as i64).min(a.not_on_or_after - now);
                    return self.issue(claims, now, ttl);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(IdentityError::SamlRejected {
            reason: "no IdP accepted it".into(),
        }))
    }

    fn issue(&self, claims: Claims, now: i64, ttl: i64) -> Result<Issued, IdentityError> {
        if ttl <= 0 {
            return Err(rejected("the presented tokens expire now; get fresh ones"));
        }
        let (token, _jti) = self.signer.issue(claims, now, ttl)?;
        let peeked = jwt::peek(&token)?;
        let verified =
            self.principal_of_gateway_token(self.signer.verify(&token, &peeked, now)?, now)?;
        Ok(Issued {
            token,
            expires_in: ttl,
            principal: verified.principal,
        })
    }

    /// A person (by their own OIDC token) allowed to issue, list and revoke grants. An
    /// agent's token, or a delegated one (an agent acting for the person), is refused
    /// ([`IdentityError::NotAPerson`]): the person issues grants themself.
    pub async fn grant_requester(&self, token: &str, now: i64) -> Result<Verified, IdentityError> {
        let (v, issuer) =
            self.verify_oidc(token, now)
                .await
                .map_err(|e| IdentityError::GrantRefused {
                    reason: format!("your token: {}", strip(&e)),
                })?;
        let who = self.principal_of_oidc(v, issuer);
        const HOW: &str = "grants are created, listed and revoked by a person with their own \
                           OIDC access token (PORTCULLIS_TOKEN), never with an agent's";
        if let Some(why) = self.not_a_person(&who) {
            return Err(IdentityError::NotAPerson {
                reason: format!("your token {why}; {HOW}"),
            });
        }
        if who
            .principal
            .identity
            .as_ref()
            .is_some_and(|i| !i.chain.is_empty())
        {
            return Err(IdentityError::NotAPerson {
                reason: format!(
                    "your token is delegated (agent {:?} acting for its subject); {HOW}",
                    who.principal.agent
                ),
            });
        }
        let needed = &self.config.grants.requester_groups;
        let groups = who
            .principal
            .identity
            .as_ref()
            .map(|i| i.groups.clone())
            .unwrap_or_default();
        if !needed.is_empty() && !groups.iter().any(|g| needed.contains(g)) {
            return Err(IdentityError::GrantRefused {
                reason: format!(
                    "{} is in none of the groups allowed to issue grants ({needed:?})",
                    who.principal
                        .identity
                        .as_ref()
                        .map(|i| i.subject.as_str())
                        .unwrap_or("")
                ),
            });
        }
        Ok(who)
    }

    /// Issues a task grant for the person holding `requester_token`. Returns the grant and
    /// the credential the agent uses (a gateway token bound to the grant).
    pub async fn create_grant(
        &self,
        requester_token: &str,
        req: GrantRequest,
        now: i64,
    ) -> Result<(GrantRecord, String), IdentityError> {
        let who = self.grant_requester(requester_token, now).await?;
        let id = who.principal.identity.unwrap_or_default();
        let refuse = |r: String| IdentityError::GrantRefused { reason: r };
        if req.agent.trim().is_empty() || req.connection.trim().is_empty() {
            return Err(refuse("--agent and --connection are required".into()));
        }
        if req.reason.trim().len() < 3 {
            return Err(refuse(
                "--reason must say why the agent needs this (it is recorded on every event)".into(),
            ));
        }
        let max = self.config.grants.max_ttl_secs;
        if req.ttl_secs == 0 || req.ttl_secs > max {
            return Err(refuse(format!(
                "ttl must be between 1 s and {max} s (identity.grants.max_ttl_secs)"
            )));
        }
        let record = GrantRecord {
            id: format!("grt_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
            agent: req.agent.clone(),
            connection: req.connection.clone(),
            requester: id.subject.clone(),
            requester_issuer: id.issuer.clone(),
            reason: req.reason.trim().to_string(),
            ticket: req.ticket.filter(|t| !t.trim().is_empty()),
            actions: req.actions,
            created_at: now,
            expires_at: now + req.ttl_secs as i64,
        };
        let mut claims = Claims::new();
        claims.insert("sub".into(), json!(record.requester));
        claims.insert("src_iss".into(), json!(record.requester_issuer));
        claims.insert("agent".into(), json!(record.agent));
        claims.insert("grant".into(), json!(record.id));
        claims.insert("connection".into(), json!(record.connection));
        claims.insert("auth".into(), json!("grant"));
        claims.insert("act".into(), json!({ "sub": record.agent }));
        self.grants.insert(record.clone());
        let (token, _) = self.signer.issue(claims, now, req.ttl_secs as i64)?;
        Ok((record, token))
    }
}

/// An error from checking one of the tokens of an exchange: the provider being unreachable
/// stays [`IdentityError::IssuerUnavailable`]; anything else refuses the token it is about.
fn in_exchange(which: &str, e: IdentityError) -> IdentityError {
    match e {
        IdentityError::IssuerUnavailable { .. } => e,
        other => rejected(format!("{which}: {}", strip(&other))),
    }
}

/// The message of an error without its variant's prefix.
fn strip(e: &IdentityError) -> String {
    match e {
        IdentityError::TokenRejected { reason } => reason.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_claims_and_chains_round_trip() {
        let links = vec![
            ChainLink {
                subject: "executor".into(),
                issuer: "i".into(),
                idp_subject: Some("0oa-executor".into()),
            },
            ChainLink {
                subject: "planner".into(),
                issuer: String::new(),
                idp_subject: None,
            },
        ];
        let act = act_claim(&links).expect("some");
        assert_eq!(act["sub"], "executor");
        assert_eq!(act["idp_sub"], "0oa-executor");
        assert_eq!(act["act"]["sub"], "planner");
        assert!(act["act"].get("idp_sub").is_none());
        let mut c = Claims::new();
        c.insert("act".into(), act);
        assert_eq!(actors_of(&c), links);
        let chain = chain_of("alice", "idp", &links);
        let names: Vec<&str> = chain.iter().map(|l| l.subject.as_str()).collect();
        assert_eq!(names, ["alice", "planner", "executor"]);
        assert!(chain_of("alice", "idp", &[]).is_empty());
    }

    const IDP: &str = "https://idp.example";

    /// An authenticator with one OIDC issuer (never contacted here) and `agents` configured.
    fn authenticator(agents: &[&str]) -> Authenticator {
        let rng = ring::rand::SystemRandom::new();
        let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
        let signer =
            TokenSigner::from_pkcs8(der.as_ref(), "urn:portcullis:gateway").expect("signer");
        let mut config = IdentityConfig::default();
        config.oidc.push(
            serde_json::from_value(
                json!({"name": "idp", "issuer": IDP, "audiences": ["urn:portcullis:gateway"]}),
            )
            .expect("issuer config"),
        );
        let agents = agents.iter().map(|a| (a.to_string(), vec![])).collect();
        Authenticator::new(config, signer, &[], agents, None).expect("authenticator")
    }

    /// An OIDC token from `IDP` with these claims, as if its signature had been checked.
    fn oidc(a: &Authenticator, claims: Value) -> Verified {
        let Value::Object(claims) = claims else {
            panic!("claims must be an object")
        };
        let issuer = a.issuers.first().expect("an issuer");
        a.principal_of_oidc(
            VerifiedToken {
                claims,
                issuer: IDP.into(),
            },
            issuer,
        )
    }

    /// A gateway token with these claims, signed with the authenticator's own key.
    fn gateway(a: &Authenticator, claims: Value, now: i64) -> String {
        let Value::Object(claims) = claims else {
            panic!("claims must be an object")
        };
        a.signer().issue(claims, now, 300).expect("sign").0
    }

    #[test]
    fn who_counts_as_a_person() {
        let a = authenticator(&["agent-etl"]);
        let person = |claims: Value| a.not_a_person(&oidc(&a, claims));
        // People: no agent claim, or one naming a client that is not an agent.
        assert_eq!(person(json!({"sub": "alice@example.com"})), None);
        assert_eq!(
            person(json!({"sub": "alice@example.com", "client_id": "web-console"})),
            None
        );
        // Delegated: speaks for its sub, the person at the head of the chain.
        assert_eq!(
            person(json!({"sub": "alice@example.com", "act": {"sub": "agent-etl"}})),
            None
        );
        // Agents: the sub is an [[agents]] entry (even delegated), the agent claim names one
        // (a provider whose client-credentials sub is an id), or the agent claim is the sub.
        let why = |claims: Value| person(claims).unwrap_or_default();
        assert!(why(json!({"sub": "agent-etl", "client_id": "agent-etl"}))
            .contains("agent \"agent-etl\"'s own token (its sub"));
        assert!(why(json!({"sub": "agent-etl", "act": {"sub": "planner"}}))
            .contains("agent \"agent-etl\"'s own token"));
        assert!(
            why(json!({"sub": "6f1c9a40-service-account", "client_id": "agent-etl"}))
                .contains("its \"client_id\" claim names that [[agents]] entry")
        );
        assert!(
            why(json!({"sub": "agent-support", "client_id": "agent-support"}))
                .contains("client \"agent-support\"'s own token")
        );
        assert!(why(json!({"client_id": "x"})).contains("no `sub`"));
    }

    #[tokio::test]
    async fn exchange_refuses_subjects_that_are_not_a_person() {
        let a = authenticator(&["agent-etl"]);
        let now = jwt::now_secs();
        // A gateway token for a service principal (what a SAML bearer grant gives).
        let service = |name: &str| {
            gateway(
                &a,
                json!({"sub": name, "agent": name, "auth": "saml2-bearer"}),
                now,
            )
        };
        let etl = service("agent-etl");
        let executor = service("executor");
        let not_a_person = |r: Result<Issued, IdentityError>| match r {
            Err(IdentityError::NotAPerson { reason }) => reason,
            other => panic!("expected NotAPerson, got {other:?}"),
        };
        let r = not_a_person(a.exchange(&etl, &etl, now).await);
        assert!(r.contains("agent \"agent-etl\"'s own token"), "{r}");
        let r = not_a_person(a.exchange(&executor, &etl, now).await);
        assert!(r.contains("client \"executor\"'s own token"), "{r}");
        // alice → planner, then planner's delegated token as the subject: the chain grows…
        let delegated = gateway(
            &a,
            json!({"sub": "alice@example.com", "src_iss": IDP, "agent": "planner",
                   "act": {"sub": "planner"}, "auth": "token-exchange"}),
            now,
        );
        let issued = a
            .exchange(&delegated, &executor, now)
            .await
            .expect("issued");
        let id = issued.principal.identity.expect("identity");
        let chain: Vec<&str> = id.chain.iter().map(|l| l.subject.as_str()).collect();
        assert_eq!(chain, ["alice@example.com", "planner", "executor"]);
        assert_eq!(issued.principal.agent, "executor");
        // The actor's own token's sub is kept on its link (and in the issued token's `act`),
        // the earlier links are as they were.
        let idp_subjects: Vec<Option<&str>> =
            id.chain.iter().map(|l| l.idp_subject.as_deref()).collect();
        assert_eq!(idp_subjects, [None, None, Some("executor")]);
        let claims = jwt::peek(&issued.token).expect("peek").claims;
        assert_eq!(claims["act"]["idp_sub"], "executor");
        assert!(claims["act"]["act"].get("idp_sub").is_none());
        // …but the actor may not be the person the subject speaks for.
        let alice = gateway(
            &a,
            json!({"sub": "alice@example.com", "agent": "alice@example.com"}),
            now,
        );
        let r = not_a_person(a.exchange(&delegated, &alice, now).await);
        assert!(
            r.contains("the same principal (\"alice@example.com\")"),
            "{r}"
        );
    }
}
