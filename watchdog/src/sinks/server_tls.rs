//! TLS for the API's listener (`http.tls_cert_file`, `http.tls_key_file`,
//! `http.client_ca_file`): rustls with the ring provider, the server's certificate and
//! key read once at start-up, and with a client CA only clients presenting a
//! certificate it signed are answered (mutual TLS). The health listener stays plain.

use std::{path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};

use crate::config::HttpConfig;

/// Why the API's TLS settings cannot be used; names the key and the file.
#[derive(Debug, thiserror::Error)]
#[error("{key} = {path:?}: {problem}")]
pub struct ServerTlsError {
    /// The config key (`http.tls_cert_file`, …).
    pub key: &'static str,
    /// The file it names.
    pub path: std::path::PathBuf,
    /// What is wrong and what to change.
    pub problem: String,
}

fn error(key: &'static str, path: &Path, problem: impl Into<String>) -> ServerTlsError {
    ServerTlsError {
        key,
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ServerTlsError> {
    std::fs::read(path).map_err(|err| {
        error(
            key,
            path,
            format!("cannot read it: {err}; create the file or fix the path"),
        )
    })
}

/// Every certificate in the PEM file `key` names, at least one.
fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ServerTlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| error(key, path, format!("not a PEM certificate file: {err}")))?;
    if certs.is_empty() {
        return Err(error(
            key,
            path,
            "holds no certificate; expected PEM `-----BEGIN CERTIFICATE-----` blocks",
        ));
    }
    Ok(certs)
}

/// The server's settings when `http.tls_cert_file` is set (validation made sure
/// `tls_key_file` is too), `None` for plain HTTP. ALPN offers HTTP/1.1 only.
pub fn server_config(http: &HttpConfig) -> Result<Option<Arc<ServerConfig>>, ServerTlsError> {
    if http.tls_cert_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let chain = certificates("http.tls_cert_file", &http.tls_cert_file)?;
    let key_path = &http.tls_key_file;
    let pem = read("http.tls_key_file", key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        error(
            "http.tls_key_file",
            key_path,
            format!(
                "no usable PEM private key in it ({err}); expected a `-----BEGIN PRIVATE KEY-----` \
                 (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY` block"
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions");
    let builder = if http.client_ca_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let path = &http.client_ca_file;
        let mut roots = RootCertStore::empty();
        for (i, cert) in certificates("http.client_ca_file", path)?
            .into_iter()
            .enumerate()
        {
            roots.add(cert).map_err(|err| {
                error(
                    "http.client_ca_file",
                    path,
                    format!("certificate {} is not usable as a CA: {err}", i + 1),
                )
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|err| error("http.client_ca_file", path, format!("{err}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|err| {
        error(
            "http.tls_key_file",
            key_path,
            format!(
                "does not go with http.tls_cert_file {:?}: {err}",
                http.tls_cert_file
            ),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn http(cert: &Path, key: &Path, ca: &Path) -> HttpConfig {
        HttpConfig {
            tls_cert_file: cert.to_owned(),
            tls_key_file: key.to_owned(),
            client_ca_file: ca.to_owned(),
            ..HttpConfig::default()
        }
    }

    fn scratch(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("watchdog-server-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn without_a_certificate_the_server_speaks_plain_http() {
        assert!(server_config(&HttpConfig::default()).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let missing = Path::new("/nonexistent/watchdog/server.pem");
        let garbage = scratch("garbage.pem", "not a certificate\n");
        let broken = scratch(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let none = PathBuf::new();
        for (config, key, file, says) in [
            (
                http(missing, &garbage, &none),
                "http.tls_cert_file",
                missing.to_owned(),
                "cannot read it",
            ),
            (
                http(&garbage, &garbage, &none),
                "http.tls_cert_file",
                garbage.clone(),
                "holds no certificate",
            ),
            (
                http(&broken, &garbage, &none),
                "http.tls_cert_file",
                broken.clone(),
                "not a PEM certificate file",
            ),
        ] {
            let err = server_config(&config).unwrap_err();
            assert_eq!((err.key, &err.path), (key, &file), "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("{key} = {file:?}: ")) && text.contains(says),
                "{text}"
            );
        }
    }
}
