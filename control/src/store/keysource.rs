//! Where the sealing [`Keyring`] comes from: the `TOLLGATE_SEALING_KEYS`
//! environment variable, else a key file (created with one random key if
//! missing). The key file has the same format as the variable, one entry per
//! line. With PostgreSQL there is no default file: replicas share the log, so
//! each one generating its own key would make the others' events unreadable.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::any::sqlite_path;
use super::seal::{Keyring, KeyringError};

/// Environment variable holding the sealing keys: `id:base64(32 bytes)`, comma
/// separated, the sealing key first.
pub const SEALING_KEYS_ENV: &str = "TOLLGATE_SEALING_KEYS";

/// Name of the default key file, beside the SQLite database.
pub const DEFAULT_KEY_FILE: &str = "sealing.key";

/// Where a keyring was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// [`SEALING_KEYS_ENV`].
    Env,
    /// A key file; `created` when this start generated it.
    File { path: PathBuf, created: bool },
}

/// Why no keyring could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    #[error("{SEALING_KEYS_ENV}: {0}")]
    Env(KeyringError),
    #[error("{SEALING_KEYS_ENV} is not UTF-8")]
    EnvNotUnicode,
    #[error("sealing key file {}: {source}", path.display())]
    File { path: PathBuf, source: KeyringError },
    #[error("sealing key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store URL does not parse, so there is no default key file.
    #[error("{0}")]
    StoreUrl(String),
    #[error(
        "the PostgreSQL event store needs sealing keys for private keys at rest: set \
         {SEALING_KEYS_ENV} (the same keys on every control replica) or pass --sealing-key-file"
    )]
    Missing,
}

/// The keyring for a store at `store_url`: from [`SEALING_KEYS_ENV`] if set,
/// else from `key_file`, else from [`DEFAULT_KEY_FILE`] beside a SQLite
/// database. Logs where the keys come from; a key file gets a warning.
pub fn load_keyring(
    store_url: &str,
    key_file: Option<&Path>,
) -> Result<(Keyring, KeySource), KeySourceError> {
    let env = match std::env::var_os(SEALING_KEYS_ENV) {
        Some(v) => Some(v.into_string().map_err(|_| KeySourceError::EnvNotUnicode)?),
        None => None,
    };
    let (keyring, source) = resolve_keyring(env.as_deref(), store_url, key_file)?;
    let ids = keyring.ids().collect::<Vec<_>>().join(", ");
    match &source {
        KeySource::Env => {
            if let Some(file) = key_file {
                tracing::info!(file = %file.display(), "{SEALING_KEYS_ENV} is set; the sealing key file is not read");
            }
            tracing::info!(keys = %ids, "sealing keys from {SEALING_KEYS_ENV}");
        }
        KeySource::File { path, created } => {
            if *created {
                tracing::warn!(file = %path.display(), "generated a new sealing key file; back it up: without it the private keys in the event log cannot be read");
            }
            tracing::warn!(file = %path.display(), keys = %ids, "sealing keys from a file; production deployments should set {SEALING_KEYS_ENV}");
        }
    }
    Ok((keyring, source))
}

/// [`load_keyring`] with the environment variable's value passed in.
pub fn resolve_keyring(
    env: Option<&str>,
    store_url: &str,
    key_file: Option<&Path>,
) -> Result<(Keyring, KeySource), KeySourceError> {
    if let Some(spec) = env.filter(|s| !s.trim().is_empty()) {
        return Ok((
            Keyring::parse(spec).map_err(KeySourceError::Env)?,
            KeySource::Env,
        ));
    }
    let path = match key_file {
        Some(p) => p.to_path_buf(),
        None => {
            let db = sqlite_path(store_url)
                .map_err(|e| KeySourceError::StoreUrl(e.to_string()))?
                .ok_or(KeySourceError::Missing)?;
            Path::new(db)
                .parent()
                .map_or_else(PathBuf::new, Path::to_path_buf)
                .join(DEFAULT_KEY_FILE)
        }
    };
    let (keyring, created) = load_or_create(&path)?;
    Ok((keyring, KeySource::File { path, created }))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeySourceError {
    let path = path.to_path_buf();
    move |source| KeySourceError::Io { path, source }
}

/// Reads the key file, creating it with one random key first if it is missing.
fn load_or_create(path: &Path) -> Result<(Keyring, bool), KeySourceError> {
    let created = match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the sealing key file is readable by other users; chmod 600 it");
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
        Err(e) => return Err(io(path)(e)),
    };
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let keyring = Keyring::parse(&text).map_err(|source| KeySourceError::File {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((keyring, created))
}

/// Writes a new key file atomically (a complete private temp file, then a hard
/// link that fails if another process created the file first); false if that
/// other process won.
fn create(path: &Path) -> Result<bool, KeySourceError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let entry = Keyring::generate_entry(&format!("local-{}", now.as_secs())).map_err(|source| {
        KeySourceError::File {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let name = path
        .file_name()
        .map_or_else(|| DEFAULT_KEY_FILE.into(), |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        now.as_nanos()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(
            file,
            "# Tollgate control: keys sealing private keys in the event log.\n\
             # One `id:base64(32 bytes)` per line; the first seals, all unseal.\n\
             # Losing this file loses those private keys. See control/API.md.\n{entry}"
        )?;
        file.sync_all()
    };
    let written = write().and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // Best effort: make the new directory entry durable.
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const KEY_A: &str = "a:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[test]
    fn env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let (k, source) = resolve_keyring(Some(KEY_A), &url, None).unwrap();
        assert_eq!(source, KeySource::Env);
        assert_eq!(k.sealing_id(), "a");
        assert!(!dir.path().join(DEFAULT_KEY_FILE).exists());
        // Blank counts as unset.
        let (_, source) = resolve_keyring(Some(" "), &url, None).unwrap();
        assert!(matches!(source, KeySource::File { .. }));
        assert!(matches!(
            resolve_keyring(Some("a:short"), &url, None),
            Err(KeySourceError::Env(_))
        ));
    }

    #[test]
    fn default_file_beside_sqlite_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let (k1, s1) = resolve_keyring(None, &url, None).unwrap();
        let path = dir.path().join(DEFAULT_KEY_FILE);
        assert_eq!(
            s1,
            KeySource::File {
                path: path.clone(),
                created: true
            }
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, s2) = resolve_keyring(None, &url, None).unwrap();
        assert_eq!(
            s2,
            KeySource::File {
                path,
                created: false
            }
        );
        assert_eq!(k1.sealing_id(), k2.sealing_id());
        let sealed = k1.seal("key_pem", "x").unwrap();
        assert_eq!(k2.unseal("key_pem", &sealed).unwrap(), "x");
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn explicit_file_and_postgres() {
        let dir = tempfile::tempdir().unwrap();
        let pg = "postgres://u@127.0.0.1/db";
        assert!(matches!(
            resolve_keyring(None, pg, None),
            Err(KeySourceError::Missing)
        ));
        let file = dir.path().join("keys");
        std::fs::write(&file, format!("# comment\n{KEY_A}\n")).unwrap();
        let (k, _) = resolve_keyring(None, pg, Some(&file)).unwrap();
        assert_eq!(k.sealing_id(), "a");
        std::fs::write(&file, "a:bad").unwrap();
        let err = resolve_keyring(None, pg, Some(&file)).unwrap_err();
        assert!(err.to_string().contains("keys"), "{err}");
        let missing_dir = dir.path().join("no/such/dir/keys");
        assert!(matches!(
            resolve_keyring(None, pg, Some(&missing_dir)),
            Err(KeySourceError::Io { .. })
        ));
    }
}
