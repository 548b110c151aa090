//! TLS settings: which certificates to trust, which to present, and the
//! explicit opt-out of verification, turned into ureq's `TlsConfig`.

use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::error::Error;

/// TLS settings as given on the builder (paths, read at `build`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// PEM certificates to trust instead of the built-in roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// A PEM certificate chain and its PEM private key.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
    /// Skip verifying the server's certificate.
    pub(crate) accept_invalid_certs: bool,
}

impl TlsSettings {
    /// Whether anything differs from the defaults.
    pub(crate) fn is_set(&self) -> bool {
        *self != TlsSettings::default()
    }

    /// Fills what is not set from a docker CLI certificate folder: `ca.pem`
    /// when it exists, and `cert.pem` with `key.pem` when both do.
    pub(crate) fn or_from_cert_dir(mut self, dir: &Path) -> TlsSettings {
        let ca = dir.join("ca.pem");
        if self.ca_file.is_none() && ca.exists() {
            self.ca_file = Some(ca);
        }
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if self.client_cert.is_none() && cert.exists() && key.exists() {
            self.client_cert = Some((cert, key));
        }
        self
    }

    /// Reads the files and makes ureq's configuration.
    pub(crate) fn to_config(&self) -> Result<TlsConfig, Error> {
        let mut config = TlsConfig::builder().disable_verification(self.accept_invalid_certs);
        if let Some(path) = &self.ca_file {
            let certs = read_certificates(path)?;
            config = config.root_certs(RootCerts::new_with_certs(&certs));
        }
        if let Some((cert_path, key_path)) = &self.client_cert {
            let chain = read_certificates(cert_path)?;
            let key_pem = read(key_path)?;
            let key = PrivateKey::from_pem(&key_pem)
                .map_err(|err| file_error(key_path, &format!("no usable private key ({err})")))?;
            config = config.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(config.build())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|err| file_error(path, &err.to_string()))
}

/// Every certificate of a PEM file; none is an error.
fn read_certificates(path: &Path) -> Result<Vec<Certificate<'static>>, Error> {
    let pem = read(path)?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(err) => return Err(file_error(path, &format!("bad PEM ({err})"))),
        }
    }
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn file_error(path: &Path, reason: &str) -> Error {
    Error::Config(format!("TLS file {}: {reason}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_are_clear_errors() {
        let missing = TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsSettings::default()
        };
        let err = missing.to_config().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");

        let dir = std::env::temp_dir().join(format!("portainer-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let no_cert = TlsSettings {
            ca_file: Some(empty),
            ..TlsSettings::default()
        };
        let err = no_cert.to_config().unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_cert_dir_fills_only_what_exists() {
        let settings = TlsSettings::default().or_from_cert_dir(Path::new("/nonexistent"));
        assert_eq!(settings, TlsSettings::default());
        assert!(!settings.is_set());
    }
}
