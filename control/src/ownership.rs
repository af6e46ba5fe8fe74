//! The ownership checker: looks up each claimed hostname's
//! `_tollgate-challenge.<hostname>` TXT record with a real DNS resolver and records
//! what it finds through [`Commands::record_claim_check`]. Pending claims are
//! checked with a growing interval (from `--ownership-check-ms` up to an hour);
//! verified ones are re-checked every `--ownership-recheck-secs`, and unbound once
//! the record has been missing for `--ownership-grace-secs`.

use crate::commands::{ClaimCheck, Commands, OwnershipPolicy};
use futures_util::StreamExt;
use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tollgate_routing::ClaimState;
use tollgate_routing::ownership::txt_name;

/// `tollgate control` flags for hostname ownership.
#[derive(Debug, Clone, clap::Args)]
pub struct OwnershipOptions {
    /// Refuse direct binds of hostnames outside `--platform-domain`: they must be
    /// claimed and verified by DNS.
    #[arg(long)]
    pub require_ownership: bool,
    /// A domain the platform owns; its subdomains bind without a claim. Repeatable.
    #[arg(long = "platform-domain")]
    pub platform_domains: Vec<String>,
    /// DNS servers (`ip:port`) for ownership checks; the system's otherwise.
    /// Repeatable.
    #[arg(long = "dns-resolver")]
    pub dns_resolvers: Vec<SocketAddr>,
    /// First interval between checks of a pending claim (it doubles up to an hour).
    #[arg(long = "ownership-check-ms", default_value_t = 10_000)]
    pub check_ms: u64,
    /// Interval between re-checks of a verified claim.
    #[arg(long = "ownership-recheck-secs", default_value_t = 24 * 3600)]
    pub recheck_secs: u64,
    /// How long a verified hostname's record may be missing before it is unbound.
    #[arg(long = "ownership-grace-secs", default_value_t = 7 * 24 * 3600)]
    pub grace_secs: u64,
}

impl Default for OwnershipOptions {
    fn default() -> Self {
        OwnershipOptions {
            require_ownership: false,
            platform_domains: Vec::new(),
            dns_resolvers: Vec::new(),
            check_ms: 10_000,
            recheck_secs: 24 * 3600,
            grace_secs: 7 * 24 * 3600,
        }
    }
}

impl OwnershipOptions {
    /// The bind policy these flags describe.
    pub fn policy(&self) -> OwnershipPolicy {
        OwnershipPolicy {
            required: self.require_ownership,
            platform_domains: self
                .platform_domains
                .iter()
                .map(|d| crate::ids::normalize_hostname(d))
                .collect(),
        }
    }
}

/// A lookup's bound: a resolver that does not answer is a failed check.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_PENDING_INTERVAL: Duration = Duration::from_secs(3600);
const CONCURRENT_LOOKUPS: usize = 32;
/// Least time between two passes woken by log changes.
const MIN_PASS_GAP: Duration = Duration::from_millis(100);

fn resolver(opts: &OwnershipOptions) -> Result<Resolver<TokioRuntimeProvider>, String> {
    let mut builder = if opts.dns_resolvers.is_empty() {
        Resolver::builder_tokio().map_err(|e| format!("reading the system's DNS config: {e}"))?
    } else {
        let servers = opts
            .dns_resolvers
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
    };
    let mut o = ResolverOpts::default();
    // Every check asks the DNS: a cached answer would hide a removed record.
    o.cache_size = 0;
    o.timeout = Duration::from_secs(2);
    *builder.options_mut() = o;
    builder
        .build()
        .map_err(|e| format!("building the DNS resolver: {e}"))
}

/// Looks `token` up at `_tollgate-challenge.<hostname>`.
async fn check(
    resolver: &Resolver<TokioRuntimeProvider>,
    hostname: &str,
    token: &str,
) -> ClaimCheck {
    let name = format!("{}.", txt_name(hostname));
    match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.txt_lookup(name.as_str())).await {
        Err(_) => ClaimCheck::Missing(format!(
            "no DNS answer for {name} within {LOOKUP_TIMEOUT:?}"
        )),
        Ok(Err(e)) => ClaimCheck::Missing(format!("TXT {name}: {e}")),
        Ok(Ok(lookup)) => {
            let found = lookup.answers().iter().any(|r| match &r.data {
                RData::TXT(txt) => txt
                    .txt_data
                    .iter()
                    .any(|part| part.as_ref() == token.as_bytes()),
                _ => false,
            });
            if found {
                ClaimCheck::Found
            } else {
                ClaimCheck::Missing(format!("TXT {name} does not hold the claim's token"))
            }
        }
    }
}

/// When each claim is next due, kept in memory (a restart checks everything once).
struct Due {
    at: Instant,
    interval: Duration,
}

/// Runs until `stop`.
pub async fn run(commands: Arc<Commands>, opts: OwnershipOptions, mut stop: watch::Receiver<bool>) {
    let resolver = match resolver(&opts) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "hostname ownership checks are off");
            return;
        }
    };
    let first = Duration::from_millis(opts.check_ms.max(10));
    let recheck = Duration::from_secs(opts.recheck_secs.max(1));
    let grace = opts.grace_secs as i64;
    let mut due: HashMap<String, Due> = HashMap::new();
    let mut applied = commands.projection().subscribe();
    loop {
        let view = commands.projection().view();
        let now = Instant::now();
        due.retain(|h, _| view.config.hostname_claims.contains_key(h));
        let mut next = now + first;
        let mut batch = Vec::new();
        for (host, claim) in &view.config.hostname_claims {
            let entry = due.entry(host.clone()).or_insert(Due {
                at: now,
                interval: first,
            });
            if entry.at > now {
                next = next.min(entry.at);
            } else {
                batch.push((host.clone(), claim.token.clone(), claim.state));
            }
        }
        // Lookups run concurrently; a resolver that does not answer costs each one
        // its timeout, not the whole pass.
        let resolver = &resolver;
        let results: Vec<_> = futures_util::stream::iter(batch)
            .map(|(host, token, state)| async move {
                let found = check(resolver, &host, &token).await;
                (host, token, state, found)
            })
            .buffer_unordered(CONCURRENT_LOOKUPS)
            .collect()
            .await;
        for (host, token, state, found) in results {
            match commands
                .record_claim_check(&host, &token, found.clone(), grace)
                .await
            {
                Ok(true) => {
                    tracing::info!(hostname = %host, ?found, "hostname ownership check recorded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(hostname = %host, error = %e, "cannot record an ownership check")
                }
            }
            let verified = state == ClaimState::Verified || found == ClaimCheck::Found;
            if let Some(entry) = due.get_mut(&host) {
                entry.interval = match (verified, &found) {
                    (true, ClaimCheck::Found) => recheck,
                    // Missing (pending, or lapsing within its grace period): back off.
                    _ => (entry.interval * 2).min(MAX_PENDING_INTERVAL),
                };
                entry.at = Instant::now() + entry.interval;
                next = next.min(entry.at);
            }
        }
        let mut changed = false;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            r = applied.changed() => {
                if r.is_err() { return }
                changed = true;
            }
            _ = stop.wait_for(|s| *s) => return,
        }
        if changed {
            // Changes are picked up promptly, but a busy log must not turn into a
            // pass per event.
            tokio::time::sleep(MIN_PASS_GAP).await;
        }
    }
}
