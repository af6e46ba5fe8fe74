//! Reads the server name (SNI) from a TLS ClientHello without terminating TLS.
//!
//! A pure parser over the bytes read so far: it asks for more while the hello is
//! incomplete, reassembles a hello split over several records, and never reads
//! past the lengths it was given. Bounded by [`MAX_HELLO`] bytes.

/// Largest ClientHello we wait for (post-quantum key shares make hellos grow).
pub const MAX_HELLO: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// Not enough bytes yet; read more and call again.
    #[error("incomplete ClientHello")]
    Incomplete,
    #[error("not a TLS handshake")]
    NotTls,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
}

/// What routing needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloInfo {
    /// The host name, lowercased, when the client sent one.
    pub sni: Option<String>,
}

const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const NAME_TYPE_HOST: u8 = 0x00;

/// Parses the ClientHello at the start of `buf` (raw bytes from the client).
pub fn parse(buf: &[u8]) -> Result<HelloInfo, HelloError> {
    let hs = reassemble(buf)?;
    let body = client_hello_body(&hs)?;
    Ok(HelloInfo {
        sni: server_name(body)?,
    })
}

/// Concatenates handshake-record payloads until one whole handshake message is present.
fn reassemble(buf: &[u8]) -> Result<Vec<u8>, HelloError> {
    let mut hs = Vec::new();
    let mut rest = buf;
    loop {
        if rest.is_empty() {
            return Err(HelloError::Incomplete);
        }
        if rest[0] != HANDSHAKE {
            return Err(if hs.is_empty() {
                HelloError::NotTls
            } else {
                HelloError::Malformed("record type changed")
            });
        }
        if rest.len() < 5 {
            return Err(HelloError::Incomplete);
        }
        if rest[1] != 0x03 {
            return Err(HelloError::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Err(HelloError::Malformed("empty record"));
        }
        if hs.len() + len > MAX_HELLO {
            return Err(HelloError::TooLarge);
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return Err(if buf.len() >= MAX_HELLO + 5 {
                HelloError::TooLarge
            } else {
                HelloError::Incomplete
            });
        };
        hs.extend_from_slice(payload);
        rest = &rest[5 + len..];
        if hs.len() >= 4 {
            let need =
                4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
            if need > MAX_HELLO {
                return Err(HelloError::TooLarge);
            }
            if hs.len() >= need {
                hs.truncate(need);
                return Ok(hs);
            }
        }
    }
}

/// A cursor that refuses to read past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Malformed(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u8(what)?);
        self.take(n, what)
    }
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }
}

fn client_hello_body(hs: &[u8]) -> Result<&[u8], HelloError> {
    if hs.first() != Some(&CLIENT_HELLO) {
        return Err(HelloError::Malformed(
            "first handshake message is not a ClientHello",
        ));
    }
    Ok(&hs[4..])
}

fn server_name(body: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader(body);
    r.take(2, "client version")?;
    r.take(32, "random")?;
    r.vec8("session id")?;
    r.vec16("cipher suites")?;
    r.vec8("compression methods")?;
    if r.0.is_empty() {
        return Ok(None); // no extensions at all
    }
    let mut exts = Reader(r.vec16("extensions")?);
    while !exts.0.is_empty() {
        let ty = exts.u16("extension type")?;
        let data = exts.vec16("extension data")?;
        if ty != EXT_SERVER_NAME {
            continue;
        }
        let mut list = Reader(Reader(data).vec16("server name list")?);
        while !list.0.is_empty() {
            let kind = list.u8("server name type")?;
            let name = list.vec16("server name")?;
            if kind == NAME_TYPE_HOST {
                return host_name(name).map(Some);
            }
        }
        return Ok(None);
    }
    Ok(None)
}

fn host_name(raw: &[u8]) -> Result<String, HelloError> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    let ok = !raw.is_empty()
        && raw.len() <= 253
        && raw.split(|b| *b == b'.').all(|label| !label.is_empty())
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok {
        return Err(HelloError::Malformed("server name is not a DNS host name"));
    }
    Ok(String::from_utf8_lossy(raw).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello made by rustls itself for `name`.
    fn hello_for(name: rustls::pki_types::ServerName<'static>) -> Vec<u8> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    fn real_hello(sni: &str) -> Vec<u8> {
        hello_for(rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap())
    }

    #[test]
    fn reads_sni_from_a_real_hello() {
        let hello = real_hello("Tenant.Example.com");
        assert_eq!(
            parse(&hello).unwrap().sni.as_deref(),
            Some("tenant.example.com")
        );
    }

    #[test]
    fn asks_for_more_until_complete() {
        let hello = real_hello("a.example");
        for cut in [0, 1, 4, 5, 20, hello.len() - 1] {
            assert_eq!(
                parse(&hello[..cut]),
                Err(HelloError::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn reassembles_a_hello_split_over_records() {
        let hello = real_hello("split.example");
        let payload = &hello[5..];
        let (a, b) = payload.split_at(40);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 0x03, 0x01]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(parse(&two).unwrap().sni.as_deref(), Some("split.example"));
    }

    #[test]
    fn hello_without_sni() {
        // rustls omits SNI for IP addresses.
        let ip = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        assert_eq!(parse(&hello_for(ip)).unwrap().sni, None);
    }

    #[test]
    fn empty_names_and_labels_are_refused() {
        // Found by the client_hello fuzz target: "." used to become an empty name.
        for bad in [&b"."[..], b"..", b"a..b", b".a", b""] {
            assert!(
                host_name(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(host_name(b"A.Example.").unwrap(), "a.example");
    }

    #[test]
    fn rejects_what_is_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls));
        assert_eq!(
            parse(&[0x16, 0x02, 0x00, 0x00, 0x01, 0x01]),
            Err(HelloError::NotTls)
        );
        let mut bad = real_hello("x.example");
        bad[5] = 0x02; // ServerHello type
        assert!(matches!(parse(&bad), Err(HelloError::Malformed(_))));
    }

    #[test]
    fn lying_lengths_do_not_read_out_of_bounds() {
        let hello = real_hello("x.example");
        for i in 5..hello.len() {
            let mut b = hello.clone();
            b[i] = 0xff;
            let _ = parse(&b); // must not panic
        }
    }
}
