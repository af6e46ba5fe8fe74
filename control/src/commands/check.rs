//! Whether a command's result would be servable.
//!
//! The events are applied to a clone of the current config (cheap: the config is made
//! of persistent maps). The routing spec of what they touched must validate (a
//! [`Scope`]: the touched objects and those the rules relate them to; platform-wide
//! events validate everything). For certificate commands, each certificate added or
//! changed must load as a proxy loads it (parse, key matches, names covered, not
//! expired unless a lapsed version of one already served) and claim no name another
//! certificate holds. Both cost what the command touched, not the tenant count.
//!
//! A problem that the current config already has (say, a state written by another
//! control instance) does not block unrelated commands: only problems the command
//! adds are reported.

use super::CommandError;
use serde::Serialize;
use std::collections::HashSet;
use tollgate_certs::{CertError, CertSource, CertStore, Expiry};
use tollgate_routing::OrdMapDiffItem as DiffItem;
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

/// Checks the certificates the command added or changed, as a proxy loads them: each
/// must parse, its key match, its names be covered and, unless it is a lapsed version
/// of one already served, be current; and no other certificate may claim one of its
/// names. Others are not rebuilt: the name index finds the claims, and the persistent
/// maps' diff finds what changed, so the cost follows the change, not the count.
fn check_certs(current: &EdgeConfig, next: &EdgeConfig) -> Result<(), CommandError> {
    for change in current.certificates.diff(&next.certificates) {
        let (old, new) = match change {
            DiffItem::Add(_, new) => (None, new),
            DiffItem::Update { old, new } => (Some(old.1), new.1),
            // Removing one cannot make the others fail.
            DiffItem::Remove(..) => continue,
        };
        let known = old.map_or_else(HashSet::new, |o| {
            CertStore::build_isolated(&[source(o)]).0.fingerprints()
        });
        let loaded = CertStore::build_with(&[source(new)], Expiry::ServeKnown(&known))
            .map_err(|e| refused(e.to_string()))?;
        let names: Vec<String> = loaded
            .summary_list()
            .flat_map(|s| s.names.clone())
            .collect();
        for name in &names {
            let other = next.certs_named(name).into_iter().find(|id| *id != new.id);
            if let Some(other) = other.and_then(|id| next.certificates.get(&id)) {
                let err = CertError::DuplicateName {
                    name: name.clone(),
                    first: format!("[{}]", other.names.join(", ")),
                    second: format!("[{}]", names.join(", ")),
                };
                return Err(refused(err.to_string()));
            }
        }
    }
    Ok(())
}

fn refused(reason: String) -> CommandError {
    CommandError::Invalid {
        message: reason.clone(),
        problems: vec![Problem {
            at: "certificates".into(),
            reason,
        }],
    }
}
