use thiserror::Error;

/// Everything that can go wrong in the PostgreSQL protocol crate.
#[derive(Debug, Error)]
pub enum PgError {
    #[error("i/o error on the {leg} leg: {source}")]
    Io {
        leg: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("protocol violation by the client: {0}")]
    ClientProtocol(String),
    #[error("the ledger refused the session's statements (fail closed): {0}")]
    LedgerRefused(String),
    #[error("protocol violation by the target: {0}")]
    UpstreamProtocol(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("connection {connection:?}: {message}")]
    Upstream {
        connection: String,
        /// SQLSTATE to report to the client.
        sqlstate: &'static str,
        message: String,
    },
}

impl PgError {
    pub fn client_io(source: std::io::Error) -> Self {
        PgError::Io {
            leg: "client",
            source,
        }
    }

    pub fn upstream_io(source: std::io::Error) -> Self {
        PgError::Io {
            leg: "target",
            source,
        }
    }
}
