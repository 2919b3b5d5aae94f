//! Errors: every one that comes from the text names the file, line and column.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A place in a configuration file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Everything that can go wrong while loading or resolving a configuration.
///
/// [`Error::exit_code`] gives the code drbdadm exits with for the same mistake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file (or an included file) could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An include statement named a file (not a glob pattern) that does not exist.
    #[error("{at}: failed to open include file '{pattern}'")]
    Include { at: Location, pattern: String },
    /// The text does not follow the grammar.
    #[error("{at}: parse error: {message}")]
    Syntax { at: Location, message: String },
    /// A number (with its unit) drbdadm cannot read at all.
    #[error("{at}: {message}")]
    BadNumber { at: Location, message: String },
    /// The text parses, but says something invalid (a value out of range, a missing
    /// statement, a conflict between two statements).
    #[error("{at}: {message}")]
    Invalid { at: Location, message: String },
    /// The resource does not exist, or has no section for this host.
    #[error("'{name}' not defined in your config (for this host: {host})")]
    NotDefined { name: String, host: String },
    /// A request drbdadm refuses as a usage error (exit 1).
    #[error("{0}")]
    Usage(String),
    /// The DRBD 8.4 feature is accepted by drbdadm but udrbd does not implement it.
    #[error("{at}: {what} is not supported by udrbd")]
    Unsupported { at: Location, what: String },
}

impl Error {
    /// The exit code drbdadm-84 uses for this kind of error: 1 usage, 10 invalid
    /// configuration, 20 unreadable files or numbers (drbd-utils' `E_USAGE`,
    /// `E_CONFIG_INVALID`, `E_EXEC_ERROR`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotDefined { .. } | Error::Usage(_) => 1,
            Error::BadNumber { .. } | Error::Io { .. } => 20,
            Error::Include { .. }
            | Error::Syntax { .. }
            | Error::Invalid { .. }
            | Error::Unsupported { .. } => 10,
        }
    }

    /// Where in the configuration text the error is, if it comes from the text.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Include { at, .. }
            | Error::Syntax { at, .. }
            | Error::BadNumber { at, .. }
            | Error::Invalid { at, .. }
            | Error::Unsupported { at, .. } => Some(at),
            Error::Io { .. } | Error::NotDefined { .. } | Error::Usage(_) => None,
        }
    }

    pub(crate) fn syntax(at: &Location, message: impl Into<String>) -> Error {
        Error::Syntax {
            at: at.clone(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(at: &Location, message: impl Into<String>) -> Error {
        Error::Invalid {
            at: at.clone(),
            message: message.into(),
        }
    }
}
