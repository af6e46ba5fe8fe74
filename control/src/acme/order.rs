//! One ACME order for one hostname, from placing it to recording the certificate
//! (or the failure) in the event log. Every call to the CA is bounded by the
//! order's deadline.

use super::metrics::Failure;
use super::options::AcmeOptions;
use crate::commands::{Commands, Expect};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_certs::{CertSource, CertStore};
use tollgate_routing::{AcmeChallenge, ChallengeKind, EdgeCert, EdgeEvent, managed_cert_id};

/// Why an order failed, as recorded and counted.
#[derive(Debug)]
pub struct Failed {
    pub reason: Failure,
    pub message: String,
}

impl Failed {
    fn new(reason: Failure, message: impl Into<String>) -> Self {
        Failed {
            reason,
            message: message.into(),
        }
    }
}

/// What an order produced.
pub struct Issued {
    pub cert: EdgeCert,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

fn classify(e: &instant_acme::Error) -> Failure {
    match e {
        instant_acme::Error::Api(p) => match p.r#type.as_deref() {
            Some(t) if t.ends_with(":rateLimited") => Failure::RateLimited,
            Some(t)
                if t.ends_with(":unauthorized")
                    || t.ends_with(":connection")
                    || t.ends_with(":dns")
                    || t.ends_with(":incorrectResponse")
                    || t.ends_with(":tls") =>
            {
                Failure::Validation
            }
            _ => Failure::Ca,
        },
        instant_acme::Error::Timeout(_) => Failure::Timeout,
        instant_acme::Error::Http(_) | instant_acme::Error::Hyper(_) => Failure::Network,
        _ => Failure::Ca,
    }
}

fn acme_err(what: &str) -> impl FnOnce(instant_acme::Error) -> Failed + '_ {
    move |e| Failed::new(classify(&e), format!("{what}: {e}"))
}

/// Runs `f` unless the order's deadline passes first.
async fn bounded<T>(
    deadline: Instant,
    what: &str,
    f: impl Future<Output = Result<T, instant_acme::Error>>,
) -> Result<T, Failed> {
    match tokio::time::timeout_at(deadline, f).await {
        Ok(r) => r.map_err(acme_err(what)),
        Err(_) => Err(Failed::new(
            Failure::Timeout,
            format!("{what}: the order's deadline passed"),
        )),
    }
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Places an order for `hostname`, publishes its challenge through the log, and
/// returns the certificate with a freshly generated key.
pub async fn obtain(
    commands: &Commands,
    account: &Account,
    opts: &AcmeOptions,
    hostname: &str,
    kind: ChallengeKind,
    mut expect: Expect,
) -> Result<Issued, Failed> {
    let deadline = Instant::now() + opts.order_timeout();
    let ids = [Identifier::Dns(hostname.to_string())];
    let mut order = bounded(
        deadline,
        "placing the order",
        account.new_order(&NewOrder::new(&ids)),
    )
    .await?;
    let wanted = match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    {
        let mut authzs = order.authorizations();
        loop {
            let next = match tokio::time::timeout_at(deadline, authzs.next()).await {
                Ok(Some(r)) => r.map_err(acme_err("reading the authorization"))?,
                Ok(None) => break,
                Err(_) => {
                    return Err(Failed::new(
                        Failure::Timeout,
                        "reading the authorization: the order's deadline passed",
                    ));
                }
            };
            let mut authz = next;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(Failed::new(
                        Failure::Ca,
                        format!("the authorization is {other:?}"),
                    ));
                }
            }
            let mut challenge = authz.challenge(wanted.clone()).ok_or_else(|| {
                Failed::new(
                    Failure::Ca,
                    format!("the CA offers no {} challenge", kind.as_str()),
                )
            })?;
            let published_at = super::now_unix();
            let event = EdgeEvent::AcmeChallengePublished {
                challenge: AcmeChallenge {
                    hostname: hostname.to_string(),
                    kind,
                    token: challenge.token.clone(),
                    key_authorization: challenge.key_authorization().as_str().to_string(),
                },
                at_unix: published_at,
            };
            let recorded = commands
                .record_tls(hostname, expect, event)
                .await
                .map_err(|e| {
                    Failed::new(Failure::Internal, format!("publishing the challenge: {e}"))
                })?;
            if !recorded {
                return Err(Failed::new(
                    Failure::Superseded,
                    "another writer changed the hostname's state",
                ));
            }
            expect = Expect {
                state: tollgate_routing::TlsState::ChallengePublished,
                since_unix: published_at,
            };
            // Every proxy follows the log: give the feed time to reach them.
            tokio::time::sleep(Duration::from_millis(opts.propagation_ms).min(left(deadline)))
                .await;
            bounded(deadline, "answering the challenge", challenge.set_ready()).await?;
        }
    }
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(left(deadline));
    let status = bounded(deadline, "waiting for validation", order.poll_ready(&retry)).await?;
    if status != OrderStatus::Ready {
        return Err(validation_error(&mut order, deadline).await);
    }
    let key = rcgen::KeyPair::generate()
        .map_err(|e| Failed::new(Failure::Internal, format!("generating the key: {e}")))?;
    let csr = rcgen::CertificateParams::new(vec![hostname.to_string()])
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| Failed::new(Failure::Internal, format!("building the CSR: {e}")))?;
    bounded(
        deadline,
        "finalizing the order",
        order.finalize_csr(csr.der()),
    )
    .await?;
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(left(deadline));
    let chain = bounded(
        deadline,
        "downloading the certificate",
        order.poll_certificate(&retry),
    )
    .await?;
    let key_pem = key.serialize_pem();
    let host = hostname.to_string();
    let check = tokio::task::spawn_blocking(move || {
        CertStore::build(&[CertSource {
            cert_pem: chain.clone(),
            key_pem: key_pem.clone(),
            names: Some(vec![host.clone()]),
        }])
        .map(|s| (s.summaries(), chain, key_pem))
    })
    .await
    .map_err(|e| Failed::new(Failure::Internal, format!("checking the certificate: {e}")))?;
    let (summaries, chain, key_pem) = check.map_err(|e| {
        Failed::new(
            Failure::InvalidCertificate,
            format!("the CA's certificate does not load: {e}"),
        )
    })?;
    let s = summaries.into_iter().next().ok_or_else(|| {
        Failed::new(
            Failure::InvalidCertificate,
            "the CA returned no certificate",
        )
    })?;
    Ok(Issued {
        cert: EdgeCert {
            id: managed_cert_id(hostname),
            cert_pem: chain,
            key_pem,
            names: vec![hostname.to_string()],
        },
        not_before_unix: s.not_before_unix,
        not_after_unix: s.not_after_unix,
    })
}

/// The CA's reason an order became invalid: the first challenge error it reports.
async fn validation_error(order: &mut Order, deadline: Instant) -> Failed {
    let mut authzs = order.authorizations();
    while let Ok(Some(Ok(authz))) = tokio::time::timeout_at(deadline, authzs.next()).await {
        if let Some(p) = authz.challenges.iter().find_map(|c| c.error.as_ref()) {
            let kind = match p.r#type.as_deref() {
                Some(t) if t.ends_with(":rateLimited") => Failure::RateLimited,
                _ => Failure::Validation,
            };
            return Failed::new(kind, format!("validation failed: {p}"));
        }
    }
    Failed::new(Failure::Validation, "the order became invalid")
}
