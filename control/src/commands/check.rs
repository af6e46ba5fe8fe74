//! Whether a command's result would be servable.
//!
//! The events are applied to a clone of the current config; the clone's routing
//! spec must validate and, for certificate commands, all of its certificates must
//! build into one [`CertStore`] (parse, key matches, names covered, no name claimed
//! twice, and not expired unless it already was served before) — what a proxy does
//! with the result.
//!
//! A problem that the current config already has (say, a state written by another
//! control instance) does not block unrelated commands: when the current config
//! does not validate, only problems it does not already have are reported.

use super::CommandError;
use serde::Serialize;
use std::collections::HashSet;
use tollgate_certs::{CertSource, CertStore, Expiry};
use tollgate_routing::{EdgeCert, EdgeConfig, EdgeEvent, validate};

/// One validation problem, located by a dotted path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub at: String,
    pub reason: String,
}

/// Applies `events` to a clone of `current` and checks the result.
pub(crate) fn check(
    current: &EdgeConfig,
    events: &[EdgeEvent],
    certs: bool,
) -> Result<EdgeConfig, CommandError> {
    let mut next = current.clone();
    for e in events {
        next.apply(e).map_err(CommandError::from_edge)?;
    }
    check_result(current, &next, certs)?;
    Ok(next)
}

/// Checks `next`, the result of applying some events to `current`: the same
/// tests as [`check`], with problems `current` already has not counted.
pub(crate) fn check_result(
    current: &EdgeConfig,
    next: &EdgeConfig,
    certs: bool,
) -> Result<(), CommandError> {
    if let Err(err) = validate(&next.routing_spec()) {
        let existing = match validate(&current.routing_spec()) {
            Ok(()) => Vec::new(),
            Err(e) => e.0,
        };
        let problems: Vec<Problem> = err
            .0
            .into_iter()
            .filter(|p| !existing.contains(p))
            .map(|p| Problem {
                at: p.at,
                reason: p.reason,
            })
            .collect();
        if !problems.is_empty() {
            return Err(CommandError::Invalid {
                message: format!(
                    "the resulting config would not validate ({} problem(s))",
                    problems.len()
                ),
                problems,
            });
        }
    }
    if certs {
        check_certs(current, next)?;
    }
    Ok(())
}

/// The source a proxy builds for a certificate: its names, or its DNS SANs when it
/// has none.
pub(crate) fn source(cert: &EdgeCert) -> CertSource {
    CertSource {
        cert_pem: cert.cert_pem.clone(),
        key_pem: cert.key_pem.clone(),
        names: (!cert.names.is_empty()).then(|| cert.names.clone()),
    }
}

fn sources(config: &EdgeConfig) -> Vec<CertSource> {
    config.certificates.values().map(source).collect()
}

/// Builds `config`'s certificates as a proxy would, except that only those in
/// `known` (leaf fingerprints) may be outside their validity window: a certificate
/// that lapsed after upload is served on, a new one must be current.
fn build(config: &EdgeConfig, known: &HashSet<String>) -> Result<CertStore, String> {
    CertStore::build_with(&sources(config), Expiry::ServeKnown(known)).map_err(|e| e.to_string())
}

fn check_certs(current: &EdgeConfig, next: &EdgeConfig) -> Result<(), CommandError> {
    let known = CertStore::build_isolated(&sources(current))
        .0
        .fingerprints();
    let Err(reason) = build(next, &known) else {
        return Ok(());
    };
    // The same failure as now (say, a state written by another control instance) is
    // not this command's doing, provided the certificates it touched are fine on
    // their own.
    if build(current, &known).err().as_deref() == Some(reason.as_str()) {
        let touched_ok = next
            .certificates
            .iter()
            .filter(|(id, c)| current.certificates.get(*id) != Some(*c))
            .all(|(_, c)| CertStore::build(&[source(c)]).is_ok());
        if touched_ok {
            return Ok(());
        }
    }
    Err(CommandError::Invalid {
        message: reason.clone(),
        problems: vec![Problem {
            at: "certificates".into(),
            reason,
        }],
    })
}
