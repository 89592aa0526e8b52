//! TLS for MQTT: rustls with the ring provider (no aws-lc), the broker's CA, and a client
//! certificate. Errors name the file and say what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// A TLS setup problem, with the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {what}", path.display())]
    File { path: PathBuf, what: String },
    #[error("TLS client setup: {0}")]
    Setup(String),
}

fn file_err(path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::File { path: path.to_owned(), what: what.into() }
}

/// A rustls client config trusting only `ca_file` and presenting `cert_file` + `key_file`.
pub fn client_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let cas = certs(ca_file)?;
    for ca in cas {
        roots.add(ca).map_err(|e| file_err(ca_file, format!("not a usable CA certificate: {e}")))?;
    }
    let chain = certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| file_err(key_file, format!("no PEM private key found: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| file_err(key_file, format!("key does not fit {}: {e}", cert_file.display())))?;
    Ok(Arc::new(config))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in it"));
    }
    Ok(certs)
}
