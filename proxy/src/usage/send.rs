//! `POST /v1/usage` to the control service, bounded by a timeout, and what the
//! answer means for the batch.

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use std::time::Duration;

/// Longest answer read (answers are a few bytes; errors list at most 20 problems).
const MAX_ANSWER_BYTES: usize = 64 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of one attempt.
#[derive(Debug)]
pub enum Sent {
    /// 2xx: the service holds the batch (`duplicate`: it already did).
    Acked { duplicate: bool },
    /// Worth retrying later: no answer, or 401, 403, 404, 408, 429, 5xx.
    Retry {
        reason: &'static str,
        detail: String,
    },
    /// Refused for good (any other 4xx): resending cannot help.
    Rejected { status: StatusCode, detail: String },
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    duplicate: bool,
}

/// An HTTP client for one control service's `/v1/usage`.
pub struct Sender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    bearer: Option<HeaderValue>,
    timeout: Duration,
}

impl Sender {
    /// A client for `base` (`scheme://authority[/prefix]`), trusting `ca_file`
    /// (or the web PKI) for `https://`.
    pub fn new(
        base: &Uri,
        token: Option<&str>,
        ca_file: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = crate::control_client::http::client(ca_file, CONNECT_TIMEOUT.min(timeout))?;
        let url: Uri = format!("{}/v1/usage", base.to_string().trim_end_matches('/'))
            .parse()
            .map_err(|e| format!("http_url `{base}`: {e}"))?;
        let bearer = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        Ok(Sender {
            client,
            url,
            bearer,
            timeout,
        })
    }

    /// Sends one batch body (JSON); the whole exchange is bounded by the timeout.
    pub async fn send(&self, body: Bytes) -> Sent {
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(sent) => sent,
            Err(_) => Sent::Retry {
                reason: "timeout",
                detail: format!("no answer within {:?}", self.timeout),
            },
        }
    }

    async fn exchange(&self, body: Bytes) -> Sent {
        let mut request = match Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(body))
        {
            Ok(r) => r,
            Err(e) => {
                return Sent::Retry {
                    reason: "network",
                    detail: e.to_string(),
                };
            }
        };
        if let Some(b) = &self.bearer {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, b.clone());
        }
        let response = match self.client.request(request).await {
            Ok(r) => r,
            Err(e) => {
                return Sent::Retry {
                    reason: "network",
                    detail: e.to_string(),
                };
            }
        };
        let status = response.status();
        let answer = match Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            // The status is the contract; a 2xx whose body broke off still stored
            // the batch, anything else is retried.
            Err(e) if !status.is_success() => {
                return Sent::Retry {
                    reason: "status",
                    detail: format!("HTTP {status}, body: {e}"),
                };
            }
            Err(_) => Bytes::new(),
        };
        classify(status, &answer)
    }
}

/// What an answer means for the batch.
pub fn classify(status: StatusCode, body: &[u8]) -> Sent {
    if status.is_success() {
        let duplicate = serde_json::from_slice::<Answer>(body).is_ok_and(|a| a.duplicate);
        return Sent::Acked { duplicate };
    }
    let detail = format!(
        "HTTP {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(500)])
    );
    let retry = status.is_server_error()
        || matches!(
            status,
            // Credentials or routing fixed by an operator, an older service
            // without /v1/usage, or throttling: later attempts may succeed.
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::NOT_FOUND
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
        );
    if retry {
        Sent::Retry {
            reason: "status",
            detail,
        }
    } else {
        Sent::Rejected { status, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decide_the_batch() {
        assert!(matches!(
            classify(StatusCode::OK, br#"{"duplicate": true}"#),
            Sent::Acked { duplicate: true }
        ));
        assert!(matches!(
            classify(StatusCode::OK, br#"{"duplicate": false, "records": 3}"#),
            Sent::Acked { duplicate: false }
        ));
        assert!(matches!(
            classify(StatusCode::OK, b"not json"),
            Sent::Acked { duplicate: false }
        ));
        for s in [500, 502, 503, 401, 403, 404, 408, 429] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(matches!(classify(s, b""), Sent::Retry { .. }), "{s}");
        }
        for s in [400, 409, 413, 422] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(matches!(classify(s, b"{}"), Sent::Rejected { .. }), "{s}");
        }
    }
}
