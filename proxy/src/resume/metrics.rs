//! Resumable-stream metrics; labels are bounded (outcome, protocol), never a tenant.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// How a resume attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Replayed from this proxy's own buffer.
    Local,
    /// Replayed from Redis (the stream ran on another proxy, or this one restarted).
    Shared,
    NotFound,
    Forbidden,
    /// The messages after the client's index fell out of the buffer.
    Gap,
    /// The client claimed more messages than the stream has.
    OutOfRange,
    /// The buffer could not be read (Redis down).
    Unavailable,
}

impl ResumeOutcome {
    const ALL: [ResumeOutcome; 7] = [
        ResumeOutcome::Local,
        ResumeOutcome::Shared,
        ResumeOutcome::NotFound,
        ResumeOutcome::Forbidden,
        ResumeOutcome::Gap,
        ResumeOutcome::OutOfRange,
        ResumeOutcome::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResumeOutcome::Local => "local",
            ResumeOutcome::Shared => "shared",
            ResumeOutcome::NotFound => "not_found",
            ResumeOutcome::Forbidden => "forbidden",
            ResumeOutcome::Gap => "gap",
            ResumeOutcome::OutOfRange => "out_of_range",
            ResumeOutcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResumeMetrics {
    /// Streams whose upstream call this proxy is running.
    pub open: IntGauge,
    resumes: IntCounterVec,
    /// Messages sent from a buffer rather than live.
    pub replayed: IntCounter,
    /// Bytes this proxy's open streams hold in their buffers.
    pub buffer_bytes: IntGauge,
    /// Clients told to resume elsewhere because this proxy drained.
    pub handovers: IntCounter,
    /// Streams that ended because no client came back within `linger_secs`.
    pub abandoned: IntCounter,
    pub redis_errors: IntCounter,
    pub redis_commands: IntCounter,
}

impl ResumeMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let resumes = IntCounterVec::new(
            Opts::new(
                "tollgate_resume_attempts_total",
                "Stream resumes by outcome (local, shared, not_found, forbidden, gap, out_of_range, unavailable).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(resumes.clone()))?;
        for o in ResumeOutcome::ALL {
            resumes.with_label_values(&[o.as_str()]);
        }
        Ok(ResumeMetrics {
            open: gauge(
                "tollgate_resume_streams_open",
                "Resumable streams whose upstream call this proxy runs (attached or lingering).",
            )?,
            resumes,
            replayed: counter(
                "tollgate_resume_messages_replayed_total",
                "Messages sent to resuming clients from a buffer (not billed again).",
            )?,
            buffer_bytes: gauge(
                "tollgate_resume_buffer_bytes",
                "Bytes of messages this proxy's open resumable streams keep for replay (the same is kept in Redis when configured).",
            )?,
            handovers: counter(
                "tollgate_resume_handovers_total",
                "Clients of resumable streams told to resume elsewhere while this proxy drained.",
            )?,
            abandoned: counter(
                "tollgate_resume_abandoned_total",
                "Resumable streams cancelled upstream because no client resumed within linger_secs.",
            )?,
            redis_errors: counter(
                "tollgate_resume_redis_errors_total",
                "Failed Redis writes of resume buffers (the streams written meanwhile are marked incomplete).",
            )?,
            redis_commands: counter(
                "tollgate_resume_redis_commands_total",
                "Redis commands sent to write resume buffers.",
            )?,
        })
    }

    pub fn resumed(&self, outcome: ResumeOutcome) {
        self.resumes.with_label_values(&[outcome.as_str()]).inc();
    }
}
