//! Verification of SAML 2.0 bearer assertions, as the SAML2 bearer grant (RFC 7522) needs.
//!
//! An agent that already holds a SAML assertion from the organisation's identity provider
//! (IdP) can trade it at the token endpoint instead of a portcullis API key. The assertion is
//! only as good as the check of its XML signature, and XML signatures are notoriously easy to
//! check wrongly, so this module is deliberately narrow and strict:
//!
//! * **Only the configured certificate is trusted.** The IdP's signing certificate comes from
//!   [`SamlVerifierConfig::certificate_pem`]; any `ds:KeyInfo` in the document is ignored,
//!   otherwise anyone could sign an assertion with a key of their own and ship the matching
//!   certificate along.
//! * **Signature wrapping is ruled out by shape, not by luck.** The document must hold exactly
//!   one `saml:Assertion` (either the document element or a direct child of a
//!   `samlp:Response`), that assertion must carry exactly one enveloped `ds:Signature` as a
//!   direct child, whose single `ds:Reference` points at `#` + that assertion's own `ID`, and
//!   no `ID` may occur twice in the document. Every value handed back is then read from that
//!   very element, so what was signed is what is used.
//! * **One algorithm suite.** Exclusive canonicalization (optionally with an
//!   `InclusiveNamespaces` prefix list), the enveloped-signature transform, SHA-256 digests and
//!   RSA-SHA256 (or ECDSA-P256-SHA256) signatures: what every current IdP emits. SHA-1, HMAC,
//!   inclusive canonicalization, XPath/XSLT transforms and encrypted assertions are refused.
//! * **No DTDs.** A document with `<!DOCTYPE` or `<!ENTITY` is refused before parsing, which
//!   removes entity expansion and external entity tricks altogether.
//! * **Text is read the way it was signed.** Canonicalization drops comments, so a comment
//!   inside `NameID` (`alice@example.com<!---->.evil`) is not a cut-off point: the subject is
//!   the concatenation of all text, exactly what the digest covered.
//!
//! Exclusive XML canonicalization (<https://www.w3.org/TR/xml-exc-c14n/>) is implemented here
//! for what SAML assertions contain (elements, attributes, text, processing instructions;
//! comments dropped). The XML itself is parsed with `roxmltree`.
//!
//! After the signature, the SAML conditions are checked (RFC 7522 §3, SAML 2.0 core §2.5): the
//! `Issuer` is the configured IdP entity ID, `Conditions` `NotBefore`/`NotOnOrAfter` hold
//! (with the configured leeway), every `AudienceRestriction` names our SP entity ID, no
//! condition we do not understand is present, and a bearer `SubjectConfirmation` names our
//! token endpoint as `Recipient` with a `NotOnOrAfter` still in the future.
//!
//! Not done here: replay detection. A bearer assertion may be presented again until it
//! expires; callers that must refuse that keep [`SamlAssertion::assertion_id`] until
//! [`SamlAssertion::not_on_or_after`] and refuse a second use.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use roxmltree::{Document, Node, NodeId, NodeType, ParsingOptions};
use sha2::{Digest, Sha256};

use crate::IdentityError;
use portcullis_core::calendar::{days_from_civil, days_in_month};

const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

const ALG_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ALG_ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const ALG_RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const ALG_ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
const ALG_SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

const CM_BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const NAMEID_FORMAT_ENTITY: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// Larger documents are refused before parsing. Real assertions are a few kilobytes.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Node limit handed to the parser.
const MAX_NODES: u32 = 50_000;
/// Deepest element nesting canonicalization accepts (assertions nest about 6 deep).
const MAX_DEPTH: usize = 64;

/// DER of the OID 1.2.840.113549.1.1.1 (rsaEncryption).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// DER of the OID 1.2.840.10045.2.1 (id-ecPublicKey).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of the OID 1.2.840.10045.3.1.7 (prime256v1 / P-256).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// What portcullis knows about one trusted SAML identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlVerifierConfig {
    /// Our name for the IdP, used in error messages (e.g. `corp-saml`).
    pub name: String,
    /// The IdP's entity ID: the exact `Issuer` its assertions carry.
    pub idp_entity_id: String,
    /// The IdP's signing certificate, X.509 in PEM (`-----BEGIN CERTIFICATE-----`). The only
    /// key assertions are checked against; certificates inside documents are ignored.
    pub certificate_pem: String,
    /// Our SP entity ID, which must appear in every `AudienceRestriction`.
    pub audience: String,
    /// Our token endpoint URL, which must be the bearer `SubjectConfirmationData` `Recipient`.
    pub recipient: String,
    /// Clock skew tolerated on every time bound, in seconds.
    pub leeway_secs: u64,
}

/// The facts of an assertion that passed [`SamlVerifier::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAssertion {
    /// The `Issuer` (equal to the configured IdP entity ID).
    pub issuer: String,
    /// The subject's `NameID`.
    pub subject: String,
    /// The assertion's `ID`, for replay detection.
    pub assertion_id: String,
    /// Unix seconds after which the assertion must no longer be used: the earliest of the
    /// `Conditions` and the accepted `SubjectConfirmationData` `NotOnOrAfter`.
    pub not_on_or_after: i64,
    /// `(Name, values)` of every `Attribute` in the `AttributeStatement`s, in document order.
    pub attributes: Vec<(String, Vec<String>)>,
    /// `AuthnInstant` of the first `AuthnStatement`, in Unix seconds, if there is one.
    pub authn_instant: Option<i64>,
}

/// Checks assertions from one IdP. Build it once with [`SamlVerifier::new`] and reuse it.
#[derive(Debug, Clone)]
pub struct SamlVerifier {
    config: SamlVerifierConfig,
    key: PublicKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcdsaP256,
}

#[derive(Debug, Clone)]
struct PublicKey {
    kind: KeyKind,
    /// `RSAPublicKey` DER for RSA, the uncompressed point for P-256: what `ring` takes.
    bytes: Vec<u8>,
}

impl SamlVerifier {
    /// Check the configuration and extract the public key from the IdP certificate.
    ///
    /// Fails with [`IdentityError::SamlRejected`] when the PEM or certificate cannot be used
    /// (not PEM, not X.509, RSA shorter than 2048 bits, a key type other than RSA or EC
    /// P-256) or when a required field is empty.
    pub fn new(config: SamlVerifierConfig) -> Result<Self, IdentityError> {
        let bad = |reason: String| IdentityError::SamlRejected {
            reason: format!(
                "the configuration of IdP {:?} cannot be used: {reason}",
                config.name
            ),
        };
        for (field, value) in [
            ("idp_entity_id", &config.idp_entity_id),
            ("audience", &config.audience),
            ("recipient", &config.recipient),
        ] {
            if value.trim().is_empty() {
                return Err(bad(format!("{field} is empty")));
            }
        }
        let der = pem_certificate_der(&config.certificate_pem).map_err(&bad)?;
        let key = certificate_public_key(&der).map_err(|e| {
            bad(format!(
                "certificate_pem is not a usable X.509 certificate: {e}"
            ))
        })?;
        Ok(Self { config, key })
    }

    /// The configuration this verifier was built from.
    pub fn config(&self) -> &SamlVerifierConfig {
        &self.config
    }

    /// Verify `xml` (a bare `saml:Assertion`, or a `samlp:Response` holding exactly one signed
    /// assertion) at time `now_unix` and return what it asserts.
    ///
    /// `xml` is the decoded document: for the RFC 7522 grant, the base64url-decoded
    /// `assertion` form parameter. Any failure is an [`IdentityError::SamlRejected`] whose
    /// reason says what was wrong.
    pub fn verify(&self, xml: &[u8], now_unix: i64) -> Result<SamlAssertion, IdentityError> {
        self.check(xml, now_unix)
            .map_err(|reason| IdentityError::SamlRejected { reason })
    }

    fn check(&self, xml: &[u8], now: i64) -> Result<SamlAssertion, String> {
        if xml.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "document is {} bytes; at most {MAX_DOCUMENT_BYTES} are accepted",
                xml.len()
            ));
        }
        let text = std::str::from_utf8(xml).map_err(|e| format!("document is not UTF-8 ({e})"))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
            return Err(
                "document contains a DTD (<!DOCTYPE> or <!ENTITY>); DTDs and entity declarations \
                 are refused"
                    .to_owned(),
            );
        }
        let options = ParsingOptions {
            allow_dtd: false,
            nodes_limit: MAX_NODES,
            ..ParsingOptions::default()
        };
        let doc = Document::parse_with_options(text, options)
            .map_err(|e| format!("document is not well-formed XML: {e}"))?;
        check_unique_ids(&doc)?;
        let assertion = self.locate_assertion(&doc)?;
        self.check_signature(assertion)?;
        self.check_statements(assertion, now)
    }

    /// Find the one assertion, refusing every document shape that could hide a second one.
    fn locate_assertion<'a, 'i>(&self, doc: &'a Document<'i>) -> Result<Node<'a, 'i>, String> {
        let root = doc.root_element();
        if doc
            .descendants()
            .any(|n| is(n, NS_ASSERTION, "EncryptedAssertion"))
        {
            return Err(
                "EncryptedAssertion is not supported; have the IdP send a signed, \
                        unencrypted assertion"
                    .to_owned(),
            );
        }
        let assertions: Vec<Node> = doc
            .descendants()
            .filter(|n| is(*n, NS_ASSERTION, "Assertion"))
            .collect();
        let wrapped = is(root, NS_PROTOCOL, "Response");
        if !wrapped && !is(root, NS_ASSERTION, "Assertion") {
            return Err(format!(
                "document element is {}; expected saml:Assertion or samlp:Response",
                describe(root)
            ));
        }
        let assertion = match assertions.as_slice() {
            [] => return Err("Response contains no Assertion".to_owned()),
            [one] => *one,
            more => {
                return Err(format!(
                    "document contains {} Assertion elements; exactly one is accepted (possible \
                     signature wrapping)",
                    more.len()
                ))
            }
        };
        if wrapped {
            if assertion.parent() != Some(root) {
                return Err(
                    "the Assertion is not a direct child of the Response (possible \
                            signature wrapping)"
                        .to_owned(),
                );
            }
            self.check_response(root)?;
        }
        Ok(assertion)
    }

    /// Sanity checks on the (usually unsigned) Response envelope.
    fn check_response(&self, response: Node) -> Result<(), String> {
        let status = only_child(response, NS_PROTOCOL, "Status", "Response")?;
        let code = only_child(status, NS_PROTOCOL, "StatusCode", "Status")?;
        match code.attribute("Value") {
            Some(STATUS_SUCCESS) => {}
            Some(other) => {
                return Err(format!(
                    "Response status is {other:?}, not {STATUS_SUCCESS:?}"
                ))
            }
            None => return Err("Response StatusCode has no Value".to_owned()),
        }
        if let Some(destination) = response.attribute("Destination") {
            if destination != self.config.recipient {
                return Err(format!(
                    "Response Destination {destination:?} is not our token endpoint {:?}",
                    self.config.recipient
                ));
            }
        }
        Ok(())
    }

    /// Check the enveloped signature of `assertion` against the configured key.
    fn check_signature(&self, assertion: Node) -> Result<(), String> {
        let id = assertion
            .attribute("ID")
            .filter(|id| !id.is_empty())
            .ok_or("Assertion has no ID attribute")?;
        let signatures: Vec<Node> = elements(assertion)
            .filter(|n| is(*n, NS_DSIG, "Signature"))
            .collect();
        let signature = match signatures.as_slice() {
            [] => {
                return Err(
                    "no Signature over the Assertion: the Assertion must carry its own \
                            enveloped ds:Signature (a signature on the Response alone is not \
                            accepted)"
                        .to_owned(),
                )
            }
            [one] => *one,
            more => {
                return Err(format!(
                    "Assertion has {} ds:Signature children; exactly one is accepted",
                    more.len()
                ))
            }
        };

        let parts: Vec<Node> = elements(signature).collect();
        let (signed_info, signature_value) = match parts.as_slice() {
            [si, sv, rest @ ..]
                if is(*si, NS_DSIG, "SignedInfo") && is(*sv, NS_DSIG, "SignatureValue") =>
            {
                if let Some(extra) = rest.iter().find(|n| !is(**n, NS_DSIG, "KeyInfo")) {
                    return Err(format!(
                        "ds:Signature contains {}; only SignedInfo, SignatureValue and KeyInfo \
                         are accepted",
                        describe(*extra)
                    ));
                }
                (*si, *sv)
            }
            _ => {
                return Err(
                    "ds:Signature must hold ds:SignedInfo followed by ds:SignatureValue".to_owned(),
                )
            }
        };

        let info: Vec<Node> = elements(signed_info).collect();
        let (c14n_method, signature_method, reference) = match info.as_slice() {
            [c, s, r]
                if is(*c, NS_DSIG, "CanonicalizationMethod")
                    && is(*s, NS_DSIG, "SignatureMethod")
                    && is(*r, NS_DSIG, "Reference") =>
            {
                (*c, *s, *r)
            }
            _ => {
                return Err(
                    "ds:SignedInfo must hold CanonicalizationMethod, SignatureMethod and \
                            exactly one Reference"
                        .to_owned(),
                )
            }
        };
        let c14n_algorithm = c14n_method.attribute("Algorithm").unwrap_or("");
        if c14n_algorithm != ALG_EXC_C14N {
            return Err(format!(
                "CanonicalizationMethod {c14n_algorithm:?} is not supported; only exclusive \
                 canonicalization {ALG_EXC_C14N:?} is accepted"
            ));
        }
        let signed_info_prefixes = inclusive_prefixes(c14n_method)?;
        let method = signature_method.attribute("Algorithm").unwrap_or("");
        let algorithm: &dyn ring::signature::VerificationAlgorithm = match (method, self.key.kind) {
            (ALG_RSA_SHA256, KeyKind::Rsa) => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            (ALG_ECDSA_SHA256, KeyKind::EcdsaP256) => &ring::signature::ECDSA_P256_SHA256_FIXED,
            (ALG_RSA_SHA256 | ALG_ECDSA_SHA256, kind) => {
                return Err(format!(
                    "SignatureMethod {method:?} does not match the {} key in the configured \
                     certificate of IdP {:?}",
                    match kind {
                        KeyKind::Rsa => "RSA",
                        KeyKind::EcdsaP256 => "EC P-256",
                    },
                    self.config.name
                ))
            }
            _ => {
                return Err(format!(
                    "SignatureMethod {method:?} is not supported; only {ALG_RSA_SHA256:?} and \
                     {ALG_ECDSA_SHA256:?} are accepted"
                ))
            }
        };

        // The reference must cover exactly this assertion.
        let uri = reference.attribute("URI").unwrap_or("");
        let expected_uri = format!("#{id}");
        if uri != expected_uri {
            return Err(format!(
                "signature references an element other than the assertion (possible signature \
                 wrapping): Reference URI is {uri:?}, the Assertion's ID is {id:?}"
            ));
        }
        let ref_parts: Vec<Node> = elements(reference).collect();
        let (transforms, digest_method, digest_value) = match ref_parts.as_slice() {
            [t, m, v]
                if is(*t, NS_DSIG, "Transforms")
                    && is(*m, NS_DSIG, "DigestMethod")
                    && is(*v, NS_DSIG, "DigestValue") =>
            {
                (*t, *m, *v)
            }
            _ => {
                return Err(
                    "ds:Reference must hold Transforms, DigestMethod and DigestValue".to_owned(),
                )
            }
        };
        let steps: Vec<Node> = elements(transforms).collect();
        let reference_prefixes = match steps.as_slice() {
            [enveloped, exc]
                if is(*enveloped, NS_DSIG, "Transform")
                    && is(*exc, NS_DSIG, "Transform")
                    && enveloped.attribute("Algorithm") == Some(ALG_ENVELOPED)
                    && elements(*enveloped).next().is_none()
                    && exc.attribute("Algorithm") == Some(ALG_EXC_C14N) =>
            {
                inclusive_prefixes(*exc)?
            }
            _ => {
                let found: Vec<&str> = steps
                    .iter()
                    .map(|t| t.attribute("Algorithm").unwrap_or("?"))
                    .collect();
                return Err(format!(
                    "Reference transforms are {found:?}; exactly [{ALG_ENVELOPED:?}, \
                     {ALG_EXC_C14N:?}] is accepted"
                ));
            }
        };
        let digest_algorithm = digest_method.attribute("Algorithm").unwrap_or("");
        if digest_algorithm != ALG_SHA256 {
            return Err(format!(
                "DigestMethod {digest_algorithm:?} is not supported; only {ALG_SHA256:?} is \
                 accepted"
            ));
        }
        let expected_digest = decode_base64(&text_content(digest_value, "DigestValue")?)
            .map_err(|e| format!("DigestValue is not base64 ({e})"))?;

        let canonical = exc_c14n(assertion, Some(signature.id()), &reference_prefixes)?;
        let digest = Sha256::digest(canonical.as_bytes());
        if digest.as_slice() != expected_digest.as_slice() {
            return Err(
                "digest of the Assertion does not match the signed DigestValue: the \
                        assertion was modified after it was signed"
                    .to_owned(),
            );
        }

        let signature_bytes = decode_base64(&text_content(signature_value, "SignatureValue")?)
            .map_err(|e| format!("SignatureValue is not base64 ({e})"))?;
        let canonical_info = exc_c14n(signed_info, None, &signed_info_prefixes)?;
        ring::signature::UnparsedPublicKey::new(algorithm, &self.key.bytes)
            .verify(canonical_info.as_bytes(), &signature_bytes)
            .map_err(|_| {
                format!(
                    "signature does not verify against the configured certificate of IdP {:?}",
                    self.config.name
                )
            })
    }

    /// Everything after the signature: issuer, times, audience, subject confirmation.
    fn check_statements(&self, assertion: Node, now: i64) -> Result<SamlAssertion, String> {
        let cfg = &self.config;
        let leeway = i64::try_from(cfg.leeway_secs).unwrap_or(i64::MAX);
        let late = |bound: i64| now >= bound.saturating_add(leeway);
        let early = |bound: i64| now.saturating_add(leeway) < bound;
        let clock = || format!("now is {}, leeway {}s", format_time(now), cfg.leeway_secs);

        match assertion.attribute("Version") {
            Some("2.0") => {}
            other => {
                return Err(format!(
                    "Assertion Version is {other:?}; only SAML \"2.0\" is accepted"
                ))
            }
        }
        let assertion_id = assertion.attribute("ID").unwrap_or_default().to_owned();

        let issuer_node = elements(assertion)
            .next()
            .filter(|n| is(*n, NS_ASSERTION, "Issuer"))
            .ok_or("Assertion does not start with an Issuer")?;
        let issuer = text_content(issuer_node, "Issuer")?.trim().to_owned();
        if issuer != cfg.idp_entity_id {
            return Err(format!(
                "Issuer {issuer:?} is not the entity ID {:?} configured for IdP {:?}",
                cfg.idp_entity_id, cfg.name
            ));
        }
        if let Some(format) = issuer_node.attribute("Format") {
            if format != NAMEID_FORMAT_ENTITY {
                return Err(format!(
                    "Issuer Format is {format:?}; it must be absent or {NAMEID_FORMAT_ENTITY:?}"
                ));
            }
        }

        let issued = required_time(assertion, "IssueInstant", "Assertion")?;
        if early(issued) {
            return Err(format!(
                "Assertion IssueInstant {} is in the future; {}",
                format_time(issued),
                clock()
            ));
        }

        // Conditions (SAML core 2.5).
        let conditions = only_child(assertion, NS_ASSERTION, "Conditions", "Assertion")?;
        if let Some(not_before) = optional_time(conditions, "NotBefore", "Conditions")? {
            if early(not_before) {
                return Err(format!(
                    "assertion is not valid before {} (Conditions NotBefore); {}",
                    format_time(not_before),
                    clock()
                ));
            }
        }
        let conditions_end = optional_time(conditions, "NotOnOrAfter", "Conditions")?;
        if let Some(end) = conditions_end {
            if late(end) {
                return Err(format!(
                    "assertion expired at {} (Conditions NotOnOrAfter); {}",
                    format_time(end),
                    clock()
                ));
            }
        }
        let mut restrictions = 0;
        for condition in elements(conditions) {
            if is(condition, NS_ASSERTION, "AudienceRestriction") {
                restrictions += 1;
                let audiences = elements(condition)
                    .filter(|n| is(*n, NS_ASSERTION, "Audience"))
                    .map(|n| text_content(n, "Audience").map(|t| t.trim().to_owned()))
                    .collect::<Result<Vec<_>, _>>()?;
                if !audiences.contains(&cfg.audience) {
                    return Err(match audiences.as_slice() {
                        [one] => format!("audience {one:?} is not {:?}", cfg.audience),
                        many => format!(
                            "AudienceRestriction lists {many:?}, which does not include our \
                             audience {:?}",
                            cfg.audience
                        ),
                    });
                }
            } else if !is(condition, NS_ASSERTION, "OneTimeUse")
                && !is(condition, NS_ASSERTION, "ProxyRestriction")
            {
                return Err(format!(
                    "Conditions contains {}, which is not understood; SAML requires refusing \
                     such an assertion",
                    describe(condition)
                ));
            }
        }
        if restrictions == 0 {
            return Err(format!(
                "Conditions has no AudienceRestriction; RFC 7522 requires one naming {:?}",
                cfg.audience
            ));
        }

        // Subject.
        let subject_node = only_child(assertion, NS_ASSERTION, "Subject", "Assertion")?;
        if elements(subject_node).any(|n| is(n, NS_ASSERTION, "EncryptedID")) {
            return Err("Subject has an EncryptedID; encrypted NameIDs are not supported".into());
        }
        let name_id = only_child(subject_node, NS_ASSERTION, "NameID", "Subject")?;
        let subject = text_content(name_id, "NameID")?.trim().to_owned();
        if subject.is_empty() {
            return Err("Subject NameID is empty".to_owned());
        }

        let mut confirmation_end = None;
        let mut first_problem = None;
        for confirmation in
            elements(subject_node).filter(|n| is(*n, NS_ASSERTION, "SubjectConfirmation"))
        {
            if confirmation.attribute("Method") != Some(CM_BEARER) {
                continue;
            }
            match self.check_bearer(confirmation, now, leeway) {
                Ok(end) => {
                    confirmation_end = Some(end);
                    break;
                }
                Err(problem) => {
                    first_problem.get_or_insert(problem);
                }
            }
        }
        let confirmation_end = match (confirmation_end, first_problem) {
            (Some(end), _) => end,
            (None, Some(problem)) => return Err(problem),
            (None, None) => {
                return Err(format!(
                    "Subject has no SubjectConfirmation with Method {CM_BEARER:?}"
                ))
            }
        };

        // Statements.
        let mut attributes = Vec::new();
        for statement in elements(assertion).filter(|n| is(*n, NS_ASSERTION, "AttributeStatement"))
        {
            for attribute in elements(statement).filter(|n| is(*n, NS_ASSERTION, "Attribute")) {
                let name = attribute
                    .attribute("Name")
                    .ok_or("an Attribute has no Name")?
                    .to_owned();
                let values = elements(attribute)
                    .filter(|n| is(*n, NS_ASSERTION, "AttributeValue"))
                    .map(all_text)
                    .collect();
                attributes.push((name, values));
            }
        }
        let authn_instant = elements(assertion)
            .find(|n| is(*n, NS_ASSERTION, "AuthnStatement"))
            .map(|s| required_time(s, "AuthnInstant", "AuthnStatement"))
            .transpose()?;

        Ok(SamlAssertion {
            issuer,
            subject,
            assertion_id,
            not_on_or_after: conditions_end
                .map_or(confirmation_end, |end| end.min(confirmation_end)),
            attributes,
            authn_instant,
        })
    }

    /// Check one bearer `SubjectConfirmation`; returns its `NotOnOrAfter`.
    fn check_bearer(&self, confirmation: Node, now: i64, leeway: i64) -> Result<i64, String> {
        let data = only_child(
            confirmation,
            NS_ASSERTION,
            "SubjectConfirmationData",
            "bearer SubjectConfirmation",
        )?;
        let recipient = data
            .attribute("Recipient")
            .ok_or("bearer SubjectConfirmationData has no Recipient")?;
        if recipient != self.config.recipient {
            return Err(format!(
                "SubjectConfirmationData Recipient {recipient:?} is not our token endpoint {:?}",
                self.config.recipient
            ));
        }
        let clock = || format!("now is {}, leeway {leeway}s", format_time(now));
        if let Some(not_before) = optional_time(data, "NotBefore", "SubjectConfirmationData")? {
            if now.saturating_add(leeway) < not_before {
                return Err(format!(
                    "bearer confirmation is not valid before {} (SubjectConfirmationData \
                     NotBefore); {}",
                    format_time(not_before),
                    clock()
                ));
            }
        }
        let end = optional_time(data, "NotOnOrAfter", "SubjectConfirmationData")?
            .ok_or("bearer SubjectConfirmationData has no NotOnOrAfter (RFC 7522 requires one)")?;
        if now >= end.saturating_add(leeway) {
            return Err(format!(
                "bearer confirmation expired at {} (SubjectConfirmationData NotOnOrAfter); {}",
                format_time(end),
                clock()
            ));
        }
        Ok(end)
    }
}

// ---------------------------------------------------------------------------------------------
// Document helpers.

fn is(node: Node, namespace: &str, local: &str) -> bool {
    node.is_element()
        && node.tag_name().namespace() == Some(namespace)
        && node.tag_name().name() == local
}

fn elements<'a, 'i>(node: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(Node::is_element)
}

/// `{namespace}local` of an element, for messages.
fn describe(node: Node) -> String {
    let name = node.tag_name();
    match name.namespace() {
        Some(ns) => format!("{{{ns}}}{}", name.name()),
        None => name.name().to_owned(),
    }
}

/// The single child element `{namespace}local` of `parent`.
fn only_child<'a, 'i>(
    parent: Node<'a, 'i>,
    namespace: &str,
    local: &str,
    what: &str,
) -> Result<Node<'a, 'i>, String> {
    let mut found = elements(parent).filter(|n| is(*n, namespace, local));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(format!("{what} has no {local}")),
        (Some(_), Some(_)) => Err(format!("{what} has more than one {local}")),
    }
}

/// The text of an element that may hold only text (comments are skipped, as canonicalization
/// skips them: all text pieces are joined).
fn text_content(node: Node, what: &str) -> Result<String, String> {
    let mut text = String::new();
    for child in node.children() {
        match child.node_type() {
            NodeType::Text => text.push_str(child.text().unwrap_or_default()),
            NodeType::Element => return Err(format!("{what} must hold only text")),
            _ => {}
        }
    }
    Ok(text)
}

/// All descendant text of an element, joined.
fn all_text(node: Node) -> String {
    node.descendants()
        .filter(Node::is_text)
        .filter_map(|n| n.text())
        .collect()
}

/// Refuse a document in which two elements share an ID-like attribute.
fn check_unique_ids(doc: &Document) -> Result<(), String> {
    let mut seen = HashSet::new();
    for node in doc.descendants().filter(Node::is_element) {
        for attr in node.attributes() {
            let id_like = match attr.namespace() {
                None => matches!(attr.name(), "ID" | "Id" | "id"),
                Some(ns) => ns == NS_XML && attr.name() == "id",
            };
            if id_like && !seen.insert(attr.value()) {
                return Err(format!(
                    "the ID {:?} appears on more than one element (possible signature wrapping)",
                    attr.value()
                ));
            }
        }
    }
    Ok(())
}

/// The `PrefixList` of an `ec:InclusiveNamespaces` child of a canonicalization method or
/// transform; `#default` becomes the empty prefix.
fn inclusive_prefixes(method: Node) -> Result<Vec<String>, String> {
    let mut prefixes = Vec::new();
    for child in elements(method) {
        if !is(child, ALG_EXC_C14N, "InclusiveNamespaces") {
            return Err(format!(
                "unexpected {} inside an exclusive canonicalization method",
                describe(child)
            ));
        }
        for prefix in child
            .attribute("PrefixList")
            .unwrap_or("")
            .split_whitespace()
        {
            prefixes.push(if prefix == "#default" {
                String::new()
            } else {
                prefix.to_owned()
            });
        }
    }
    Ok(prefixes)
}

fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD.decode(compact)
}

// ---------------------------------------------------------------------------------------------
// Exclusive XML canonicalization 1.0, without comments.

/// Canonical form of the subtree at `apex`, leaving out the subtree at `omit` (the enveloped
/// signature). `inclusive` holds the `InclusiveNamespaces` prefixes (`""` for the default
/// namespace), which are rendered by the rules of inclusive canonicalization.
fn exc_c14n(apex: Node, omit: Option<NodeId>, inclusive: &[String]) -> Result<String, String> {
    let mut out = String::new();
    c14n_element(apex, omit, inclusive, &BTreeMap::new(), 0, &mut out)?;
    Ok(out)
}

/// The prefixed name of an element exactly as written in the document.
fn element_qname<'i>(node: Node<'_, 'i>) -> Result<&'i str, String> {
    let source = node.document().input_text();
    let tail = source
        .get(node.range().start..)
        .and_then(|s| s.strip_prefix('<'))
        .ok_or("cannot locate an element in the document text")?;
    let end = tail
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(tail.len());
    let qname = &tail[..end];
    let local = qname.split_once(':').map_or(qname, |(_, local)| local);
    if local != node.tag_name().name() {
        return Err(format!(
            "cannot read the name of element {}",
            describe(node)
        ));
    }
    Ok(qname)
}

fn c14n_element(
    node: Node,
    omit: Option<NodeId>,
    inclusive: &[String],
    rendered: &BTreeMap<String, String>,
    depth: usize,
    out: &mut String,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("elements are nested more than {MAX_DEPTH} deep"));
    }
    let source = node.document().input_text();
    let qname = element_qname(node)?;

    // Namespace prefixes visibly utilized by the element and its attributes, plus the
    // inclusive ones that are in scope.
    let mut prefixes: BTreeSet<&str> = BTreeSet::new();
    prefixes.insert(qname.split_once(':').map_or("", |(prefix, _)| prefix));
    let mut attributes = Vec::new();
    for attr in node.attributes() {
        let attr_qname = source
            .get(attr.range_qname())
            .ok_or("cannot locate an attribute in the document text")?;
        let (prefix, local) = attr_qname.split_once(':').unwrap_or(("", attr_qname));
        if local != attr.name() {
            return Err(format!(
                "cannot read the name of attribute {:?} of {}",
                attr.name(),
                describe(node)
            ));
        }
        if !prefix.is_empty() && prefix != "xml" {
            prefixes.insert(prefix);
        }
        attributes.push((
            attr.namespace().unwrap_or(""),
            attr.name(),
            attr_qname,
            attr.value(),
        ));
    }
    for prefix in inclusive {
        if prefix.is_empty()
            || (prefix != "xml" && node.lookup_namespace_uri(Some(prefix)).is_some())
        {
            prefixes.insert(prefix);
        }
    }

    out.push('<');
    out.push_str(qname);
    // Sorted by prefix, the default namespace (empty prefix) first.
    let mut scope = rendered.clone();
    for prefix in prefixes {
        let uri = if prefix.is_empty() {
            node.lookup_namespace_uri(None).unwrap_or("")
        } else {
            node.lookup_namespace_uri(Some(prefix))
                .ok_or_else(|| format!("namespace prefix {prefix:?} is not declared"))?
        };
        if scope.get(prefix).map_or("", String::as_str) != uri {
            if prefix.is_empty() {
                out.push_str(" xmlns=\"");
            } else {
                out.push_str(" xmlns:");
                out.push_str(prefix);
                out.push_str("=\"");
            }
            escape_attribute(uri, out);
            out.push('"');
            scope.insert(prefix.to_owned(), uri.to_owned());
        }
    }
    // Attributes sorted by namespace URI, then local name; unqualified ones first.
    attributes.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, _, attr_qname, value) in attributes {
        out.push(' ');
        out.push_str(attr_qname);
        out.push_str("=\"");
        escape_attribute(value, out);
        out.push('"');
    }
    out.push('>');

    for child in node.children() {
        if Some(child.id()) == omit {
            continue;
        }
        match child.node_type() {
            NodeType::Element => c14n_element(child, omit, inclusive, &scope, depth + 1, out)?,
            NodeType::Text => escape_text(child.text().unwrap_or_default(), out),
            NodeType::PI => {
                if let Some(pi) = child.pi() {
                    out.push_str("<?");
                    out.push_str(pi.target);
                    if let Some(value) = pi.value.filter(|v| !v.is_empty()) {
                        out.push(' ');
                        out.push_str(value);
                    }
                    out.push_str("?>");
                }
            }
            NodeType::Comment | NodeType::Root => {}
        }
    }

    out.push_str("</");
    out.push_str(qname);
    out.push('>');
    Ok(())
}

fn escape_text(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attribute(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Times (xs:dateTime).

fn required_time(node: Node, attribute: &str, what: &str) -> Result<i64, String> {
    optional_time(node, attribute, what)?.ok_or_else(|| format!("{what} has no {attribute}"))
}

fn optional_time(node: Node, attribute: &str, what: &str) -> Result<Option<i64>, String> {
    node.attribute(attribute)
        .map(|value| {
            parse_datetime(value.trim()).ok_or_else(|| {
                format!("{what} {attribute} {value:?} is not an xs:dateTime such as 2026-01-31T12:00:00Z")
            })
        })
        .transpose()
}

/// Parse `YYYY-MM-DDThh:mm:ss[.fraction][Z|±hh:mm]` into Unix seconds (fractions dropped;
/// no zone means UTC, as SAML requires UTC anyway).
fn parse_datetime(text: &str) -> Option<i64> {
    let field = |start: usize, len: usize| -> Option<i64> {
        let digits = text.get(start..start + len)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators
        .iter()
        .any(|&(at, sep)| text.as_bytes().get(at) != Some(&sep))
    {
        return None;
    }
    let (year, month, day) = (field(0, 4)?, field(5, 2)?, field(8, 2)?);
    let (hour, minute, second) = (field(11, 2)?, field(14, 2)?, field(17, 2)?);
    let mut rest = text.get(19..)?;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = fraction.get(digits..)?;
    }
    let offset = match rest {
        "" | "Z" => 0,
        zone => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if zone.len() != 6 || zone.as_bytes().get(3) != Some(&b':') {
                return None;
            }
            let (hours, minutes) = (field(20, 2)?, field(23, 2)?);
            if hours > 14 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Unix seconds as `YYYY-MM-DDThh:mm:ssZ`, for messages.
fn format_time(unix: i64) -> String {
    portcullis_core::calendar::rfc3339_secs(unix)
}

// ---------------------------------------------------------------------------------------------
// The IdP certificate: PEM, then just enough DER to reach the SubjectPublicKeyInfo.

fn pem_certificate_der(pem: &str) -> Result<Vec<u8>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem
        .find(BEGIN)
        .ok_or("certificate_pem has no -----BEGIN CERTIFICATE----- line")?
        + BEGIN.len();
    let body_len = pem
        .get(start..)
        .and_then(|rest| rest.find(END))
        .ok_or("certificate_pem has no -----END CERTIFICATE----- line")?;
    let after = start + body_len + END.len();
    if pem.get(after..).is_some_and(|rest| rest.contains(BEGIN)) {
        return Err(
            "certificate_pem holds more than one certificate; give exactly the IdP's \
                    signing certificate"
                .to_owned(),
        );
    }
    let body = pem.get(start..start + body_len).unwrap_or_default();
    decode_base64(body).map_err(|e| format!("certificate_pem is not valid base64 PEM ({e})"))
}

/// One DER element: `(tag, contents, rest)`.
fn der_next(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let truncated = || "truncated DER".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(truncated)?;
    if tag & 0x1f == 0x1f {
        return Err("unsupported multi-byte DER tag".to_owned());
    }
    let (&first, rest) = rest.split_first().ok_or_else(truncated)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return Err("unsupported DER length".to_owned());
        }
        let bytes = rest.get(..count).ok_or_else(truncated)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest.get(count..).ok_or_else(truncated)?)
    };
    let contents = rest.get(..len).ok_or_else(truncated)?;
    Ok((tag, contents, rest.get(len..).ok_or_else(truncated)?))
}

fn der_expect<'d>(input: &'d [u8], tag: u8, what: &str) -> Result<(&'d [u8], &'d [u8]), String> {
    let (found, contents, rest) = der_next(input)?;
    if found != tag {
        return Err(format!(
            "expected {what} (DER tag 0x{tag:02x}), found tag 0x{found:02x}"
        ));
    }
    Ok((contents, rest))
}

fn certificate_public_key(der: &[u8]) -> Result<PublicKey, String> {
    let (certificate, trailing) = der_expect(der, 0x30, "Certificate")?;
    if !trailing.is_empty() {
        return Err("data after the certificate".to_owned());
    }
    let (tbs, _) = der_expect(certificate, 0x30, "TBSCertificate")?;
    let (tag, _, after_version) = der_next(tbs)?;
    let mut cursor = if tag == 0xa0 { after_version } else { tbs };
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        cursor = der_next(cursor)?.2;
    }
    let (spki, _) = der_expect(cursor, 0x30, "SubjectPublicKeyInfo")?;
    let (algorithm, rest) = der_expect(spki, 0x30, "AlgorithmIdentifier")?;
    let (bits, _) = der_expect(rest, 0x03, "subjectPublicKey")?;
    let (oid, parameters) = der_expect(algorithm, 0x06, "algorithm OID")?;
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err("malformed subjectPublicKey BIT STRING".to_owned()),
    };
    if oid == OID_RSA_ENCRYPTION {
        let (rsa, _) = der_expect(key, 0x30, "RSAPublicKey")?;
        let (modulus, rest) = der_expect(rsa, 0x02, "RSA modulus")?;
        der_expect(rest, 0x02, "RSA public exponent")?;
        let significant: &[u8] = match modulus.iter().position(|&b| b != 0) {
            Some(at) => &modulus[at..],
            None => &[],
        };
        let modulus_bits = significant
            .first()
            .map_or(0, |&b| significant.len() * 8 - b.leading_zeros() as usize);
        if !(2048..=8192).contains(&modulus_bits) {
            return Err(format!(
                "the RSA key has {modulus_bits} bits; 2048 to 8192 are accepted"
            ));
        }
        Ok(PublicKey {
            kind: KeyKind::Rsa,
            bytes: key.to_vec(),
        })
    } else if oid == OID_EC_PUBLIC_KEY {
        let (curve, _) = der_expect(parameters, 0x06, "named curve")?;
        if curve != OID_P256 || key.len() != 65 || key.first() != Some(&4) {
            return Err("only EC keys on P-256 (uncompressed) are accepted".to_owned());
        }
        Ok(PublicKey {
            kind: KeyKind::EcdsaP256,
            bytes: key.to_vec(),
        })
    } else {
        Err("the public key is neither RSA nor EC P-256".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n_of(xml: &str, inclusive: &[&str]) -> String {
        let doc = Document::parse(xml).expect("test XML parses");
        let inclusive: Vec<String> = inclusive.iter().map(|s| (*s).to_owned()).collect();
        let apex = doc
            .descendants()
            .find(|n| n.attribute("apex").is_some())
            .unwrap_or(doc.root_element());
        exc_c14n(apex, None, &inclusive).expect("canonicalizes")
    }

    #[test]
    fn saml_c14n_renders_only_visibly_utilized_namespaces() {
        let xml = r#"<r xmlns="urn:d" xmlns:a="urn:a" xmlns:unused="urn:u"><a:e apex="" z="2" a:y="1" b="&amp;&lt;&#xD;&#x9;">t&gt;&#xD;<x/><!-- gone --><?pi  data?></a:e></r>"#;
        assert_eq!(
            c14n_of(xml, &[]),
            "<a:e xmlns:a=\"urn:a\" apex=\"\" b=\"&amp;&lt;&#xD;&#x9;\" z=\"2\" a:y=\"1\">\
             t&gt;&#xD;<x xmlns=\"urn:d\"></x><?pi data?></a:e>"
        );
    }

    #[test]
    fn saml_c14n_inclusive_prefixes_and_default_undeclaration() {
        let xml = r#"<r xmlns:xs="urn:xs" xmlns:p="urn:p"><p:e apex=""><f xmlns="urn:f"><g xmlns=""/></f><p:h/></p:e></r>"#;
        assert_eq!(
            c14n_of(xml, &["xs"]),
            "<p:e xmlns:p=\"urn:p\" xmlns:xs=\"urn:xs\" apex=\"\"><f xmlns=\"urn:f\">\
             <g xmlns=\"\"></g></f><p:h></p:h></p:e>"
        );
        // #default with no default namespace in scope renders nothing.
        assert_eq!(
            c14n_of(xml, &[""]),
            "<p:e xmlns:p=\"urn:p\" apex=\"\"><f xmlns=\"urn:f\"><g xmlns=\"\"></g></f>\
             <p:h></p:h></p:e>"
        );
    }

    #[test]
    fn saml_c14n_redeclared_prefix_is_rendered_again() {
        let xml = r#"<p:e xmlns:p="urn:one"><p:f xmlns:p="urn:two"/><p:g/></p:e>"#;
        assert_eq!(
            c14n_of(xml, &[]),
            "<p:e xmlns:p=\"urn:one\"><p:f xmlns:p=\"urn:two\"></p:f><p:g></p:g></p:e>"
        );
    }

    #[test]
    fn saml_datetime_parsing_and_formatting() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_datetime("2026-03-01T12:00:00Z"), Some(1_772_366_400));
        assert_eq!(
            parse_datetime("2026-03-01T12:00:00.999Z"),
            Some(1_772_366_400)
        );
        assert_eq!(
            parse_datetime("2026-03-01T13:30:00+01:30"),
            Some(1_772_366_400)
        );
        assert_eq!(parse_datetime("2024-02-29T00:00:00"), Some(1_709_164_800));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-03-01 12:00:00Z",
            "2026-03-01T12:00:00.Z",
            "2026-03-01T12:00:00+1:00",
            "2026-03-01T12:00",
            "+2026-03-01T12:00:00Z",
            "",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        assert_eq!(format_time(1_772_366_400), "2026-03-01T12:00:00Z");
        assert_eq!(format_time(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn saml_bad_certificates_are_refused_clearly() {
        let config = |pem: &str| SamlVerifierConfig {
            name: "corp-saml".to_owned(),
            idp_entity_id: "https://idp.example.com/".to_owned(),
            certificate_pem: pem.to_owned(),
            audience: "https://portcullis/".to_owned(),
            recipient: "https://portcullis/token".to_owned(),
            leeway_secs: 60,
        };
        let reason = |pem: &str| match SamlVerifier::new(config(pem)) {
            Err(IdentityError::SamlRejected { reason }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(reason("hello").contains("BEGIN CERTIFICATE"));
        assert!(
            reason("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").contains("base64")
        );
        assert!(
            reason("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----")
                .contains("X.509")
        );
        assert!(reason("x").contains("corp-saml"));
    }
}
