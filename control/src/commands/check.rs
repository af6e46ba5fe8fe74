//! Whether a command's result would be servable.
//!
//! The events are applied to a clone of the current config (cheap: the config is made
//! of persistent maps); the routing spec of what they touched must validate (a
//! [`Scope`]: the touched objects and those the rules relate them to, so the cost
//! follows the change, not the tenant count; platform-wide events validate everything) and, for certificate commands, all of its certificates must
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
use tollgate_routing::{EdgeCert, EdgeConfig, EdgeEvent, RoutingSpec, Scope, validate};

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
    check_result(current, &next, certs, Scope::of(events).as_ref())?;
    Ok(next)
}

/// Checks `next`, the result of applying some events to `current`: the same
/// tests as [`check`], with problems `current` already has not counted. `scope` is
/// what the events touched (`None`: anything).
pub(crate) fn check_result(
    current: &EdgeConfig,
    next: &EdgeConfig,
    certs: bool,
    scope: Option<&Scope>,
) -> Result<(), CommandError> {
    let (before, after) = match scope {
        Some(scope) => current.scoped_specs(next, scope),
        None => (current.routing_spec(), next.routing_spec()),
    };
    if validate(&after).is_err() {
        let existing = problems_of(&before);
        let problems: Vec<Problem> = problems_of(&after)
            .into_iter()
            .filter(|p| !existing.contains(p))
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

/// The problems `validate` finds in `spec`, routes named by id rather than by their
/// place in this spec (which holds only the objects a command touched).
fn problems_of(spec: &RoutingSpec) -> Vec<Problem> {
    let Err(e) = validate(spec) else {
        return Vec::new();
    };
    e.0.into_iter()
        .map(|p| {
            let by_id =
                p.at.strip_prefix("routes[")
                    .and_then(|rest| rest.split_once(']'))
                    .and_then(|(i, rest)| {
                        let route = spec.routes.get(i.parse::<usize>().ok()?)?;
                        Some(format!("routes[{}]{rest}", route.metrics_id()))
                    });
            Problem {
                at: by_id.unwrap_or(p.at),
                reason: p.reason,
            }
        })
        .collect()
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
