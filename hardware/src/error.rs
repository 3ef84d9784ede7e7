//! The crate's one error type. Every variant names the file (or profile) it is about, because the
//! reader of "malformed" on a production box needs to know *which* of a few hundred sysfs files to
//! look at.

use std::path::PathBuf;

/// Why a host could not be described, a profile could not be read, or a tuning step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HwError {
    /// A file the description cannot do without is absent.
    #[error("{}: missing", path.display())]
    Missing {
        /// The full path that was looked for (under the sysfs root).
        path: PathBuf,
    },
    /// A file exists but its content is not what the kernel writes there.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file read.
        path: PathBuf,
        /// What was wrong, quoting the offending text.
        reason: String,
    },
    /// A file or directory exists but could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A profile could not be parsed or is inconsistent.
    #[error("profile {name}: {reason}")]
    Profile {
        /// The profile's name or file.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// No built-in profile has that name.
    #[error("unknown profile {name:?}; built-in profiles: {known}")]
    UnknownProfile {
        /// The name asked for.
        name: String,
        /// The built-in names, comma-separated.
        known: String,
    },
    /// A tuning step ran and failed.
    #[error("{step}: {reason}")]
    Apply {
        /// The step, as a shell command.
        step: String,
        /// Exit status and stderr, or the OS error.
        reason: String,
    },
}
