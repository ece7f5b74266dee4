//! Reading and writing PEM files: typed errors that name the file, private keys created with
//! mode 0600, and no overwriting unless asked.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::CertError;

/// Reads a whole file; a missing file is [`CertError::Missing`], not a generic I/O error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CertError::Missing {
            path: path.to_owned(),
        },
        _ => CertError::Io {
            path: path.to_owned(),
            action: "read",
            source,
        },
    })
}

/// Reads the first `CERTIFICATE` block of a PEM file.
pub(crate) fn read_certificate(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    let pem = read(path)?;
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| CertError::NotPem {
            path: path.to_owned(),
            expected: "CERTIFICATE block",
        })
}

/// Reads every `CERTIFICATE` block of a PEM file, in order.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = read(path)?;
    let not_pem = || CertError::NotPem {
        path: path.to_owned(),
        expected: "CERTIFICATE block",
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| not_pem())?;
    if certs.is_empty() {
        return Err(not_pem());
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, SEC1 or PKCS#1) of a PEM file.
pub(crate) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| CertError::NotPem {
        path: path.to_owned(),
        expected: "private key",
    })
}

/// PEM text of one DER object, with `\n` line endings.
pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// PEM text of a private key, tagged by its encoding.
pub(crate) fn private_key_pem(key: &PrivateKeyDer<'_>) -> String {
    let tag = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem_encode(tag, key.secret_der())
}

/// One file to write.
pub(crate) struct OutputFile {
    pub(crate) path: PathBuf,
    pub(crate) contents: String,
    /// Secret files (private keys) are created readable by the owner only.
    pub(crate) secret: bool,
}

/// Writes `files` into their directory, creating the directory if needed.
///
/// Without `force`, every target is checked before the first is written, so a refusal leaves
/// the directory as it was. With `force`, an existing file is removed and created anew, so a
/// private key never keeps the looser mode of the file it replaces.
pub(crate) fn write_all(files: &[OutputFile], force: bool) -> Result<(), CertError> {
    if !force && let Some(existing) = files.iter().find(|file| file.path.exists()) {
        return Err(CertError::AlreadyExists {
            path: existing.path.clone(),
        });
    }
    for file in files {
        if let Some(dir) = file.path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| CertError::Io {
                path: dir.to_owned(),
                action: "create directory",
                source,
            })?;
        }
        if force {
            match fs::remove_file(&file.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CertError::Io {
                        path: file.path.clone(),
                        action: "remove",
                        source,
                    });
                }
            }
        }
        write_new(file)?;
    }
    Ok(())
}

fn write_new(file: &OutputFile) -> Result<(), CertError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if file.secret { 0o600 } else { 0o644 });
    }
    let mut handle = options
        .open(&file.path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => CertError::AlreadyExists {
                path: file.path.clone(),
            },
            _ => CertError::Io {
                path: file.path.clone(),
                action: "create",
                source,
            },
        })?;
    handle
        .write_all(file.contents.as_bytes())
        .and_then(|()| handle.sync_all())
        .map_err(|source| CertError::Io {
            path: file.path.clone(),
            action: "write",
            source,
        })
}
