//! SAML bearer assertions signed by the real `xmlsec1` tool (keys made with the `openssl`
//! CLI), checked by [`SamlVerifier`]. Needs the Debian package `xmlsec1`; without it every
//! test fails (never skips) and says how to install it.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use portcullis_identity::{IdentityError, SamlAssertion, SamlVerifier, SamlVerifierConfig};

/// 2026-03-01T12:00:00Z
const NOW: i64 = 1_772_366_400;
const IDP: &str = "https://idp.example.com/saml";
const AUDIENCE: &str = "https://portcullis/";
const RECIPIENT: &str = "https://portcullis.example.com/oauth/token";
const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";

// ---------------------------------------------------------------------------------------------
// Tools and keys.

/// Run a command; a missing program fails the test with the package to install.
fn run(program: &str, package: &str, args: &[&str], dir: &Path) {
    let output = match Command::new(program).args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{program} not found: apt-get install -y {package}")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

struct KeyPair {
    key_pem: String,
    cert_pem: String,
}

struct Keys {
    idp: KeyPair,
    attacker: KeyPair,
    idp_ec: KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let make = |name: &str, newkey: &[&str]| {
            let key = format!("{name}.key.pem");
            let cert = format!("{name}.cert.pem");
            let subject = format!("/CN={name}");
            let mut args = vec!["req", "-x509", "-nodes", "-days", "3", "-sha256"];
            args.extend_from_slice(newkey);
            args.extend_from_slice(&["-keyout", &key, "-out", &cert, "-subj", &subject]);
            run("openssl", "openssl", &args, dir.path());
            let read = |file: &str| {
                std::fs::read_to_string(dir.path().join(file)).expect("openssl wrote the file")
            };
            KeyPair {
                key_pem: read(&key),
                cert_pem: read(&cert),
            }
        };
        Keys {
            idp: make("idp", &["-newkey", "rsa:2048"]),
            attacker: make("attacker", &["-newkey", "rsa:2048"]),
            idp_ec: make(
                "idp-ec",
                &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
            ),
        }
    })
}

/// Sign the first `ds:Signature` template in `template` with `xmlsec1`.
fn sign(template: &str, pair: &KeyPair) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("template.xml"), template).expect("write template");
    std::fs::write(dir.path().join("key.pem"), &pair.key_pem).expect("write key");
    std::fs::write(dir.path().join("cert.pem"), &pair.cert_pem).expect("write cert");
    run(
        "xmlsec1",
        "xmlsec1",
        &[
            "--sign",
            "--privkey-pem",
            "key.pem,cert.pem",
            "--id-attr:ID",
            &format!("{NS_SAML}:Assertion"),
            "--id-attr:ID",
            &format!("{NS_SAMLP}:Response"),
            "--output",
            "signed.xml",
            "template.xml",
        ],
        dir.path(),
    );
    std::fs::read_to_string(dir.path().join("signed.xml")).expect("xmlsec1 wrote signed.xml")
}

fn verifier_for(cert_pem: &str) -> SamlVerifier {
    SamlVerifier::new(SamlVerifierConfig {
        name: "corp-saml".to_owned(),
        idp_entity_id: IDP.to_owned(),
        certificate_pem: cert_pem.to_owned(),
        audience: AUDIENCE.to_owned(),
        recipient: RECIPIENT.to_owned(),
        leeway_secs: 60,
    })
    .expect("the IdP certificate is usable")
}

fn verifier() -> SamlVerifier {
    verifier_for(&keys().idp.cert_pem)
}

fn refusal(result: Result<SamlAssertion, IdentityError>) -> String {
    match result {
        Err(IdentityError::SamlRejected { reason }) => reason,
        other => panic!("expected the assertion to be refused, got {other:?}"),
    }
}

fn assert_mentions(reason: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            reason.contains(needle),
            "reason {reason:?} does not mention {needle:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Assertion templates.

#[derive(Clone)]
enum Signing {
    /// A `ds:Signature` template for xmlsec1 with this SignatureMethod.
    Template(&'static str),
    Unsigned,
    /// This exact text where the signature goes.
    Raw(String),
}

#[derive(Clone)]
struct Spec {
    id: &'static str,
    issuer: &'static str,
    name_id: &'static str,
    audience: &'static str,
    recipient: &'static str,
    not_before: &'static str,
    not_on_or_after: &'static str,
    confirmation_not_on_or_after: &'static str,
    signing: Signing,
    /// `<Assertion xmlns="…">` with an unprefixed `Signature`, as Azure AD writes them,
    /// instead of `saml:`/`ds:` prefixes.
    default_namespace: bool,
    /// Declare the namespaces on the assertion itself (off when a Response declares them).
    declare_namespaces: bool,
}

impl Spec {
    fn valid() -> Self {
        Spec {
            id: "_a75adf55-01d7-40cc-929f-dbd8372ebdfc",
            issuer: IDP,
            name_id: "alice@example.com",
            audience: AUDIENCE,
            recipient: RECIPIENT,
            not_before: "2026-03-01T11:59:00Z",
            not_on_or_after: "2026-03-01T12:05:00Z",
            confirmation_not_on_or_after: "2026-03-01T12:03:00Z",
            signing: Signing::Template(RSA_SHA256),
            default_namespace: false,
            declare_namespaces: true,
        }
    }

    fn signature_template(&self, method: &str) -> String {
        let (ds, decl) = if self.default_namespace {
            ("", r#" xmlns="http://www.w3.org/2000/09/xmldsig#""#)
        } else {
            ("ds:", r#" xmlns:ds="http://www.w3.org/2000/09/xmldsig#""#)
        };
        let id = self.id;
        format!(
            r##"<{ds}Signature{decl}>
    <{ds}SignedInfo>
      <{ds}CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
      <{ds}SignatureMethod Algorithm="{method}"/>
      <{ds}Reference URI="#{id}">
        <{ds}Transforms>
          <{ds}Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
          <{ds}Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="xs"/></{ds}Transform>
        </{ds}Transforms>
        <{ds}DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
        <{ds}DigestValue></{ds}DigestValue>
      </{ds}Reference>
    </{ds}SignedInfo>
    <{ds}SignatureValue></{ds}SignatureValue>
    <{ds}KeyInfo><{ds}X509Data><{ds}X509Certificate></{ds}X509Certificate></{ds}X509Data></{ds}KeyInfo>
  </{ds}Signature>"##
        )
    }

    /// The assertion element, without an XML declaration.
    fn assertion(&self) -> String {
        let signature = match &self.signing {
            Signing::Template(method) => self.signature_template(method),
            Signing::Unsigned => String::new(),
            Signing::Raw(text) => text.clone(),
        };
        let (p, root_ns) = if self.default_namespace {
            ("", format!(r#" xmlns="{NS_SAML}""#))
        } else {
            ("saml:", format!(r#" xmlns:saml="{NS_SAML}""#))
        };
        let decls = if self.declare_namespaces {
            format!(
                r#"{root_ns} xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#
            )
        } else {
            String::new()
        };
        let Spec {
            id,
            issuer,
            name_id,
            audience,
            recipient,
            not_before,
            not_on_or_after,
            confirmation_not_on_or_after,
            ..
        } = self;
        format!(
            r#"<{p}Assertion{decls} ID="{id}" IssueInstant="2026-03-01T11:59:30Z" Version="2.0">
  <{p}Issuer>{issuer}</{p}Issuer>
  {signature}
  <{p}Subject>
    <{p}NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{name_id}</{p}NameID>
    <{p}SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">
      <{p}SubjectConfirmationData NotOnOrAfter="{confirmation_not_on_or_after}" Recipient="{recipient}"/>
    </{p}SubjectConfirmation>
  </{p}Subject>
  <{p}Conditions NotBefore="{not_before}" NotOnOrAfter="{not_on_or_after}">
    <{p}AudienceRestriction>
      <{p}Audience>{audience}</{p}Audience>
    </{p}AudienceRestriction>
  </{p}Conditions>
  <{p}AuthnStatement AuthnInstant="2026-03-01T11:58:00Z" SessionIndex="_be9967abd904ddcae3c0eb4189adbe3f71e327cf93">
    <{p}AuthnContext>
      <{p}AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</{p}AuthnContextClassRef>
    </{p}AuthnContext>
  </{p}AuthnStatement>
  <{p}AttributeStatement>
    <{p}Attribute Name="groups" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">
      <{p}AttributeValue xsi:type="xs:string">analysts</{p}AttributeValue>
      <{p}AttributeValue xsi:type="xs:string">R&amp;D &lt;eu&gt; "core"</{p}AttributeValue>
    </{p}Attribute>
    <{p}Attribute Name="mail"><{p}AttributeValue xsi:type="xs:string">alice@example.com</{p}AttributeValue></{p}Attribute>
  </{p}AttributeStatement>
</{p}Assertion>"#
        )
    }

    fn document(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n",
            self.assertion()
        )
    }

    fn signed(&self) -> String {
        sign(&self.document(), &keys().idp)
    }
}

/// A `samlp:Response` around `body` (which goes after `Status`), with `extensions` inside
/// `samlp:Extensions` when given and an optional Response-level signature template.
fn response(body: &str, extensions: Option<&str>, signature: &str) -> String {
    let extensions = extensions
        .map(|e| format!("<samlp:Extensions>{e}</samlp:Extensions>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<samlp:Response xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:unused="urn:example:unused" Destination="{RECIPIENT}" ID="_resp-7f1c" IssueInstant="2026-03-01T11:59:30Z" Version="2.0">
  <saml:Issuer>{IDP}</saml:Issuer>
  {signature}
  {extensions}
  <samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>
  {body}
</samlp:Response>
"#
    )
}

/// The text of `doc` from the first `start` to the end of the first following `end`.
fn slice<'a>(doc: &'a str, start: &str, end: &str) -> &'a str {
    let from = doc.find(start).expect("start marker present");
    let to = doc[from..].find(end).expect("end marker present") + from + end.len();
    &doc[from..to]
}

// ---------------------------------------------------------------------------------------------
// Accepted.

#[test]
fn saml_valid_assertion_is_accepted_with_its_facts() {
    let spec = Spec::valid();
    let signed = spec.signed();
    assert!(signed.contains("<ds:DigestValue>") && !signed.contains("<ds:DigestValue></"));
    let assertion = verifier()
        .verify(signed.as_bytes(), NOW)
        .expect("a valid signed assertion is accepted");
    assert_eq!(
        assertion,
        SamlAssertion {
            issuer: IDP.to_owned(),
            subject: "alice@example.com".to_owned(),
            assertion_id: spec.id.to_owned(),
            // The bearer confirmation (12:03) ends before the Conditions (12:05).
            not_on_or_after: NOW + 180,
            attributes: vec![
                (
                    "groups".to_owned(),
                    vec!["analysts".to_owned(), "R&D <eu> \"core\"".to_owned()]
                ),
                ("mail".to_owned(), vec!["alice@example.com".to_owned()]),
            ],
            authn_instant: Some(NOW - 120),
        }
    );
}

#[test]
fn saml_leeway_applies_to_the_time_bounds() {
    let signed = Spec {
        not_before: "2026-03-01T12:01:00Z",
        ..Spec::valid()
    }
    .signed();
    let verifier = verifier();
    // NotBefore 12:01:00 less 60s leeway.
    assert!(verifier.verify(signed.as_bytes(), NOW).is_ok());
    let early = refusal(verifier.verify(signed.as_bytes(), NOW - 1));
    assert_mentions(
        &early,
        &[
            "not valid before 2026-03-01T12:01:00Z",
            "Conditions NotBefore",
        ],
    );
    // IssueInstant 11:59:30 less 60s leeway.
    let early = refusal(verifier.verify(signed.as_bytes(), NOW - 91));
    assert_mentions(
        &early,
        &["IssueInstant 2026-03-01T11:59:30Z is in the future"],
    );
    // Bearer confirmation NotOnOrAfter 12:03:00 plus 60s leeway.
    assert!(verifier.verify(signed.as_bytes(), NOW + 239).is_ok());
    let late = refusal(verifier.verify(signed.as_bytes(), NOW + 240));
    assert_mentions(
        &late,
        &[
            "expired at 2026-03-01T12:03:00Z",
            "SubjectConfirmationData NotOnOrAfter",
        ],
    );
}

#[test]
fn saml_signed_response_wrapping_the_assertion_is_accepted() {
    let spec = Spec {
        declare_namespaces: false,
        ..Spec::valid()
    };
    let signed = sign(&response(&spec.assertion(), None, ""), &keys().idp);
    let assertion = verifier()
        .verify(signed.as_bytes(), NOW)
        .expect("a Response holding a signed assertion is accepted");
    assert_eq!(assertion.subject, "alice@example.com");
    assert_eq!(assertion.assertion_id, spec.id);
}

#[test]
fn saml_default_namespace_assertion_is_accepted() {
    let spec = Spec {
        default_namespace: true,
        ..Spec::valid()
    };
    let signed = spec.signed();
    assert!(signed.contains("<Assertion xmlns="));
    let assertion = verifier()
        .verify(signed.as_bytes(), NOW)
        .expect("a default-namespace assertion is accepted");
    assert_eq!(assertion.subject, "alice@example.com");
    assert_eq!(assertion.attributes.len(), 2);
}

#[test]
fn saml_ecdsa_p256_signature_is_accepted() {
    let spec = Spec {
        signing: Signing::Template(ECDSA_SHA256),
        ..Spec::valid()
    };
    let signed = sign(&spec.document(), &keys().idp_ec);
    let assertion = verifier_for(&keys().idp_ec.cert_pem)
        .verify(signed.as_bytes(), NOW)
        .expect("an ECDSA-P256-SHA256 assertion is accepted");
    assert_eq!(assertion.subject, "alice@example.com");
    // The RSA-configured verifier refuses it.
    let reason = refusal(verifier().verify(signed.as_bytes(), NOW));
    assert_mentions(&reason, &["ecdsa-sha256", "RSA"]);
}

#[test]
fn saml_comment_inside_name_id_does_not_truncate_the_subject() {
    // The IdP vouches for "alice@example.com.evil.org"; a comment is slipped in after
    // signing (comments are not signed) hoping the reader stops at it.
    let spec = Spec {
        name_id: "alice@example.com.evil.org",
        ..Spec::valid()
    };
    let signed = spec.signed().replace(
        "alice@example.com.evil.org</saml:NameID>",
        "alice@example.com<!---->.evil.org</saml:NameID>",
    );
    assert!(signed.contains("<!---->"));
    let assertion = verifier()
        .verify(signed.as_bytes(), NOW)
        .expect("comments are outside the signature");
    assert_eq!(assertion.subject, "alice@example.com.evil.org");
}

// ---------------------------------------------------------------------------------------------
// Refused: signature.

#[test]
fn saml_name_id_changed_after_signing_is_refused() {
    let signed = Spec::valid().signed();
    let tampered = signed.replace(
        ">alice@example.com</saml:NameID>",
        ">admin@example.com</saml:NameID>",
    );
    assert_ne!(signed, tampered);
    let reason = refusal(verifier().verify(tampered.as_bytes(), NOW));
    assert_mentions(&reason, &["digest", "modified after it was signed"]);
}

#[test]
fn saml_signature_by_another_key_is_refused_even_with_its_certificate_inside() {
    let signed = sign(&Spec::valid().document(), &keys().attacker);
    // xmlsec1 put the attacker's certificate into KeyInfo; it must not be trusted.
    assert!(signed.contains("<ds:X509Certificate>MII"));
    let reason = refusal(verifier().verify(signed.as_bytes(), NOW));
    assert_mentions(
        &reason,
        &["signature does not verify against the configured certificate of IdP \"corp-saml\""],
    );
}

#[test]
fn saml_unsigned_assertion_is_refused() {
    let spec = Spec {
        signing: Signing::Unsigned,
        ..Spec::valid()
    };
    let reason = refusal(verifier().verify(spec.document().as_bytes(), NOW));
    assert_mentions(&reason, &["no Signature over the Assertion"]);
}

#[test]
fn saml_signed_response_with_unsigned_assertion_is_refused() {
    let spec = Spec {
        declare_namespaces: false,
        signing: Signing::Unsigned,
        ..Spec::valid()
    };
    let response_signature = Spec {
        id: "_resp-7f1c",
        ..Spec::valid()
    }
    .signature_template(RSA_SHA256);
    let signed = sign(
        &response(&spec.assertion(), None, &response_signature),
        &keys().idp,
    );
    assert!(signed.contains("<ds:SignatureValue>"));
    let reason = refusal(verifier().verify(signed.as_bytes(), NOW));
    assert_mentions(&reason, &["no Signature over the Assertion"]);
}

#[test]
fn saml_signature_wrapping_with_the_signed_assertion_in_extensions_is_refused() {
    let signed = Spec::valid().signed();
    let original = slice(&signed, "<saml:Assertion", "</saml:Assertion>");
    let evil = Spec {
        id: "_evil",
        name_id: "admin@example.com",
        signing: Signing::Unsigned,
        declare_namespaces: false,
        ..Spec::valid()
    }
    .assertion();
    let wrapped = response(&evil, Some(original), "");
    let reason = refusal(verifier().verify(wrapped.as_bytes(), NOW));
    assert_mentions(&reason, &["2 Assertion elements", "signature wrapping"]);
}

#[test]
fn saml_signature_wrapping_with_a_copied_signature_is_refused() {
    // An evil assertion carrying the signature of a genuine one (which is dropped).
    let signed = Spec::valid().signed();
    let signature = slice(&signed, "<ds:Signature", "</ds:Signature>").to_owned();
    let evil = Spec {
        id: "_evil",
        name_id: "admin@example.com",
        signing: Signing::Raw(signature),
        ..Spec::valid()
    };
    let reason = refusal(verifier().verify(evil.document().as_bytes(), NOW));
    assert_mentions(
        &reason,
        &[
            "signature references an element other than the assertion (possible signature wrapping)",
            "_evil",
        ],
    );
}

#[test]
fn saml_signature_wrapping_with_a_duplicate_id_is_refused() {
    // The evil assertion reuses the genuine assertion's ID so that an ID lookup finds it.
    let signed = Spec::valid().signed();
    let original = slice(&signed, "<saml:Assertion", "</saml:Assertion>");
    let evil = Spec {
        name_id: "admin@example.com",
        signing: Signing::Unsigned,
        declare_namespaces: false,
        ..Spec::valid()
    }
    .assertion();
    let wrapped = response(&evil, Some(original), "");
    let reason = refusal(verifier().verify(wrapped.as_bytes(), NOW));
    assert_mentions(
        &reason,
        &[
            Spec::valid().id,
            "more than one element",
            "signature wrapping",
        ],
    );
}

#[test]
fn saml_doctype_is_refused() {
    let signed = Spec::valid().signed();
    let at = signed.find("<saml:Assertion").expect("assertion present");
    let with_dtd = format!(
        "{}<!DOCTYPE saml:Assertion [<!ENTITY who \"admin@example.com\">]>\n{}",
        &signed[..at],
        &signed[at..]
    );
    let reason = refusal(verifier().verify(with_dtd.as_bytes(), NOW));
    assert_mentions(&reason, &["DTD"]);
}

// ---------------------------------------------------------------------------------------------
// Refused: validly signed, but not for us or not now.

fn refusal_of(spec: Spec) -> String {
    refusal(verifier().verify(spec.signed().as_bytes(), NOW))
}

#[test]
fn saml_expired_assertion_is_refused() {
    let reason = refusal_of(Spec {
        not_before: "2026-03-01T10:00:00Z",
        not_on_or_after: "2026-03-01T11:00:00Z",
        ..Spec::valid()
    });
    assert_mentions(
        &reason,
        &["expired at 2026-03-01T11:00:00Z", "Conditions NotOnOrAfter"],
    );
    let reason = refusal_of(Spec {
        confirmation_not_on_or_after: "2026-03-01T11:30:00Z",
        ..Spec::valid()
    });
    assert_mentions(
        &reason,
        &[
            "expired at 2026-03-01T11:30:00Z",
            "SubjectConfirmationData NotOnOrAfter",
        ],
    );
}

#[test]
fn saml_not_yet_valid_assertion_is_refused() {
    let reason = refusal_of(Spec {
        not_before: "2026-03-01T12:10:00Z",
        not_on_or_after: "2026-03-01T12:20:00Z",
        ..Spec::valid()
    });
    assert_mentions(
        &reason,
        &["not valid before 2026-03-01T12:10:00Z", "NotBefore"],
    );
}

#[test]
fn saml_wrong_audience_is_refused() {
    let reason = refusal_of(Spec {
        audience: "https://other-sp.example.com/",
        ..Spec::valid()
    });
    assert_mentions(
        &reason,
        &["audience \"https://other-sp.example.com/\" is not \"https://portcullis/\""],
    );
}

#[test]
fn saml_wrong_recipient_is_refused() {
    let reason = refusal_of(Spec {
        recipient: "https://other-sp.example.com/acs",
        ..Spec::valid()
    });
    assert_mentions(
        &reason,
        &["Recipient", "https://other-sp.example.com/acs", RECIPIENT],
    );
}

#[test]
fn saml_wrong_issuer_is_refused() {
    let reason = refusal_of(Spec {
        issuer: "https://evil-idp.example.com/",
        ..Spec::valid()
    });
    assert_mentions(
        &reason,
        &["Issuer", "https://evil-idp.example.com/", IDP, "corp-saml"],
    );
}
